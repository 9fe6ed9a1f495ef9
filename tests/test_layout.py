"""The package's shape: layers import downwards only, the workdir is the stages' business, the
notebooks stay thin, and the paper's numbers live in one file."""

from __future__ import annotations

import ast
import re

import nbformat
import pytest

from sapsam_utils.core.paper import load_paper_numbers
from sapsam_utils.core.paths import project_root
from sapsam_utils.stages import workdir

PACKAGE = project_root() / "sapsam_utils"
NOTEBOOKS = sorted((project_root() / "notebooks").glob("*.ipynb"))
#: Which subpackages each may import (besides itself). Domain code never imports stages or report.
ALLOWED = {
    "core": set(),
    "data": {"core"},
    "synthetic": {"core", "data"},
    "imaging": {"core"},
    "learning": {"core", "data", "imaging"},
    "stages": {"core", "data", "synthetic", "imaging", "learning"},
    "report": {"core", "data", "synthetic", "imaging", "learning", "stages"},
}
#: Files only the stages may name (every workdir file a chapter could be tempted to open).
WORKDIR_FILES = (workdir.STAGE_RECORD, workdir.CURRENT_RECORD, workdir.COHORT_TABLE, workdir.MODEL_DONE,
                 *workdir.SCAN_FILES.values(), *workdir.MASK_FILES.values(), "history.csv", "predictions_",
                 "datasets.json", "splits.csv", "whole.csv", "regions.csv", ".keras")
MAX_CODE_LINES = 150


def imported_subpackages(path) -> set[str]:
    """The ``sapsam_utils`` subpackages a module imports (absolute or relative)."""
    tree = ast.parse(path.read_text())
    own = path.relative_to(PACKAGE).parts
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's own package
                base = list(own[:-1])[: len(own) - node.level]
                parts = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.startswith("sapsam_utils"):
                parts = node.module.split(".")[1:]
            else:
                continue
            if parts:
                found.add(parts[0])
            else:  # "from .. import x" at the top: x is the subpackage
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names
                         if a.name.startswith("sapsam_utils.") and a.name.count(".") >= 1)
    return found


def code_of(nb) -> str:
    return "\n".join(c.source for c in nb.cells if c.cell_type == "code")


def code_lines(nb) -> int:
    return sum(1 for c in nb.cells if c.cell_type == "code" for line in c.source.splitlines()
               if line.strip() and not line.strip().startswith("#"))


MODULES = sorted(p for p in PACKAGE.glob("*/*.py") if p.name != "__init__.py")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_layers_import_downwards_only(path):
    layer = path.relative_to(PACKAGE).parts[0]
    wrong = imported_subpackages(path) - ALLOWED[layer] - {layer}
    assert not wrong, f"{path.relative_to(PACKAGE)} ({layer}) imports {sorted(wrong)}"


def test_the_layer_check_sees_relative_and_absolute_imports(tmp_path):
    module = PACKAGE / "imaging" / "segmentation.py"
    assert "core" in imported_subpackages(module)
    assert imported_subpackages(PACKAGE / "report" / "summary.py") >= {"core", "stages"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_notebook_opens_a_workdir_file_by_name(path):
    code = code_of(nbformat.read(path, as_version=4))
    named = [name for name in WORKDIR_FILES if name in code]
    assert not named, f"{path.name} names workdir files {named}: read them through sapsam_utils.stages"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_stay_thin(path):
    assert code_lines(nbformat.read(path, as_version=4)) <= MAX_CODE_LINES


def paper_literals() -> set[str]:
    """The paper's fractional numbers as they would be typed (``0.974``): only three-decimal ones,
    which no parameter of the study happens to share."""
    values = {row["paper"] for row in load_paper_numbers()}
    return {f"{v:.3f}" for v in values if isinstance(v, float) and len(f"{v:.3f}".rstrip("0")) == 5}


def test_paper_numbers_are_typed_only_in_their_file():
    literals = paper_literals()
    assert "0.974" in literals and "0.817" in literals  # VGG19's precision, survival's precision
    pattern = re.compile(r"(?<![\d.])(" + "|".join(re.escape(v) for v in sorted(literals)) + r")(?!\d)")
    places = [(p.name, m.group(1)) for p in NOTEBOOKS for m in pattern.finditer(code_of(nbformat.read(p, as_version=4)))]
    places += [(str(p.relative_to(PACKAGE)), m.group(1)) for p in PACKAGE.rglob("*.py")
               for m in pattern.finditer(p.read_text())]
    assert not places, f"the paper's numbers typed outside book/paper_numbers.yaml: {places}"
