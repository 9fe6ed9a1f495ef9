"""A number with its interval, and a chapter's numbers as the summary reads them.

Every headline number of the study carries a patient-level 95 % confidence interval. An
:class:`Estimate` holds the three together; :func:`flatten` writes it as the three flat keys that
the results files and the summary page use (``name``, ``name_ci_low``, ``name_ci_high``), and
:meth:`Estimate.text` formats it, once for every chapter: ``0.950 [0.900, 0.990]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

#: The suffixes of an interval's bounds in a flat results mapping.
LOW, HIGH = "_ci_low", "_ci_high"
#: How a missing number reads in the book.
MISSING = "n/a"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


@dataclass(frozen=True)
class Estimate:
    """A value and its 95 % confidence interval (NaN or None where there is none)."""

    value: float
    low: float | None = None
    high: float | None = None

    @classmethod
    def of(cls, mapping: Mapping[str, Any]) -> "Estimate":
        """From a mapping with ``value`` (or ``difference``), ``ci_low`` and ``ci_high``:
        the rows of :func:`sapsam_utils.learning.evaluation.evaluate` and the dicts of ``compare``
        and ``mean_ci``."""
        value = mapping["value"] if "value" in mapping else mapping["difference"]
        return cls(_float(value), _float(mapping.get("ci_low")), _float(mapping.get("ci_high")))

    @classmethod
    def read(cls, results: Mapping[str, Any], name: str) -> "Estimate":
        """The estimate ``name`` of a results mapping, flat or holding estimates (bounds None when
        it has none; the value None too when the mapping lacks ``name``)."""
        if isinstance(results.get(name), Estimate):
            return results[name]
        return cls(results.get(name), results.get(name + LOW), results.get(name + HIGH))

    @property
    def has_interval(self) -> bool:
        return not (_missing(self.low) or _missing(self.high))

    def excludes(self, reference: float = 0.0) -> bool:
        """Whether the interval lies wholly above or wholly below ``reference``."""
        return self.has_interval and (self.low > reference or self.high < reference)

    def text(self, digits: int = 3, significant: bool = False) -> str:
        """``0.950 [0.900, 0.990]`` (``digits`` decimals, or significant digits); ``n/a`` when missing."""
        if _missing(self.value):
            return MISSING
        shown = [format_number(v, digits, significant) for v in (self.value, self.low, self.high)]
        return f"{shown[0]} [{shown[1]}, {shown[2]}]" if self.has_interval else shown[0]

    def __str__(self) -> str:
        return self.text()


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def format_number(value: Any, digits: int = 3, significant: bool = False) -> str:
    """A number for the book: ``digits`` decimals (or significant digits); ``n/a`` when missing."""
    if _missing(value):
        return MISSING
    return f"{value:.{digits}g}" if significant else f"{value:.{digits}f}"


def estimates(rows, name: str) -> dict[str, Estimate]:
    """``{name: Estimate}`` from rows with ``value``, ``ci_low`` and ``ci_high`` (the table of
    :func:`sapsam_utils.learning.evaluation.evaluate`, a DataFrame, or a list of mappings).

    ``name`` is a format string over each row's columns, e.g. ``"test_{metric}_{level}"``.
    """
    records = rows.to_dict("records") if hasattr(rows, "to_dict") else rows
    return {name.format(**row): Estimate.of(row) for row in records}


def estimate_texts(rows, digits: int = 3) -> list[str]:
    """Each row's :class:`Estimate` as text (:meth:`Estimate.text`), for a table's column."""
    records = rows.to_dict("records") if hasattr(rows, "to_dict") else rows
    return [Estimate.of(row).text(digits) for row in records]


def flatten(results: Mapping[str, Any]) -> dict[str, Any]:
    """A chapter's numbers as flat scalars: each :class:`Estimate` becomes ``name``,
    ``name_ci_low`` and ``name_ci_high``; NaN becomes None (``null`` in the file)."""
    flat: dict[str, Any] = {}
    for name, value in results.items():
        if isinstance(value, Estimate):
            flat[name] = value.value
            if value.low is not None or value.high is not None:  # an interval that was computed
                flat.update({name + LOW: value.low, name + HIGH: value.high})
        else:
            flat[name] = value
    return {name: None if _missing(value) else value for name, value in flat.items()}
