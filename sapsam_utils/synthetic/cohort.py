"""The synthetic CPA cohort (the study's embedded default): its simulator and its tables.

Cohort simulator (:func:`simulate_cohort`)
------------------------------------------
The paper's cohort is private; this module writes a manifest of a cohort shaped like it:
172 patients and 352 CT studies, of which 76 control studies (76 patients, one scan each, no
sign) and 276 CPA studies from 96 patients with 1-8 longitudinal scans each over up to 12 years.
Every scan's ``source`` is ``phantom:<anatomy_seed>:<seed>``: :func:`sapsam_utils.synthetic.phantom.make_phantom`
turns the row's labels into a CT with voxel-exact truth. A patient's scans share the anatomy seed
(the seed of their first scan), so they show one body and one pair of lungs, as real longitudinal
scans do; the scan's own seed places its signs and draws its noise. Ids are pseudonymous
(``P0001``, ``S0001``), dates ISO. Everything follows from one ``seed``.

*Signs at the first scan.* Each CPA patient has a severity ``s ~ N(0, 1)``. At the first scan the
probability of a sign in a sub-region is ``sigmoid(logit(p[sign][region]) + 0.8 s)`` with the rates
of :data:`FIRST_SCAN_RATES`, one per sign and sub-region. A fungus ball can only form in a region
that has a cavity (the phantom plants it inside that cavity). Every CPA patient has at least one
cavity at diagnosis (an upper one when no region drew one).

*Calibrated to the paper's Table 1.* The cavity, fungus-ball and pleural-thickening rates are
fitted so that the committed cohort (seed 0) has, in every sub-region, the paper's Table 1 count
of CPA studies with the sign to within 15 % or 5 studies (whichever is wider): :func:`table1`
compares them. The fit (see :data:`FIRST_SCAN_RATES`) repeatedly scaled each rate by the ratio of
the paper's count to the simulated one; the random draws of the simulator do not depend on the
rates, so a seed's cohort changes smoothly with them. Other seeds give other counts (a standard
deviation of 10-14 studies in the upper zones, 3-11 elsewhere, since a patient's signs repeat
over their scans); their mean lies within the tolerance of Table 1 in most cells but not all (over
seeds 0-39, e.g. 8 rather than 15 right lower cavities, 5 rather than 12 left middle pleural
thickenings), the price of fitting the committed cohort itself. The pre-existing rates (Table 1 has no such row) are scaled so that
the CPA studies hold about as many (study, condition) pairs as the paper's 398; which condition
the phantom draws follows the paper's proportions (:func:`sapsam_utils.synthetic.phantom.preexisting_conditions`,
compared by :func:`preexisting_table`).

*Disease between scans.* Between two scans ``dt`` years apart each sign appears, or goes, with
probability ``1 - exp(-rate * dt)``. A sign appears at a rate proportional to the region's
first-scan rate (:data:`APPEAR_SCALE`), so the zones keep their pattern. A new cavity appears
faster next to a region that already has one (neighbours: the adjacent level on the same side,
and the same level on the other side at a third of the weight), so disease grows to neighbouring
regions. Fungus balls form inside existing cavities and vanish with them; pleural thickening
forms faster in a region with a cavity; pre-existing conditions are mostly stable. Each patient's
rates are scaled by an activity ``exp(0.6 s + N(0, 0.4))``; about a third of the patients respond
to treatment (new signs 3 times rarer, regression 3 times faster), so some disease regresses.

*Deaths.* A scan's disease burden is ``sum over regions of 1.0 cavity + 1.5 fungus_ball + 0.7
pleural_thickening + 0.4 preexisting`` (:func:`burden`). After a patient's last scan the hazard of
death is constant, ``h0 * exp(beta * (burden_last - 3) + sigma * u)`` with a patient frailty
``u ~ N(0, 1)`` (the noise: what the images do not show), ``h0`` = 0.10 / year, ``beta`` = 0.6,
``sigma`` = 0.8; controls die at 1 % a year. Because the patient is alive at every one of their
scans, drawing the death after the last scan is the same as a constant hazard that is conditioned on
survival to that scan. Scans run from 2004 to 2016; follow-up ends on 2018-12-31, earlier for the
10 % of living patients lost to follow-up. So 2-year survival after a scan depends on the burden but
is not decided by it: :func:`two_year_death` and :func:`auc` measure how well burden alone predicts
(in the committed cohort: 61 deaths, AUC 0.77).
"""

