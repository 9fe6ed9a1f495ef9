"""Fit of the synthetic cohort's first-scan rates to the paper's Table 1.

:data:`sapsam_utils.synthetic.cohort.FIRST_SCAN_RATES` holds one rate per sign and sub-region.
Its cavity, pleural-thickening and fungus-ball rows are fitted so that the committed cohort
(:func:`~sapsam_utils.synthetic.cohort.simulate_cohort` with seed 0) has the paper's Table 1
counts (:func:`~sapsam_utils.synthetic.cohort.table1`). This module is that fit:

* :func:`table1_deviation`: each Table 1 cell's deviation from the paper, in units of its
  tolerance (``(cohort - paper) / tolerance``; within the tolerance when ``|deviation| <= 1``).
* :func:`calibration_step`: one multiplicative update ``rate *= (target / simulated) ** k``,
  clipped to ``[RATE_LOW, RATE_HIGH]``.
* :func:`fit_first_scan_rates`: rounds of that update against the mean count over some seeds,
  keeping the round whose worst deviation is smallest.
* :func:`documented_fit`: the two phases described at ``FIRST_SCAN_RATES`` (30 rounds, ``k`` =
  0.7, against the mean over seeds 0-39 from :func:`starting_rates`; then 40 rounds, ``k`` = 0.4,
  against seed 0).

Table 1 counts 143 fungus balls but 121 cavities in the right upper zone; a fungus ball lies in a
cavity of its region, so the fit aims there at :data:`RIGHT_UPPER_TARGETS` (133 cavities, 126
fungus balls, both within the tolerance of the paper's counts). Deviations are always measured
against the paper's own counts.

The simulator's random draws do not depend on the rates, so one seed's counts are a (step)
function of the rates alone and the fit is deterministic.

``python -m sapsam_utils.synthetic.calibration`` runs the documented fit (about 1300 cohorts,
a minute or two; ``--phase2-only``: phase 2 alone from :func:`starting_rates`, seconds) and prints
the fitted rates beside the committed ones and the worst deviations. ``tests/test_calibration.py``
checks what the fit re-derives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from ..core.regions import REGIONS
from . import cohort as _cohort

#: The rows of the rate table that are fitted (Table 1's signs).
FITTED_SIGNS = ("cavity", "pleural_thickening", "fungus_ball")
#: Rates are clipped to this range after each update.
RATE_LOW, RATE_HIGH = 0.002, 0.99
#: Targets that replace the paper's counts in the right upper zone (see the module docstring).
RIGHT_UPPER_TARGETS = {("cavity", "RU"): 133, ("fungus_ball", "RU"): 126}
#: A simulated count below this is raised to it in the update (so a cell with no study does not
#: divide by zero; a rate there grows by at most ``(target / SIMULATED_FLOOR) ** k``).
SIMULATED_FLOOR = 0.5
#: The rates before the fit (the simulator's earlier, hand-set pattern): per level (upper,
#: middle, lower), times :data:`SIDE_FACTOR` for the side.
LEVEL_RATES = {
    "preexisting": (0.40, 0.22, 0.10),
    "cavity": (0.50, 0.14, 0.06),
    "fungus_ball": (0.40, 0.28, 0.20),
    "pleural_thickening": (0.45, 0.12, 0.05),
}
#: Relative frequency of signs on the patient's right and left in :data:`LEVEL_RATES`.
SIDE_FACTOR = {"R": 1.0, "L": 0.8}
#: The pre-existing row is the earlier pattern times this factor (hand-set: it makes the committed
#: cohort's CPA studies hold about as many (study, condition) pairs as the paper's 398).
PREEXISTING_SCALE = 1.4


def starting_rates(preexisting_scale: float = PREEXISTING_SCALE, decimals: int = 3) -> dict[str, dict[str, float]]:
    """The rate table before the fit: :data:`LEVEL_RATES` times :data:`SIDE_FACTOR`.

    Parameters
    ----------
    preexisting_scale : float
        Factor on the pre-existing row (which Table 1 does not constrain).
    decimals : int
        Decimals the rates are rounded to.

    Returns
    -------
    dict
        ``{sign: {region: rate}}``, laid out as :data:`~sapsam_utils.synthetic.cohort.FIRST_SCAN_RATES`.
    """
    out = {}
    for sign, levels in LEVEL_RATES.items():
        scale = preexisting_scale if sign == "preexisting" else 1.0
        out[sign] = {r: round(scale * levels["UML".index(r[1])] * SIDE_FACTOR[r[0]], decimals) for r in REGIONS}
    return {sign: out[sign] for sign in _cohort.FIRST_SCAN_RATES}


def table1_counts(manifest: pd.DataFrame) -> dict[str, dict[str, float]]:
    """A manifest's Table 1 counts as ``{sign: {region: CPA studies with the sign there}}``."""
    table = _cohort.table1(manifest)
    out: dict[str, dict[str, float]] = {}
    for row in table.itertuples():
        out.setdefault(row.sign, {})[row.region] = float(row.cohort)
    return out


