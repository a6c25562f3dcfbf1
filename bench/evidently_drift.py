"""Evidently's data-drift report on two Parquet files: per-column verdicts and time, as JSON.

Run in its own venv (evidently 0.7.23 needs pandas < 3), by bench/monitoring.py:

    evidently-venv/bin/python bench/evidently_drift.py reference.parquet current.parquet

Columns of object/string dtype are declared categorical, the others numerical. The printed
`seconds` covers building Evidently's datasets from the in-memory frames and running
DataDriftPreset; importing evidently and reading the Parquet files are reported apart.
"""

from __future__ import annotations

import json
import sys
import time

started = time.perf_counter()
import pandas as pd  # noqa: E402
from evidently import DataDefinition, Dataset, Report  # noqa: E402
from evidently.presets import DataDriftPreset  # noqa: E402

IMPORT_SECONDS = time.perf_counter() - started


def verdict(method: str, threshold: float, score: float) -> bool:
    """Evidently's rule: a p-value drifts below the threshold, a distance at or above it."""
    return score < threshold if "p_value" in method else score >= threshold


def main(reference_path: str, current_path: str) -> dict:
    began = time.perf_counter()
    reference = pd.read_parquet(reference_path)
    current = pd.read_parquet(current_path)
    load_seconds = time.perf_counter() - began
    categorical = [c for c in reference.columns if not pd.api.types.is_numeric_dtype(reference[c])]
    numerical = [c for c in reference.columns if c not in categorical]
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    began = time.perf_counter()
    snapshot = Report([DataDriftPreset()]).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    seconds = time.perf_counter() - began
    columns = {}
    for metric in snapshot.dict()["metrics"]:
        config = metric["config"]
        if not config.get("type", "").endswith("ValueDrift"):
            continue
        score = float(metric["value"])
        columns[config["column"]] = {
            "method": config["method"],
            "threshold": config["threshold"],
            "score": score,
            "drifted": verdict(config["method"], config["threshold"], score),
        }
    return {
        "reference_rows": len(reference),
        "current_rows": len(current),
        "columns": columns,
        "import_seconds": IMPORT_SECONDS,
        "load_seconds": load_seconds,
        "seconds": seconds,
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
