"""One monitoring pass: summary statistics of a window of the prediction log, drift against the
champion's training profile, the live metric where outcomes exist, stored in daily_stats.

The statistics come from the rollups the prediction-log writer keeps, or from the raw log rows
when the rollups do not cover the window or `exact` is asked for (sources.py); the report's
`source` says which.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import sqlalchemy as sa
from scipy import stats as scipy_stats

from ..metrics import bootstrap_interval, figure, readable, score_all, setting
from . import drift, sources
from . import stats as sql
from .tables import daily_stats, outcomes
from .tables import prediction_log as log_table

log = logging.getLogger(__name__)

# What the report calls the model's own outputs, among the features (none may take the name).
OUTPUT = "model output"
ACTUAL = "actual outcome"  # the outcomes' actual labels or values against the training target


def feature_section(
    source, name: str, profile: dict, thresholds: dict, tests: int, check_missing: bool = True
):
    """Statistics and verdict for one feature; `check_missing` adds the missing-rate check. A
    feature of monitor.not_judged gets its verdict's figures, never drift."""
    if profile["kind"] == "numeric":
        summary, counts = source.numeric(name, profile["bin_edges"])
        missing = max(summary["count"] - sum(counts), 0)  # the bins hold present values only
        checked = missing if check_missing else None
        verdict = drift.numeric_verdict(name, profile, counts, thresholds, tests, checked)
        shares = {
            "reference": profile["bin_fractions"],
            "current": _shares(counts),
            "labels": _bin_labels(profile["bin_edges"]),
        }
    else:
        counts, missing = source.categorical(name)
        total = sum(counts.values()) + missing
        summary = {
            "count": total,
            "missing_rate": missing / total if total else None,
            "frequencies": {k: v / max(total - missing, 1) for k, v in sorted(counts.items())},
        }
        checked = missing if check_missing else None
        verdict = drift.categorical_verdict(name, profile, counts, thresholds, tests, checked)
        shares = category_shares(profile["frequencies"], counts)
    judged = verdict.as_dict()
    if name in (thresholds.get("not_judged") or []):
        judged.update(drifted=False, watch=False, not_judged=True)
    return {
        "kind": profile["kind"],
        "summary": summary,
        "reference_missing_rate": float(profile.get("missing_rate") or 0.0),
        "verdict": judged,
        "distributions": shares,
    }


# Categories a report shows one by one; a feature with more (postal codes) shows those whose share
# moved most, the others summed in one "other" bar.
SHOWN_CATEGORIES = 30
UNSEEN = "unseen in training"  # the bar of categories training never saw, past those shown


def category_shares(reference: dict[str, float], counts: dict[str, int]) -> dict[str, list]:
    """Reference and current shares per category, for the report's table and plot."""
    labels = sorted(set(reference) | set(counts))
    current = dict(zip(labels, _shares([counts.get(c, 0) for c in labels]), strict=True))
    if len(labels) > SHOWN_CATEGORIES:
        moved = sorted(labels, key=lambda c: -abs(current[c] - reference.get(c, 0.0)))
        # The categories training never saw, summed apart: a flood of new ids is then in sight.
        unseen = any(c not in reference for c in moved[SHOWN_CATEGORIES - 1 :])
        shown = set(moved[: SHOWN_CATEGORIES - 1 - unseen])
        groups = {
            "other": [c for c in labels if c not in shown and c in reference],
            UNSEEN: [c for c in labels if c not in shown and c not in reference],
        }
        labels = sorted(shown)
        for group, rest in groups.items():
            if rest:
                bar = f"{group} ({len(rest)} categories)"
                reference = {**reference, bar: sum(reference.get(c, 0.0) for c in rest)}
                current[bar] = sum(current[c] for c in rest)
                labels.append(bar)
    return {
        "labels": labels,
        "reference": [reference.get(c, 0.0) for c in labels],
        "current": [current[c] for c in labels],
    }


