"""The "paper vs this reproduction" table, from the results JSONs of the executed notebooks.

``book/paper_numbers.yaml`` lists the paper's reported numbers, each with the notebook and the
results key where this reproduction writes its own. A row marked ``needs: public_ct`` is measured
on the public CT cases: when its notebook found none (results ``public_ct_available: false``),
the row says "not measured: public CT not available", never a number. :func:`write_summary` reads
``{workdir}/results/<stem>.json`` of every executed notebook (the workdir that the provenance
records for it) and writes ``book/executed/summary.md``, which ``book/summary.md`` includes:
a headline table (paper | ours, or "not yet reproduced") and every number of the build.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from sapsam_utils.core.paper import PAPER_NUMBERS, load_paper_numbers
from sapsam_utils.core.paths import project_path
from sapsam_utils.core.results import Estimate
from sapsam_utils.report.provenance import Provenance
from sapsam_utils.stages.workdir import read_results as read_chapter_results
from sapsam_utils.stages.workdir import results_path

NOT_REPRODUCED = "not yet reproduced"
#: A chapter that ran but whose parameters left this number out (e.g. an axis the profile skips).
NOT_IN_RUN = "not measured in this run (the chapter's parameters leave it out)"
#: Shown for a row that needs the public CT cases when its notebook did not find them.
NOT_AVAILABLE = "not measured: public CT not available"


def read_results(record: Provenance) -> dict[str, dict[str, Any] | None]:
    """Each executed notebook's results (``None`` when it wrote no results file)."""
    results = {}
    for stem, nb in record.notebooks.items():
        workdir = project_path(nb["parameters"].get("workdir", "work/default"))
        results[stem] = read_chapter_results(workdir, stem) if results_path(workdir, stem).is_file() else None
    return results


def format_value(value: Any) -> str:
    """Numbers to 3 significant digits (integers whole), booleans as yes/no, None as n/a."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.3g}"
    return str(value)


def ours(row: dict[str, Any], results: dict[str, dict[str, Any] | None]) -> str:
    """This reproduction's value for one row of the paper's numbers, or why there is none."""
    stem = row["notebook"]
    if stem not in results:
        return f"{NOT_REPRODUCED} ({stem} not run in this build)"
    metrics = results[stem]
    if metrics is None:
        return f"{NOT_REPRODUCED} ({stem} wrote no results)"
    if row.get("needs") == "public_ct" and metrics.get("public_ct_available") is False:
        return NOT_AVAILABLE
    if row["key"] not in metrics:
        return NOT_REPRODUCED if metrics.get("implemented") is False else NOT_IN_RUN
    estimate = Estimate.read(metrics, row["key"])
    if estimate.has_interval:  # a 95 % confidence interval written beside the number
        return estimate.text(3, significant=True)
    return format_value(estimate.value)


def render_summary(rows: list[dict[str, Any]], results: dict[str, dict[str, Any] | None],
                   record: Provenance) -> str:
    """MyST markdown: ``##`` headline table, then ``##`` all numbers with a ``###`` per notebook."""
    profiles = sorted({nb["profile"] for nb in record.notebooks.values()})
    lines = ["## Headline numbers", ""]
    lines.append(f"This build ran profile(s): {', '.join(f'`{p}`' for p in profiles) or 'none'}.")
    lines += ["", "| section | quantity | paper | this reproduction |", "|---|---|---|---|"]
    if not rows:
        lines.append(f"| | no {PAPER_NUMBERS} in this project | | |")
    for row in rows:
        paper = "—" if row["paper"] is None else format_value(row["paper"])
        lines.append(f"| {row['notebook']} | {row['quantity']} | {paper} | {ours(row, results)} |")
    lines += ["", "## All numbers of this build", ""]
    for stem, metrics in results.items():
        lines += [f"### {stem}", ""]
        if not metrics:
            lines += ["No numbers written.", ""]
            continue
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| `{name}` | {format_value(value)} |" for name, value in metrics.items()]
        lines.append("")
    if not results:
        lines.append("No notebook has been executed yet.")
    return "\n".join(lines).rstrip() + "\n"


def write_summary(root: str | os.PathLike, record: Provenance, path: str | os.PathLike) -> Path:
    """Render the summary of the notebooks in ``record`` to ``path`` (markdown)."""
    rows = load_paper_numbers(Path(root) / PAPER_NUMBERS) if (Path(root) / PAPER_NUMBERS).is_file() else []
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_summary(rows, read_results(record), record), encoding="utf-8")
    return path
