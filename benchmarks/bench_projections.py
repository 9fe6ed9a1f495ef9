"""Benchmark: one scan's whole preprocessing (load -> masks -> grid -> 27 rotations -> all images).

Usage (from the project root)::

    .venv/bin/python benchmarks/bench_projections.py [--quick] [--naive-rotations 2] [--threads 2]

Times each step for

1. a synthetic 256 x 256 x 216 scan (a phantom written to NIfTI and read back), and
2. the real 512 x 512 cases of ``../shared/ct`` (skipped when absent),

and, in the same run, a naive reference on the first scan's grid: ``scipy.ndimage.rotate`` of each
volume (CT linear, masks and truth nearest; three plane rotations per rotation) and numpy masked
arrays for the windowed means (:func:`sapsam_utils.imaging.projections.reference_images`). The naive
reference is timed on ``--naive-rotations`` rotations and scaled to 27 (it takes minutes).

Targets (2 cores): 256 x 256 x 216 scan through 27 rotations and all projections <= 10 s; a real
512 x 512 scan from load to projections <= 20 s; >= 10x the naive reference.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from sapsam_utils.imaging import augment
from sapsam_utils.stages.datasets import save_npz_atomic, scan_arrays
from sapsam_utils.core.paths import shared_ct_dir
from sapsam_utils.imaging.projections import ProjectionParams, project_scan, reference_images, to_grid
from sapsam_utils.core.volume import read_volume, write_volume


class Clock:
    """Wall and CPU seconds of named steps."""

    def __init__(self):
        self.steps = []

    def __call__(self, name, fn, *args, **kwargs):
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn(*args, **kwargs)
        self.steps.append((name, time.perf_counter() - wall, time.process_time() - cpu))
        return out

    def report(self, title):
        print(f"\n{title}")
        for name, wall, cpu in self.steps:
            print(f"  {name:<38s} {wall:7.2f} s wall  {cpu:7.2f} s cpu")
        print(f"  {'total':<38s} {sum(s[1] for s in self.steps):7.2f} s wall")
        return sum(s[1] for s in self.steps)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def segment(ct):
    """Both lung masks (sapsam_utils.imaging.segmentation, one pass of the shared steps)."""
    from sapsam_utils.imaging.segmentation import lung_masks

    conservative, refined, _ = lung_masks(ct)
    return conservative, refined


def naive_rotation(grid, angles, params):
    """One rotation the naive way: ndimage.rotate per volume and plane, then masked-array means."""
    az, ay, ax = angles

    def rot(volume, order, cval):
        out = volume
        for angle, plane in ((ax, (0, 1)), (ay, (0, 2)), (az, (1, 2))):
            if angle:
                out = ndimage.rotate(out, angle, axes=plane, reshape=False, order=order, mode="constant", cval=cval)
        return out

    rotated = type(grid)(
        hu=rot(grid.hu, 1, -1000.0), conservative=rot(grid.conservative, 0, 0), refined=rot(grid.refined, 0, 0),
        signs=None if grid.signs is None else rot(grid.signs, 0, 0), box=grid.box, spacing=grid.spacing,
    )
    return reference_images(rotated, params)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="threads for the rotations (cores)")
    parser.add_argument("--naive-rotations", type=int, default=2, help="rotations of the naive reference to time")
    parser.add_argument("--quick", action="store_true", help="one real case only")
    args = parser.parse_args()
    params = ProjectionParams()  # the paper's grid (216, 256, 256), 27 rotations, paper windows
    print(f"cores: {os.cpu_count()}, load average before: {tuple(round(v, 2) for v in os.getloadavg())}, "
          f"grid {params.grid_shape}, {len(params.rotations)} rotations")

    from sapsam_utils.synthetic.phantom import make_phantom

    tmp = Path(tempfile.mkdtemp(prefix="bench-proj-"))
    labels = {"RU_cavity": 1, "RU_fungus_ball": 1, "LU_pleural_thickening": 1, "RL_preexisting": 1}
    t = time.perf_counter()
    phantom = make_phantom(labels, seed=1, shape=(216, 256, 256), spacing=(1.5, 1.4, 1.4))
    write_volume(phantom.ct, tmp / "ct.nii.gz")
    write_volume(phantom.signs, tmp / "signs.nii.gz")
    print(f"(phantom generated and written in {time.perf_counter() - t:.1f} s, not counted)")

    maps_step = f"27 rotation index maps (once per process, {args.threads} thr)"
    one_step, many_step = "27 rotations + all images (1 thread)", f"27 rotations + all images ({args.threads} threads)"
    clock = Clock()
    ct = clock("load CT (read NIfTI)", read_volume, tmp / "ct.nii.gz")
    signs = clock("load sign truth", read_volume, tmp / "signs.nii.gz")
    conservative, refined = clock("masks (segmentation.lung_masks)", segment, ct)
    grid = clock("crop lung box + resample to grid", to_grid, ct, conservative, refined, signs, params.grid_shape)
    augment._MAP_CACHE.clear()
    clock(maps_step, augment.rotation_index_maps, params.grid_shape, params.angles, args.threads)
    clock(one_step, project_scan, grid, params, 1)
    images = clock(many_step, project_scan, grid, params, args.threads)
    clock("write .npz (uint8, zlib level 1)", lambda: save_npz_atomic(tmp / "scan.npz", scan_arrays(images, {})))
    clock.report("OURS, phantom on the paper's grid (216, 256, 256)")
    steps = {name: (wall, cpu) for name, wall, cpu in clock.steps}
    maps_wall = steps[maps_step][0]
    one_wall, one_cpu = steps[one_step]
    many_wall = steps[many_step][0]
    print(f"  -> 27 rotations + all projections: {many_wall:.2f} s with {args.threads} threads "
          f"({many_wall + maps_wall:.2f} s including the index maps of a fresh process); target <= 10 s")

    # naive reference on the same grid
    rotations = params.rotations[1 : 1 + args.naive_rotations]
    wall, cpu = time.perf_counter(), time.process_time()
    for r in rotations:
        naive_rotation(grid, r, params)
    naive_wall = (time.perf_counter() - wall) / len(rotations) * len(params.rotations)
    naive_cpu = (time.process_time() - cpu) / len(rotations) * len(params.rotations)
    print(f"\nNAIVE reference (ndimage.rotate per volume + masked-array means), timed on {len(rotations)} "
          f"rotations, scaled to 27: {naive_wall:.1f} s wall, {naive_cpu:.1f} s cpu")
    print(f"  ratio naive / ours, both 1 thread:   {naive_wall / one_wall:5.1f}x wall, {naive_cpu / one_cpu:5.1f}x cpu")
    print(f"  ratio naive / ours, {args.threads} threads:       {naive_wall / many_wall:5.1f}x wall")
    print(f"  ratio naive / ours incl. index maps: {naive_wall / (many_wall + maps_wall):5.1f}x wall   (target >= 10x)")
    ref0 = reference_images(grid, params)
    err = max(float(np.abs(images.regions[a][0] - ref0.regions[a][0]).max()) for a in images.regions)
    print(f"  max |ours - masked-array reference| on the unrotated sub-region images: {err:.2e}")

    cases = ["lidc-idri-0001", "lidc-idri-0003", "lung-dx-a0001"]
    cases = cases[:1] if args.quick else cases
    from sapsam_utils.data.loading import load_source

    for case in cases:
        path = shared_ct_dir() / case / "ct.nii.gz"
        if not path.is_file():
            print(f"\n(skipping {case}: {path} not found)")
            continue
        clock = Clock()
        ct = clock("load (loading.load_source)", load_source, path)
        conservative, refined = clock("masks (segmentation.lung_masks)", segment, ct)
        grid = clock("crop lung box + resample to grid", to_grid, ct, conservative, refined, None, params.grid_shape)
        images = clock(many_step, project_scan, grid, params, args.threads)
        clock("write .npz", lambda: save_npz_atomic(tmp / "real.npz", scan_arrays(images, {})))
        total = clock.report(f"OURS, real {case} {ct.array.shape} (index maps already in this process)")
        ours = total - clock.steps[1][1]
        print(f"  -> load to projections: {total:.2f} s ({total + maps_wall:.2f} s in a fresh process; "
              f"{ours:.2f} s without the segmentation); target <= 20 s")
    print(f"\npeak resident memory: {peak_rss_gb():.2f} GB; load average after: "
          f"{tuple(round(v, 2) for v in os.getloadavg())}")
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()


if __name__ == "__main__":
    main()