from __future__ import annotations

import datetime as _dt
from typing import Iterable

import numpy as np
import pandas as pd

from ..core.paper import paper_values
from ..data.manifest import (ALL_COLUMNS, OPTIONAL_COLUMNS, PHANTOM_PREFIX, normalise, phantom_seeds,
                             two_year_death, write_manifest)
from .phantom import PREEXISTING_APPEARANCE, PREEXISTING_CONDITIONS, preexisting_conditions
from ..core.regions import LABEL_COLUMNS, LABELS, REGIONS

_PAPER = paper_values("01_cohort")
#: The paper's cohort: patients and studies (from :mod:`sapsam_utils.core.paper`; the control
#: patients are the patients who are not CPA patients).
PAPER_COUNTS = {
    "control_patients": _PAPER["manifest_control_patients"],
    "cpa_patients": _PAPER["manifest_cpa_patients"],
    "cpa_scans": _PAPER["manifest_cpa_scans"],
    "max_scans": _PAPER["manifest_cpa_scans_per_patient_max"],
    "max_years": _PAPER["manifest_cpa_scan_span_years_max"],
}
#: The paper's Table 1: CPA studies (of 276) with each sign in each sub-region, (left, right) by
#: level (upper, middle, lower); the rows ``table1_*`` of :mod:`sapsam_utils.core.paper`.
PAPER_TABLE1 = {
    sign: tuple((_PAPER[f"table1_{sign}_{level}_left"], _PAPER[f"table1_{sign}_{level}_right"])
                for level in ("upper", "middle", "lower"))
    for sign in ("cavity", "pleural_thickening", "fungus_ball")
}
#: A cohort count matches the paper's when within this share of it, or within TABLE1_MIN_STUDIES.
TABLE1_TOLERANCE = 0.15
TABLE1_MIN_STUDIES = 5
#: Probability of each sign in each sub-region at a CPA patient's first scan, for a patient of
#: average severity; ``fungus_ball`` is conditional on a cavity there. The same table is each
#: region's susceptibility between scans (:data:`APPEAR_SCALE`). The cavity, fungus-ball and
#: pleural-thickening rows are fitted to the paper's Table 1 (:data:`PAPER_TABLE1`); the fit is
#: :func:`sapsam_utils.synthetic.calibration.documented_fit` (``python -m
#: sapsam_utils.synthetic.calibration`` runs it, about a minute). Each rate is multiplied, round
#: after round, by (target count / simulated count) ** k, clipped to [0.002, 0.99] and rounded to
#: 3 decimals: 30 rounds (k = 0.7) against the mean count over seeds 0-39, starting from the
#: earlier hand-set pattern (``calibration.starting_rates``), then 40 rounds (k = 0.4) against the
#: committed cohort (seed 0) alone, keeping the round whose largest deviation from the paper's
#: counts, in units of the tolerance, is smallest: 0.84 (right upper fungus balls, 125 against
#: 143). Table 1 has 143 fungus balls but 121 cavities in the right upper zone, which no cohort can
#: have when each fungus ball lies in a cavity of its region, so the fit aims there at 133 cavities
#: and 126 fungus balls, both within the tolerance (``calibration.RIGHT_UPPER_TARGETS``).
#: The values below come from the original run of that fit, whose code was lost; the re-coded fit
#: re-derives the worst deviation (0.84) and the six upper-zone rates (to within 1 %; five exactly),
#: but not the middle and lower ones (3-37 studies each, where many rates give the same counts):
#: it lands within a factor of 1.45 of them (e.g. left lower fungus ball 0.228, not 0.326), so
#: those values are one of several equally good fits. ``tests/test_calibration.py`` checks, in
#: seconds, phase 2 alone from the earlier pattern (worst deviation 0.84, upper-zone rates within
#: 5 %, all within a factor of 1.5, every Table 1 cell within the tolerance), that phase 2 started
#: from these rates keeps them, and that a wrong target does not pass. Hand-set, not fitted: the
#: pre-existing row (Table 1 has none) is the earlier pattern (0.40, 0.22, 0.10 for upper, middle,
#: lower, times 1 right and 0.8 left; hand-set, as are the other rows' starting values) scaled by
#: 1.4, a factor chosen by hand so that the committed cohort's CPA studies hold about as many
#: (study, condition) pairs as the paper's 398 (399; :func:`preexisting_table`).
FIRST_SCAN_RATES = {
    "preexisting": {"RU": 0.560, "RM": 0.308, "RL": 0.140, "LU": 0.448, "LM": 0.246, "LL": 0.112},
    "cavity": {"RU": 0.282, "RM": 0.028, "RL": 0.019, "LU": 0.438, "LM": 0.072, "LL": 0.011},
    "fungus_ball": {"RU": 0.990, "RM": 0.272, "RL": 0.220, "LU": 0.436, "LM": 0.145, "LL": 0.326},
    "pleural_thickening": {"RU": 0.418, "RM": 0.017, "RL": 0.010, "LU": 0.647, "LM": 0.012, "LL": 0.022},
}
#: Yearly rate of appearance of a sign in a sub-region between scans, per unit of the region's
#: susceptibility (:data:`FIRST_SCAN_RATES`): the rate in a region is ``APPEAR_SCALE[sign] *
#: FIRST_SCAN_RATES[sign][region]``, raised near cavities (:data:`SPREAD_FACTOR`,
#: :data:`PLEURA_NEAR_CAVITY_FACTOR`).
APPEAR_SCALE = {"preexisting": 0.05, "cavity": 0.10, "fungus_ball": 2.0, "pleural_thickening": 0.09}
#: Yearly rate of disappearance of each sign.
REGRESS_RATE = {"preexisting": 0.02, "cavity": 0.06, "fungus_ball": 0.05, "pleural_thickening": 0.04}
#: A new cavity appears ``1 + SPREAD_FACTOR * n`` times faster next to ``n`` (weighted)
#: neighbouring regions with a cavity.
SPREAD_FACTOR = 4.0
#: Pleural thickening appears ``1 + PLEURA_NEAR_CAVITY_FACTOR`` times faster in a region with a cavity.
PLEURA_NEAR_CAVITY_FACTOR = 3.0
#: Weights of each sign in the disease burden of a scan.
BURDEN_WEIGHTS = {"cavity": 1.0, "fungus_ball": 1.5, "pleural_thickening": 0.7, "preexisting": 0.4}
#: Death model after the last scan (per year): h0 * exp(beta * (burden - 3) + sigma * u).
DEATH_MODEL = {"h0": 0.10, "beta": 0.6, "burden_ref": 3.0, "sigma": 0.8, "control_rate": 0.01}
#: First and last day of the scans, and the end of follow-up.
SCAN_WINDOW = ("2004-01-01", "2016-12-31")
FOLLOWUP_END = "2018-12-31"
#: Share of living patients lost to follow-up before FOLLOWUP_END.
LOST_TO_FOLLOWUP = 0.10


