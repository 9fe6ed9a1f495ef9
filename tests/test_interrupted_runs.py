"""Interrupted and failed runs of the cohort stages: they resume, leave nothing half-written, and
end with the results of an uninterrupted run.

On a tiny manifest of four phantom scans on the smoke profile's grid (in ``tmp_path``):

* the ``scans`` and ``masks`` stages, run as chapters 01 and 02 run them in a subprocess, are
  killed (``SIGKILL``: nothing can clean up) while writing the second scan; run again, they skip
  the finished scan (same inode, same mtime), remove the half-written temporaries, and the files
  equal those of an uninterrupted run (timing fields of ``segmentation.json`` excepted);
* a Ctrl-C (``KeyboardInterrupt``) leaves nothing of the scan being written, at once;
* a worker process that dies (``os._exit`` halfway through writing a scan, with ``n_jobs=2``) and
  a full disk on one write (``OSError(ENOSPC)``) give an error naming the scan, and the stage
  resumes.

Training interrupted after an epoch resumes exactly: ``tests/test_training.py``.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sapsam_utils.stages import masks as masks_stage
from sapsam_utils.stages import scans as scans_stage
from sapsam_utils.core.files import atomic_file
from sapsam_utils.stages.workdir import current_stage, stage_dir
from sapsam_utils.stages.scans import ScanBuildError, build_scans, scans_stage_params
from sapsam_utils.synthetic.cohort import simulate_cohort
from sapsam_utils.data.manifest import read_manifest, write_manifest
from sapsam_utils.core.parallel import WorkerDied
from sapsam_utils.core.paths import project_root
from sapsam_utils.imaging.segmentation import segmentation_params
from sapsam_utils.stages.masks import segment_cohort
from sapsam_utils.core.volume import read_volume

GRID = dict(phantom_shape=(54, 64, 64), phantom_spacing=(6.0, 5.6, 5.6), difficulty=1.0)  # the smoke profile's
TIMING = {"seconds", "step_seconds"}  # segmentation.json's timing fields


def run_scans(manifest_path, workdir, n_jobs=1, scheduler="processes"):
    """The scans stage as chapter 01 runs it."""
    table = read_manifest(manifest_path)
    params = scans_stage_params(table, GRID["phantom_shape"], GRID["phantom_spacing"], GRID["difficulty"])
    out = stage_dir(workdir, "scans", params)
    return build_scans(table, Path(manifest_path).parent, out, **GRID, n_jobs=n_jobs, progress=False,
                       scheduler=scheduler)


def run_masks(workdir, n_jobs=1):
    """The masks stage as chapter 02 runs it."""
    params = segmentation_params()
    key, scans_dir = current_stage(workdir, "scans")
    masks_dir = stage_dir(workdir, "masks", params, upstream=key)
    return segment_cohort(scans_dir, masks_dir, params, n_jobs=n_jobs, progress=False)


# The stage in a subprocess that SIGKILLs itself in its Nth call of the stage's volume writer, with
# a temporary file half written: as a kill from outside (OOM killer, kill -9, power cut) would.
KILLED = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
import test_interrupted_runs as t
from sapsam_utils.core.files import atomic_file
module = __import__("sapsam_utils." + {module!r}, fromlist=["write_volume"])
real, calls = module.write_volume, [0]
def write_volume(volume, path):
    calls[0] += 1
    if calls[0] == {kill_at}:
        with atomic_file(path) as tmp:
            tmp.write_bytes(b"half a volume")
            os.kill(os.getpid(), signal.SIGKILL)
    return real(volume, path)
module.write_volume = write_volume
if {stage!r} == "scans":
    t.run_scans({manifest!r}, {workdir!r})
else:
    t.run_masks({workdir!r})
"""


