"""Drift statistics on binned distributions: PSI, a binned Kolmogorov-Smirnov test, chi-squared.

Everything here works on bin counts (a few numbers per feature), never on raw rows, so the
database does the heavy part and memory stays flat however large the log grows.

Both tests are two-sample tests: the training profile is itself a sample (its `count` rows), so
its frequencies carry sampling noise too. Treating them as exact makes a test overconfident as
the window grows, and clean traffic starts to look drifted.

A feature's missing share is checked apart from its distribution (a 2x2 test of missing against
present, training against window, under the same PSI-and-significance rule), so a broken
upstream feed that nulls a feature is flagged and named even when the values that do arrive
look like training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy import stats

EPSILON = 1e-4  # stands in for an empty bin, so PSI stays finite
# Cochran's rule: a chi-squared cell expecting fewer counts than this is pooled with the others
# like it (rare categories and the unseen ones), so thousands of sparse cells (merchant ids)
# neither break the test's approximation nor inflate PSI on a small window.
MIN_EXPECTED = 5

DISTRIBUTION = "distribution"
MISSING = "missing rate"


@dataclass(frozen=True)
class Verdict:
    """The drift verdict for one feature (or for the predictions).

    `psi`, `test`, `statistic` and `p_value` compare the distribution of the present values;
    `reference_count` and `current_count` are the present values each side compared. The
    `missing_*` fields compare the missing share (None where no missing check is made, as for
    the predictions). `reasons` says which of the two drifted: "distribution", "missing rate".
    `unseen_share` (categorical features) is the share of the present values in categories
    training never saw, and `unseen_expected` the share the profile expected there under no
    drift (`categorical_verdict`). `watch`: the distribution did not drift, but shifted
    significantly by at least half the PSI bar (a shift building up, or one just under it),
    named without an alert.
    """

    name: str
    kind: str
    psi: float
    test: str
    statistic: float
    p_value: float
    drifted: bool
    reference_count: int
    current_count: int
    reference_missing_rate: float | None = None
    current_missing_rate: float | None = None
    missing_psi: float | None = None
    missing_p_value: float | None = None
    reasons: tuple[str, ...] = ()
    unseen_share: float | None = None
    unseen_expected: float | None = None
    watch: bool = False

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
    """KS distance between the two CDFs at the bin edges, and its asymptotic two-sample p-value.

    The effective size n_ref * n_cur / (n_ref + n_cur) accounts for the reference's own noise;
    the distance at the bin edges never exceeds the exact one, so the test errs quiet.
    """
    ref = np.cumsum(np.asarray(reference, dtype=float) / max(np.sum(reference), EPSILON))
    cur = np.cumsum(np.asarray(current, dtype=float) / max(np.sum(current), EPSILON))
    distance = float(np.max(np.abs(ref - cur)))
    effective = n_ref * n_cur / max(n_ref + n_cur, 1)
    return distance, float(stats.kstwobign.sf(distance * np.sqrt(effective)))


def chi_squared(reference_counts: np.ndarray, current_counts: np.ndarray) -> tuple[float, float]:
    """Chi-squared test of homogeneity: are the two samples' counts per bin from one distribution?

    A 2 x bins contingency table, so the reference's size enters the test (a goodness-of-fit
    test against the training frequencies would treat them as exact).
    """
    table = np.vstack(
        [np.asarray(reference_counts, dtype=float), np.asarray(current_counts, dtype=float)]
    )
    table = table[:, table.sum(axis=0) > 0]  # a bin empty on both sides carries no evidence
    if table.shape[1] < 2 or (table.sum(axis=1) <= 0).any():
        return 0.0, 1.0  # nothing to compare: one bin, or one side empty
    # No Yates correction: the same asymptotic test however many bins, as for the KS path.
    statistic, p_value, _dof, _expected = stats.chi2_contingency(table, correction=False)
    return float(statistic), float(p_value)


def reference_present(profile: dict) -> int:
    """Training rows where the value was present: the profile's row count less its missing."""
    return round(profile["count"] * (1 - (profile.get("missing_rate") or 0.0)))


def numeric_verdict(
    name: str,
    profile: dict,
    counts: list[int],
    thresholds: dict,
    tests: int,
    missing: int | None = None,
) -> Verdict:
    """Compare a numeric feature's current bin counts with its training bins.

    `missing` (the window's records without a value) adds the missing-rate check.
    """
    n_cur = int(sum(counts))
    n_ref = reference_present(profile)  # the bin fractions are shares of present values only
    reference = np.asarray(profile["bin_fractions"])
    current = np.asarray(counts, dtype=float) / max(n_cur, 1)
    distance, p_value = binned_ks(reference, current, n_ref, n_cur)
    value = psi(reference, current)
    test = (value, "ks", distance, p_value)
    return _verdict(name, "numeric", profile, test, (n_ref, n_cur), thresholds, tests, missing)