def _neighbours(region: str) -> list[tuple[str, float]]:
    """Regions next to ``region``: the adjacent level on the same side (weight 1) and the same
    level on the other side (weight 1/3)."""
    side, level = region
    order = "UML"
    out = [(side + order[i], 1.0) for i in (order.index(level) - 1, order.index(level) + 1) if 0 <= i < 3]
    out.append(({"R": "L", "L": "R"}[side] + level, 1 / 3))
    return out


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _logit(p):
    return np.log(p / (1.0 - p))


def _first_scan_signs(rng: np.random.Generator, severity: float, rates: dict | None = None) -> dict[str, int]:
    # One uniform number per region and label, drawn whether used or not: the random stream does
    # not depend on the rates, so the cohort of a seed changes smoothly with them.
    rates = FIRST_SCAN_RATES if rates is None else rates
    state = {c: 0 for c in LABEL_COLUMNS}
    u = rng.random((len(REGIONS), len(LABELS) + 1))
    for i, region in enumerate(REGIONS):
        for j, label in enumerate(("preexisting", "cavity", "pleural_thickening")):
            p = rates[label][region]
            state[f"{region}_{label}"] = int(u[i, j] < _sigmoid(_logit(p) + 0.8 * severity))
    if not any(state[f"{r}_cavity"] for r in REGIONS):  # CPA is diagnosed on a cavity: an upper one
        right = rates["cavity"]["RU"] / (rates["cavity"]["RU"] + rates["cavity"]["LU"])
        state[f"{'R' if u[0, 4] < right else 'L'}U_cavity"] = 1
    for i, region in enumerate(REGIONS):  # a fungus ball forms in a cavity
        p = rates["fungus_ball"][region]
        if state[f"{region}_cavity"]:
            state[f"{region}_fungus_ball"] = int(u[i, 3] < _sigmoid(_logit(p) + 0.8 * severity))
    return state