def run_killed(stage, workdir, manifest, kill_at):
    module = {"scans": "stages.scans", "masks": "stages.masks"}[stage]
    code = KILLED.format(tests=str(Path(__file__).parent), module=module, kill_at=kill_at, stage=stage,
                         manifest=str(manifest), workdir=str(workdir))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(project_root()), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == -signal.SIGKILL, done.stderr


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    folder = tmp_path_factory.mktemp("manifest")
    table = simulate_cohort(0)
    rows = table[table["patient_id"] == table["patient_id"].iloc[0]].iloc[:3]  # a patient's scans
    rows = pd.concat([rows, table[table["group"] == "control"].iloc[:1]])  # and a control, last
    write_manifest(rows, folder / "manifest.csv")
    return folder / "manifest.csv"


@pytest.fixture(scope="module")
def reference(manifest, tmp_path_factory):
    """An uninterrupted run of both stages."""
    workdir = tmp_path_factory.mktemp("reference")
    run_scans(manifest, workdir)
    run_masks(workdir)
    return workdir


def scan_ids(manifest):
    return read_manifest(manifest)["scan_id"].tolist()


def leftovers(workdir):
    return sorted(str(p.relative_to(workdir)) for p in Path(workdir).rglob(".tmp-*"))


def stamps(folder):
    """Inode and mtime of every file of a folder: unchanged when a scan is not redone."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(Path(folder).iterdir())}


def assert_same_stage(workdir, reference, stage, ids):
    """Every file of every scan of ``stage`` equals the reference run's (NIfTI: voxels and grid)."""
    _, mine = current_stage(workdir, stage)
    _, theirs = current_stage(reference, stage)
    assert mine.name == theirs.name  # the same parameters: the same key
    for scan_id in ids:
        names = sorted(p.name for p in (theirs / scan_id).iterdir())
        assert sorted(p.name for p in (mine / scan_id).iterdir()) == names
        for name in names:
            a, b = mine / scan_id / name, theirs / scan_id / name
            if name.endswith(".nii.gz"):
                va, vb = read_volume(a), read_volume(b)
                assert np.array_equal(va.array, vb.array) and va.array.dtype == vb.array.dtype, (scan_id, name)
                assert va.spacing == vb.spacing and va.origin == vb.origin
            else:
                ja, jb = json.loads(a.read_text()), json.loads(b.read_text())
                assert {k: v for k, v in ja.items() if k not in TIMING} == {k: v for k, v in jb.items() if k not in TIMING}
    if stage == "scans":
        assert (mine / "cohort.csv").read_bytes() == (theirs / "cohort.csv").read_bytes()


def test_killed_scans_stage_resumes_to_the_uninterrupted_result(manifest, reference, tmp_path):
    ids = scan_ids(manifest)
    # a phantom writes ct, truth_lungs, truth_signs: call 5 is the second scan's truth_lungs
    run_killed("scans", tmp_path, manifest, kill_at=5)
    _, scans = current_stage(tmp_path, "scans")
    assert (scans / ids[0] / "scan.json").is_file() and not (scans / ids[1]).exists()
    assert any(name.startswith(f"scans/{scans.name}/.tmp-{ids[1]}-") for name in leftovers(tmp_path))
    finished = stamps(scans / ids[0])

    summary = run_scans(manifest, tmp_path)
    assert summary["built"].tolist() == [False, True, True, True]
    assert stamps(scans / ids[0]) == finished  # not redone
    assert leftovers(tmp_path) == []
    assert_same_stage(tmp_path, reference, "scans", ids)


def test_killed_masks_stage_resumes_to_the_uninterrupted_result(manifest, reference, tmp_path):
    ids = scan_ids(manifest)
    run_scans(manifest, tmp_path)
    run_killed("masks", tmp_path, manifest, kill_at=4)  # two masks per scan: the second scan's refined
    _, masks = current_stage(tmp_path, "masks")
    assert (masks / ids[0] / "segmentation.json").is_file() and not (masks / ids[1]).exists()
    assert any(name.startswith(f"masks/{masks.name}/.tmp-{ids[1]}-") for name in leftovers(tmp_path))
    finished = stamps(masks / ids[0])

    summary = run_masks(tmp_path)
    assert summary["skipped"].tolist() == [True, False, False, False]
    assert stamps(masks / ids[0]) == finished
    assert leftovers(tmp_path) == []
    assert_same_stage(tmp_path, reference, "masks", ids)


