"""Patient splits, class balancing and survival columns of the image data sets: pure functions on tables.

Splits are made of **patients** (all of a patient's scans, and all their rotations, go to one
split; :func:`split_patients` asserts it), stratified by group, seeded. Class balancing happens
after the split, on the training rows only, by oversampling (:func:`balanced_indices`), as the
classifiers sample their batches.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..data.manifest import two_year_death

SPLITS = ("train", "val", "test")
#: Default (train, validation, test) fractions of the patients.
DEFAULT_FRACTIONS = (0.6, 0.2, 0.2)


def survival_columns(table: pd.DataFrame, years: float = 2.0) -> pd.DataFrame:
    """``death_2y`` (1.0 / 0.0 / NaN) and ``censored_2y`` (True when the outcome at ``years`` is
    unknown: follow-up ended earlier without a death) for each manifest row.

    The rule is :func:`sapsam_utils.data.manifest.two_year_death`: every scan, control or CPA,
    is 1 when the patient died within ``years`` of it and 0 when known alive then, including a
    patient who died later. These are the columns the data sets store (``whole.csv``). The
    survival chapter trains on the paper's rule instead, :func:`sapsam_utils.learning.survival.paper_labels`,
    which leaves out controls and the scans of patients who died more than ``years`` after them.
    """
    death = two_year_death(table, years=years)
    return pd.DataFrame({"death_2y": death, "censored_2y": death.isna()}, index=table.index)


def patient_groups(cohort: pd.DataFrame) -> pd.Series:
    """One group per patient: ``cpa`` when any of the patient's scans is CPA, else ``control``."""
    is_cpa = cohort["group"].eq("cpa").groupby(cohort["patient_id"]).any()
    return is_cpa.map({True: "cpa", False: "control"}).rename("group")


def split_patients(
    cohort: pd.DataFrame, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS, seed: int = 0
) -> pd.DataFrame:
    """Assign each patient to ``train`` / ``val`` / ``test``, stratified by group, seeded.

    Within each group the patients (sorted, then shuffled with ``seed``) are cut by
    ``fractions`` (rounded); a group of 2 patients still gets one test patient, a group of 3 or
    more one patient in every split with a non-zero fraction; training keeps at least one.

    Parameters
    ----------
    cohort : pandas.DataFrame
        Rows with ``patient_id`` and ``group`` (one row per scan is fine).
    fractions : tuple of float
        Train, validation and test shares of the patients (normalised to sum to 1).
    seed : int

    Returns
    -------
    pandas.DataFrame
        ``patient_id, group, split``, one row per patient.
    """
    fractions = np.asarray(fractions, dtype=float)
    if fractions.shape != (3,) or (fractions < 0).any() or fractions.sum() <= 0 or fractions[0] <= 0:
        raise ValueError(f"split fractions {tuple(fractions)}: need (train > 0, val >= 0, test >= 0)")
    fractions = fractions / fractions.sum()
    groups = patient_groups(cohort)
    rng = np.random.default_rng(seed)
    rows = []
    for group in sorted(groups.unique()):
        patients = np.array(sorted(groups.index[groups == group]))
        patients = patients[rng.permutation(len(patients))]
        n = len(patients)
        n_val, n_test = (int(round(n * f)) for f in fractions[1:])
        # Small groups: test first, then validation, get one patient when the group can afford it
        # (training keeps at least one).
        if fractions[2] > 0 and n >= 2:
            n_test = max(n_test, 1)
        if fractions[1] > 0 and n >= 3:
            n_val = max(n_val, 1)
        n_test = min(n_test, max(n - 1, 0))
        n_val = min(n_val, max(n - 1 - n_test, 0))
        n_train = n - n_val - n_test
        names = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
        rows += [{"patient_id": p, "group": group, "split": s} for p, s in zip(patients, names)]
    table = pd.DataFrame(rows, columns=["patient_id", "group", "split"])
    check_patient_splits(cohort.assign(split=cohort["patient_id"].map(table.set_index("patient_id")["split"])))
    return table


def check_patient_splits(table: pd.DataFrame) -> None:
    """Raise if a patient appears in more than one split (rows need ``patient_id``, ``split``)."""
    if table["split"].isna().any():
        missing = sorted(table.loc[table["split"].isna(), "patient_id"].unique())
        raise ValueError(f"patients without a split: {missing[:10]}")
    per_patient = table.groupby("patient_id")["split"].nunique()
    shared = sorted(per_patient.index[per_patient > 1])
    if shared:
        raise AssertionError(f"patients in more than one split: {shared[:10]}")


def balanced_indices(labels, seed: int = 0) -> np.ndarray:
    """Row indices with every class oversampled (with replacement) to the largest class's count.

    Every original row appears at least once; the extra rows of the smaller classes are drawn at
    random; the result is shuffled. Use it on the **training** rows only, after the split.

    Parameters
    ----------
    labels : array-like
        One class per row (NaN rows, e.g. censored survival, are left out).
    seed : int

    Returns
    -------
    numpy.ndarray of int
        Indices into ``labels``; each class appears ``max count`` times.
    """
    labels = pd.Series(np.asarray(labels))
    labels = labels[labels.notna()]
    rng = np.random.default_rng(seed)
    classes = sorted(labels.unique())
    if not classes:
        return np.empty(0, dtype=np.intp)
    target = labels.value_counts().max()
    parts = []
    for c in classes:
        idx = labels.index[labels == c].to_numpy()
        extra = rng.choice(idx, size=target - len(idx), replace=True) if target > len(idx) else idx[:0]
        parts += [idx, extra]
    out = np.concatenate(parts).astype(np.intp)
    return out[rng.permutation(len(out))]


def split_counts(records: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per split (``records``: split -> whole-scan records, ``whole.csv``'s columns): patients,
    scans, images, images per class (control, CPA) and per 2-year outcome (death within 2 y,
    alive at 2 y, censored before 2 y)."""
    rows = []
    for split, rec in records.items():
        rows.append({"split": split, "patients": rec["patient_id"].nunique(), "scans": rec["scan_id"].nunique(),
                     "images": len(rec), "control": int((rec["disease"] == 0).sum()),
                     "CPA": int((rec["disease"] == 1).sum()), "death within 2 y": int((rec["death_2y"] == 1).sum()),
                     "alive at 2 y": int((rec["death_2y"] == 0).sum()),
                     "censored before 2 y": int(rec["censored_2y"].sum())})
    return pd.DataFrame(rows).set_index("split")


def balance_table(tasks: dict[str, pd.Series], seed: int = 0) -> pd.DataFrame:
    """Per task (name -> one label per training row, NaN for unknown): the rows of class 0 and of
    class 1, and the rows per class after :func:`balanced_indices` (``"one class only"`` when the
    labels hold a single class)."""
    rows = []
    for task, labels in tasks.items():
        known = labels.dropna().astype(int)
        index = balanced_indices(labels, seed)
        per_class = len(index) // max(known.nunique(), 1) if known.nunique() == 2 else "one class only"
        rows.append({"task": task, "class 0": int((known == 0).sum()), "class 1": int((known == 1).sum()),
                     "per class after balancing": per_class})
    return pd.DataFrame(rows).set_index("task")
