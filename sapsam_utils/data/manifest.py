"""The cohort manifest (``data_manifest.csv``): its schema, its validator and its paths.

One row per CT study. Columns, in this order:

* ``patient_id``, ``scan_id`` (unique; letters, digits, ``.``, ``_``, ``-``, since it names the
  scan's folder), ``scan_date`` (ISO date ``YYYY-MM-DD``), ``source``, ``group``
  (``control`` | ``cpa``);
* the 24 sparse labels :data:`~sapsam_utils.core.regions.LABEL_COLUMNS`, 0 or 1;
* ``death_date`` (ISO date, blank if alive at last follow-up), ``last_followup_date`` (ISO date);
* optional ``lung_mask`` and ``lesion_mask``: label volumes on the scan's grid (blank when absent).

``source`` is a DICOM series folder, a NIfTI file (``.nii`` / ``.nii.gz``), or a synthetic scan
made by :mod:`sapsam_utils.synthetic.phantom` from the row's labels: ``phantom:<anatomy_seed>:<seed>``
(the patient's anatomy, then the scan's own signs and noise: a patient's scans share the first
number) or ``phantom:<seed>`` (short for ``phantom:<seed>:<seed>``); the seeds are non-negative
integers. Relative paths in ``source``, ``lung_mask`` and ``lesion_mask`` are relative to the
manifest file's folder.

Rules that :func:`validate_manifest` checks (every broken one is reported, row by row):

* exactly the columns above (the two optional ones may be left out);
* ids present; ``scan_id`` unique and usable as a folder name;
* labels 0 or 1; a ``control`` row has no label set; ``group`` is ``control`` or ``cpa``;
* a ``phantom:`` row with a fungus ball in a sub-region also has the cavity there (the phantom
  plants a fungus ball inside a cavity);
* dates are ISO; ``scan_date`` <= ``last_followup_date``; ``scan_date`` <= ``death_date``;
  ``last_followup_date`` <= ``death_date`` (nobody is followed up after death: for a patient who
  died, the last follow-up is the death or an earlier contact); a patient's rows agree on
  ``death_date`` and ``last_followup_date`` (they are the patient's outcome, not the scan's);
* every path exists (phantom sources need no file).

The file is UTF-8 text (a file in another encoding is refused, naming the line of its first
byte that is not UTF-8).
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.files import atomic_file
from ..core.regions import LABEL_COLUMNS

#: Identification columns, first in the manifest.
ID_COLUMNS = ("patient_id", "scan_id", "scan_date", "source", "group")
#: Outcome columns (patient-level, repeated on each of the patient's rows).
OUTCOME_COLUMNS = ("death_date", "last_followup_date")
#: Required columns, in order.
REQUIRED_COLUMNS = ID_COLUMNS + LABEL_COLUMNS + OUTCOME_COLUMNS
#: Optional reference columns: paths to label volumes on the scan's grid.
OPTIONAL_COLUMNS = ("lung_mask", "lesion_mask")
#: Every column a manifest may have, in order.
ALL_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
#: Allowed values of ``group``.
GROUPS = ("control", "cpa")
#: Prefix of a synthetic source: ``phantom:<seed>`` or ``phantom:<anatomy_seed>:<seed>``.
PHANTOM_PREFIX = "phantom:"
#: File endings accepted for a NIfTI source or label volume.
NIFTI_SUFFIXES = (".nii", ".nii.gz")

_SCAN_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_PHANTOM = re.compile(r"^phantom:(\d+)(?::(\d+))?$")
_PHANTOM_FORMS = "phantom:<seed> or phantom:<anatomy_seed>:<seed> (non-negative integers)"


class ManifestError(ValueError):
    """A manifest that breaks the schema; ``problems`` lists every broken rule, row by row."""

    def __init__(self, path: str | os.PathLike, problems: list[str]):
        self.path = Path(path)
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{self.path}: {len(self.problems)} problem(s) in the manifest:\n{lines}")


#: What each column holds, for the book (the 24 label columns share one description).
COLUMN_DESCRIPTIONS = {
    "patient_id": "patient identifier (several studies may share it)",
    "scan_id": "unique study identifier; letters, digits, '.', '_', '-' (names the study's folder)",
    "scan_date": "ISO date YYYY-MM-DD",
    "source": "DICOM series folder, NIfTI file (.nii, .nii.gz), phantom:<anatomy_seed>:<seed> or phantom:<seed>",
    "group": "control or cpa",
    "death_date": "ISO date; blank if alive at the last follow-up",
    "last_followup_date": "ISO date (for a patient who died: the death or an earlier contact)",
    "lung_mask": "optional: label volume on the scan's grid, 0 background, 1 right lung, 2 left lung",
    "lesion_mask": "optional: label volume on the scan's grid, > 0 = lesion",
}
LABEL_DESCRIPTION = "0 or 1: a sign in that sub-region (R/L = patient's right/left, U/M/L = upper/middle/lower)"


def schema_table() -> pd.DataFrame:
    """The manifest's columns in order, with what each holds (``column``, ``content``); the label
    columns as one row, ``RU_preexisting ... LL_pleural_thickening (24)``."""
    rows = [(c, COLUMN_DESCRIPTIONS.get(c, LABEL_DESCRIPTION)) for c in ALL_COLUMNS if c not in LABEL_COLUMNS[1:]]
    table = pd.DataFrame(rows, columns=["column", "content"])
    table.loc[table["column"] == LABEL_COLUMNS[0], "column"] = (
        f"{LABEL_COLUMNS[0]} ... {LABEL_COLUMNS[-1]} ({len(LABEL_COLUMNS)})")
    return table


def phantom_seeds(source: str) -> tuple[int, int] | None:
    """The seeds ``(anatomy_seed, seed)`` of a phantom source, or None for anything else.

    ``phantom:<anatomy_seed>:<seed>`` gives both; ``phantom:<seed>`` gives ``(seed, seed)``.
    None for a file source and for a malformed ``phantom:`` source (see :func:`source_kind`).
    """
    match = _PHANTOM.match(str(source).strip())
    if not match:
        return None
    anatomy, scan = match.groups()
    return (int(anatomy), int(scan if scan is not None else anatomy))


def source_kind(source: str, base_dir: str | os.PathLike = ".") -> str:
    """What a ``source`` is: ``phantom``, ``dicom`` (a folder) or ``nifti`` (a file).

    Raises
    ------
    ValueError
        For a malformed ``phantom:`` source, a missing path, or a file that is not NIfTI.
    """
    source = str(source).strip()
    if source.startswith(PHANTOM_PREFIX):
        if phantom_seeds(source) is None:
            raise ValueError(f"source '{source}' is not of the form {_PHANTOM_FORMS}")
        return "phantom"
    path = resolve_path(source, base_dir)
    if path.is_dir():
        return "dicom"
    if path.is_file():
        if path.name.lower().endswith(NIFTI_SUFFIXES):
            return "nifti"
        raise ValueError(f"source {path} is a file but not NIfTI (.nii or .nii.gz)")
    raise ValueError(f"source {path} does not exist")


def resolve_path(value: str | os.PathLike, base_dir: str | os.PathLike) -> Path:
    """A manifest path made absolute: relative paths are relative to the manifest's folder."""
    path = Path(str(value).strip()).expanduser()
    return path if path.is_absolute() else Path(base_dir) / path