def _shares(counts: list[int]) -> list[float]:
    """Counts as fractions of their sum."""
    total = sum(counts)
    return [c / total if total else 0.0 for c in counts]


def _bin_labels(edges: list[float]) -> list[str]:
    """Readable labels for open-ended quantile bins."""
    bounds = ["-inf", *[readable(e, grouped=False) for e in edges], "inf"]
    return [f"[{low}, {high})" for low, high in itertools.pairwise(bounds)]


def prediction_section(source, profile: dict, version: str, thresholds: dict) -> dict[str, Any]:
    """Drift of one model version's own outputs against their training distribution."""
    if profile.get("positive_proba"):
        reference = profile["positive_proba"]
        counts = source.probability_counts(
            profile["positive_class"], reference["bin_edges"], version
        )
        verdict = drift.numeric_verdict(OUTPUT, reference, counts, thresholds, 1)
        shares = {
            "labels": _bin_labels(reference["bin_edges"]),
            "reference": reference["bin_fractions"],
            "current": _shares(counts),
        }
    elif profile["kind"] == "numeric":
        counts = source.value_counts(profile["bin_edges"], version)
        verdict = drift.numeric_verdict(OUTPUT, profile, counts, thresholds, 1)
        shares = {
            "labels": _bin_labels(profile["bin_edges"]),
            "reference": profile["bin_fractions"],
            "current": _shares(counts),
        }
    else:
        counts = source.label_counts(version)
        verdict = drift.categorical_verdict(OUTPUT, profile, counts, thresholds, 1)
        shares = category_shares(profile["frequencies"], counts)
    return {"kind": "prediction", "verdict": verdict.as_dict(), "distributions": shares}


def actual_section(task: str, reference: dict, rows: list, thresholds: dict) -> dict[str, Any]:
    """Drift of the actual labels or values of the outcomes (`rows`) against the training rows'
    target: more fraud than training had, or prices that rose, whatever the features show."""
    if task == "regression":
        edges = reference["bin_edges"]
        values = np.asarray([r.actual_value for r in rows], dtype=float)
        counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
        verdict = drift.numeric_verdict(ACTUAL, reference, counts.tolist(), thresholds, 1)
        shares = {
            "labels": _bin_labels(edges),
            "reference": reference["bin_fractions"],
            "current": _shares(counts.tolist()),
            # The level of the values, training's then the window's: prices up 10 % in words.
            "mean": [reference["mean"], float(values.mean())],
            "median": [reference["quantiles"].get("p50"), float(np.median(values))],
        }
    else:
        counts = dict(Counter(str(r.actual) for r in rows))
        verdict = drift.categorical_verdict(ACTUAL, reference, counts, thresholds, 1)
        shares = category_shares(reference["frequencies"], counts)
    of = "values" if task == "regression" else "labels"
    return {"kind": "actual", "of": of, "verdict": verdict.as_dict(), "distributions": shares}


