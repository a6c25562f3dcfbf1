"""Move the champion alias back, after re-scoring the old version on today's holdout."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from {{ cookiecutter.__package_name }}.cli import run, version_number, write_json
from {{ cookiecutter.__package_name }}.config import Backends, load_params
from {{ cookiecutter.__package_name }}.errors import EXIT_REFUSED
from {{ cookiecutter.__package_name }}.metrics import figure
from {{ cookiecutter.__package_name }}.promotion import Gate, rollback

log = logging.getLogger("rollback")


def main(argv: list[str] | None = None) -> int:
    """Roll back to --version (default: the previous champion); exit 4 if a check refuses."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--version", type=version_number, help="version to restore (default: previous champion)"
    )
    parser.add_argument("--reason", default="manual rollback", help="why, recorded on the version")
    parser.add_argument(
        "--force",
        action="store_true",
        help="move even if it fails a check (threshold, never champion)",
    )
    parser.add_argument("--data", type=Path, default=Path("data/dataset.parquet"))
    parser.add_argument("--report", type=Path, default=Path("reports/rollback.json"))
    args = parser.parse_args(argv)

    def step() -> int:
        params = load_params()
        gate = Gate.from_params(params["promote"], params["model"]["task"])
        report = rollback(
            args.data,
            params,
            gate,
            Backends.from_env(),
            args.version or None,
            args.reason,
            args.force,
        )
        write_json(args.report, report)
        if not report["moved"]:
            hint = "pass FORCE=1 to roll back anyway"
            if not report["forceable"]:
                hint = "FORCE=1 does not override this"
            log.error("refused: %s; %s", report["refusal"], hint)
            return EXIT_REFUSED
        value, overridden = report["value_today"], report["refusal"]  # a refusal FORCE overrode
        log.log(
            logging.WARNING if overridden else logging.INFO,
            "champion is now version %s (was %s): %s today %s against the threshold %s%s. A "
            "running service keeps its bundle until redeployed: `make serve` (or the deploy "
            "workflow) bundles the new champion",
            report["to_version"],
            report["from_version"],
            report["metric"],
            "undefined" if value is None else figure(value),
            report["threshold"],
            f", forced past the check (FORCE=1): {overridden}" if overridden else "",
        )
        if report["worse_than_champion"]:
            log.warning(
                "version %s scores worse today than version %s, the champion it replaced: %s "
                "%s against %s on the same holdout rows",
                report["to_version"],
                report["from_version"],
                report["metric"],
                figure(value),
                figure(report["champion_value_today"]),
            )
        return 0

    return run(step)


if __name__ == "__main__":
    raise SystemExit(main())