def paper_counts() -> dict[str, dict[str, float]]:
    """The paper's Table 1 counts as ``{sign: {region: count}}`` (read through :func:`~sapsam_utils.synthetic.cohort.table1`)."""
    table = _cohort.table1(_empty_manifest())
    out: dict[str, dict[str, float]] = {}
    for row in table.itertuples():
        out.setdefault(row.sign, {})[row.region] = float(row.paper)
    return out


def calibration_targets(overrides: Mapping[tuple[str, str], float] | None = None) -> dict[str, dict[str, float]]:
    """The counts the fit aims at: the paper's Table 1 with :data:`RIGHT_UPPER_TARGETS` in place.

    Parameters
    ----------
    overrides : mapping, optional
        ``{(sign, region): count}`` replacing the paper's count; default :data:`RIGHT_UPPER_TARGETS`.

    Returns
    -------
    dict
        ``{sign: {region: count}}``.
    """
    targets = paper_counts()
    for (sign, region), count in (RIGHT_UPPER_TARGETS if overrides is None else overrides).items():
        targets[sign][region] = float(count)
    return targets


def _empty_manifest() -> pd.DataFrame:
    from ..core.regions import LABEL_COLUMNS

    return pd.DataFrame({"group": pd.Series([], dtype=str), **{c: pd.Series([], dtype=int) for c in LABEL_COLUMNS}})


def table1_deviation(manifest: pd.DataFrame | None = None,
                     counts: Mapping[str, Mapping[str, float]] | None = None) -> pd.DataFrame:
    """Each Table 1 cell's deviation from the paper's count, in units of its tolerance.

    Parameters
    ----------
    manifest : pandas.DataFrame, optional
        A manifest (its CPA rows are counted).
    counts : mapping, optional
        ``{sign: {region: count}}`` instead of a manifest (e.g. a mean over seeds).

    Returns
    -------
    pandas.DataFrame
        :func:`~sapsam_utils.synthetic.cohort.table1`'s columns (``cohort`` as float when
        ``counts`` is given, ``within`` recomputed) and ``deviation``, ``(cohort - paper) /
        tolerance``: within the tolerance when its absolute value is at most 1. The worst
        deviation is ``deviation.abs().max()``.
    """
    if (manifest is None) == (counts is None):
        raise ValueError("give exactly one of manifest and counts")
    table = _cohort.table1(_empty_manifest() if manifest is None else manifest)
    if counts is not None:
        table["cohort"] = [float(counts[s][r]) for s, r in zip(table["sign"], table["region"])]
    table["deviation"] = (table["cohort"] - table["paper"]) / table["tolerance"]
    table["within"] = table["deviation"].abs() <= 1
    return table


def worst_deviation(manifest: pd.DataFrame | None = None, counts: Mapping[str, Mapping[str, float]] | None = None) -> float:
    """The largest absolute :func:`table1_deviation` of a manifest (or of counts)."""
    return float(table1_deviation(manifest, counts)["deviation"].abs().max())