def live_metrics(
    conn,
    task: str,
    classes: list | None,
    window: tuple[datetime, datetime],
    version: str,
    positive: str | None = None,
    interval_of: str | None = None,
    target: dict | None = None,
    thresholds: dict | None = None,
) -> dict[str, Any]:
    """Model quality on `version`'s records of the window whose outcome has arrived (a binary F1
    scores `positive`). With `interval_of` (a metric's name), `interval` holds its bootstrap
    interval. Records other versions predicted in the window (before a promotion or rollback)
    are scored apart, per version, under `other_versions`. With `target` (the training profile's)
    and the `thresholds`, `actual` compares the actual labels or values with it
    (actual_section), on at least monitor.min_records outcomes of any version: what happened
    does not depend on the model that predicted it, so a promotion does not hide a label shift.

    The join with the log is skipped when no outcome was recorded after the window's start (less
    a day of clock slack): outcomes arrive after their predictions.
    """
    start, end = window
    recent = sa.select(outcomes.c.request_id).where(
        outcomes.c.recorded_at >= start - timedelta(days=1)
    )
    if conn.execute(recent.limit(1)).first() is None:
        return {"records_with_outcome": 0}
    joined = sa.join(
        log_table,
        outcomes,
        sa.and_(
            log_table.c.request_id == outcomes.c.request_id,
            log_table.c.record_index == outcomes.c.record_index,
        ),
    )
    rows = conn.execute(
        sa.select(
            log_table.c.model_version,
            log_table.c.prediction,
            log_table.c.prediction_value,
            log_table.c.probabilities,
            outcomes.c.actual,
            outcomes.c.actual_value,
        )
        .select_from(joined)
        .where(sql.in_window(start, end))
    ).all()
    by_version: dict[str, list] = {}
    for row in rows:
        by_version.setdefault(row.model_version, []).append(row)
    mine = by_version.pop(version, [])
    result = {"records_with_outcome": len(mine), "messages": []}
    if mine:
        result.update(score_outcomes(task, classes, mine, positive, interval_of))
    known = _known(task, classes)
    actual = [r for r in rows if (_finite(r.actual_value) if known is None else r.actual in known)]
    if target and len(actual) >= thresholds["min_records"]:
        result["actual"] = actual_section(task, target, actual, thresholds)
    if by_version:
        result["other_versions"] = others = {}
        for other in sorted(by_version, key=lambda v: (len(v), v)):  # 9 before 10
            scored = score_outcomes(task, classes, by_version[other], positive)
            result["messages"] += [f"v{other}: {m}" for m in scored.pop("messages")]
            others[other] = {"records_with_outcome": len(by_version[other]), **scored}
        found = ", ".join(f"v{v}: {n['records_with_outcome']}" for v, n in others.items())
        result["messages"].append(
            f"live metrics are of version {version}'s records; the outcomes of records other "
            f"versions predicted in this window are scored apart ({found})"
        )
    return result


EXAMPLES = 5  # unknown labels or ids a message names, at most


def score_outcomes(
    task: str,
    classes: list | None,
    rows: list,
    positive: str | None = None,
    interval_of: str | None = None,
) -> dict[str, Any]:
    """The metrics on the outcomes the model can be scored on, and `messages` saying what was
    left out: actual labels the model does not know (a typo, a new class), non-numeric actuals
    of a regression (loaded before load_outcomes refused them), undefined metrics. With
    `interval_of`, `interval` is that metric's bootstrap interval (None where undefined)."""
    usable = [r for r in rows if _scorable(r, _known(task, classes))]
    if task == "regression":
        unknown = [r.actual for r in rows if not _finite(r.actual_value)]
        allowed = "numbers"
    else:
        names = [str(c) for c in classes]
        unknown = [r.actual for r in rows if r.actual not in names]
        allowed = f"the model's classes {names}"
    result: dict[str, Any] = {"messages": []}
    if len(usable) < len(rows):
        result["outcomes_left_out"] = len(rows) - len(usable)
        counted = Counter(unknown).most_common(EXAMPLES)
        result["messages"].append(
            f"live metrics: {len(rows) - len(usable)} of {len(rows)} outcomes left out, their "
            f"actual is not among {allowed} (e.g. {', '.join(repr(a) for a, _n in counted)})"
            if unknown
            else f"live metrics: {len(rows) - len(usable)} of {len(rows)} outcomes left out, "
            "their logged prediction has no value"
        )
    if not usable:
        return result
    reasons: dict[str, str] = {}
    if task == "regression":
        scored = (
            [r.actual_value for r in usable],
            [r.prediction_value for r in usable],
            None,
            None,
        )
    else:
        proba = [[(r.probabilities or {}).get(n, 0.0) for n in names] for r in usable]
        scored = (
            [r.actual for r in usable],
            np.asarray([r.prediction for r in usable]),
            np.asarray(proba),
            names,
        )
    scores = score_all(task, *scored, reasons, positive)
    if interval_of and scores.get(interval_of) is not None:
        result["interval"] = bootstrap_interval(interval_of, task, *scored, positive)
    result["messages"] += [
        f"live {name} undefined on these {len(usable)} outcomes: {reason}"
        for name, reason in reasons.items()
    ]
    return {"records_scored": len(usable), **scores, **result}


