"""Compare a window of the prediction log with the champion's training profile.

Exit codes: 0 no drift (or no verdict: too few records), 3 drift detected (in a feature, in the
predictions, or in the live metric: wholly below promote.threshold), 1 a failed step,
2 bad arguments.
The report lands in reports/monitoring.{json,md,html} in every case but a failure.

The statistics come from the rollups the prediction log keeps per hour when they cover the
window, else from the raw log rows (--exact forces the raw rows: exact percentiles, slower).
Without --end the window ends at the end of the current hour (nothing is logged after now), so
it covers whole hours, the rollup buckets, and still every record logged so far.
The statistics of each UTC calendar day the window reaches into are stored in daily_stats: the
whole day once it is over, and today so far when the window ends now.
"""

from __future__ import annotations

import argparse
import json
import logging
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

from mlflow.exceptions import MlflowException

from {{ cookiecutter.__package_name }} import registry
from {{ cookiecutter.__package_name }}.cli import positive_days, run
from {{ cookiecutter.__package_name }}.config import Backends, load_params
from {{ cookiecutter.__package_name }}.errors import EXIT_DRIFT, PipelineError
from {{ cookiecutter.__package_name }}.monitoring import report as reports
from {{ cookiecutter.__package_name }}.monitoring.monitor import (
    days_to_store,
    monitor,
    store_daily_stats,
)
from {{ cookiecutter.__package_name }}.monitoring.prediction_log import monitoring_database
from {{ cookiecutter.__package_name }}.promotion import Gate

log = logging.getLogger("monitor")
HOUR = timedelta(hours=1)


def window(end: str | None, days: float) -> tuple[datetime, datetime]:
    """The window ending at --end (ISO; UTC unless it gives an offset; default the end of this
    hour), lasting --days."""
    try:
        stop = datetime.fromisoformat(end) if end else end_of_this_hour()
    except ValueError as err:
        raise PipelineError(
            f"--end {end!r} is not an ISO date or time, e.g. 2026-06-30T00:00"
        ) from err
    stop = stop.replace(tzinfo=UTC) if stop.tzinfo is None else stop.astimezone(UTC)
    if stop > end_of_this_hour():  # it would be stored as a day of no traffic
        raise PipelineError(
            f"--end {end!r} is in the future: a window ends by the end of this hour "
            f"({end_of_this_hour():%Y-%m-%dT%H:%M} UTC), the default"
        )
    try:
        return stop - timedelta(days=days), stop
    except OverflowError as err:  # before year 1
        raise PipelineError(
            f"a window of {days:g} days ending at {stop.isoformat()} starts before year 1: "
            "give fewer --days (DAYS=) or a later --end (END=)"
        ) from err


def end_of_this_hour() -> datetime:
    """The next whole hour (UTC), or now if now is one."""
    now = datetime.now(UTC)
    hour = now.replace(minute=0, second=0, microsecond=0)
    return hour if hour == now else hour + timedelta(hours=1)


def champion_info(client, name: str) -> dict:
    """The champion's version, task, classes and training profile, from the registry."""
    current = registry.champion(client, name)
    if current is None:
        raise PipelineError(f"model {name} has no champion: run `make pipeline` first")
    return {
        "name": name,
        "version": str(current.version),
        "task": current.tags.get("task"),
        "classes": json.loads(current.tags.get("classes") or "null"),
        "profile": registry.load_profile(client, current.run_id),
    }


def feature_kinds(client, name: str):
    """kinds_of(version): the feature kinds a registered version was trained on, from its
    training profile; None when the registry cannot say (the monitor then compares as usual)."""

    def kinds_of(version: str) -> dict[str, str] | None:
        try:
            found = client.get_model_version(name, version)
            profile = registry.load_profile(client, found.run_id)
        except (MlflowException, OSError, ValueError) as err:
            log.warning("the feature types of %s v%s are unknown: %s", name, version, err)
            return None
        return {feature: f["kind"] for feature, f in profile["features"].items()}

    return kinds_of