def calibration_step(rates: Mapping[str, Mapping[str, float]], simulated: Mapping[str, Mapping[str, float]],
                     targets: Mapping[str, Mapping[str, float]], k: float, low: float = RATE_LOW,
                     high: float = RATE_HIGH, floor: float = SIMULATED_FLOOR) -> dict[str, dict[str, float]]:
    """One round of the fit: ``rate *= (target / simulated) ** k``, clipped to ``[low, high]``.

    Parameters
    ----------
    rates : mapping
        ``{sign: {region: rate}}``; rows without targets are copied unchanged.
    simulated : mapping
        ``{sign: {region: count}}`` that ``rates`` gave.
    targets : mapping
        ``{sign: {region: count}}`` to aim at.
    k : float
        Damping exponent (1: jump to where a proportional response would land).
    low, high : float
        Clip range of the rates.
    floor : float
        A simulated count below ``floor`` counts as ``floor``.

    Returns
    -------
    dict
        The new rates (a new table; ``rates`` is not changed).
    """
    out = {s: dict(v) for s, v in rates.items()}
    for sign, cells in targets.items():
        for region, target in cells.items():
            ratio = float(target) / max(float(simulated[sign][region]), floor)
            out[sign][region] = float(np.clip(out[sign][region] * ratio ** k, low, high))
    return out


def simulated_counts(rates: Mapping[str, Mapping[str, float]], seeds: Iterable[int]) -> dict[str, dict[str, float]]:
    """Mean Table 1 counts over the cohorts of ``seeds`` simulated with ``rates``."""
    seeds = list(seeds)
    total: dict[str, dict[str, float]] = {}
    for seed in seeds:
        counts = table1_counts(_cohort.simulate_cohort(seed, first_scan_rates=rates))
        for sign, cells in counts.items():
            for region, n in cells.items():
                total.setdefault(sign, {}).setdefault(region, 0.0)
                total[sign][region] += n
    return {s: {r: n / len(seeds) for r, n in cells.items()} for s, cells in total.items()}


@dataclass
class FitResult:
    """Outcome of :func:`fit_first_scan_rates`.

    Attributes
    ----------
    rates : dict
        The kept rates (the round with the smallest worst deviation).
    worst_deviation : float
        Their worst :func:`table1_deviation` (of the mean counts over the fit's seeds).
    best_round : int
        Which round they are (0: the starting rates).
    history : list of float
        The worst deviation of every round, starting rates first.
    trajectory : list of dict
        The rates of every round, starting rates first (``trajectory[-1]``: after the last update).
    """

    rates: dict
    worst_deviation: float
    best_round: int
    history: list = field(default_factory=list)
    trajectory: list = field(default_factory=list)

    @property
    def last_rates(self) -> dict:
        """The rates after the last update."""
        return self.trajectory[-1]


def fit_first_scan_rates(start_rates: Mapping[str, Mapping[str, float]], seeds: Iterable[int] = (0,),
                         rounds: int = 40, k: float = 0.4,
                         targets: Mapping[str, Mapping[str, float]] | None = None,
                         decimals: int | None = None) -> FitResult:
    """Fit the Table 1 rows of the rate table by rounds of :func:`calibration_step`.

    Each round simulates the cohorts of ``seeds`` with the current rates, scores their mean
    counts (:func:`worst_deviation`, against the paper's counts) and updates the rates towards
    ``targets``; the rates after the last update are scored too. The rates of the best-scoring
    round are kept (the earliest on ties).

    Parameters
    ----------
    start_rates : mapping
        ``{sign: {region: rate}}`` to start from (every sign of
        :data:`~sapsam_utils.synthetic.cohort.FIRST_SCAN_RATES`; rows without targets stay).
    seeds : iterable of int
        Cohort seeds whose mean counts are fitted.
    rounds : int
        Updates to make.
    k : float
        Damping exponent of the update.
    targets : mapping, optional
        ``{sign: {region: count}}``; default :func:`calibration_targets`.
    decimals : int, optional
        Round the rates to this many decimals after each update (None: do not round).

    Returns
    -------
    FitResult
    """
    seeds = list(seeds)
    targets = calibration_targets() if targets is None else targets
    rates = {s: dict(v) for s, v in start_rates.items()}
    history, candidates = [], []
    for i in range(rounds + 1):
        counts = simulated_counts(rates, seeds)
        history.append(worst_deviation(counts=counts))
        candidates.append(rates)
        if i == rounds:
            break
        rates = calibration_step(rates, counts, targets, k)
        if decimals is not None:
            rates = {s: {r: round(v, decimals) for r, v in cells.items()} for s, cells in rates.items()}
    best = int(np.argmin(history))
    return FitResult(rates=candidates[best], worst_deviation=history[best], best_round=best,
                     history=history, trajectory=candidates)