def _known(task: str, classes: list | None) -> set[str] | None:
    """The labels an outcome may have: the model's classes, or None for a regression."""
    return None if task == "regression" else {str(c) for c in classes}


def _scorable(row, known: set[str] | None) -> bool:
    """Whether an outcome can be scored: one of the `known` classes, or for a regression a
    number with a logged predicted value."""
    if known is None:
        return _finite(row.actual_value) and _finite(row.prediction_value)
    return row.actual in known


def _finite(value) -> bool:
    """Whether a value is a finite number (not None, not NaN)."""
    return isinstance(value, int | float) and math.isfinite(value)


def monitor(
    engine: sa.Engine,
    champion: dict,
    start: datetime,
    end: datetime,
    thresholds: dict,
    exact: bool = False,
    gate=None,
    kinds_of: Callable[[str], dict[str, str] | None] | None = None,
) -> dict[str, Any]:
    """Compute the window's statistics and drift; `champion` carries version, profile, task.

    `exact` reads the raw log rows even where rollups would do (exact percentiles). With the
    promotion `gate` (promotion.Gate), a live metric wholly below its threshold is drift too
    (see live_quality). `kinds_of(version)` gives another version's feature kinds (None when
    unknown), so a feature it logged as another kind is not compared (see _kind_changes).
    """
    report = {
        "window": {"start": start.isoformat(), "end": end.isoformat()},
        "model_name": champion["name"],
        "champion_version": champion["version"],
        "messages": [],
        "features": {},
        "prediction": None,
        "drift": False,
    }
    with engine.connect() as conn:
        source = sources.choose(conn, champion, start, end, exact)
        report["source"] = source.name
        report["records_by_version"] = per_version = source.versions()
        report["records"] = total = sum(per_version.values())
        report["records_by_day"] = by_day = records_by_day(conn, start, end)
        quiet = [day for day, count in by_day.items() if count == 0]
        if quiet and total:
            report["messages"].append(
                f"no predictions logged on {_names(quiet)} (UTC), within the window: was the "
                "service down, or logging to another database?"
            )
        if total < thresholds["min_records"]:
            report["status"] = "empty" if total == 0 else "too few records"
            report["messages"].append(
                f"{total} predictions logged between {start:%Y-%m-%d %H:%M} and "
                f"{end:%Y-%m-%d %H:%M} "
                f"UTC: at least {thresholds['min_records']} are needed for a drift verdict "
                "(params.yaml monitor.min_records)"
            )
            report["messages"] += [source.note] if source.note else []
            return report
        _features(source, report, champion["profile"]["features"], thresholds, kinds_of)
        _predictions(source, report, champion, thresholds)
        report["latency_ms"] = source.latency()
        report["live_metrics"] = live_metrics(
            conn,
            champion["task"],
            champion.get("classes"),
            (start, end),
            champion["version"],
            positive=champion["profile"]["prediction"].get("positive_class"),
            interval_of=gate.metric.name if gate else None,
            target=champion["profile"].get("target"),  # its training rows' labels or values
            thresholds=thresholds,
        )
        report["actual"] = report["live_metrics"].pop("actual", None)
        report["messages"] += report["live_metrics"].pop("messages", [])
        report["live_metrics_of_other_versions"] = report["live_metrics"].pop("other_versions", {})
    report["messages"] += [source.note] if source.note else []
    drifted = [name for name, f in report["features"].items() if f["verdict"]["drifted"]]
    drifted += [
        section["verdict"]["name"]
        for section in (report["prediction"], report.get("actual"))
        if section and section["verdict"]["drifted"]
    ]
    drifted += _live_checks(report, champion, thresholds, gate)
    report["messages"] += _watched(report, thresholds)
    report.update(status="checked", drift=bool(drifted), drifted=drifted)
    return report


