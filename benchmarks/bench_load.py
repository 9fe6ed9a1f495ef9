"""Benchmark: the paper profile's data half under load, on a slice of the cohort.

Usage (from the project root)::

    .venv/bin/python benchmarks/bench_load.py [--scans 12] [--workers 2] [--workdir DIR] [--keep]

Runs, with the ``paper`` profile's parameters (``notebooks/params/paper.yaml`` over each
notebook's defaults) and ``--workers`` worker processes, the stages that chapters 1-3 run for
every scan of the cohort:

1. ``scans``: CPA phantoms on the paper's 216 x 256 x 256 grid (1.5 x 1.4 x 1.4 mm);
2. ``masks``: both lung masks of every scan;
3. ``projections``: the paper's grid and 27 rotations, every image of every scan;
4. ``datasets``: the per-split arrays (in the main process, written through memory maps),

on ``--scans`` rows spread evenly over ``data_manifest.csv`` (controls and CPA, first and later
scans). For each stage it prints the wall time, the worker CPU time per scan, the **peak resident
memory of each worker** (``VmHWM`` of each worker process, sampled from ``/proc`` every 0.2 s) and
the peak of all processes together, then projects the time of the whole cohort (352 scans) on
this many cores, two ways: the measured wall time per scan, and the CPU time per scan divided by
the workers (what an otherwise idle machine would give). Linux only (``/proc``).

Target: peak RSS <= 4 GB per worker, so that 352 scans run in bounded memory on a small machine.
The load average before and after is printed: on a shared machine the wall times are an upper
bound, the CPU times are not affected much.
"""

from __future__ import annotations

import argparse
import ast
import os
import resource
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml

from sapsam_utils.stages.workdir import stage_dir
from sapsam_utils.stages.scans import build_scans, scans_stage_params
from sapsam_utils.stages.datasets import build_datasets, preprocess_cohort
from sapsam_utils.data.manifest import read_manifest
from sapsam_utils.core.paths import project_path, project_root
from sapsam_utils.imaging.projections import ProjectionParams
from sapsam_utils.imaging.segmentation import segmentation_params
from sapsam_utils.stages.masks import segment_cohort

COHORT_SCANS = 352
GB = 1024**3


def profile_parameters(profile: str, stem: str) -> dict:
    """A notebook's parameters under a profile: its ``parameters`` cell, then ``common``, then its block."""
    import papermill

    root = project_root()
    defaults = {name: ast.literal_eval(p["default"])
                for name, p in papermill.inspect_notebook(str(root / "notebooks" / f"{stem}.ipynb")).items()}
    blocks = yaml.safe_load((root / "notebooks" / "params" / f"{profile}.yaml").read_text())
    common = {k: v for k, v in blocks.get("common", {}).items() if k in defaults}
    return {**defaults, **common, **(blocks.get(stem) or {})}


def spread_rows(table, n: int):
    """``n`` rows spread evenly over the manifest, controls and CPA in the manifest's proportion."""
    controls = table.index[table["group"] == "control"]
    cpa = table.index[table["group"] != "control"]
    n = min(n, len(table))
    n_controls = min(len(controls), max(1 if len(controls) else 0, round(n * len(controls) / len(table))))
    pick = [group[np.unique(np.linspace(0, len(group) - 1, k).round().astype(int))]
            for group, k in ((controls, n_controls), (cpa, n - n_controls)) if k > 0]
    return table.loc[sorted(np.concatenate(pick))].reset_index(drop=True)


def _children(pid: int) -> set[int]:
    """Every descendant process of ``pid`` (from ``/proc/<pid>/task/*/children``)."""
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = {int(k) for k in (task / "children").read_text().split()}
            except OSError:
                continue
            todo.extend(kids - found)
            found |= kids
    return found