def _evolve(rng: np.random.Generator, state: dict[str, int], dt: float, activity: float, responder: bool,
            rates: dict | None = None) -> dict[str, int]:
    """The signs ``dt`` years later (see the module docstring); one uniform number per label."""
    rates = FIRST_SCAN_RATES if rates is None else rates
    grow = activity * (1 / 3 if responder else 1.0)
    shrink = 3.0 if responder else 1.0
    new = dict(state)
    for region in REGIONS:
        cav_near = sum(w * state[f"{n}_cavity"] for n, w in _neighbours(region))
        for label in ("preexisting", "cavity", "pleural_thickening"):
            key = f"{region}_{label}"
            u = rng.random()
            if state[key]:
                if u < 1 - np.exp(-REGRESS_RATE[label] * shrink * dt):
                    new[key] = 0
            else:
                rate = APPEAR_SCALE[label] * rates[label][region]
                if label == "cavity":
                    rate *= 1 + SPREAD_FACTOR * cav_near
                if label == "pleural_thickening":
                    rate *= 1 + PLEURA_NEAR_CAVITY_FACTOR * state[f"{region}_cavity"]
                if u < 1 - np.exp(-rate * grow * dt):
                    new[key] = 1
        key = f"{region}_fungus_ball"
        u = rng.random()
        if not new[f"{region}_cavity"]:
            new[key] = 0  # a fungus ball lies in a cavity
        elif state[key]:
            if u < 1 - np.exp(-REGRESS_RATE["fungus_ball"] * shrink * dt):
                new[key] = 0
        elif u < 1 - np.exp(-APPEAR_SCALE["fungus_ball"] * rates["fungus_ball"][region] * grow * dt):
            new[key] = 1
    return new


def burden(labels: pd.DataFrame | dict) -> pd.Series | float:
    """Disease burden of scans: weighted count of their positive labels (:data:`BURDEN_WEIGHTS`)."""
    if isinstance(labels, dict):
        return float(sum(BURDEN_WEIGHTS[lab] * labels[f"{r}_{lab}"] for r in REGIONS for lab in LABELS))
    total = pd.Series(0.0, index=labels.index)
    for lab in LABELS:
        total += BURDEN_WEIGHTS[lab] * labels[[f"{r}_{lab}" for r in REGIONS]].astype(float).sum(axis=1)
    return total


def _scan_counts(rng: np.random.Generator, n_patients: int, n_scans: int, max_scans: int) -> np.ndarray:
    """Scans per patient, 1..max_scans, summing to n_scans: a shifted Poisson, adjusted, with one
    patient at each end of the range (as in the paper's 1-8) when there are enough scans."""
    if not n_patients <= n_scans <= n_patients * max_scans:
        raise ValueError(f"{n_scans} scans cannot be spread over {n_patients} patients with 1..{max_scans} each")
    counts = np.clip(1 + rng.poisson(n_scans / n_patients - 1, n_patients), 1, max_scans)
    free = np.ones(n_patients, bool)
    if n_patients >= 2 and n_scans >= max_scans + 1 + (n_patients - 2):
        counts[:2] = (max_scans, 1)
        free[:2] = False
    while counts.sum() != n_scans:
        if counts.sum() < n_scans:
            counts[rng.choice(np.flatnonzero(free & (counts < max_scans)))] += 1
        else:
            counts[rng.choice(np.flatnonzero(free & (counts > 1)))] -= 1
    return rng.permutation(counts)