def row_paths(row: pd.Series | dict, base_dir: str | os.PathLike) -> dict[str, Path | None]:
    """The files a manifest row points at, made absolute.

    Returns
    -------
    dict
        ``source`` (None for a phantom), ``lung_mask`` and ``lesion_mask`` (None when blank).
    """
    out: dict[str, Path | None] = {}
    source = str(row["source"]).strip()
    out["source"] = None if source.startswith(PHANTOM_PREFIX) else resolve_path(source, base_dir)
    for column in OPTIONAL_COLUMNS:
        value = str(row.get(column, "") or "").strip()
        out[column] = resolve_path(value, base_dir) if value else None
    return out


def _as_text(table: pd.DataFrame) -> pd.DataFrame:
    """Every cell as stripped text; missing values (None, NaN) as ``""``."""
    return table.astype(object).where(table.notna(), "").astype(str).apply(lambda col: col.str.strip())


def _iso_date(value: str) -> _dt.date | None:
    if not _ISO_DATE.match(value):
        return None
    try:
        return _dt.date.fromisoformat(value)
    except ValueError:
        return None


def _row_problems(row: dict[str, str], base_dir: Path | None) -> list[str]:
    problems = []
    for column in ("patient_id", "scan_id", "source", "scan_date", "last_followup_date"):
        if not row[column]:
            problems.append(f"{column} is blank")
    if row["scan_id"] and not _SCAN_ID.match(row["scan_id"]):
        problems.append(f"scan_id '{row['scan_id']}' has characters other than letters, digits, '.', '_', '-'")
    if row["group"] not in GROUPS:
        problems.append(f"group is '{row['group']}', not one of {'|'.join(GROUPS)}")

    bad_labels = [c for c in LABEL_COLUMNS if row[c] not in ("0", "1")]
    if bad_labels:
        shown = ", ".join(f"{c}='{row[c]}'" for c in bad_labels[:4])
        more = f" and {len(bad_labels) - 4} more" if len(bad_labels) > 4 else ""
        problems.append(f"labels must be 0 or 1: {shown}{more}")
    signs = [c for c in LABEL_COLUMNS if row[c] == "1"]
    if row["group"] == "control" and signs:
        problems.append(f"a control has signs: {', '.join(signs)}")

    dates = {}
    for column in ("scan_date", "death_date", "last_followup_date"):
        if row[column]:
            dates[column] = _iso_date(row[column])
            if dates[column] is None:
                problems.append(f"{column} '{row[column]}' is not an ISO date (YYYY-MM-DD)")
    scan, death, last = (dates.get(c) for c in ("scan_date", "death_date", "last_followup_date"))
    if scan and last and scan > last:
        problems.append(f"scan_date {scan} is after last_followup_date {last}")
    if scan and death and scan > death:
        problems.append(f"scan_date {scan} is after death_date {death}")
    if death and last and last > death:
        problems.append(f"last_followup_date {last} is after death_date {death}")

    source = row["source"]
    if source.startswith(PHANTOM_PREFIX):
        if phantom_seeds(source) is None:
            problems.append(f"source '{source}' is not of the form {_PHANTOM_FORMS}")
        for region in sorted({c.split("_", 1)[0] for c in signs}):
            if row[f"{region}_fungus_ball"] == "1" and row[f"{region}_cavity"] != "1":
                problems.append(f"{region}_fungus_ball without {region}_cavity (a phantom's fungus ball lies in a cavity)")
    elif source and base_dir is not None:
        try:
            source_kind(source, base_dir)
        except ValueError as err:
            problems.append(str(err))
    if base_dir is not None:
        for column in OPTIONAL_COLUMNS:
            value = row.get(column, "")
            if value:
                path = resolve_path(value, base_dir)
                if not path.is_file():
                    problems.append(f"{column} {path} does not exist")
    return problems


