"""Train a candidate from params.yaml, log it to MLflow and register it with its lineage."""

from __future__ import annotations

import argparse
from pathlib import Path

from {{ cookiecutter.__package_name }}.cli import run, write_json
from {{ cookiecutter.__package_name }}.config import Backends, load_params
from {{ cookiecutter.__package_name }}.training import train


def main(argv: list[str] | None = None) -> int:
    """Train on --data and write the registered version to --report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("data/dataset.parquet"))
    parser.add_argument("--report", type=Path, default=Path("reports/train.json"))
    args = parser.parse_args(argv)

    def step() -> int:
        write_json(args.report, train(args.data, load_params(), Backends.from_env()))
        return 0

    return run(step)


if __name__ == "__main__":
    raise SystemExit(main())