def _day(text: str) -> int:
    return _dt.date.fromisoformat(text).toordinal()


def _iso(day: float) -> str:
    return _dt.date.fromordinal(int(day)).isoformat()


def simulate_cohort(
    seed: int = 0,
    control_patients: int = PAPER_COUNTS["control_patients"],
    cpa_patients: int = PAPER_COUNTS["cpa_patients"],
    cpa_scans: int = PAPER_COUNTS["cpa_scans"],
    max_scans: int = PAPER_COUNTS["max_scans"],
    max_years: float = PAPER_COUNTS["max_years"],
    first_scan_rates: dict[str, dict[str, float]] | None = None,
) -> pd.DataFrame:
    """Simulate the manifest of a cohort shaped like the paper's (see the module docstring).

    Parameters
    ----------
    seed : int
        Seed of every random choice; the same seed gives the same manifest.
    control_patients, cpa_patients, cpa_scans : int
        Cohort size; the defaults are the paper's (76 + 96 patients, 76 + 276 scans).
    max_scans : int
        Most scans of one CPA patient.
    max_years : float
        Longest span between a patient's first and last scan.
    first_scan_rates : dict, optional
        Rates per sign and sub-region, laid out as :data:`FIRST_SCAN_RATES` (the default); used at
        the first scan and, scaled, between scans. The random draws do not depend on them
        (:mod:`sapsam_utils.synthetic.calibration` fits them).

    Returns
    -------
    pandas.DataFrame
        A valid manifest (columns :data:`~sapsam_utils.data.manifest.ALL_COLUMNS`), one row per scan,
        sorted by patient and date; ``source`` is ``phantom:<anatomy_seed>:<seed>``, the anatomy
        seed being the seed of the patient's first scan.
    """
    rng = np.random.default_rng([seed, 1902])
    first, last = _day(SCAN_WINDOW[0]), _day(SCAN_WINDOW[1])
    end = _day(FOLLOWUP_END)
    year = 365.25
    patients = []  # (group, [(day, labels)], yearly hazard of death after the last scan)
    for _ in range(control_patients):
        day = rng.integers(first, last + 1)
        patients.append(("control", [(day, {c: 0 for c in LABEL_COLUMNS})], DEATH_MODEL["control_rate"]))
    for n in _scan_counts(rng, cpa_patients, cpa_scans, max_scans):
        severity = rng.normal()
        activity = float(np.exp(0.6 * severity + rng.normal(0, 0.4)))
        responder = rng.random() < 1 / 3
        gaps = np.maximum(rng.gamma(2.0, 0.75, n - 1), 0.1)  # years between scans, mean 1.5
        span = gaps.sum()
        if span > max_years:
            gaps *= max_years / span
        offsets = np.concatenate([[0.0], np.cumsum(gaps)]) * year
        start = rng.integers(first, int(last - offsets[-1]) + 1)
        state = _first_scan_signs(rng, severity, first_scan_rates)
        scans = [(start, state)]
        for gap in gaps:
            state = _evolve(rng, state, gap, activity, responder, first_scan_rates)
            scans.append((start + offsets[len(scans)], state))
        hazard = DEATH_MODEL["h0"] * np.exp(
            DEATH_MODEL["beta"] * (burden(state) - DEATH_MODEL["burden_ref"]) + DEATH_MODEL["sigma"] * rng.normal()
        )
        patients.append(("cpa", scans, hazard))

    rows = []
    order = rng.permutation(len(patients))  # pseudonymous ids do not reveal the group
    for number, index in enumerate(order, start=1):
        group, scans, hazard = patients[index]
        last_scan = int(scans[-1][0])
        death = last_scan + rng.exponential(1.0 / hazard) * year
        followup_end = end
        if rng.random() < LOST_TO_FOLLOWUP:
            followup_end = rng.integers(last_scan, end + 1)
        died = death <= followup_end
        death_date = _iso(death) if died else ""
        followup = _iso(death) if died else _iso(followup_end)
        for day, labels in scans:
            rows.append({"patient_id": f"P{number:04d}", "scan_date": _iso(day), "group": group,
                         **labels, "death_date": death_date, "last_followup_date": followup})
    table = pd.DataFrame(rows).sort_values(["patient_id", "scan_date"], kind="stable").reset_index(drop=True)
    table.insert(1, "scan_id", [f"S{i:04d}" for i in range(1, len(table) + 1)])
    # Seeds come from the row number, not from rng, so the labels and dates do not depend on them.
    scan_seeds = pd.Series([seed * 100000 + i for i in range(1, len(table) + 1)], index=table.index)
    anatomy_seeds = scan_seeds.groupby(table["patient_id"]).transform("first")  # rows are in date order
    table.insert(3, "source", [f"{PHANTOM_PREFIX}{a}:{s}" for a, s in zip(anatomy_seeds, scan_seeds)])
    for column in OPTIONAL_COLUMNS:
        table[column] = ""
    return normalise(table[list(ALL_COLUMNS)])