def _status_kb(pid: int | str, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class MemoryMonitor:
    """Samples, every ``interval`` s, each child process's peak RSS (VmHWM) and the total RSS."""

    def __init__(self, interval: float = 0.2):
        self.interval, self.worker_peak_kb, self.total_peak_kb, self.is_worker = interval, {}, 0, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            total = _status_kb(me, "VmRSS")
            for pid in _children(me):
                if pid not in self.is_worker:  # a pool worker, not multiprocessing's resource tracker
                    try:
                        command = Path(f"/proc/{pid}/cmdline").read_bytes()
                    except OSError:
                        continue
                    self.is_worker[pid] = b"spawn_main" in command and b"resource_tracker" not in command
                hwm = _status_kb(pid, "VmHWM")
                if hwm and self.is_worker[pid]:
                    self.worker_peak_kb[pid] = max(self.worker_peak_kb.get(pid, 0), hwm)
                total += _status_kb(pid, "VmRSS")
            self.total_peak_kb = max(self.total_peak_kb, total)
            self._stop.wait(self.interval)

    def __enter__(self) -> "MemoryMonitor":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_stage(name: str, fn, n_scans: int, results: list) -> object:
    """Run one stage under a memory monitor; record its wall and CPU time and peak memory."""
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    self_before = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.perf_counter()
    with MemoryMonitor() as monitor:
        out = fn()
    wall = time.perf_counter() - wall
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = resource.getrusage(resource.RUSAGE_SELF)
    cpu_workers = (children.ru_utime - children_before.ru_utime) + (children.ru_stime - children_before.ru_stime)
    cpu_main = (own.ru_utime - self_before.ru_utime) + (own.ru_stime - self_before.ru_stime)
    workers = sorted(monitor.worker_peak_kb.values(), reverse=True)
    results.append({"stage": name, "wall": wall, "cpu_workers": cpu_workers, "cpu_main": cpu_main,
                    "workers": len(workers), "worker_peak_gb": (workers[0] / 1024**2) if workers else 0.0,
                    "worker_peaks_gb": [kb / 1024**2 for kb in workers],
                    "total_peak_gb": monitor.total_peak_kb / 1024**2, "n_scans": n_scans})
    r = results[-1]
    print(f"  {name:<12s} {wall:7.1f} s wall ({wall / n_scans:5.1f} s/scan), CPU {cpu_workers / n_scans:5.1f} s/scan "
          f"in workers + {cpu_main:5.1f} s main; peak RSS per worker {r['worker_peak_gb']:.2f} GB "
          f"(workers: {', '.join(f'{g:.2f}' for g in r['worker_peaks_gb']) or '-'}); all processes "
          f"{r['total_peak_gb']:.2f} GB", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scans", type=int, default=12, help="manifest rows to run (spread over the cohort)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (the cores to project for)")
    parser.add_argument("--profile", default="paper", help="parameter profile (notebooks/params/<profile>.yaml)")
    parser.add_argument("--workdir", help="workdir (default: a temporary folder, removed afterwards)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary workdir")
    args = parser.parse_args()

    p01, p02, p03 = (profile_parameters(args.profile, stem)
                     for stem in ("01_cohort", "02_segmentation", "03_projections"))
    manifest_path = project_path(p01["manifest"])
    table = read_manifest(manifest_path)
    selected = spread_rows(table, args.scans)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-load-"))
    n = len(selected)
    seg = segmentation_params(**{k: p02[k] for k in ("threshold_hu", "closing_mm", "opening_mm", "inner_mm",
                                                     "outer_mm", "tophat_mm", "pleura_mm", "pleura_hu")})
    proj = ProjectionParams(grid_shape=p03["grid_shape"], angles=p03["angles"], windows=p03["windows"],
                            whole_hu_range=p03["whole_hu_range"], statistic=p03["statistic"],
                            whole_mask=p03["whole_mask"])
    print(f"profile {args.profile}: {n} scans of {len(table)} ({int((selected['group'] == 'cpa').sum())} CPA, "
          f"{selected['patient_id'].nunique()} patients), phantoms {p01['phantom_shape']} at "
          f"{p01['phantom_spacing']} mm, grid {list(proj.grid_shape)}, {len(proj.rotations)} rotations, "
          f"whole_mask {proj.whole_mask}; {args.workers} workers; workdir {work}")
    print(f"cores: {os.cpu_count()}, load average before: {tuple(round(v, 2) for v in os.getloadavg())}", flush=True)

    results: list[dict] = []
    try:
        scans_dir = stage_dir(work, "scans", scans_stage_params(selected, p01["phantom_shape"], p01["phantom_spacing"],
                                                                p01["difficulty"]))
        run_stage("scans", lambda: build_scans(selected, manifest_path.parent, scans_dir, p01["phantom_shape"],
                                               p01["phantom_spacing"], p01["difficulty"], n_jobs=args.workers,
                                               progress=False), n, results)
        masks_dir = stage_dir(work, "masks", seg, upstream=scans_dir.name)
        run_stage("masks", lambda: segment_cohort(scans_dir, masks_dir, seg, n_jobs=args.workers, progress=False),
                  n, results)
        run_stage("projections", lambda: preprocess_cohort(work, proj, n_jobs=args.workers, progress=False),
                  n, results)
        run_stage("datasets", lambda: build_datasets(work, fractions=tuple(p03["split_fractions"]),
                                                     seed=p03["seed"], progress=False), n, results)
        sizes = {stage: sum(f.stat().st_size for f in (work / stage).rglob("*") if f.is_file()) / n
                 for stage in ("scans", "masks", "projections", "datasets")}
    finally:
        if not args.workdir and not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print(f"load average after: {tuple(round(v, 2) for v in os.getloadavg())}")
    wall = sum(r["wall"] for r in results)
    cpu = sum(r["cpu_workers"] + r["cpu_main"] for r in results)
    worker_peak = max(r["worker_peak_gb"] for r in results)
    print(f"\n{n} scans: {wall:.1f} s wall, {cpu:.1f} s CPU in all; disk per scan: "
          + ", ".join(f"{stage} {size / 1e6:.1f} MB" for stage, size in sizes.items()))
    print(f"peak RSS per worker: {worker_peak:.2f} GB (target <= 4 GB: "
          f"{'met' if worker_peak <= 4 else 'NOT met'}); all processes together: "
          f"{max(r['total_peak_gb'] for r in results):.2f} GB; the main process: "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2:.2f} GB")
    print(f"projected for the whole cohort ({COHORT_SCANS} scans) with {args.workers} workers:")
    by_wall = wall / n * COHORT_SCANS
    by_cpu = sum(r["cpu_workers"] for r in results) / n * COHORT_SCANS / args.workers \
        + sum(r["cpu_main"] for r in results) / n * COHORT_SCANS
    print(f"  from the wall time per scan: {by_wall / 3600:.2f} h "
          + " + ".join(f"{r['stage']} {r['wall'] / n * COHORT_SCANS / 60:.0f} min" for r in results))
    print(f"  from the CPU time per scan / {args.workers} cores (an idle machine): {by_cpu / 3600:.2f} h")
    print(f"  disk: {sum(sizes.values()) * COHORT_SCANS / 1e9:.1f} GB")


if __name__ == "__main__":
    main()
