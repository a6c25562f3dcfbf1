"""Pull the latest data from the configured source, check it against the schema, write it."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from {{ cookiecutter.__package_name }} import data as datalib
from {{ cookiecutter.__package_name }}.cli import run, write_json
from {{ cookiecutter.__package_name }}.config import Backends, load_params

log = logging.getLogger("get_data")


def main(argv: list[str] | None = None) -> int:
    """Write the validated dataset to --out and a summary to --report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("data/dataset.parquet"))
    parser.add_argument("--report", type=Path, default=Path("reports/data.json"))
    args = parser.parse_args(argv)

    def step() -> int:
        params = load_params()
        schema = datalib.Schema.from_params(params["data"], params["model"]["task"])
        raw = datalib.load_source(
            params["data"], schema.task, Backends.from_env().source_database_url
        )
        absent = [name for name in schema.ignore if name not in raw.columns]
        if absent:  # a misspelt id column is refused by validate() as undeclared
            log.warning("data.ignore names %s, which the source does not have", absent)
        frame = datalib.validate(raw, schema)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        partial = args.out.with_suffix(".partial")
        frame.to_parquet(partial, index=False)
        partial.replace(args.out)
        summary = {
            "rows": len(frame),
            "columns": list(frame.columns),
            "content_hash": datalib.content_hash(frame),
            "source": str(params["data"]["source"]),
        }
        write_json(args.report, summary)
        log.info(
            "wrote %s rows to %s (content hash %s)",
            len(frame),
            args.out,
            summary["content_hash"][:12],
        )
        return 0

    return run(step)


if __name__ == "__main__":
    raise SystemExit(main())