def records_by_day(conn, start: datetime, end: datetime) -> dict[str, int]:
    """Records logged on each UTC calendar day of a window longer than a day (the window's part
    of it; the newest STORED_DAYS), each counted on the logged_at index; empty for a shorter
    window."""
    if end - start <= timedelta(days=1):
        return {}
    days = days_to_store(start, end, ends_now=True)
    counted = {}
    for first, last in reversed(days):
        first = max(first, start)
        query = sa.select(sa.func.count()).select_from(log_table).where(sql.in_window(first, last))
        counted[f"{first:%Y-%m-%d}"] = int(conn.execute(query).scalar_one())
    return counted


def _watched(report: dict, thresholds: dict) -> list[str]:
    """A message naming the distributions that shifted significantly, by at least half the PSI
    bar but under it (drift.Verdict.watch): no alert, but no silence either."""
    sections = [*report["features"].values(), report["prediction"], report.get("actual")]
    watched = [s["verdict"] for s in sections if s and s["verdict"].get("watch")]
    if not watched:
        return []
    named = ", ".join(f"{v['name']} (PSI {v['psi']:.3f}, p = {v['p_value']:.2g})" for v in watched)
    return [
        f"watch: {named} shifted significantly, though under monitor.psi {thresholds['psi']}: "
        "no alert; a shift building up reaches it, and a lower monitor.psi alerts on this size"
    ]


def _live_checks(report: dict, champion: dict, thresholds: dict, gate) -> list[str]:
    """The live quality against the `gate` and a regression's live bias, each added to the
    report (`live_quality`, `live_bias`) with its message; the names of those failing."""
    live, checks = report["live_metrics"], {}
    if gate:
        quality = live_quality(live, gate, thresholds["min_records"])
        checks[f"live {gate.metric.name}"] = ("live_quality", *quality)
    if error := champion["profile"]["prediction"].get("error"):  # a regression's validation
        checks["live mean_error"] = ("live_bias", *live_bias(live, error, thresholds))
    failing = []
    for name, (key, section, note) in checks.items():
        report[key] = section
        if note:
            report["messages"].append(note)
        if section and section["failing"]:
            failing.append(name)
    return failing


def live_quality(live: dict, gate, minimum: int) -> tuple[dict | None, str | None]:
    """The live value of the gate's metric against promote.threshold, and a message when it
    fails it. Failing means the whole bootstrap interval fails the threshold, on at least
    `minimum` outcomes: a value below it within the noise of few outcomes is only a warning,
    or a champion promoted just past the bar would raise an alert and a retrain every other day.
    """
    # Outcomes scored: those whose actual the model knows (records_with_outcome counts all).
    name, outcomes = gate.metric.name, live.get("records_scored", 0)
    value, interval = live.get(name), live.pop("interval", None)
    if value is None or outcomes < minimum:
        return None, None
    low, high = interval or (None, None)
    best = None if interval is None else (high if gate.metric.higher_is_better else low)
    section = {
        "metric": name,
        "value": value,
        "interval": [low, high],
        "threshold": gate.threshold,
        "outcomes": outcomes,
        "failing": best is not None and not gate.metric.passes(best, gate.threshold),
    }
    if gate.metric.passes(value, gate.threshold):
        return section, None
    said = (
        f"live {name} {figure(value)} on {outcomes} outcomes "
        f"fails promote.threshold {setting(gate.threshold)}"
    )
    if interval is None:
        return section, f"{said}; its bootstrap interval is undefined, so this is no alert"
    spread = f"95 % bootstrap interval {figure(low)} to {figure(high)}"
    if not section["failing"]:
        return section, (
            f"{said}, but within the noise of that many outcomes ({spread}): a warning, no alert"
        )
    return section, (
        f"{said} ({spread}, all of it failing): the champion no longer meets the bar it was "
        "promoted past. Look at the newest data; a retrain, or `make rollback`, may fix it"
    )


