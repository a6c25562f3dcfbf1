"""Score the candidate and the champion on the newest holdout; write reports and plots."""

from __future__ import annotations

import argparse
from pathlib import Path

from {{ cookiecutter.__package_name }}.cli import read_json, run
from {{ cookiecutter.__package_name }}.config import Backends, load_params
from {{ cookiecutter.__package_name }}.evaluation import evaluate


def main(argv: list[str] | None = None) -> int:
    """Write evaluation.json, evaluation.md and PNG plots to --out-dir."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("data/dataset.parquet"))
    parser.add_argument("--train-report", type=Path, default=Path("reports/train.json"))
    parser.add_argument("--out-dir", type=Path, default=Path("reports"))
    args = parser.parse_args(argv)

    def step() -> int:
        trained = read_json(args.train_report, "make train")
        evaluate(args.data, trained, load_params(), Backends.from_env(), args.out_dir)
        return 0

    return run(step)


if __name__ == "__main__":
    raise SystemExit(main())
