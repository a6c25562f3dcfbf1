"""Drift statistics on binned distributions: PSI, a binned Kolmogorov-Smirnov test, chi-squared.

Everything here works on bin counts (a few numbers per feature), never on raw rows, so the
database does the heavy part and memory stays flat however large the log grows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

EPSILON = 1e-4  # stands in for an empty bin, so PSI and chi-squared stay finite


@dataclass(frozen=True)
class Verdict:
    """The drift verdict for one feature (or for the predictions)."""

    name: str
    kind: str
    psi: float
    test: str
    statistic: float
    p_value: float
    drifted: bool
    reference_count: int
    current_count: int

    def as_dict(self) -> dict:
        """A JSON-ready dict."""
        return asdict(self)


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """Population stability index between two distributions given as fractions per bin."""
    ref = np.clip(np.asarray(reference, dtype=float), EPSILON, None)
    cur = np.clip(np.asarray(current, dtype=float), EPSILON, None)
    ref, cur = ref / ref.sum(), cur / cur.sum()
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def binned_ks(
    reference: np.ndarray, current: np.ndarray, n_ref: int, n_cur: int
) -> tuple[float, float]:
    """KS distance between the two CDFs at the bin edges, and its asymptotic p-value."""
    ref = np.cumsum(np.asarray(reference, dtype=float) / max(np.sum(reference), EPSILON))
    cur = np.cumsum(np.asarray(current, dtype=float) / max(np.sum(current), EPSILON))
    distance = float(np.max(np.abs(ref - cur)))
    effective = n_ref * n_cur / max(n_ref + n_cur, 1)
    return distance, float(stats.kstwobign.sf(distance * np.sqrt(effective)))


def chi_squared(reference: np.ndarray, current_counts: np.ndarray) -> tuple[float, float]:
    """Chi-squared goodness of fit of the current counts to the reference frequencies."""
    counts = np.asarray(current_counts, dtype=float)
    expected = np.clip(np.asarray(reference, dtype=float), EPSILON, None)
    expected = expected / expected.sum() * counts.sum()
    statistic, p_value = stats.chisquare(counts, expected)
    return float(statistic), float(p_value)


def numeric_verdict(
    name: str, profile: dict, counts: list[int], thresholds: dict, tests: int
) -> Verdict:
    """Compare a numeric feature's current bin counts with its training bins."""
    n_cur = int(sum(counts))
    reference = np.asarray(profile["bin_fractions"])
    current = np.asarray(counts, dtype=float) / max(n_cur, 1)
    distance, p_value = binned_ks(reference, current, profile["count"], n_cur)
    value = psi(reference, current)
    return Verdict(
        name,
        "numeric",
        value,
        "ks",
        distance,
        p_value,
        _drifted(value, p_value, thresholds, tests),
        profile["count"],
        n_cur,
    )


def categorical_verdict(
    name: str, profile: dict, counts: dict[str, int], thresholds: dict, tests: int
) -> Verdict:
    """Compare a categorical feature's current counts with its training frequencies.

    Categories never seen in training form one extra bin whose reference share is ~0, so a
    new category drifts strongly, as it should.
    """
    known = list(profile["frequencies"])
    unseen = sum(n for category, n in counts.items() if category not in profile["frequencies"])
    current = np.asarray([counts.get(c, 0) for c in known] + [unseen], dtype=float)
    reference = np.asarray([profile["frequencies"][c] for c in known] + [0.0])
    n_cur = int(current.sum())
    statistic, p_value = chi_squared(reference, current)
    value = psi(reference, current / max(n_cur, 1))
    return Verdict(
        name,
        "categorical",
        value,
        "chi2",
        statistic,
        p_value,
        _drifted(value, p_value, thresholds, tests),
        profile["count"],
        n_cur,
    )


def _drifted(value: float, p_value: float, thresholds: dict, tests: int) -> bool:
    """Drift needs both a material shift (PSI) and significance, corrected for the number of tests.

    At large sample sizes a p-value alone flags shifts too small to matter; PSI alone flags noise
    in small samples. Requiring both keeps clean traffic quiet and real shifts loud.
    """
    return value >= thresholds["psi"] and p_value < thresholds["alpha"] / max(tests, 1)