def live_bias(live: dict, error: dict, thresholds: dict) -> tuple[dict | None, str | None]:
    """A regression's live mean error (prediction - actual) against its mean error on the
    validation rows (`error`: mean, std, count), and a message when it moved. It fails when it
    moved by at least monitor.bias times the validation errors' standard deviation and Welch's
    t-test puts the move beyond noise (p < monitor.alpha), on at least monitor.min_records
    outcomes. A rise of every actual value that the features do not explain (prices up 10 %)
    leaves the features and predictions as they were: only the errors show it.
    """
    outcomes, value, rmse = live.get("records_scored", 0), live.get("mean_error"), live.get("rmse")
    if value is None or rmse is None or outcomes < max(thresholds["min_records"], 2):
        return None, None
    spread = math.sqrt(max(rmse**2 - value**2, 0.0))  # the live errors' standard deviation
    shift, size = value - error["mean"], thresholds["bias"] * error["std"]
    p_value = welch_p_value(shift, (error["std"], error["count"]), (spread, outcomes))
    section = {
        "mean_error": value,
        "validation_mean_error": error["mean"],
        "shift": shift,
        "shift_in_sd": shift / error["std"] if error["std"] else None,
        "p_value": p_value,
        "outcomes": outcomes,
        "threshold": thresholds["bias"],
        "failing": abs(shift) >= size and shift != 0 and p_value < thresholds["alpha"],
    }
    if p_value >= thresholds["alpha"] or shift == 0:
        return section, None
    moved = section["shift_in_sd"]
    sds = "" if moved is None else f"{abs(moved):.2f} of the validation errors' SD, "
    now = f"too {'high' if value > 0 else 'low'} by {readable(abs(value))}" if value else "right"
    said = (
        f"live mean error (prediction - actual) {readable(value, True)} on {outcomes} outcomes, "
        f"against {readable(error['mean'], True)} on the validation rows: a move of "
        f"{readable(shift, True)} ({sds}p = {p_value:.2g}); the champion now predicts {now} on "
        "average"
    )
    if not section["failing"]:
        return section, f"{said}, under monitor.bias {thresholds['bias']} SD: a warning, no alert"
    return section, (
        f"{said}. The actual values moved in a way the champion does not follow (a change the "
        "features do not carry, or drifted features beyond the range it was trained on); "
        "retrain on the newest data"
    )


def welch_p_value(shift: float, one: tuple[float, int], other: tuple[float, int]) -> float:
    """The two-sided p-value of Welch's t-test that two means differ by `shift`, from each
    sample's standard deviation and size."""
    (sd1, n1), (sd2, n2) = one, other
    v1, v2 = sd1**2 / n1, sd2**2 / n2
    if v1 + v2 == 0:
        return 1.0 if shift == 0 else 0.0
    freedom = (v1 + v2) ** 2 / (v1**2 / max(n1 - 1, 1) + v2**2 / max(n2 - 1, 1))
    return float(2 * scipy_stats.t.sf(abs(shift) / math.sqrt(v1 + v2), freedom))


