"""Alert when the last completed retraining is older than --max-days.

A retraining is complete once the promotion gate has decided on its version (the version
carries a `gate.decision` tag, promoted or rejected); its age is the time since the gate last
decided on it (`gate.decided_at`: a retrain on unchanged data reuses the version it trained
before, and the gate finds it unchanged), or since it was trained (`trained_at`) for a version
decided on before that tag was kept. Versions the gate never saw, such as a pull request's
candidates, do not count. This catches what a schedule cannot report by itself: GitHub skipping
scheduled runs, or disabling the schedule of a repository without activity for 60 days.

Exit codes: 0 recent enough, 1 too old, no completed retraining, or a failed step.
The finding lands in reports/retrain_age.json either way, unless the registry is unreachable.
"""

from __future__ import annotations

import argparse
import logging
from datetime import UTC, datetime
from pathlib import Path

from {{ cookiecutter.__package_name }} import registry
from {{ cookiecutter.__package_name }}.cli import positive_days, run, write_json
from {{ cookiecutter.__package_name }}.config import Backends, section
from {{ cookiecutter.__package_name }}.errors import EXIT_ERROR

log = logging.getLogger("retrain_age")


def last_retraining(versions) -> tuple[str, datetime] | None:
    """The version the gate decided on last, and when; None without one."""
    decided = [
        (str(v.version), datetime.fromisoformat(when))
        for v in versions
        if v.tags.get("gate.decision")
        and (when := v.tags.get("gate.decided_at") or v.tags.get("trained_at"))
    ]
    return max(decided, key=lambda found: found[1], default=None)


def verdict(name: str, last, now: datetime, max_days: float) -> dict:
    """Whether the last retraining is too old, with a message that says what to do."""
    found = {"model_name": name, "max_age_days": max_days}
    if last is None:
        message = (
            f"model {name} has no version that went through the promotion gate: run the "
            "retrain workflow (Actions > retrain > Run workflow) or `make pipeline`"
        )
        return {**found, "stale": True, "message": message}
    version, decided_at = last
    age = (now - decided_at.astimezone(UTC)).total_seconds() / 86400
    message = (
        f"the last completed retraining of {name} (the gate's decision on version {version}, "
        f"{decided_at:%Y-%m-%d %H:%M} UTC) is {age:.1f} days old; the limit is {max_days:g} days"
    )
    if age > max_days:
        message += (
            ". Check the retrain workflow: GitHub may have skipped its schedule or disabled it "
            "(Actions > retrain > Enable workflow); then run it by hand"
        )
    return {
        **found,
        "stale": age > max_days,
        "version": version,
        "decided_at": decided_at.isoformat(),
        "age_days": round(age, 2),
        "message": message,
    }


def main(argv: list[str] | None = None) -> int:
    """Write --report and exit 1 when the last completed retraining is too old."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--max-days", type=positive_days, required=True, help="the oldest allowed age, above 0"
    )
    parser.add_argument("--report", type=Path, default=Path("reports/retrain_age.json"))
    args = parser.parse_args(argv)

    def step() -> int:
        name = section("model")["name"]
        client = registry.connect(Backends.from_env(), create=True)  # none yet: never trained
        versions = client.search_model_versions(f"name = '{name}'")
        found = verdict(name, last_retraining(versions), datetime.now(UTC), args.max_days)
        write_json(args.report, found)
        if found["stale"]:
            log.error("%s", found["message"])
            return EXIT_ERROR
        log.info("%s", found["message"])
        return 0

    return run(step)


if __name__ == "__main__":
    raise SystemExit(main())