def select_patients(manifest: pd.DataFrame, n_patients: int | None, seed: int = 0) -> pd.DataFrame:
    """A random subset of patients (all their scans), keeping controls and CPA in proportion.

    Parameters
    ----------
    manifest : pandas.DataFrame
        A manifest table.
    n_patients : int or None
        Patients to keep; None, or at least the number of patients, keeps every row.
    seed : int
        Seed of the choice.

    Returns
    -------
    pandas.DataFrame
        The chosen patients' rows in manifest order. With two or more patients both groups are
        represented when the manifest has both.
    """
    groups = manifest.groupby("patient_id", sort=True)["group"].first()
    if n_patients is None or n_patients >= len(groups):
        return manifest.reset_index(drop=True)
    if n_patients < 1:
        raise ValueError(f"n_patients must be at least 1, got {n_patients}")
    rng = np.random.default_rng([seed, 2])
    by_group = {g: sorted(groups.index[groups == g]) for g in sorted(groups.unique())}
    share = {g: len(ids) / len(groups) for g, ids in by_group.items()}
    take = {g: int(round(n_patients * s)) for g, s in share.items()}
    if n_patients >= len(by_group):
        for g in by_group:  # both groups present
            take[g] = min(max(take[g], 1), len(by_group[g]))
    while sum(take.values()) > n_patients:
        g = max(take, key=lambda k: take[k] - n_patients * share[k])
        take[g] -= 1
    while sum(take.values()) < n_patients:
        g = min((k for k in take if take[k] < len(by_group[k])), key=lambda k: take[k] - n_patients * share[k])
        take[g] += 1
    chosen = set()
    for g, ids in by_group.items():
        chosen.update(rng.choice(ids, size=take[g], replace=False).tolist())
    return manifest[manifest["patient_id"].isin(chosen)].reset_index(drop=True)


def auc(score: Iterable[float], outcome: Iterable[float]) -> float:
    """Area under the ROC curve of ``score`` for a 0/1 ``outcome`` (ties count one half)."""
    score, outcome = np.asarray(score, float), np.asarray(outcome, float)
    pos, neg = score[outcome == 1], score[outcome == 0]
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (pos.size * neg.size))


def sign_table(manifest: pd.DataFrame) -> pd.DataFrame:
    """Occurrences of each sign per sub-region (the layout of the paper's Table 1).

    Returns
    -------
    pandas.DataFrame
        Rows: the four labels; columns: (level, side) for upper / middle / lower x left / right,
        then ``total``. Each cell counts the scans with that label in that sub-region.
    """
    levels = {"U": "upper", "M": "middle", "L": "lower"}
    sides = {"L": "left", "R": "right"}
    data = {}
    for lvl, level in levels.items():
        for sd, side in sides.items():
            data[(level, side)] = [int(manifest[f"{sd}{lvl}_{lab}"].sum()) for lab in LABELS]
    table = pd.DataFrame(data, index=list(LABELS))
    table.columns = pd.MultiIndex.from_tuples(table.columns, names=["level", "side"])
    table[("total", "")] = table.sum(axis=1)
    return table


def _tolerance(paper) -> np.ndarray:
    return np.maximum(TABLE1_TOLERANCE * np.asarray(paper, float), TABLE1_MIN_STUDIES)


