"""Monitoring verdicts on logged traffic: quiet on clean data, loud and specific on shifts."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from conftest import sample_params

from {{ cookiecutter.__package_name }} import data as datalib
from {{ cookiecutter.__package_name }} import training
from {{ cookiecutter.__package_name }}.monitoring import report as reports
from {{ cookiecutter.__package_name }}.monitoring.monitor import monitor, store_daily_stats
from {{ cookiecutter.__package_name }}.monitoring.outcomes import store_outcomes
from {{ cookiecutter.__package_name }}.monitoring.tables import daily_stats, metadata, prediction_log
from {{ cookiecutter.__package_name }}.sample import make_sample

END = datetime(2026, 7, 1, tzinfo=UTC)
THRESHOLDS = {"psi": 0.2, "alpha": 0.01, "min_records": 200}


@pytest.fixture(scope="module")
def champion(repo_params) -> dict:
    """A model trained on the sample data, with its training profile, as monitoring sees it."""
    params = sample_params(repo_params)
    schema = datalib.Schema.from_params(params["data"], params["model"]["task"])
    frame = datalib.validate(datalib.load_source(params["data"], schema.task, None), schema)
    model, x_train, metrics = training.fit(frame, schema, params)
    record = training.run_record(model, x_train, metrics, frame, schema, params, "md5")
    return {
        "name": "test-model",
        "version": "1",
        "task": schema.task,
        "model": model,
        "classes": training.classes_of(model, schema.task),
        "profile": record["profile"],
        "target": schema.target,
        "features": list(schema.features),
    }


def log_frame(
    engine, champion: dict, frame: pd.DataFrame, version: str = "1", proba_shift: float = 0.0
) -> list[str]:
    """Predict the rows with the champion and write them to the prediction log; return ids."""
    features = (
        frame[champion["features"]].astype(object).where(frame[champion["features"]].notna(), None)
    )
    prediction, proba = training.predict(champion["model"], features, champion["task"])
    stamps = END - timedelta(hours=12)
    ids, rows = [], []
    for i, record in enumerate(features.to_dict("records")):
        request_id = uuid.uuid4().hex
        ids.append(request_id)
        probabilities = None
        if proba is not None:
            shifted = np.clip(proba[i] + np.array([-proba_shift, proba_shift]), 0, 1)
            probabilities = {
                str(c): float(p) for c, p in zip(champion["classes"], shifted, strict=True)
            }
        rows.append(
            {
                "request_id": request_id,
                "record_index": 0,
                "logged_at": stamps,
                "model_name": "test-model",
                "model_version": version,
                "features": record,
                "prediction": str(prediction[i]),
                "prediction_value": float(prediction[i]),
                "probabilities": probabilities,
                "latency_ms": 1.0 + i % 7,
            }
        )
    with engine.begin() as conn:
        conn.execute(prediction_log.insert(), rows)
    return ids


@pytest.fixture
def engine(tmp_path):
    """A fresh SQLite monitoring database."""
    created = sa.create_engine(f"sqlite:///{tmp_path / 'monitoring.db'}")
    metadata.create_all(created)
    return created


def batch(champion: dict, seed: int, rows: int = 1500, **changes) -> pd.DataFrame:
    """A batch from the training distribution, with optional column changes."""
    frame = make_sample(rows, seed, champion["task"], champion["target"])
    for column, change in changes.items():
        frame[column] = change(frame[column], np.random.default_rng(seed))
    return frame


def run(engine, champion) -> dict:
    """One monitoring pass over the last day."""
    return monitor(engine, champion, END - timedelta(days=1), END, THRESHOLDS)


@pytest.mark.parametrize("seed", range(100, 110))
def test_monitor_clean_traffic_raises_no_drift(engine, champion, seed):
    log_frame(engine, champion, batch(champion, seed))
    report = run(engine, champion)
    assert report["status"] == "checked"
    assert report["drift"] is False, report["drifted"]


def test_monitor_names_a_shifted_numeric_feature(engine, champion):
    log_frame(engine, champion, batch(champion, 7, monthly_charges=lambda c, r: c + 30))
    report = run(engine, champion)
    assert "monthly_charges" in report["drifted"]
    assert not {"tenure_months", "support_calls", "age", "region"} & set(report["drifted"])


def test_monitor_names_a_categorical_frequency_change(engine, champion):
    def lean(column, rng):
        return pd.Series(
            rng.choice(["month-to-month", "one-year", "two-year"], len(column), p=[0.2, 0.3, 0.5]),
            index=column.index,
        )

    log_frame(engine, champion, batch(champion, 8, contract=lean))
    report = run(engine, champion)
    assert "contract" in report["drifted"]
    assert report["features"]["contract"]["verdict"]["test"] == "chi2"


def test_monitor_names_a_prediction_distribution_change(engine, champion):
    if champion["task"] == "classification":
        log_frame(engine, champion, batch(champion, 9), proba_shift=0.3)
    else:
        frame = batch(champion, 9)
        ids = log_frame(engine, champion, frame)
        with engine.begin() as conn:
            conn.execute(
                prediction_log.update()
                .where(prediction_log.c.request_id.in_(ids))
                .values(prediction_value=prediction_log.c.prediction_value + 40)
            )
    report = run(engine, champion)
    assert report["drifted"] == ["prediction"]


def test_monitor_empty_window_gives_no_verdict_and_no_drift(engine, champion):
    report = run(engine, champion)
    assert report["status"] == "empty" and report["drift"] is False
    assert "0 predictions logged" in report["messages"][0]


def test_monitor_older_version_and_missing_feature_are_explained(engine, champion):
    frame = batch(champion, 10)
    log_frame(engine, champion, frame, version="0")
    with engine.begin() as conn:
        rows = conn.execute(sa.select(prediction_log.c.request_id, prediction_log.c.features)).all()
        for request_id, features in rows:
            features.pop("region")
            conn.execute(
                prediction_log.update()
                .where(prediction_log.c.request_id == request_id)
                .values(features=features)
            )
    report = run(engine, champion)
    assert report["drift"] is False and report["prediction"] is None
    assert any("'region' is not in the prediction log" in m for m in report["messages"])
    assert any("no records from champion v1" in m for m in report["messages"])


def test_monitor_stores_daily_stats_and_live_metric(engine, champion, tmp_path):
    frame = batch(champion, 11)
    ids = log_frame(engine, champion, frame)
    store_outcomes(engine, pd.DataFrame({"request_id": ids, "actual": frame[champion["target"]]}))
    report = run(engine, champion)
    live = report["live_metrics"]
    assert live["records_with_outcome"] == len(ids)
    metric = "roc_auc" if champion["task"] == "classification" else "rmse"
    assert live[metric] == pytest.approx(live[metric]) and np.isfinite(live[metric])
    stored = store_daily_stats(engine, report)
    with engine.connect() as conn:
        count = conn.execute(sa.select(sa.func.count()).select_from(daily_stats)).scalar_one()
    assert count == stored > 20
    paths = reports.write(report, tmp_path / "reports")
    assert json.loads(paths["json"].read_text())["records"] == len(ids)
    assert "| monthly_charges | numeric | ok |" in paths["md"].read_text()
    assert paths["html"].read_text().startswith("<!doctype html>")


def test_monitor_report_html_embeds_plots_of_drifted_features(engine, champion, tmp_path):
    log_frame(engine, champion, batch(champion, 12, monthly_charges=lambda c, r: c + 30))
    paths = reports.write(run(engine, champion), tmp_path)
    page = paths["html"].read_text()
    assert "Drift detected" in page and page.count("data:image/png;base64,") >= 1
