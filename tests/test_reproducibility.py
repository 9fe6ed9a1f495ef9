"""Same seed, same numbers: the smoke profile's data chapters (01-03) run twice, the second time on
a local Dask cluster of 2 worker processes (``--scheduler dask``), and once more with another seed.

Two runs into two workdirs with the same seed, on either engine, must give

- byte-identical results JSONs, except for the timing keys listed in :data:`TIMING_KEYS`;
- the same stage folders (the keys hash the parameters, never the workdir or the time);
- the same voxels in every NIfTI volume (scans, truth, both lung masks);
- the same arrays in every projection ``.npz`` (its ``meta`` less its timings) and in every
  dataset array.

A run with another seed must pick other patients, so other cohort images. The chapters run with
the public CT cases when they are there (``../shared/ct`` or ``$SAPSAM_SHARED_CT``), else without.
The runs share one module fixture: about 2 minutes on 2 cores.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import copy_project, run_runner
from sapsam_utils.core.paths import shared_ct_dir
from sapsam_utils.core.volume import read_volume

DATA_CHAPTERS = ("01_cohort", "02_segmentation", "03_projections")
#: Result keys that are wall-clock times, per notebook: the only ones allowed to differ.
TIMING_KEYS = {
    "01_cohort": set(),
    "02_segmentation": {"figure_phantom_refined_seconds", "seconds_per_scan_mean",
                        "real_lung_dx_a0002_seconds"},
    "03_projections": {"seconds_this_run", "seconds_per_scan_load_mean", "seconds_per_scan_project_mean",
                       "real_case_seconds_load", "real_case_seconds_masks", "real_case_seconds_project"},
}
#: Keys of a projection ``.npz``'s ``meta`` that are wall-clock times.
NPZ_TIMING_KEYS = {"seconds_load", "seconds_project"}


@pytest.fixture(scope="module")
def runs(root, tmp_path_factory):
    """Workdirs of two runs with the smoke profile's seed (``a`` on local processes, ``b`` on Dask),
    one of 01 with another seed (``other``)."""
    tmp = tmp_path_factory.mktemp("reproducibility")
    project = copy_project(root, tmp / "project")
    profile = yaml.safe_load((project / "notebooks" / "params" / "smoke.yaml").read_text())
    other_seed = int(profile["common"]["seed"]) + 1
    profile["common"]["seed"] = other_seed
    (project / "notebooks" / "params" / "smoke-other-seed.yaml").write_text(yaml.safe_dump(profile))
    public = shared_ct_dir() if shared_ct_dir().is_dir() else tmp / "no-public-ct"
    options = ("--public-ct-root", str(public))
    for name, scheduler in (("a", "processes"), ("b", "dask")):
        run_runner(project, "smoke", tmp / name, "--only", *DATA_CHAPTERS, *options, "--scheduler", scheduler)
    run_runner(project, "smoke-other-seed", tmp / "other", "--only", "01_cohort", *options)
    return {name: tmp / name for name in ("a", "b", "other")}


def _files(workdir: Path, pattern: str) -> dict[str, Path]:
    return {str(p.relative_to(workdir)): p for p in sorted(workdir.glob(pattern))}


def _same_file_set(a: Path, b: Path, pattern: str) -> dict[str, tuple[Path, Path]]:
    files_a, files_b = _files(a, pattern), _files(b, pattern)
    assert files_a, f"no {pattern} in {a}"
    assert set(files_a) == set(files_b), f"{pattern}: only in a: {sorted(set(files_a) - set(files_b))}, " \
                                         f"only in b: {sorted(set(files_b) - set(files_a))}"
    return {name: (files_a[name], files_b[name]) for name in files_a}


def _without(text: str, keys: set[str]) -> str:
    """A results JSON's text with the given keys' lines removed (the writer puts one key per line)."""
    lines = text.splitlines()
    kept = [line for line in lines if not any(line.lstrip().startswith(f'"{k}":') for k in keys)]
    return "\n".join(kept).replace(",\n}", "\n}")


def test_results_are_byte_identical_but_for_the_timings(runs):
    for stem in DATA_CHAPTERS:
        a, b = ((runs[r] / "results" / f"{stem}.json").read_text() for r in ("a", "b"))
        values_a, values_b = json.loads(a), json.loads(b)
        assert set(values_a) == set(values_b), stem
        differ = sorted(k for k in values_a if values_a[k] != values_b[k] and values_a[k] == values_a[k])
        assert set(differ) <= TIMING_KEYS[stem], f"{stem}: non-timing results differ: {set(differ) - TIMING_KEYS[stem]}"
        assert _without(a, TIMING_KEYS[stem]) == _without(b, TIMING_KEYS[stem]), f"{stem}: the JSON texts differ"
        assert all("seconds" in k for k in TIMING_KEYS[stem])


def test_stage_records_and_tables_are_identical(runs):
    for pattern in ("*/current.json", "*/*/stage.json", "scans/*/*/scan.json", "datasets/*/*.csv",
                    "datasets/*/*/*.csv", "datasets/*/*/*.npy"):
        for name, (a, b) in _same_file_set(runs["a"], runs["b"], pattern).items():
            assert a.read_bytes() == b.read_bytes(), name


def test_volumes_and_masks_have_identical_voxels(runs):
    pairs = _same_file_set(runs["a"], runs["b"], "*/*/*/*.nii.gz")
    assert any(name.startswith("masks/") for name in pairs) and any(name.startswith("scans/") for name in pairs)
    for name, (a, b) in pairs.items():
        va, vb = read_volume(a), read_volume(b)
        assert va.array.dtype == vb.array.dtype and np.array_equal(va.array, vb.array), name
        assert va.spacing == vb.spacing and va.origin == vb.origin, name


def test_projection_arrays_are_identical(runs):
    pairs = _same_file_set(runs["a"], runs["b"], "projections/*/scans/*.npz")
    for name, (a, b) in pairs.items():
        with np.load(a) as da, np.load(b) as db:
            assert da.files == db.files, name
            for key in da.files:
                if key == "meta":
                    ma, mb = json.loads(str(da[key])), json.loads(str(db[key]))
                    assert {k: v for k, v in ma.items() if k not in NPZ_TIMING_KEYS} == \
                           {k: v for k, v in mb.items() if k not in NPZ_TIMING_KEYS}, name
                else:
                    assert da[key].dtype == db[key].dtype and np.array_equal(da[key], db[key]), f"{name}: {key}"


def _ct_digests(workdir: Path) -> dict[str, str]:
    return {p.parent.name: hashlib.sha256(read_volume(p).array.tobytes()).hexdigest()
            for p in workdir.glob("scans/*/*/ct.nii.gz")}


def test_another_seed_gives_other_cohort_images(runs):
    same, other = _ct_digests(runs["a"]), _ct_digests(runs["other"])
    assert same == _ct_digests(runs["b"])
    assert len(other) >= 2
    assert set(other.values()) != set(same.values())
    assert set(other.values()) - set(same.values()), "the other seed's cohort shows no image the first one lacks"