def validate_manifest(table: pd.DataFrame, base_dir: str | os.PathLike | None = None) -> list[str]:
    """Every problem of a manifest table, as sentences naming the row.

    Parameters
    ----------
    table : pandas.DataFrame
        The manifest as read with every column as text (blank cells as ``""``).
    base_dir : path-like, optional
        The manifest's folder, against which relative paths are checked. When None, paths are
        not checked.

    Returns
    -------
    list of str
        Empty when the manifest is valid. Rows are numbered from 1 (the first data row).
    """
    columns = list(table.columns)
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    unknown = [c for c in columns if c not in ALL_COLUMNS]
    problems = []
    if missing:
        problems.append(f"missing column(s): {', '.join(missing)}")
    if unknown:
        problems.append(f"unknown column(s): {', '.join(map(str, unknown))}")
    duplicated = sorted({str(c) for c in columns if columns.count(c) > 1})
    if duplicated:
        problems.append(f"duplicated column(s): {', '.join(duplicated)}")
    if problems:
        return problems
    if len(table) == 0:
        return ["the manifest has no rows"]

    text = _as_text(table)
    base = Path(base_dir) if base_dir is not None else None
    first_row_of_scan: dict[str, int] = {}
    outcome_of_patient: dict[str, tuple[int, str, str]] = {}
    for number, row in enumerate(text.to_dict("records"), start=1):
        where = f"row {number} (scan_id '{row['scan_id']}')"
        for problem in _row_problems(row, base):
            problems.append(f"{where}: {problem}")
        scan_id = row["scan_id"]
        if scan_id in first_row_of_scan:
            problems.append(f"{where}: duplicate scan_id, first used on row {first_row_of_scan[scan_id]}")
        else:
            first_row_of_scan[scan_id] = number
        outcome = (row["death_date"], row["last_followup_date"])
        earlier = outcome_of_patient.setdefault(row["patient_id"], (number, *outcome))
        if earlier[1:] != outcome:
            problems.append(
                f"{where}: patient {row['patient_id']} has death_date/last_followup_date "
                f"{outcome[0] or 'blank'}/{outcome[1]}, but {earlier[1] or 'blank'}/{earlier[2]} on row {earlier[0]}"
            )
    return problems