def documented_fit(decimals: int | None = 3) -> tuple[FitResult, FitResult]:
    """The fit described at :data:`~sapsam_utils.synthetic.cohort.FIRST_SCAN_RATES`, both phases.

    Phase 1: 30 rounds, ``k`` = 0.7, against the mean over seeds 0-39, from :func:`starting_rates`.
    Phase 2: 40 rounds, ``k`` = 0.4, against seed 0, from phase 1's last rates.

    It re-derives the committed table's worst deviation (0.839) and its upper-zone rates (within
    1 %), but only approximately (within a factor of 1.45) the middle and lower rates, which few
    studies constrain; the original run's code was lost, and its details (e.g. which round ties
    kept) are not known.

    Parameters
    ----------
    decimals : int, optional
        Round the rates to this many decimals after each update (the committed table has 3).

    Returns
    -------
    (FitResult, FitResult)
        The two phases; the second's ``rates`` are the fitted table.
    """
    phase1 = fit_first_scan_rates(starting_rates(), seeds=range(40), rounds=30, k=0.7, decimals=decimals)
    phase2 = fit_first_scan_rates(phase1.last_rates, seeds=[0], rounds=40, k=0.4, decimals=decimals)
    return phase1, phase2


def rates_table(fitted: Mapping[str, Mapping[str, float]],
                committed: Mapping[str, Mapping[str, float]] | None = None) -> pd.DataFrame:
    """Fitted rates beside the committed ones: ``sign``, ``region``, ``fitted``, ``committed``, ``ratio``."""
    committed = _cohort.FIRST_SCAN_RATES if committed is None else committed
    rows = [{"sign": s, "region": r, "fitted": fitted[s][r], "committed": committed[s][r],
             "ratio": fitted[s][r] / committed[s][r]} for s in committed for r in REGIONS]
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    """Run the fit and print the fitted rates beside the committed ones:
    ``python -m sapsam_utils.synthetic.calibration [--phase2-only]``."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--phase2-only", action="store_true",
                        help="only phase 2 (40 rounds, k 0.4, against seed 0), from starting_rates(); seconds")
    args = parser.parse_args(argv)
    if args.phase2_only:
        fit = fit_first_scan_rates(starting_rates(), seeds=[0], rounds=40, k=0.4, decimals=3)
    else:
        phase1, fit = documented_fit()
        print(f"phase 1 (seeds 0-39, k 0.7): worst deviation of the mean counts {phase1.history[-1]:.3f} "
              f"after 30 rounds (best {phase1.worst_deviation:.3f}, round {phase1.best_round})")
    print(f"phase 2 (seed 0, k 0.4): kept round {fit.best_round}, worst deviation {fit.worst_deviation:.3f}")
    with pd.option_context("display.width", 120, "display.max_rows", 100):
        print(rates_table(fit.rates).round(3).to_string(index=False))
    committed = worst_deviation(_cohort.simulate_cohort(0))
    fitted = worst_deviation(_cohort.simulate_cohort(0, first_scan_rates=fit.rates))
    print(f"worst Table 1 deviation of the seed-0 cohort (tolerance units): fitted {fitted:.3f}, committed {committed:.3f}")


if __name__ == "__main__":
    main()
