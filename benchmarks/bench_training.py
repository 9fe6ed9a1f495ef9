"""Training throughput of the classifiers: the real input pipeline against the bare model.

For each architecture and input size, in the same run and process:

* **pipeline**: ``model.fit`` on :class:`sapsam_utils.learning.training.ImageBatches` reading a memory-mapped
  uint8 array on disk, with balanced rows and the 2-D augmentation, as the ``models`` stage trains;
* **bare**: ``model.train_on_batch`` on one float32 batch already in memory (the model's own speed).

It prints training images per second for both, their ratio (target: pipeline >= 0.8 x bare) and
the process's peak resident memory. Each configuration runs in a fresh process, so peaks do not mix.

    .venv/bin/python benchmarks/bench_training.py                   # default and paper sizes
    .venv/bin/python benchmarks/bench_training.py --sizes default --steps 8
    KERAS_BACKEND=jax python benchmarks/bench_training.py           # another Keras backend
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: (architecture, stored image side, backbone input side) per size profile.
CONFIGS = {
    "default": [("vgg19_bn", 64, 32), ("vgg19_bn", 64, 64), ("vgg19", 64, 64), ("inception_v3", 64, 75)],
    "paper": [("vgg19", 256, 224), ("inception_v3", 256, 224)],
}


def run_one(architecture: str, image_side: int, input_size: int, steps: int, batch: int) -> dict:
    import keras
    import numpy as np

    from sapsam_utils.learning.models import build_classifier
    from sapsam_utils.learning.training import ImageBatches, TrainParams, compile_model, epoch_rows

    rng = np.random.default_rng(0)
    n = batch * (steps + 2)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "images.npy"
        stored = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, image_side, image_side))
        stored[:] = rng.integers(0, 256, stored.shape, dtype=np.uint8)
        stored.flush()
        images = np.load(path, mmap_mode="r")
        labels = (np.arange(n) % 4 == 0).astype(float)
        params = TrainParams(architecture=architecture, input_size=input_size, batch_size=batch)
        model = compile_model(build_classifier(architecture, (image_side, image_side, 3), input_size, None,
                                               frozen_blocks=2 if architecture != "vgg19_bn" else 0), params)
        augment = {"max_rotation_deg": 20.0, "zoom_range": (0.8, 1.2)}

        x = rng.random((batch, image_side, image_side, 3), dtype=np.float32)
        y = (np.arange(batch) % 2).astype(np.int32)
        model.train_on_batch(x, y)  # build and warm up
        t0 = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(x, y)
        bare = batch * steps / (time.perf_counter() - t0)

        warm = ImageBatches(images, labels, epoch_rows(labels, 0, 0, batch), batch, augment)
        model.fit(warm, verbose=0)  # the fit function's own warm-up
        batches = ImageBatches(images, labels, epoch_rows(labels, 1, 0, batch * steps), batch, augment, seed=1)
        t0 = time.perf_counter()
        model.fit(batches, verbose=0)
        pipeline = batch * steps / (time.perf_counter() - t0)
    return {"architecture": architecture, "image": image_side, "input": input_size, "backend": keras.backend.backend(),
            "bare_images_per_s": bare, "pipeline_images_per_s": pipeline, "ratio": pipeline / bare,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="default,paper", help="comma-separated: default, paper")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per mode")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration as JSON
    args = parser.parse_args()
    if args.one:
        arch, side, size = args.one.split(":")
        print(json.dumps(run_one(arch, int(side), int(size), args.steps, args.batch)))
        return
    print(f"{'architecture':<14}{'image':>6}{'input':>6}  {'bare img/s':>11}{'pipeline img/s':>15}{'ratio':>7}"
          f"{'peak GB':>9}  backend")
    for size in args.sizes.split(","):
        for arch, side, input_size in CONFIGS[size]:
            out = subprocess.run([sys.executable, __file__, "--one", f"{arch}:{side}:{input_size}",
                                  "--steps", str(args.steps), "--batch", str(args.batch)],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{arch:<14}{side:>6}{input_size:>6}  {r['bare_images_per_s']:>11.1f}{r['pipeline_images_per_s']:>15.1f}"
                  f"{r['ratio']:>7.2f}{r['peak_rss_gb']:>9.2f}  {r['backend']}", flush=True)


if __name__ == "__main__":
    main()
