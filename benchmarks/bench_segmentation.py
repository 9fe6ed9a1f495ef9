"""Benchmark of the lung segmentation (chapter 2) against a naive per-slice reference.

Segments a 256 x 256 x 216 phantom (the paper's grid after downsampling) and the real 512 x 512
cases of ``../shared/ct/``, and prints for each: the time of every step of the refined mask, the
refined and conservative masks' times (best of ``--repeat`` runs), the peak memory, and the ratio
against a naive reference timed in the same run.

The naive reference is the widely copied Kaggle lung-segmentation recipe, written here from its
description (nothing copied): per axial slice, threshold, clear the border, keep the two largest
regions as internal marker, dilate it with disk footprints of the inner and outer radius (in
voxels) for the external marker, Sobel gradient, marker watershed of the whole slice, outline by
morphological gradient, black top-hat of the outline with a disk footprint, closing, hole filling.
On the 512 x 512 cases it is timed on ``--naive-slices`` evenly spaced slices and extrapolated to
the whole scan (said so in the output); on the phantom every slice is timed.

Each measurement runs in a fresh process, so that its peak memory (``ru_maxrss``, which includes
SimpleITK's own buffers) is its own; ``tracemalloc`` adds the peak of numpy allocations.

Usage::

    .venv/bin/python benchmarks/bench_segmentation.py              # phantom + 4 real cases
    .venv/bin/python benchmarks/bench_segmentation.py --cases phantom --repeat 5
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import time
import tracemalloc

import numpy as np
from scipy import ndimage as ndi
from skimage import morphology, segmentation

CASES = ("phantom", "lidc-idri-0001", "lidc-idri-0003", "lung-dx-a0001", "lung-dx-a0002")
PHANTOM_LABELS = ("RU_cavity", "RU_fungus_ball", "LU_pleural_thickening", "RL_preexisting", "LM_cavity")


def load_case(case: str):
    """The CT of a case (and the phantom's truth lungs, else None)."""
    from sapsam_utils.core.paths import shared_ct_dir

    if case == "phantom":
        from sapsam_utils.synthetic.phantom import make_phantom
        from sapsam_utils.core.regions import LABEL_COLUMNS

        labels = {c: int(c in PHANTOM_LABELS) for c in LABEL_COLUMNS}
        p = make_phantom(labels, seed=0)  # default grid: 216 x 256 x 256, 1.5 x 1.4 x 1.4 mm
        return p.ct, p.lungs
    folder = shared_ct_dir() / case
    try:
        from sapsam_utils.data.loading import load_source
    except ImportError:
        load_source = None
    if (folder / "ct.nii.gz").is_file():
        from sapsam_utils.core.volume import read_volume

        return read_volume(folder / "ct.nii.gz"), None
    if load_source is None:
        raise FileNotFoundError(f"{folder}: a DICOM case needs sapsam_utils.data.loading.load_source")
    return load_source(folder / "dicom"), None


def naive_slice(hu: np.ndarray, spacing_yx, threshold_hu, inner_mm, outer_mm, tophat_mm) -> np.ndarray:
    """The naive reference on one axial slice: the Kaggle-style 2-D marker watershed."""
    inside = segmentation.clear_border(hu < threshold_hu)
    labels = morphology.label(inside)
    if labels.max() == 0:
        return np.zeros(hu.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    keep = np.argsort(sizes)[::-1][:2]
    internal = np.isin(labels, keep[sizes[keep] > 0])
    pixel = float(np.mean(spacing_yx))
    near = ndi.binary_dilation(internal, structure=morphology.disk(max(1, round(inner_mm / pixel))))
    far = ndi.binary_dilation(internal, structure=morphology.disk(max(1, round(outer_mm / pixel))))
    markers = np.zeros(hu.shape, dtype=np.int32)
    markers[far & ~near] = 2
    markers[internal] = 1
    values = hu.astype(float)
    edges = np.hypot(ndi.sobel(values, 0), ndi.sobel(values, 1))
    flooded = segmentation.watershed(edges, markers)
    lung = (flooded == 1).astype(np.uint8)
    outline = ndi.morphological_gradient(lung, size=(3, 3))
    big = morphology.disk(max(1, round(tophat_mm / pixel)))
    outline = outline | ndi.black_tophat(outline, footprint=big)
    mask = internal | (outline > 0) | (lung > 0)
    mask = ndi.binary_closing(mask, structure=morphology.disk(2))
    return ndi.binary_fill_holes(mask)


def naive_time(ct, params: dict, n_slices: int | None):
    """Seconds of the naive reference for the whole scan (extrapolated when sampling slices)."""
    depth = ct.array.shape[0]
    if n_slices is None or n_slices >= depth:
        picks = np.arange(depth)
    else:
        picks = np.unique(np.linspace(0, depth - 1, n_slices).round().astype(int))
    out = np.zeros(ct.array.shape, dtype=bool)
    t0 = time.perf_counter()
    for z in picks:
        out[z] = naive_slice(ct.array[z], ct.spacing[1:], params["threshold_hu"], params["inner_mm"],
                             params["outer_mm"], params["tophat_mm"])
    seconds = time.perf_counter() - t0
    return seconds * depth / len(picks), len(picks) < depth, out


def measure(case: str, what: str, repeat: int, naive_slices: int | None) -> dict:
    """One measurement in this (fresh) process: load, run ``what`` ``repeat`` times (best time
    kept), then once more under ``tracemalloc`` for the numpy peak (not timed: tracing slows it)."""
    from sapsam_utils.imaging.metrics import dice
    from sapsam_utils.imaging.segmentation import conservative_mask, refined_steps, segmentation_params

    ct, truth = load_case(case)
    params = segmentation_params()
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {"case": case, "shape": ct.array.shape, "spacing": ct.spacing}

    def run_once():
        if what == "refined":
            steps = refined_steps(ct)
            return steps.volume().array, steps.info["seconds"]
        if what == "conservative":
            return conservative_mask(ct).array, {}
        seconds, extrapolated, out = naive_time(ct, params, naive_slices)
        result.update(naive_seconds=seconds, extrapolated=extrapolated)
        return out, {}

    best = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        mask, steps = run_once()
        seconds = result.get("naive_seconds", time.perf_counter() - t0)
        if best is None or seconds < best[0]:
            best = (seconds, steps)
    result.update(seconds=best[0], steps=best[1])
    if truth is not None and not result.get("extrapolated"):
        result["dice"] = dice(mask, truth)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result["rss_peak_mb"] = peak / 1024
    result["rss_added_mb"] = (peak - base_rss) / 1024
    if what != "naive":
        tracemalloc.start()
        run_once()
        result["numpy_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    else:
        result["numpy_peak_mb"] = float("nan")
    return result


def run_fresh(*args) -> dict:
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each mask; the best is kept")
    parser.add_argument("--naive-slices", type=int, default=24,
                        help="slices timed by the naive reference on the real cases (phantom: all)")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, load average at start: {os.getloadavg()}")
    rows = []
    for case in args.cases:
        try:
            refined = run_fresh(case, "refined", args.repeat, None)
        except FileNotFoundError as err:
            print(f"{case}: skipped ({err})")
            continue
        conservative = run_fresh(case, "conservative", args.repeat, None)
        naive = run_fresh(case, "naive", 1, None if case == "phantom" else args.naive_slices)
        rows.append((case, refined, conservative, naive))
        shape = "x".join(str(n) for n in refined["shape"])
        spacing = "x".join(f"{s:.2f}" for s in refined["spacing"])
        print(f"\n{case}: {shape} voxels of {spacing} mm")
        print("  refined steps (s, best run): " + ", ".join(f"{k} {v:.2f}" for k, v in refined["steps"].items()))
        for name, r in (("refined", refined), ("conservative", conservative), ("naive", naive)):
            note = " (extrapolated from sampled slices)" if r.get("extrapolated") else ""
            dice_note = f", Dice vs truth {r['dice']:.4f}" if "dice" in r else ""
            numpy_note = f", numpy peak {r['numpy_peak_mb']:.0f} MB" if r["numpy_peak_mb"] == r["numpy_peak_mb"] else ""
            print(f"  {name:12s} {r['seconds']:7.2f} s{note}; peak RSS {r['rss_peak_mb']:.0f} MB "
                  f"(+{r['rss_added_mb']:.0f} MB over the loaded scan){numpy_note}{dice_note}")
        print(f"  naive / refined = {naive['seconds'] / refined['seconds']:.1f}x")
    print(f"\nload average at end: {os.getloadavg()}")
    print("\ncase            refined_s  conservative_s  naive_s  ratio")
    for case, refined, conservative, naive in rows:
        print(f"{case:15s} {refined['seconds']:9.2f} {conservative['seconds']:15.2f} {naive['seconds']:8.1f}"
              f" {naive['seconds'] / refined['seconds']:6.1f}x")


if __name__ == "__main__":
    main()