def _features(source, report: dict, profiles: dict, thresholds: dict, kinds_of=None) -> None:
    """Add a section per feature; a feature absent from the log, or logged as another kind by
    another version in the window, gets a message, not a verdict."""
    present = source.features()
    checked = [name for name in profiles if name in present]
    for name in profiles:
        if name not in present:
            report["messages"].append(
                f"feature '{name}' is not in the prediction log of this "
                "window (logged by another model version?): not compared"
            )
    # Another version's records may lack a feature's key, which reads as missing: compare
    # missing rates only of features every version in the window logs.
    logged_by_all = set(checked)
    others = [v for v in report["records_by_version"] if v != report["champion_version"]]
    if others:  # records of another version than the champion, with it or alone
        logged_by_all = _logged_by_all(report, checked, kinds_of)
        unsure = [name for name in checked if name not in logged_by_all]
        unsure_note = (
            f"{_names(unsure)} may be missing from all of another version's records (not logged "
            "by it, or its features unknown), so their missing rates are reported, not checked "
            "for drift"
        )
        if len(report["records_by_version"]) > 1:
            versions = sorted(  # numbers in order; any other version name after them
                report["records_by_version"].items(),
                key=lambda item: (not str(item[0]).isdigit(), str(item[0]).zfill(20)),
            )
            report["messages"].append(
                f"the window mixes model versions (records {_counted(dict(versions))})"
                + (f": {unsure_note}" if unsure else ", all of which log every feature compared")
            )
        elif unsure:
            report["messages"].append(unsure_note[0].upper() + unsure_note[1:])
        checked = _kind_changes(report, checked, profiles, kinds_of) if kinds_of else checked
    for name in checked:
        report["features"][name] = section = feature_section(
            source, name, profiles[name], thresholds, len(checked), name in logged_by_all
        )
        # The summary table shows the distribution test; say in words when nulls drifted.
        note = drift.missing_note(section["verdict"])
        report["messages"] += [note] if note else []
        if source.name == sources.ROLLUPS:
            report["messages"] += _overflowed(name, section["summary"])


def _logged_by_all(report: dict, names: list[str], kinds_of) -> set[str]:
    """The `names` (the champion's features) every other version in the window was trained on,
    so logs; none when another version's features are unknown."""
    found = set(names)
    for version in report["records_by_version"]:
        if version != report["champion_version"]:
            found &= set((kinds_of(version) if kinds_of else None) or ())
    return found


def _names(names: list[str], shown: int = 5) -> str:
    """Some names, quoted, and how many more."""
    text = ", ".join(f"'{name}'" for name in names[:shown])
    return text + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _kind_changes(report: dict, checked: list[str], profiles: dict, kinds_of) -> list[str]:
    """`checked` without the features another version in the window logged as another kind.

    A feature whose type changed between versions (numbers then, categories now, or the
    reverse) holds both kinds of value in the window: 1.0 read as a category is no category the
    champion knows, which would read as drift. Such a feature is named, not compared.
    """
    champion = report["champion_version"]
    changed: dict[str, list[str]] = {}
    for version in report["records_by_version"]:
        kinds = (kinds_of(version) or {}) if version != champion else {}
        for name in checked:
            if kinds.get(name, profiles[name]["kind"]) != profiles[name]["kind"]:
                changed.setdefault(name, []).append(f"v{version} {kinds[name]}")
    for name, others in changed.items():
        report["messages"].append(
            f"feature '{name}' is {profiles[name]['kind']} for champion v{champion} but "
            f"{', '.join(others)}, whose records are in this window: not compared until the "
            "window holds one kind (DAYS= or END= choose a window after the change)"
        )
    return [name for name in checked if name not in changed]


def _overflowed(name: str, summary: dict) -> list[str]:
    """Why a numeric feature's std (and its mean, past about 1e308) is null from the rollups:
    a value so large that their stored sums overflowed."""
    if summary.get("max") is None or summary["std"] is not None:
        return []
    low, high = summary["min"], summary["max"]
    extreme = high if abs(high) >= abs(low) else low
    nulls = "std is" if summary["mean"] is not None else "mean and std are"
    return [
        f"the hourly rollups' sums of {name} overflowed (a value of {extreme:g}): its {nulls} "
        "null; `.venv/bin/python scripts/monitor.py --exact` computes them from the raw rows"
    ]


