"""Write a sample batch (or a drifted one) of the demo schema to a CSV or Parquet file."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from {{ cookiecutter.__package_name }}.cli import at_least_one, iso_date, run
from {{ cookiecutter.__package_name }}.config import load_params
from {{ cookiecutter.__package_name }}.errors import PipelineError
from {{ cookiecutter.__package_name }}.sample import make_sample

log = logging.getLogger("make_sample")


def main(argv: list[str] | None = None) -> int:
    """Write --rows rows drawn with --seed; --drift shifts monthly_charges and contract."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="a .csv or .parquet path")
    parser.add_argument("--rows", type=at_least_one, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--drift", action="store_true")
    parser.add_argument(
        "--end-date", type=iso_date, default="2026-06-30", help="date of the newest row"
    )
    args = parser.parse_args(argv)
    if args.out.suffix not in (".csv", ".parquet"):
        parser.error(f"--out {args.out} must end in .csv or .parquet")

    def step() -> int:
        params = load_params()  # read and checked once, not once per section
        model, data = params["model"], params["data"]
        frame = make_sample(
            args.rows, args.seed, model["task"], data["target"], args.drift, args.end_date
        )
        lacking = sorted(set(data["features"]) - set(frame.columns))
        if lacking:
            raise PipelineError(
                f"the demo schema lacks {len(lacking)} of your features {lacking[:10]}"
                f"{' ...' if len(lacking) > 10 else ''}: a sample of it would be "
                "refused by your model. Send a file of your own data (FILE=) instead"
            )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        writer = frame.to_csv if args.out.suffix == ".csv" else frame.to_parquet
        writer(args.out, index=False)
        log.info(
            "wrote %s %s rows to %s", len(frame), "drifted" if args.drift else "sample", args.out
        )
        return 0

    return run(step)


if __name__ == "__main__":
    raise SystemExit(main())
