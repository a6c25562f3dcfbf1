"""Send the rows of a CSV or Parquet file to a running service's /predict, in batches.

Only the features declared in params.yaml are sent; missing values go as null. Useful to replay
a batch of real traffic against a deployment, and for the demo's drifted traffic.
"""

from __future__ import annotations

import argparse
import json
import logging
import urllib.error
import urllib.request

import pandas as pd

from {{ cookiecutter.__package_name }} import data as datalib
from {{ cookiecutter.__package_name }}.cli import run
from {{ cookiecutter.__package_name }}.config import section
from {{ cookiecutter.__package_name }}.errors import PipelineError

log = logging.getLogger("send_batch")


def post(url: str, records: list[dict]) -> dict:
    """POST one batch of records; the service's answer."""
    body = json.dumps({"records": records}).encode()
    request = urllib.request.Request(
        f"{url.rstrip('/')}/predict", body, {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as err:
        raise PipelineError(f"{url} answered {err.code}: {err.read()[:500]!r}") from err
    except urllib.error.URLError as err:
        message = f"{url} is unreachable: {err.reason}; is `make serve` running?"
        raise PipelineError(message) from err


def records(frame: pd.DataFrame, features: list[str]) -> list[dict]:
    """The feature columns as JSON-ready records, missing values as None."""
    missing = [name for name in features if name not in frame.columns]
    if missing:
        raise PipelineError(f"the file lacks the declared features {missing}")
    selected = frame[features].astype(object)
    return selected.where(selected.notna(), None).to_dict("records")


def main(argv: list[str] | None = None) -> int:
    """Send --file to --url in --batch-size batches and report how many were predicted."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--file", required=True, help="a .csv or .parquet path")
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")

    def step() -> int:
        frame = datalib.load_source({"source": args.file}, "regression", None)
        rows = records(frame, list(section("data")["features"]))
        sent = 0
        for first in range(0, len(rows), args.batch_size):
            sent += len(post(args.url, rows[first : first + args.batch_size])["predictions"])
        log.info("%s records predicted by %s", sent, args.url)
        return 0

    return run(step)


if __name__ == "__main__":
    raise SystemExit(main())