def main(argv: list[str] | None = None) -> int:
    """Write reports/monitoring.* and store the day's statistics; exit 3 on drift."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--end", default=None, help="end of the window, ISO UTC (default: now)")
    parser.add_argument(
        "--days",
        type=positive_days,
        default=None,
        help="window length in days, above 0 (default: params.yaml monitor.window_days)",
    )
    parser.add_argument("--out-dir", type=Path, default=Path("reports"))
    parser.add_argument(
        "--exact", action="store_true", help="read the raw log rows, not the hourly rollups"
    )
    args = parser.parse_args(argv)
    try:
        window(args.end, args.days or 1)
    except PipelineError as err:
        parser.error(str(err))  # a bad argument: exit 2, yesterday's reports left as they are

    def checked() -> dict:
        params, backends = load_params(), Backends.from_env()
        thresholds = params["monitor"]
        gate = Gate.from_params(params["promote"], params["model"]["task"])
        scheduled = float(thresholds.get("window_days", 1))
        start, end = window(args.end, args.days or scheduled)
        client, name = registry.connect(backends), params["model"]["name"]
        champion = champion_info(client, name)
        engine = monitoring_database(backends.monitoring_database_url)
        kinds_of = feature_kinds(client, name)
        report = monitor(engine, champion, start, end, thresholds, args.exact, gate, kinds_of)
        report["exit_code"] = EXIT_DRIFT if report["drift"] else 0
        of_day = partial(
            monitor, engine, champion, thresholds=thresholds, exact=args.exact, kinds_of=kinds_of
        )
        store_days(engine, report, (start, end), of_day)
        return report

    def step() -> int:
        # The last reports stay readable while this run works; a run that fails (or is
        # interrupted) removes them, so a workflow never reads an earlier run's as its own.
        try:
            report = checked()
        except BaseException:
            reports.remove(args.out_dir)
            raise
        reports.write(report, args.out_dir)
        log_findings(report)
        return report["exit_code"]

    return run(step)


def store_days(engine, report: dict, window: tuple[datetime, datetime], of_day) -> None:
    """Store the daily_stats of each day the window reaches into (days_to_store), each day's
    from its own monitoring pass, `of_day(start, end)` (the window's own report where the
    window is that day), and, for a window of several days, note those that drift on their
    own in what the window's verdict does not name."""
    start, end = window
    drifted_days = {}
    for day in days_to_store(start, end, ends_now=end >= end_of_this_hour() - HOUR):
        day_report = report if day == window else of_day(*day)
        named = set(day_report.get("drifted") or []) - set(report.get("drifted") or [])
        if end - start > timedelta(days=1) and named:  # drift the window's verdict leaves out
            drifted_days[f"{day[0]:%Y-%m-%d}"] = day_report["drifted"]
        if store_daily_stats(engine, day_report):
            log.info("daily_stats: %s, %d records", f"{day[0]:%Y-%m-%d}", day_report["records"])
    note_drifted_days(report, dict(sorted(drifted_days.items())))


def note_drifted_days(report: dict, drifted_days: dict[str, list[str]]) -> None:
    """Name the days of a longer window that drifted on their own (`drifted_days`): a week's
    window dilutes one bad night, which the daily run flagged but a review of the week would
    miss. The window's own verdict stays its exit code."""
    report["drifted_days"] = drifted_days
    if drifted_days:
        days = "; ".join(f"{day}: {', '.join(names)}" for day, names in drifted_days.items())
        report["messages"].append(
            f"days of this window that drift on their own ({days}): the whole window dilutes "
            "them; `make monitor END=<the next day> DAYS=1` shows one"
        )


def log_findings(report: dict) -> None:
    """Log this window's messages, once (the days stored for daily_stats repeat some), then the
    headline, which says the first when there is no verdict."""
    for message in report["messages"][0 if report["status"] == "checked" else 1 :]:
        log.warning("%s", message)
    log.info("%s", reports.headline(report))


if __name__ == "__main__":
    raise SystemExit(main())
