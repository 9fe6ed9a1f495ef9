"""The frame: the runner (order, parameters, failure handling), provenance, profiles, summary."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import nbformat
import pytest

from conftest import results_cell
from sapsam_utils.core.paper import PAPER_NUMBERS, load_paper_numbers
from sapsam_utils.report import provenance, runner, summary
from sapsam_utils.learning.training import TrainParams
from sapsam_utils.report.provenance import Provenance

STEMS = ["01_cohort", "02_segmentation", "03_projections", "04_disease_classifier",
         "05_sign_labelling", "06_gradcam", "07_survival"]
PROFILES = ["smoke", "default", "paper"]


# --- the book's table of contents and the profiles -------------------------------------------

def test_toc_lists_the_seven_notebooks_in_order_between_intro_and_results(root):
    files = runner.toc_files(root / "_toc.yml")
    assert files[0] == "book/intro"
    assert runner.toc_notebooks(root) == STEMS
    assert files[-2:] == ["book/summary", "book/reproducibility"]
    for page in ("intro", "summary", "reproducibility"):
        assert (root / "book" / f"{page}.md").is_file()


@pytest.mark.parametrize("profile", PROFILES)
def test_profiles_have_common_parameters_and_one_block_per_notebook(root, profile):
    blocks = runner.load_profile(root, profile)
    assert blocks["common"] == {"manifest": "data_manifest.csv", "workdir": f"work/{profile}", "seed": 0,
                                "public_ct_root": "../shared/ct", "scheduler": "processes"}
    assert set(blocks) == {"common", *STEMS}


def test_notebook_parameters_merge_common_block_and_workdir_override():
    blocks = {"common": {"workdir": "work/x", "seed": 0, "manifest": "m.csv"}, "02_seg": {"seed": 5, "radius": 10}}
    assert runner.notebook_parameters(blocks, "02_seg") == {"workdir": "work/x", "seed": 5, "manifest": "m.csv",
                                                            "radius": 10}
    assert runner.notebook_parameters(blocks, "02_seg", workdir="/tmp/w")["workdir"] == "/tmp/w"
    with pytest.raises(runner.RunnerError, match="no block for notebook '03_proj'"):
        runner.notebook_parameters(blocks, "03_proj")


def test_load_profile_errors_name_the_file(tmp_path):
    with pytest.raises(runner.RunnerError, match="no such profile"):
        runner.load_profile(tmp_path, "fast")
    (tmp_path / "notebooks" / "params").mkdir(parents=True)
    (tmp_path / "notebooks" / "params" / "smoke.yaml").write_text("common: [1, 2]\n")
    with pytest.raises(runner.RunnerError, match=r"smoke.yaml: block 'common' must be a mapping"):
        runner.load_profile(tmp_path, "smoke")


def test_kernel_spec_runs_this_interpreter():
    from jupyter_client.kernelspec import KernelSpecManager

    name = runner.ensure_kernel()
    assert KernelSpecManager().get_kernel_spec(name).argv[0] == sys.executable


# --- the runner on tiny projects ---------------------------------------------------------------

def test_runner_executes_in_order_hides_injected_parameters_and_records_provenance(make_project, tmp_path):
    project = make_project({
        "01_first": [results_cell("01_first", {"n_scans": 4}), "print(seed)"],
        "02_second": ["import json, pathlib\n"
                      "assert (pathlib.Path(workdir) / 'results' / '01_first.json').is_file()",
                      results_cell("02_second", {"test_accuracy": 0.875})],
    })
    logged = []
    assert runner.run(project, "smoke", log=logged.append) == ["01_first", "02_second"]
    assert [line.split(":")[0] for line in logged] == ["[runner] 01_first", "[runner] 01_first",
                                                       "[runner] 02_second", "[runner] 02_second"]

    executed = project / "book" / "executed"
    nb = nbformat.read(executed / "01_first.ipynb", as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "remove-cell" in injected[0].metadata.tags
    assert f"workdir = \"{tmp_path / 'work'}\"" in injected[0].source
    note = nb.cells[nb.cells.index(injected[0]) + 1]
    assert note.cell_type == "markdown" and "`seed = 3`" in note.source and "`smoke`" in note.source
    assert any(o.get("text") == "3\n" for c in nb.cells if c.cell_type == "code" for o in c.outputs)

    record = json.loads((executed / "provenance.json").read_text())
    assert list(record["notebooks"]) == ["01_first", "02_second"]
    first = record["notebooks"]["01_first"]
    assert first["profile"] == "smoke" and first["seeds"] == {"seed": 3}
    assert first["parameters"]["workdir"] == str(tmp_path / "work")
    assert "numpy" in record["environment"]["packages"]
    assert "| 01_first | smoke | `seed=3` |" in (executed / "provenance.md").read_text()
    table = (executed / "summary.md").read_text()
    assert "| `n_scans` | 4 |" in table and "| `test_accuracy` | 0.875 |" in table


def test_failing_notebook_stops_the_runner_naming_notebook_and_cell(make_project, tmp_path):
    project = make_project({
        "01_ok": [results_cell("01_ok", {"n": 1})],
        "02_broken": ["x = 1", "raise ValueError('planted failure')"],
        "03_after": [results_cell("03_after", {"n": 3})],
    })
    executed = project / "book" / "executed"
    executed.mkdir(parents=True)
    (executed / "02_broken.ipynb").write_text("{}")  # a stale success from an earlier run

    done = subprocess.run([sys.executable, "-m", "sapsam_utils.report.runner", "--root", str(project),
                           "--profile", "smoke"], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    # [4]: papermill's injected-parameters cell runs after the parameters cell, before "x = 1".
    expected = "notebook 02_broken failed in cell [4] (raise ValueError('planted failure')): ValueError: planted failure"
    assert expected in done.stderr
    assert (executed / "01_ok.ipynb").is_file()
    assert not (executed / "02_broken.ipynb").exists(), "a failed notebook must never reach the book"
    assert not (executed / "03_after.ipynb").exists(), "the runner must stop at the first failure"
    assert not (tmp_path / "work" / "results" / "03_after.json").exists()
    failed = nbformat.read(tmp_path / "work" / "failed" / "02_broken.ipynb", as_version=4)
    assert any(o.get("ename") == "ValueError" for c in failed.cells if c.cell_type == "code" for o in c.outputs)
    assert list(json.loads((executed / "provenance.json").read_text())["notebooks"]) == ["01_ok"]


def test_unknown_profile_parameter_is_refused_before_anything_runs(make_project, tmp_path):
    project = make_project({"01_a": [results_cell("01_a", {"n": 1})], "02_b": ["pass"]},
                           blocks={"02_b": {"raduis": 3}})
    with pytest.raises(runner.RunnerError, match=r"02_b.ipynb: the profile passes \['raduis'\]"):
        runner.run(project, "smoke", log=lambda _: None)
    assert not (tmp_path / "work" / "results" / "01_a.json").exists()


def test_a_common_setting_goes_only_to_the_notebooks_that_define_it(make_project, tmp_path):
    common = {"manifest": "data_manifest.csv", "workdir": str(tmp_path / "work"), "seed": 3, "public_ct_root": "ct"}
    project = make_project({"01_a": ["pass"], "02_b": ["pass"]}, blocks={"common": common})
    path = project / "notebooks" / "01_a.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells[1].source += '\npublic_ct_root = "../shared/ct"  # the public CT cases'
    nbformat.write(nb, path)
    plan = runner.plan_run(project, "smoke")
    assert plan["01_a"]["public_ct_root"] == "ct" and "public_ct_root" not in plan["02_b"]
    plan = runner.plan_run(project, "smoke", public_ct_root="/elsewhere")  # --public-ct-root
    assert plan["01_a"]["public_ct_root"] == "/elsewhere" and "public_ct_root" not in plan["02_b"]
    assert runner.plan_run(project, "smoke", only=["02_b"]) == {"02_b": {k: v for k, v in common.items()
                                                                        if k != "public_ct_root"}}
    profile = project / "notebooks" / "params" / "smoke.yaml"
    profile.write_text(profile.read_text().replace("public_ct_root:", "public_ct_rot:"))
    with pytest.raises(runner.RunnerError, match=r"common block passes \['public_ct_rot'\], which no notebook"):
        runner.plan_run(project, "smoke")


def test_only_runs_a_subset_in_toc_order_and_rejects_unknown_stems(make_project, tmp_path):
    project = make_project({s: [results_cell(s, {"n": i})] for i, s in enumerate(["01_a", "02_b", "03_c"])})
    assert runner.run(project, "smoke", only=["03_c", "01_a"], log=lambda _: None) == ["01_a", "03_c"]
    assert not (tmp_path / "work" / "results" / "02_b.json").exists()
    with pytest.raises(runner.RunnerError, match="not notebook chapters"):
        runner.run(project, "smoke", only=["04_d"], log=lambda _: None)


# --- provenance --------------------------------------------------------------------------------

def test_sha256_file_matches_hashlib(tmp_path):
    path = tmp_path / "m.csv"
    path.write_bytes(b"patient_id,scan_id\nP1,S1\n")
    assert provenance.sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_git_state_reports_commit_and_dirty_flag(tmp_path):
    assert provenance.git_state(tmp_path) == {"commit": None, "dirty": None}
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "a.txt").write_text("1")
    subprocess.run([*git, "add", "a.txt"], check=True)
    subprocess.run([*git, "commit", "-qm", "c"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    assert provenance.git_state(tmp_path) == {"commit": head, "dirty": False}
    (tmp_path / "a.txt").write_text("2")
    assert provenance.git_state(tmp_path) == {"commit": head, "dirty": True}


def test_environment_lists_every_pinned_package_with_its_installed_version(root):
    from importlib.metadata import version

    env = provenance.environment(root)
    assert set(env["packages"]) >= {"numpy", "papermill", "jupyter-book", "SimpleITK"}
    assert env["packages"]["numpy"] == version("numpy")
    markdown = provenance.render_markdown(Provenance(env, {}))
    assert f"| numpy | {version('numpy')} |" in markdown and "No notebook has been executed yet." in markdown


def test_notebook_record_hashes_the_manifest_the_notebooks_read(root):
    record = provenance.notebook_record(root, "smoke", {"manifest": str(root / "pyproject.toml"), "seed": 1,
                                                        "split_seed": 2, "workdir": "w"}, 0.0, 1.23)
    assert record["manifest_sha256"] == provenance.sha256_file(root / "pyproject.toml")
    assert record["seeds"] == {"seed": 1, "split_seed": 2} and record["seconds"] == 1.2


# --- the summary page --------------------------------------------------------------------------

def test_paper_numbers_name_toc_notebooks(root):
    rows = load_paper_numbers(root / PAPER_NUMBERS)
    assert rows and {row["notebook"] for row in rows} <= set(STEMS)


def test_summary_marks_public_ct_numbers_not_measured_when_the_cases_were_not_found():
    rows = [{"notebook": "02_s", "quantity": "nodules kept", "paper": None, "key": "real_share", "needs": "public_ct"},
            {"notebook": "02_s", "quantity": "dice", "paper": None, "key": "dice"}]
    record = Provenance({}, {"02_s": {"profile": "smoke"}})
    absent = summary.render_summary(rows, {"02_s": {"public_ct_available": False, "dice": 0.9}}, record)
    assert f"| 02_s | nodules kept | — | {summary.NOT_AVAILABLE} |" in absent
    assert summary.NOT_AVAILABLE == "not measured: public CT not available"
    assert "| 02_s | dice | — | 0.9 |" in absent
    present = summary.render_summary(rows, {"02_s": {"public_ct_available": True, "real_share": 0.95}}, record)
    assert "| 02_s | nodules kept | — | 0.95 |" in present
    without_labels = summary.render_summary(rows, {"02_s": {"public_ct_available": True,
                                                            "real_share": "not measured: no lesion labels"}}, record)
    assert "| 02_s | nodules kept | — | not measured: no lesion labels |" in without_labels


def test_summary_says_what_is_not_reproduced():
    rows = [{"notebook": "01_c", "quantity": "scans", "paper": 352, "key": "n_scans"},
            {"notebook": "04_d", "quantity": "accuracy", "paper": None, "key": "test_accuracy"},
            {"notebook": "07_s", "quantity": "auc", "paper": 0.5, "key": "test_auc"}]
    rows.append({"notebook": "01_c", "quantity": "sagittal", "paper": 0.8, "key": "sagittal_auc"})
    results = {"01_c": {"n_scans": 12, "dice": 0.98765, "auc": None}, "04_d": {"implemented": False}}
    record = Provenance({}, {"01_c": {"profile": "smoke"}, "04_d": {"profile": "smoke"}})
    text = summary.render_summary(rows, results, record)
    assert "| 01_c | scans | 352 | 12 |" in text
    assert "| 04_d | accuracy | — | not yet reproduced |" in text
    assert "| 07_s | auc | 0.5 | not yet reproduced (07_s not run in this build) |" in text
    assert "| 01_c | sagittal | 0.8 | not measured in this run (the chapter's parameters leave it out) |" in text
    assert "| `dice` | 0.988 |" in text and "| `implemented` | no |" in text and "| `auc` | n/a |" in text


def test_summary_puts_a_confidence_interval_beside_a_number_that_has_one():
    rows = [{"notebook": "04_d", "quantity": "F1", "paper": 0.96, "key": "test_f1"},
            {"notebook": "04_d", "quantity": "AUC", "paper": None, "key": "test_auc"}]
    results = {"04_d": {"test_f1": 0.9462, "test_f1_ci_low": 0.8641, "test_f1_ci_high": 1.0, "test_auc": 0.99}}
    text = summary.render_summary(rows, results, Provenance({}, {"04_d": {"profile": "smoke"}}))
    assert "| 04_d | F1 | 0.96 | 0.946 [0.864, 1] |" in text
    assert "| 04_d | AUC | — | 0.99 |" in text  # no interval written, none shown


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_passes_the_runners_parameter_checks(root, profile):
    plan = runner.plan_run(root, profile)  # names and types of every block against the notebooks
    assert set(plan) == set(STEMS)
    recipe = plan["04_disease_classifier"]["recipe"]
    assert TrainParams(**recipe).as_dict()["zoom_range"] == [0.8, 1.2]  # a complete, valid recipe