def test_ctrl_c_leaves_nothing_of_the_scan_being_written(manifest, monkeypatch, tmp_path):
    ids = scan_ids(manifest)
    real, calls = scans_stage.write_volume, [0]

    def interrupted(volume, path):
        calls[0] += 1
        if calls[0] == 5:
            with atomic_file(path) as tmp:
                tmp.write_bytes(b"half a volume")
                raise KeyboardInterrupt
        return real(volume, path)

    monkeypatch.setattr(scans_stage, "write_volume", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_scans(manifest, tmp_path)
    _, scans = current_stage(tmp_path, "scans")
    assert (scans / ids[0] / "scan.json").is_file() and not (scans / ids[1]).exists()
    assert leftovers(tmp_path) == []  # cleaned at once, not only at the next run


def test_full_disk_names_the_scan_and_the_stages_resume(manifest, reference, monkeypatch, tmp_path):
    ids = scan_ids(manifest)

    def full_disk_on(module, call):
        real, calls = module.write_volume, [0]

        def write_volume(volume, path):
            calls[0] += 1
            if calls[0] == call:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            return real(volume, path)

        monkeypatch.setattr(module, "write_volume", write_volume)

    full_disk_on(scans_stage, 5)
    with pytest.raises(ScanBuildError, match=rf"scan {ids[1]} \(source phantom:\S+\): .*No space left on device"):
        run_scans(manifest, tmp_path)
    monkeypatch.undo()
    _, scans = current_stage(tmp_path, "scans")
    assert not (scans / ids[1]).exists() and leftovers(tmp_path) == []
    assert run_scans(manifest, tmp_path)["built"].tolist() == [False, True, True, True]

    full_disk_on(masks_stage, 4)
    with pytest.raises(RuntimeError, match=rf"scan {ids[1]} \(\S+/ct.nii.gz\): writing its masks to \S+ failed: "
                                           r"\[Errno 28\] No space left on device"):
        run_masks(tmp_path)
    monkeypatch.undo()
    _, masks = current_stage(tmp_path, "masks")
    assert not (masks / ids[1]).exists() and leftovers(tmp_path) == []
    assert run_masks(tmp_path)["skipped"].tolist() == [True, False, False, False]
    assert_same_stage(tmp_path, reference, "scans", ids)
    assert_same_stage(tmp_path, reference, "masks", ids)


def build_scan_or_die(row, *args):
    """``build_scan``, except that the worker building the control (the last scan) dies halfway
    through writing it."""
    if row["group"] == "control":
        real, calls = scans_stage.write_volume, [0]

        def write_volume(volume, path):
            calls[0] += 1
            if calls[0] == 2:
                os._exit(3)
            return real(volume, path)

        scans_stage.write_volume = write_volume
    return scans_stage.build_scan(row, *args)


#: What each engine says when the worker that builds a scan dies (Dask retries it on other workers first).
DIED = {"processes": "a worker process died .* while running scans .*{scan}.*run again to resume",
        "dask": "scans {scan}: the Dask workers running it died .*run again to resume"}


@pytest.mark.parametrize("scheduler", ["processes", "dask"])
def test_a_dead_worker_names_the_scan_and_the_stage_resumes(manifest, reference, monkeypatch, tmp_path, scheduler):
    if scheduler == "dask":
        pytest.importorskip("distributed")
    ids = scan_ids(manifest)
    dying = ids[3]
    monkeypatch.setattr(scans_stage, "build_scan", build_scan_or_die)
    with pytest.raises(WorkerDied, match=DIED[scheduler].format(scan=dying)):
        run_scans(manifest, tmp_path, n_jobs=2, scheduler=scheduler)
    monkeypatch.undo()
    _, scans = current_stage(tmp_path, "scans")
    assert not (scans / dying).exists()
    done = [s for s in ids if (scans / s / "scan.json").is_file()]
    summary = run_scans(manifest, tmp_path, n_jobs=2)
    assert summary.set_index("scan_id")["built"].to_dict() == {s: s not in done for s in ids}
    assert leftovers(tmp_path) == []
    assert_same_stage(tmp_path, reference, "scans", ids)
