"""Time :func:`sapsam_utils.synthetic.phantom.make_phantom` on one core at the study's three grids.

Run from the project root::

    .venv/bin/python benchmarks/bench_phantom.py [--repeats 3] [--seed 0]

It pins the process to one CPU (``os.sched_setaffinity`` where available) and limits BLAS/OpenMP
threads to one before numpy is imported, generates a control and an all-24-labels phantom per
grid (after one warm-up call), and prints the best and median wall-clock seconds, the best CPU
seconds of the process and the peak resident memory (``resource.getrusage``). The target
(issue 3) is <= 2 s for the 216 x 256 x 256 grid on one core. As a naive reference measured in
the same run, it times the step that a straightforward implementation would make its slowest,
resampling the coarse texture grid to the full grid with ``scipy.ndimage.zoom`` (order 1),
against the separable :func:`~sapsam_utils.synthetic.phantom.upsample_linear` that the module uses.
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from sapsam_utils.synthetic.phantom import make_phantom, upsample_linear  # noqa: E402
from sapsam_utils.core.regions import LABEL_COLUMNS  # noqa: E402

GRIDS = {
    "smoke 54x64x64 @ 6.0/5.6 mm": ((54, 64, 64), (6.0, 5.6, 5.6)),
    "half 108x128x128 @ 3.0/2.8 mm": ((108, 128, 128), (3.0, 2.8, 2.8)),
    "paper 216x256x256 @ 1.5/1.4 mm": ((216, 256, 256), (1.5, 1.4, 1.4)),
}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB; ru_maxrss is in kB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, repeats):
    """Best and median wall-clock seconds, and the best CPU seconds of this process.

    On a machine shared with other jobs the CPU time (``time.process_time``) is the steadier
    number: it does not count the time the process waited for the core.
    """
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return min(wall), statistics.median(wall), min(cpu)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        print(f"pinned to CPU {sorted(os.sched_getaffinity(0))}")
    all_on = {c: 1 for c in LABEL_COLUMNS}
    make_phantom({}, args.seed, *GRIDS["smoke 54x64x64 @ 6.0/5.6 mm"])  # warm-up (imports, caches)
    print(f"{'grid':34s} {'labels':>8s} {'best s':>8s} {'median s':>9s} {'cpu s':>7s} {'peak MB':>8s}")
    for name, (shape, spacing) in GRIDS.items():
        for label_name, labels in (("control", {}), ("all 24", all_on)):
            best, med, cpu = timed(lambda: make_phantom(labels, args.seed, shape, spacing), args.repeats)
            print(f"{name:34s} {label_name:>8s} {best:8.2f} {med:9.2f} {cpu:7.2f} {peak_rss_mb():8.0f}")
    # The naive reference: resampling the coarse texture grid with scipy's zoom instead of the
    # separable linear upsampling that make_phantom uses.
    shape = GRIDS["paper 216x256x256 @ 1.5/1.4 mm"][0]
    coarse = np.random.default_rng(0).standard_normal((47, 52, 52)).astype(np.float32)
    fast = timed(lambda: upsample_linear(coarse, shape), args.repeats)[2]
    factors = [n / c for n, c in zip(shape, coarse.shape)]
    naive = timed(lambda: ndimage.zoom(coarse, factors, order=1), args.repeats)[2]
    print(f"texture upsampling to {shape} (cpu s): upsample_linear {fast:.3f}, ndimage.zoom {naive:.3f} "
          f"(x{naive / fast:.1f})")


if __name__ == "__main__":
    main()