def categorical_verdict(
    name: str,
    profile: dict,
    counts: dict[str, int],
    thresholds: dict,
    tests: int,
    missing: int | None = None,
) -> Verdict:
    """Compare a categorical feature's current counts with its training counts.

    The profile holds frequencies among present values and a row count, so the training counts
    are frequency x present rows. Categories never seen in training form one extra bin, whose
    training share is the share of new values the profile expects there (`unseen_expected`):
    0 for a few frequent categories, so a new one drifts strongly, as it should; some per cent
    for a long tail, whose new traffic routinely brings categories training lacked. Sparse cells
    are pooled first (pool_sparse): a rare category in a small window is no evidence of drift.
    `missing` (the window's records without a value) adds the missing-rate check.
    """
    known = list(profile["frequencies"])
    unseen = sum(n for category, n in counts.items() if category not in profile["frequencies"])
    current = np.asarray([counts.get(c, 0) for c in known] + [unseen], dtype=float)
    expected = float(profile.get("unseen_expected") or 0.0)  # older profiles lack it
    seen = [profile["frequencies"][c] * (1 - expected) for c in known]
    shares = np.asarray([*seen, expected])
    n_ref, n_cur = reference_present(profile), int(current.sum())
    shares, current = pool_sparse(shares, current, n_ref)
    statistic, p_value = chi_squared(np.round(shares * n_ref), current)
    value = psi(shares, current / max(n_cur, 1))
    test = (value, "chi2", statistic, p_value)
    sizes = (n_ref, n_cur)
    verdict = _verdict(name, "categorical", profile, test, sizes, thresholds, tests, missing)
    unseen_share = unseen / n_cur if n_cur else None
    return replace(verdict, unseen_share=unseen_share, unseen_expected=expected)


def pool_sparse(
    shares: np.ndarray, current: np.ndarray, n_ref: int
) -> tuple[np.ndarray, np.ndarray]:
    """The reference shares and current counts with the cells that expect fewer than
    MIN_EXPECTED counts on either side, under no drift, merged into one last cell.

    A cell's expected count is its share of both samples together times the smaller sample.
    Nothing merges when fewer than two cells are sparse.
    """
    n_cur = current.sum()
    together = (shares * n_ref + current) / max(n_ref + n_cur, 1)
    sparse = together * min(n_ref, n_cur) < MIN_EXPECTED
    if sparse.sum() < 2:
        return shares, current
    return (
        np.append(shares[~sparse], shares[sparse].sum()),
        np.append(current[~sparse], current[sparse].sum()),
    )


def missing_check(profile: dict, present: int, missing: int) -> tuple[float, float, float, float]:
    """Training and window missing rates, the PSI of the missing/present split, and the p-value
    of a two-sample test of it (chi-squared on the 2 x 2 table)."""
    ref_rate = float(profile.get("missing_rate") or 0.0)
    n_ref = int(profile["count"])
    total = present + missing
    cur_rate = missing / total if total else 0.0
    value = psi([ref_rate, 1 - ref_rate], [cur_rate, 1 - cur_rate])
    ref_missing = round(ref_rate * n_ref)
    _statistic, p_value = chi_squared([ref_missing, n_ref - ref_missing], [missing, present])
    return ref_rate, cur_rate, value, p_value


def missing_note(verdict: dict) -> str | None:
    """A sentence for the report when a verdict (as_dict) says the missing rate drifted."""
    if MISSING not in verdict.get("reasons", ()):
        return None
    if verdict["current_missing_rate"] > verdict["reference_missing_rate"]:
        question = "is an upstream feed sending nulls?"
    else:
        question = "does a client send a value (or a default) where training had gaps?"
    return (
        f"feature '{verdict['name']}': missing rate moved from "
        f"{verdict['reference_missing_rate']:.1%} in training to "
        f"{verdict['current_missing_rate']:.1%} in this window (PSI {verdict['missing_psi']:.3f}, "
        f"p = {verdict['missing_p_value']:.2g}): {question}"
    )


def _verdict(
    name: str,
    kind: str,
    profile: dict,
    test: tuple[float, str, float, float],
    sizes: tuple[int, int],
    thresholds: dict,
    tests: int,
    missing: int | None,
) -> Verdict:
    """Combine the distribution test (PSI, test name, statistic, p-value; on `sizes` present
    values in training and window) and, when `missing` is given, the missing-rate check."""
    value, test_name, statistic, p_value = test
    n_ref, n_cur = sizes
    reasons = [DISTRIBUTION] if _drifted(value, p_value, thresholds, tests) else []
    half = {**thresholds, "psi": thresholds["psi"] / 2}
    watch = not reasons and _drifted(value, p_value, half, tests)
    extra: dict = {}
    if missing is not None:
        ref_rate, cur_rate, missing_psi, missing_p = missing_check(profile, n_cur, missing)
        extra = {
            "reference_missing_rate": ref_rate,
            "current_missing_rate": cur_rate,
            "missing_psi": missing_psi,
            "missing_p_value": missing_p,
        }
        reasons += [MISSING] if _drifted(missing_psi, missing_p, thresholds, tests) else []
    return Verdict(
        name,
        kind,
        value,
        test_name,
        statistic,
        p_value,
        bool(reasons),
        n_ref,
        n_cur,
        **extra,
        reasons=tuple(reasons),
        watch=watch,
    )


def _drifted(value: float, p_value: float, thresholds: dict, tests: int) -> bool:
    """Drift needs both a material shift (PSI) and significance, corrected for the number of tests.

    At large sample sizes a p-value alone flags shifts too small to matter; PSI alone flags noise
    in small samples. Requiring both keeps clean traffic quiet and real shifts loud. The
    missing-rate check uses the same rule and the same per-feature cut-off (alpha / features):
    it is the feature's second question, and the PSI bar keeps it silent on sampling noise.
    """
    return value >= thresholds["psi"] and p_value < thresholds["alpha"] / max(tests, 1)