def _counted(by_version: dict[str, int]) -> str:
    """`v1: 4002, v2: 17` for a sentence."""
    return ", ".join(f"v{version}: {count}" for version, count in by_version.items())


def _predictions(source, report: dict, champion: dict, thresholds: dict) -> None:
    """Add prediction drift, computed on the champion's own records only."""
    others = {v: n for v, n in report["records_by_version"].items() if v != champion["version"]}
    if others:
        report["messages"].append(
            f"records from other model versions ({_counted(others)}) are included in feature "
            "drift but not in prediction drift, which compares only champion "
            f"v{champion['version']}'s outputs"
        )
    if champion["version"] not in report["records_by_version"]:
        report["messages"].append(
            f"no records from champion v{champion['version']} in this window: prediction "
            "drift not computed. Does the service still serve the version before? Its /version "
            "says which it serves; a new champion is served after `make bundle` and a restart, "
            "or the deploy workflow"
        )
        return
    report["prediction"] = prediction_section(
        source, champion["profile"]["prediction"], champion["version"], thresholds
    )


# Days a run stores at most, the newest: a long ad-hoc window (DAYS=365) is reported whole
# but does not recompute a year of daily_stats.
STORED_DAYS = 31


def days_to_store(
    start: datetime, end: datetime, ends_now: bool
) -> list[tuple[datetime, datetime]]:
    """The UTC calendar days the window [start, end) reaches into, newest first (at most
    STORED_DAYS), each as the part of it daily_stats keeps: the whole day once it is over, and
    the current day so far only when the window `ends_now` (a window ending earlier would
    replace a day with its first hours)."""
    midnight = {"hour": 0, "minute": 0, "second": 0, "microsecond": 0}
    day = max(start, end - timedelta(days=STORED_DAYS + 1)).replace(**midnight)
    days = []
    while day < end:
        over = day + timedelta(days=1)
        if over <= end or ends_now:
            days.append((day, min(over, end)))
        day = over
    return days[::-1][:STORED_DAYS]


def store_daily_stats(engine: sa.Engine, report: dict) -> int:
    """Replace daily_stats' row set for the UTC day a report of that day (days_to_store)
    starts on with its statistics, whichever versions served the day (model_version is the
    champion they were compared with; `_service` `records_by_version.N` counts each version's
    records; OUTPUT `share.<class or value bin>` the champion's predictions); return the row
    count. A day without records stores nothing: it keeps what an earlier run stored for it
    (the log's records of the day may have been deleted since)."""
    day = datetime.fromisoformat(report["window"]["start"]).date()
    if not report["records"]:
        log.info("no records on %s: daily_stats keeps what it holds for that day", day)
        return 0
    version = report["champion_version"]
    service = {
        "records": report["records"],
        "records_by_version": report.get("records_by_version", {}),
        "latency_ms": report.get("latency_ms", {}),
        "live": report.get("live_metrics", {}),
    }
    statistics = [
        (name, key, value)
        for name, section in report["features"].items()
        for key, value in _flat(section["summary"]).items()
    ]
    statistics += [("_service", key, value) for key, value in _flat(service).items()]
    if report.get("prediction"):  # the champion's outputs: shares of its classes or value bins
        shares = report["prediction"]["distributions"]
        statistics += [
            (OUTPUT, f"share.{label}", share)
            for label, share in zip(shares["labels"], shares["current"], strict=True)
        ]
    rows = [
        {
            "day": day,
            "model_version": version,
            "feature": name,
            "statistic": key,
            "value": float(value),
        }
        for name, key, value in statistics
        if value is not None
    ]
    with engine.begin() as conn:
        conn.execute(daily_stats.delete().where(daily_stats.c.day == day))
        conn.execute(daily_stats.insert(), rows)
    return len(rows)


def _flat(values: dict, prefix: str = "") -> dict[str, float]:
    """Nested numeric statistics as flat dotted names."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[f"{prefix}{key}"] = value
    return flat
