"""Every committed notebook: no outputs, one `parameters` cell of documented literals, book-ready.

These rules make the notebooks reproducible (papermill injects the profile's values), readable
(``papermill --help-notebook`` documents every parameter) and buildable with warnings as errors.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize

import nbformat
import pytest
from click.testing import CliRunner
from papermill.cli import papermill as papermill_cli

from sapsam_utils.report import runner
from sapsam_utils.core.paths import project_root

NOTEBOOKS = sorted((project_root() / "notebooks").glob("*.ipynb"))
COMMON = {"manifest": "data_manifest.csv", "workdir": "work/default", "seed": 0}


def parameters_cell(nb):
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"expected exactly one cell tagged 'parameters', found {len(cells)}"
    assert cells[0].cell_type == "code"
    return cells[0]


def parse_parameters(source: str) -> dict[str, tuple[object, str, str]]:
    """``{name: (value, value as written, comment)}`` of a parameters cell; fails unless every
    statement is ``name = literal  # comment`` on one line."""
    comments = {tok.start[0]: tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(io.StringIO(source).readline)
                if tok.type == tokenize.COMMENT}
    params = {}
    for node in ast.parse(source).body:
        line = source.splitlines()[node.lineno - 1]
        assert isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name), \
            f"not a plain 'name = literal' assignment: {line!r}"
        assert node.lineno == node.end_lineno, f"an assignment must fit on one line: {line!r}"
        try:
            value = ast.literal_eval(node.value)
        except ValueError:
            pytest.fail(f"not a literal (nothing derived in the parameters cell): {line!r}")
        assert comments.get(node.lineno), f"no trailing comment saying what it is: {line!r}"
        params[node.targets[0].id] = (value, ast.get_source_segment(source, node.value), comments[node.lineno])
    return params


def test_there_are_notebooks():
    assert {p.stem for p in NOTEBOOKS} == set(runner.toc_notebooks(project_root()))
    assert len(NOTEBOOKS) == 7


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"cell {index} has outputs"
            assert cell.execution_count is None, f"cell {index} has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell_holds_documented_literals_and_the_common_parameters(path):
    params = parse_parameters(parameters_cell(nbformat.read(path, as_version=4)).source)
    assert {name: value for name, (value, _, _) in params.items() if name in COMMON} == COMMON


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_papermill_help_lists_every_parameter_with_its_comment(path):
    params = parse_parameters(parameters_cell(nbformat.read(path, as_version=4)).source)
    result = CliRunner().invoke(papermill_cli, ["--help-notebook", str(path)])
    assert result.exit_code == 0, result.output
    for name, (_, written, comment) in params.items():
        assert re.search(rf"^\s+{name}: .*\(default {re.escape(written)}\)\s*\n\s+{re.escape(comment)}$",
                         result.output, re.M), f"{name} or its comment missing from:\n{result.output}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_headings_never_skip_a_level_and_there_is_one_title(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    levels = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            in_fence = False
            for line in cell.source.splitlines():
                if line.lstrip().startswith(("```", ":::")):
                    in_fence = not in_fence
                match = re.match(r"^(#+) ", line)
                if match and not in_fence:
                    levels.append(len(match.group(1)))
    assert levels.count(1) == 1, "exactly one '#' title"
    for before, after in zip(levels, levels[1:]):
        assert after <= before + 1, f"heading level jumps from {before} to {after}"


def test_figure_names_are_unique_and_prefixed_by_their_notebook():
    seen = {}
    for path in NOTEBOOKS:
        for cell in nbformat.read(path, as_version=4).cells:
            name = cell.metadata.get("mystnb", {}).get("figure", {}).get("name")
            if name:
                assert name.startswith(f"fig-{path.stem}-"), f"{path.name}: figure name {name!r}"
                assert name not in seen, f"{name} in {path.name} and {seen.get(name)}"
                seen[name] = path.name


@pytest.mark.parametrize("profile", runner.PROFILES)
def test_profiles_pass_only_parameters_the_notebooks_define(root, profile):
    plan = runner.plan_run(root, profile)  # raises on a name that a notebook does not define
    assert set(plan) == {path.stem for path in NOTEBOOKS}
    readers = {stem for stem, params in plan.items() if "public_ct_root" in params}
    assert readers == {"01_cohort", "02_segmentation", "03_projections", "06_gradcam"}


def test_every_notebook_is_a_book_chapter(root):
    assert {p.stem for p in NOTEBOOKS} <= set(runner.toc_notebooks(root))


def test_no_dollar_math_because_mathjax_would_come_from_a_cdn(root):
    """MathJax is loaded from the network; a book read offline (and the browser check) would fail
    to load it on every page once one page holds ``$...$`` math, so formulas are plain text."""
    sources = [(path.name, cell.source) for path in NOTEBOOKS
               for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "markdown"]
    sources += [(path.name, path.read_text()) for path in (root / "book").glob("*.md")]
    found = [name for name, text in sources if re.search(r"\$[^$\s][^$]*\$|\{math\}", text)]
    assert not found, f"math that needs MathJax in {sorted(set(found))}"