def table1(manifest: pd.DataFrame) -> pd.DataFrame:
    """The paper's Table 1 beside the same counts in a manifest.

    Parameters
    ----------
    manifest : pandas.DataFrame
        A manifest table (its CPA rows are counted).

    Returns
    -------
    pandas.DataFrame
        One row per sign of Table 1 (cavity, pleural thickening, fungus ball), level (upper,
        middle, lower) and side (left, right), in the paper's order: ``sign``, ``level``,
        ``side``, ``region`` (the manifest's, e.g. ``LU`` for left upper), ``paper`` (the paper's
        count of CPA studies with the sign there), ``cohort`` (the manifest's count),
        ``tolerance`` (the larger of :data:`TABLE1_TOLERANCE` of the paper's count and
        :data:`TABLE1_MIN_STUDIES`) and ``within`` (``|cohort - paper| <= tolerance``).
    """
    cpa = manifest[manifest["group"] == "cpa"]
    rows = []
    for sign, levels in PAPER_TABLE1.items():
        for level, counts in zip(("upper", "middle", "lower"), levels):
            for side, paper in zip(("left", "right"), counts):
                region = side[0].upper() + level[0].upper()
                rows.append({"sign": sign, "level": level, "side": side, "region": region, "paper": paper,
                             "cohort": int(cpa[f"{region}_{sign}"].sum())})
    out = pd.DataFrame(rows)
    out["tolerance"] = _tolerance(out["paper"])
    out["within"] = (out["cohort"] - out["paper"]).abs() <= out["tolerance"]
    return out


def preexisting_table(manifest: pd.DataFrame) -> pd.DataFrame:
    """The paper's pre-existing conditions beside those the phantoms of a manifest draw.

    A phantom row's condition in each sub-region is :func:`sapsam_utils.synthetic.phantom.preexisting_conditions`
    of its anatomy seed; a CPA study counts once for each condition found in its sub-regions
    labelled ``preexisting`` (non-exclusive, as the paper counts). Rows that are not phantoms are
    not counted.

    Parameters
    ----------
    manifest : pandas.DataFrame
        A manifest table.

    Returns
    -------
    pandas.DataFrame
        One row per condition (:data:`~sapsam_utils.synthetic.phantom.PREEXISTING_CONDITIONS`, the paper's
        order): ``condition``, ``drawn_as`` (the phantom's appearance), ``paper`` (CPA studies
        with it in the paper), ``cohort`` (in the manifest), ``paper_share`` and ``cohort_share``
        (of all (study, condition) pairs), ``tolerance`` and ``within`` (as in :func:`table1`).
    """
    cpa = manifest[(manifest["group"] == "cpa") & manifest["source"].str.startswith(PHANTOM_PREFIX)]
    counts = dict.fromkeys(PREEXISTING_CONDITIONS, 0)
    for row in cpa.to_dict("records"):
        conditions = preexisting_conditions(phantom_seeds(row["source"])[0])
        for condition in {conditions[r] for r in REGIONS if row[f"{r}_preexisting"]}:
            counts[condition] += 1
    out = pd.DataFrame({"condition": list(PREEXISTING_CONDITIONS),
                        "drawn_as": [PREEXISTING_APPEARANCE[c] for c in PREEXISTING_CONDITIONS],
                        "paper": list(PREEXISTING_CONDITIONS.values()), "cohort": list(counts.values())})
    out["paper_share"] = out["paper"] / out["paper"].sum()
    out["cohort_share"] = out["cohort"] / max(out["cohort"].sum(), 1)
    out["tolerance"] = _tolerance(out["paper"])
    out["within"] = (out["cohort"] - out["paper"]).abs() <= out["tolerance"]
    return out


