"""Train a candidate from params.yaml, log it to MLflow and register it with its lineage."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from {{ cookiecutter.__package_name }}.cli import read_json, run, write_json
from {{ cookiecutter.__package_name }}.config import Backends, load_params, redact
from {{ cookiecutter.__package_name }}.errors import PipelineError

log = logging.getLogger("train")


def main(argv: list[str] | None = None) -> int:
    """Train on --data and write the registered version to --report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("data/dataset.parquet"))
    parser.add_argument("--report", type=Path, default=Path("reports/train.json"))
    parser.add_argument(
        "--forget-unregistered",
        action="store_true",
        help="train nothing: remove --report if it names a version of another registry that "
        "this one lacks (MLFLOW_TRACKING_URI changed), so that `dvc repro` trains into this one",
    )
    args = parser.parse_args(argv)

    def step() -> int:
        from {{ cookiecutter.__package_name }}.training import train  # MLflow: seconds to import

        write_json(args.report, train(args.data, load_params(), Backends.from_env()))
        return 0

    return run(lambda: forget_unregistered(args.report) if args.forget_unregistered else step())


def forget_unregistered(report: Path) -> int:
    """Remove a train report naming a version the configured registry does not hold, as after
    MLFLOW_TRACKING_URI moved from the local file to the team's database: DVC would otherwise
    keep it (the stage's inputs are unchanged) and the next steps look for that version."""
    if not report.is_file():
        return 0
    trained, backends = read_json(report, "make train"), Backends.from_env()
    if trained.get("registry") == backends.registry_id():
        return 0  # written against this registry: no need to import MLflow and ask it
    from {{ cookiecutter.__package_name }} import registry

    client = registry.connect(backends, create=True)
    try:  # missing, or another registry's run under the same number
        registry.version(client, trained["model_name"], trained["version"], trained["run_id"])
    except PipelineError:
        log.warning(
            "%s names %s v%s, which the registry at %s does not hold: training again into it",
            report,
            trained["model_name"],
            trained["version"],
            redact(backends.tracking_uri),
        )
        report.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