def read_manifest(path: str | os.PathLike, check_paths: bool = True,
                  base_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """Read and validate a manifest.

    Parameters
    ----------
    path : path-like
        The CSV file.
    check_paths : bool
        Check that every source and label path exists (relative to ``base_dir``).
    base_dir : path-like, optional
        The folder that relative paths resolve against; default: the manifest's folder. (The
        public cases' manifest resolves against ``public_ct_root``: :mod:`sapsam_utils.data.public_ct`.)

    Returns
    -------
    pandas.DataFrame
        One row per scan, columns in :data:`ALL_COLUMNS` order (optional columns added blank
        when absent); labels as int, every other column as text (dates stay ISO strings, blank
        ``death_date`` is ``""``).

    Raises
    ------
    ManifestError
        Listing every problem, each naming its row (1-based data row number and scan_id).
    FileNotFoundError
        When the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such manifest file")
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        where = f"line {line} (the header)" if line == 1 else f"line {line} (row {line - 1})"
        raise ManifestError(path, [f"not UTF-8 text: byte 0x{raw[err.start]:02x} on {where}; "
                                   "save the file as UTF-8"]) from err
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8")
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ManifestError(path, [f"not a readable CSV file ({err})"]) from err
    table.columns = [str(c).strip() for c in table.columns]
    base = Path(base_dir) if base_dir is not None else path.parent
    problems = validate_manifest(table, base if check_paths else None)
    if problems:
        raise ManifestError(path, problems)
    return normalise(table)


def normalise(table: pd.DataFrame) -> pd.DataFrame:
    """A manifest table in canonical form: all columns in order, labels int, text stripped."""
    out = _as_text(table)
    for column in OPTIONAL_COLUMNS:
        if column not in out.columns:
            out[column] = ""
    out = out[list(ALL_COLUMNS)].reset_index(drop=True)
    out[list(LABEL_COLUMNS)] = out[list(LABEL_COLUMNS)].astype(int)
    return out


def write_manifest(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a manifest table atomically, columns in schema order.

    The table is validated first (paths not checked: they are relative to where it is read),
    so a written manifest always reads back.

    Raises
    ------
    ManifestError
        When the table breaks the schema; nothing is written.
    """
    path = Path(path)
    text = _as_text(table)
    problems = validate_manifest(text, None)
    if problems:
        raise ManifestError(path, problems)
    columns = [c for c in ALL_COLUMNS if c in text.columns]
    with atomic_file(path) as tmp:
        text[columns].to_csv(tmp, index=False, lineterminator="\n")
    return path


def two_year_death(manifest: pd.DataFrame, years: float = 2.0) -> pd.Series:
    """Per scan: 1.0 if the patient died within ``years`` of the scan, 0.0 if known alive then,
    NaN when follow-up ended earlier without a death (unknown)."""
    scan = pd.to_datetime(manifest["scan_date"])
    horizon = scan + pd.to_timedelta(years * 365.25, unit="D")
    death = pd.to_datetime(manifest["death_date"].replace("", None))
    last = pd.to_datetime(manifest["last_followup_date"])
    out = pd.Series(np.nan, index=manifest.index)
    out[death.notna() & (death <= horizon)] = 1.0
    out[(death.isna() | (death > horizon)) & (last >= horizon)] = 0.0
    return out