def cohort_summary(manifest: pd.DataFrame) -> dict[str, float]:
    """Counts behind the cohort table: patients, scans, scans per patient, follow-up, deaths."""
    patients = manifest.groupby("patient_id")
    group = patients["group"].first()
    per_patient = patients.size()
    first_scan = pd.to_datetime(patients["scan_date"].min())
    last_scan = pd.to_datetime(patients["scan_date"].max())
    followup = pd.to_datetime(patients["last_followup_date"].first())
    dead = patients["death_date"].first() != ""
    cpa = manifest["group"] == "cpa"
    outcome = two_year_death(manifest)
    known = cpa & outcome.notna()
    cpa_ids = group.index[group == "cpa"]
    return {
        "patients": int(len(group)),
        "scans": int(len(manifest)),
        "control_patients": int((group == "control").sum()),
        "control_scans": int((~cpa).sum()),
        "cpa_patients": int((group == "cpa").sum()),
        "cpa_scans": int(cpa.sum()),
        "cpa_scans_per_patient_min": int(per_patient[cpa_ids].min()) if len(cpa_ids) else 0,
        "cpa_scans_per_patient_median": float(per_patient[cpa_ids].median()) if len(cpa_ids) else 0.0,
        "cpa_scans_per_patient_max": int(per_patient[cpa_ids].max()) if len(cpa_ids) else 0,
        "cpa_scan_span_years_max": float(((last_scan - first_scan).dt.days / 365.25)[cpa_ids].max()) if len(cpa_ids) else 0.0,
        "followup_years_median": float(((followup - first_scan).dt.days / 365.25).median()),
        "deaths": int(dead.sum()),
        "cpa_deaths": int(dead[cpa_ids].sum()),
        "cpa_scans_2y_known": int(known.sum()),
        "cpa_scans_2y_death_rate": float(outcome[known].mean()) if known.any() else float("nan"),
        "cpa_burden_auc_2y_death": auc(burden(manifest[known]), outcome[known]),
    }


#: The rows of :func:`cohort_table`: :func:`cohort_summary`'s keys and what each counts.
SUMMARY_NAMES = {
    "patients": "patients", "scans": "scans (studies)",
    "control_patients": "control patients", "control_scans": "control scans",
    "cpa_patients": "CPA patients", "cpa_scans": "CPA scans",
    "cpa_scans_per_patient_min": "scans per CPA patient, min",
    "cpa_scans_per_patient_median": "scans per CPA patient, median",
    "cpa_scans_per_patient_max": "scans per CPA patient, max",
    "cpa_scan_span_years_max": "longest span of a patient's scans (years)",
    "followup_years_median": "median follow-up from first scan (years)",
    "deaths": "deaths", "cpa_deaths": "deaths of CPA patients",
    "cpa_scans_2y_known": "CPA scans with known 2-year outcome",
    "cpa_scans_2y_death_rate": "CPA scans followed by death within 2 years",
    "cpa_burden_auc_2y_death": "AUC of burden alone for 2-year death",
}


def cohort_table(manifest_summary: dict, run_summary: dict) -> pd.DataFrame:
    """The paper's cohort beside two :func:`cohort_summary` results (the whole manifest, this run's
    subset): one row per :data:`SUMMARY_NAMES` entry; the paper's column holds the rows
    ``manifest_<key>`` of :mod:`sapsam_utils.core.paper` (blank where the paper gives none)."""
    paper = {key[len("manifest_"):]: value for key, value in paper_values("01_cohort", "manifest_").items()}
    return pd.DataFrame({"paper": [paper.get(k, "") for k in SUMMARY_NAMES],
                         "manifest": [manifest_summary[k] for k in SUMMARY_NAMES],
                         "this run": [run_summary[k] for k in SUMMARY_NAMES]}, index=list(SUMMARY_NAMES.values()))


def main(argv: list[str] | None = None) -> None:
    """Write the default cohort manifest: ``python -m sapsam_utils.synthetic.cohort [--seed N] [--out PATH]``."""
    import argparse

    from ..core.paths import project_path

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--seed", type=int, default=0, help="cohort seed (default 0)")
    parser.add_argument("--out", default="data_manifest.csv", help="manifest path (default data_manifest.csv at the project root)")
    args = parser.parse_args(argv)
    table = simulate_cohort(args.seed)
    path = write_manifest(table, project_path(args.out))
    summary = cohort_summary(table)
    print(f"wrote {path}: {summary['patients']} patients, {summary['scans']} scans")


if __name__ == "__main__":
    main()
