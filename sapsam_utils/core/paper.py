"""The paper's numbers, in one place: ``book/paper_numbers.yaml``.

Each row sets one number of the paper (Zusag et al., arXiv 1902.02629) beside the metric of ours
that a chapter writes: ``notebook`` (the chapter's file stem), ``quantity`` (what is compared),
``paper`` (its value, or a short text such as "not reported") and ``key`` (the metric's name in
that chapter's results). The summary page renders every row; the chapters read the paper's values
from here (:func:`paper_value`, :func:`paper_values`), and so does the cohort simulator, which is
calibrated to the paper's counts. No other file of the study holds a number of the paper.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from .paths import project_path

#: The file, relative to the project root.
PAPER_NUMBERS = "book/paper_numbers.yaml"
REQUIRED_KEYS = ("notebook", "quantity", "paper", "key")
#: What a row may need besides the chapter's run (``needs``).
NEEDS = ("public_ct",)


def load_paper_numbers(path: str | os.PathLike = PAPER_NUMBERS) -> list[dict[str, Any]]:
    """The rows of a paper-numbers file, checked (each has the required keys; ``needs`` is known).

    Raises
    ------
    ValueError
        A row lacks a key or names an unknown ``needs``, naming the file and the row's number.
    """
    path = project_path(path)
    rows = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or []
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a list of rows")
    for number, row in enumerate(rows, 1):
        missing = [k for k in REQUIRED_KEYS if k not in row]
        if missing:
            raise ValueError(f"{path}: row {number} ({row}) lacks {missing}")
        if row.get("needs", NEEDS[0]) not in NEEDS:
            raise ValueError(f"{path}: row {number}: needs {row['needs']!r} is not one of {NEEDS}")
    return rows


@lru_cache(maxsize=None)
def _rows() -> tuple[dict[str, Any], ...]:
    return tuple(load_paper_numbers(PAPER_NUMBERS))


def paper_values(notebook: str, prefix: str = "") -> dict[str, Any]:
    """The paper's values of one chapter's rows, by our metric key (those starting with ``prefix``)."""
    return {row["key"]: row["paper"] for row in _rows()
            if row["notebook"] == notebook and row["key"].startswith(prefix)}


def paper_value(notebook: str, key: str) -> Any:
    """The paper's value beside the metric ``key`` of chapter ``notebook``.

    Raises
    ------
    KeyError
        No row of :data:`PAPER_NUMBERS` sets a paper number beside that metric.
    """
    values = paper_values(notebook)
    if key not in values:
        raise KeyError(f"{PAPER_NUMBERS} has no row for {notebook}'s metric {key!r}")
    return values[key]
