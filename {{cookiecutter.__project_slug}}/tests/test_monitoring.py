"""Monitoring verdicts on logged traffic: quiet on clean data, loud and specific on shifts."""

from __future__ import annotations

import base64
import copy
import json
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from conftest import predict_as_served, sample_params
from test_prediction_log import postgres  # noqa: F401  (the throwaway PostgreSQL fixture)

from {{ cookiecutter.__package_name }} import data as datalib
from {{ cookiecutter.__package_name }} import plots, training
from {{ cookiecutter.__package_name }} import profile as profiles
from {{ cookiecutter.__package_name }}.errors import PipelineError
from {{ cookiecutter.__package_name }}.metrics import readable, score_all, setting
from {{ cookiecutter.__package_name }}.monitoring import PredictionLog, drift, rollups
from {{ cookiecutter.__package_name }}.monitoring import report as reports
from {{ cookiecutter.__package_name }}.monitoring.monitor import (
    OUTPUT,
    SHOWN_CATEGORIES,
    STORED_DAYS,
    category_shares,
    days_to_store,
    live_bias,
    live_quality,
    monitor,
    store_daily_stats,
    welch_p_value,
)
from {{ cookiecutter.__package_name }}.monitoring.outcomes import load, outcome_rows, store_outcomes
from {{ cookiecutter.__package_name }}.monitoring.tables import (
    daily_stats,
    metadata,
    prediction_log,
)
from {{ cookiecutter.__package_name }}.monitoring.tables import outcomes as outcomes_table
from {{ cookiecutter.__package_name }}.promotion import Gate
from {{ cookiecutter.__package_name }}.sample import REGIONS, make_sample

END = datetime(2026, 7, 1, tzinfo=UTC)
THRESHOLDS = {"psi": 0.2, "alpha": 0.01, "min_records": 200, "bias": 0.25}


@pytest.fixture(scope="module")
def champion(repo_params) -> dict:
    """A model trained on the sample data, with its training profile, as monitoring sees it."""
    return train_champion(repo_params)


def train_champion(repo_params: dict) -> dict:
    """Train build_model()'s model on the sample data: the champion as monitoring sees it."""
    params = sample_params(repo_params)
    schema = datalib.Schema.from_params(params["data"], params["model"]["task"])
    frame = datalib.validate(datalib.load_source(params["data"], schema.task, None), schema)
    model, x_train, x_valid, metrics = training.fit(frame, schema, params)
    record = training.run_record(model, x_train, x_valid, metrics, frame, schema, params, "md5")
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


def log_records(
    champion: dict,
    frame: pd.DataFrame,
    version: str = "1",
    proba_shift: float = 0.0,
    step: timedelta = timedelta(0),
) -> list[dict]:
    """Predict the rows with the champion: the prediction-log records, from END - 12 h on."""
    features = (
        frame[champion["features"]].astype(object).where(frame[champion["features"]].notna(), None)
    )
    records = features.to_dict("records")
    model, profile, task = champion["model"], champion["profile"], champion["task"]
    prediction, proba = predict_as_served(model, records, profile, task)
    rows = []
    for i, record in enumerate(records):
        request_id = uuid.uuid4().hex
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
                "logged_at": END - timedelta(hours=12) + step * i,
                "model_name": "test-model",
                "model_version": version,
                "features": record,
                "prediction": str(prediction[i]),
                "prediction_value": float(prediction[i]),
                "probabilities": probabilities,
                "latency_ms": 1.0 + i % 7,
            }
        )
    return rows


def log_frame(
    engine, champion: dict, frame: pd.DataFrame, version: str = "1", proba_shift: float = 0.0
) -> list[str]:
    """Predict the rows with the champion and insert them into prediction_log, as another tool
    would (no rollups); return their ids."""
    rows = log_records(champion, frame, version, proba_shift)
    with engine.begin() as conn:
        conn.execute(prediction_log.insert(), rows)
    return [row["request_id"] for row in rows]


def log_through_writer(
    url: str, spool: Path, champion: dict, records: list[dict], profile: dict | None = None
) -> PredictionLog:
    """Write records as the service's prediction log does, rollups included, 500 at a time."""
    writer = PredictionLog(
        url, spool, model_version=champion["version"], profile=profile or champion["profile"]
    )
    for low in range(0, len(records), 500):
        writer.write(records[low : low + 500])
    writer.close()
    return writer


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


def run(engine, champion, thresholds: dict = THRESHOLDS) -> dict:
    """One monitoring pass over the last day."""
    return monitor(engine, champion, END - timedelta(days=1), END, thresholds)


@pytest.mark.parametrize("seed", range(100, 110))
def test_monitor_clean_traffic_raises_no_drift(engine, champion, seed):
    log_frame(engine, champion, batch(champion, seed))
    report = run(engine, champion)
    assert report["status"] == "checked"
    assert report["drift"] is False, report["drifted"]
    assert not any(m.startswith("watch: ") for m in report["messages"]), report["messages"]


def test_an_overfitting_champion_shows_no_prediction_drift_on_fresh_rows(
    engine, repo_params, monkeypatch
):
    # A random forest is surest of itself on its own training rows (probabilities near 0 and 1,
    # predictions near the targets); the profile's prediction distribution is that on the
    # validation rows, so new rows from the same distribution do not look drifted.
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    build = training.build_model
    if "model" not in getattr(build("classification", [], ["c"], {}, 0), "named_steps", {}):
        pytest.skip("build_model() is not a Pipeline with a 'model' step to swap a forest into")

    def forest(task: str, *args):
        grown = RandomForestClassifier if task == "classification" else RandomForestRegressor
        return build(task, *args).set_params(model=grown(n_estimators=50, random_state=0))

    monkeypatch.setattr(training, "build_model", forest)
    overfit = train_champion(repo_params)
    assert type(overfit["model"].named_steps["model"]).__name__.startswith("RandomForest")
    for seed in (300, 301):
        log_frame(engine, overfit, batch(overfit, seed, rows=3000))
        report = run(engine, overfit)
        assert report["prediction"]["verdict"]["psi"] < 0.1, report["prediction"]["verdict"]
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


def test_the_class_shares_line_says_when_it_names_only_the_classes_that_moved_most():
    labels = [f"queue{n}" for n in range(7)]
    reference = [1 / 7] * 7
    current = [0.3, 0.2, *[0.5 / 5] * 5]
    section = {"distributions": {"labels": labels, "reference": reference, "current": current}}
    [line] = reports._actual_lines(section)
    assert line.startswith("Actual outcomes by class: queue0 30.0% (training 14.3%), queue1 20.0%")
    assert line.endswith("(the 5 that moved most; all 7 in monitoring.json)")


def test_a_feature_not_judged_is_reported_but_never_drifts(engine, champion):
    """monitor.not_judged: a calendar feature a day's window always shifts is in the table,
    with its statistics, and no alert; the other features are judged as ever."""
    one_value = {"contract": lambda column, _rng: pd.Series("two-year", index=column.index)}
    log_frame(engine, champion, batch(champion, 8, **one_value))
    report = run(engine, champion, {**THRESHOLDS, "not_judged": ["contract"]})
    section = report["features"]["contract"]
    assert section["verdict"]["psi"] > THRESHOLDS["psi"] and not section["verdict"]["drifted"]
    assert "contract" not in report["drifted"] and section["summary"]["frequencies"]
    rows = [row[:3] for row in reports.table_rows(report)]
    assert ["contract", "categorical", "not judged"] in rows
    assert "<tr class='drift'><td>contract</td>" not in reports.page(report)
    assert "contract" in run(engine, champion)["drifted"]


def test_a_significant_shift_under_the_psi_bar_is_watched_without_an_alert(engine, champion):
    """Region from 30/30/20/20 % to 50/20/15/15 %: PSI about 0.17, under monitor.psi 0.2 but
    over half of it, and far beyond the noise of 1500 records."""

    def lean(column, rng):
        return pd.Series(
            rng.choice(REGIONS, len(column), p=[0.5, 0.2, 0.15, 0.15]), index=column.index
        )

    log_frame(engine, champion, batch(champion, 10, region=lean))
    report = run(engine, champion)
    verdict = report["features"]["region"]["verdict"]
    assert THRESHOLDS["psi"] / 2 <= verdict["psi"] < THRESHOLDS["psi"], verdict
    assert report["drift"] is False and verdict["watch"], verdict
    assert [m for m in report["messages"] if m.startswith("watch: region (PSI ")], report
    assert [row[2] for row in reports.table_rows(report)][:2] == ["watch", "ok"]
    assert "<tr class='watch'><td>region</td>" in reports.page(report)


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
    assert report["drifted"] == [OUTPUT]


def test_monitor_empty_window_gives_no_verdict_and_no_drift(engine, champion):
    report = run(engine, champion)
    assert report["status"] == "empty" and report["drift"] is False
    assert "0 predictions logged" in report["messages"][0]


def test_a_window_of_several_days_counts_each_and_names_a_day_without_records(engine, champion):
    log_frame(engine, champion, batch(champion, 12))  # all on the last day, END - 12 h
    assert run(engine, champion)["records_by_day"] == {}, "one day: nothing to break down"
    report = monitor(engine, champion, END - timedelta(days=3), END, THRESHOLDS)
    days = [f"{END - timedelta(days=n):%Y-%m-%d}" for n in (3, 2, 1)]
    assert report["records_by_day"] == dict(zip(days, [0, 0, 1500], strict=True))
    said = f"no predictions logged on '{days[0]}', '{days[1]}' (UTC), within the window"
    assert any(m.startswith(said) for m in report["messages"]), report["messages"]
    by_day = f"1500 records (by UTC day: {days[0]} 0, {days[1]} 0, {days[2]} 1500);"
    assert by_day in reports.markdown(report)
    # A window starting mid-day counts that day's part of it.
    later = monitor(engine, champion, END - timedelta(hours=36), END, THRESHOLDS)
    assert later["records_by_day"] == {days[1]: 0, days[2]: 1500}


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
    assert any("records from other model versions (v0: 1500) are" in m for m in report["messages"])
    said = "No drift in test-model v1, which served none of this window's records: is it deployed?"
    assert reports.headline(report) == said


def test_daily_stats_hold_utc_calendar_days_never_cut_short():
    hour = timedelta(hours=1)
    midnight = datetime(2026, 7, 2, tzinfo=UTC)
    yesterday = (midnight - timedelta(days=1), midnight)
    # The scheduled run at 06:00 (a window ending 07:00): yesterday whole, today so far.
    scheduled = days_to_store(midnight - 17 * hour, midnight + 7 * hour, ends_now=True)
    assert scheduled == [(midnight, midnight + 7 * hour), yesterday]
    # A window ending in the past stores only the days that are over by its end.
    assert days_to_store(midnight - 17 * hour, midnight + 7 * hour, False) == [yesterday]
    assert days_to_store(*yesterday, ends_now=False) == [yesterday]
    year = days_to_store(midnight - timedelta(days=365), midnight, ends_now=False)
    assert len(year) == STORED_DAYS and year[0] == yesterday


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
    with engine.connect() as conn:  # the prediction distribution, as the report shows it
        output = conn.execute(sa.select(daily_stats).where(daily_stats.c.feature == OUTPUT)).all()
    shares = report["prediction"]["distributions"]
    assert {r.statistic: r.value for r in output} == {
        f"share.{label}": pytest.approx(share)
        for label, share in zip(shares["labels"], shares["current"], strict=True)
    }
    assert sum(r.value for r in output) == pytest.approx(1.0)
    # A later run over an empty window of the same start date keeps the day's statistics.
    empty = {**report, "records": 0, "features": {}}
    assert store_daily_stats(engine, empty) == 0
    with engine.connect() as conn:
        kept = conn.execute(sa.select(sa.func.count()).select_from(daily_stats)).scalar_one()
    assert kept == count
    # The day's statistics after a promotion replace the day's row set whatever its version.
    promoted = {**report, "champion_version": "2", "records_by_version": {"1": 40, "2": 60}}
    promoted["records"] = 100
    stored = store_daily_stats(engine, promoted)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(daily_stats)).all()
    assert len(rows) == stored and {r.model_version for r in rows} == {"2"}
    service = {r.statistic: r.value for r in rows if r.feature == "_service"}
    assert service["records"] == 100 and service["records_by_version.1"] == 40
    assert {r.day for r in rows} == {(END - timedelta(days=1)).date()}
    paths = reports.write(report, tmp_path / "reports")
    written = sorted(path.name for path in (tmp_path / "reports").iterdir())
    assert written == ["monitoring.html", "monitoring.json", "monitoring.md"], "no partial file"
    assert json.loads(paths["json"].read_text())["records"] == len(ids)
    assert "| monthly_charges | numeric | ok |" in paths["md"].read_text()
    page = paths["html"].read_text()
    assert page.startswith("<!doctype html>")
    assert f"<p>Live metrics: records_with_outcome {len(ids)}, " in page
    assert "<p>Latency (ms): p50 " in page


def test_live_metrics_score_the_outcomes_of_other_versions_apart(engine, champion):
    older, mine = batch(champion, 12, rows=300), batch(champion, 13)
    old_ids = log_frame(engine, champion, older, version="0")
    ids = log_frame(engine, champion, mine)
    target = champion["target"]
    for request_ids, frame in ((old_ids, older), (ids, mine)):
        store_outcomes(engine, pd.DataFrame({"request_id": request_ids, "actual": frame[target]}))
    report = run(engine, champion)
    assert report["live_metrics"]["records_with_outcome"] == len(ids)
    older_live = report["live_metrics_of_other_versions"]["0"]
    metric = "roc_auc" if champion["task"] == "classification" else "rmse"
    assert older_live["records_with_outcome"] == older_live["records_scored"] == 300
    assert np.isfinite(older_live[metric]) and older_live[metric] != report["live_metrics"][metric]
    assert any(
        "live metrics are of version 1's records" in m and "scored apart (v0: 300)" in m
        for m in report["messages"]
    ), report["messages"]
    assert "Live metrics of v0: records_with_outcome 300, " in reports.markdown(report)
    # What happened does not depend on the model: every version's outcomes judge the labels.
    assert report["actual"]["verdict"]["current_count"] == 300 + len(ids)


def test_live_metric_wholly_below_the_threshold_is_drift_and_noise_is_not(engine, champion):
    frame = batch(champion, 14)
    ids = log_frame(engine, champion, frame)
    store_outcomes(engine, pd.DataFrame({"request_id": ids, "actual": frame[champion["target"]]}))
    name = "roc_auc" if champion["task"] == "classification" else "rmse"
    value = run(engine, champion)["live_metrics"][name]
    higher = champion["task"] == "classification"

    def judged(threshold: float, minimum: int = 200) -> dict:
        gate = Gate.from_params({"metric": name, "threshold": threshold}, champion["task"])
        thresholds = {**THRESHOLDS, "min_records": minimum}
        return monitor(engine, champion, END - timedelta(days=1), END, thresholds, gate=gate)

    passing = judged(value - 0.05 if higher else value * 1.2)
    quality = passing["live_quality"]
    assert (quality["metric"], quality["value"], quality["outcomes"]) == (name, value, len(ids))
    low, high = quality["interval"]
    assert low < value < high and high - low < (0.2 if higher else value), quality
    assert not quality["failing"] and passing["drift"] is False, passing["messages"]
    assert not any(f"live {name} {value:.4f}" in m for m in passing["messages"])
    threshold = setting(quality["threshold"])  # as params.yaml holds it, not a float's repr
    line = f"Live {name} against promote.threshold {threshold}: {value:.4f} on 1500"
    assert f"{line} outcomes, 95 % bootstrap interval" in reports.markdown(passing)
    # The live metrics line writes the same score the same way (4 decimals, as the evaluation).
    assert f" {name} {value:.4f}" in reports.markdown(passing).split("Live metrics: ")[1]
    assert reports.page(passing).count(line) == 1

    noise = judged(value + 0.005 if higher else value * 0.995)  # fails, within the interval
    assert not noise["live_quality"]["failing"] and noise["drift"] is False
    assert any("within the noise" in m and "no alert" in m for m in noise["messages"])

    far = min(value + 0.1, 1.0) if higher else value * 0.7
    bad = judged(far)
    assert bad["live_quality"]["failing"] and bad["drift"] is True
    assert bad["drifted"] == [f"live {name}"], bad["drifted"]
    [said] = [m for m in bad["messages"] if m.startswith(f"live {name} {value:.4f} on 1500")]
    assert f"fails promote.threshold {setting(far)}" in said and "all of it failing" in said
    assert reports.headline(bad).endswith(f": live {name}")
    said = [line for line in reports.markdown(bad).splitlines() if line.startswith(f"Live {name} ")]
    assert [line.endswith(": FAILING it") for line in said] == [True], said

    gate = Gate.from_params({"metric": name, "threshold": far}, champion["task"])
    few = {"records_scored": 199, name: value, "interval": [value, value]}
    assert live_quality(few, gate, minimum=200) == (None, None), "too few outcomes to judge"
    # Outcomes whose actual the model does not know are not scored, so they do not count.
    unknown = {**few, "records_with_outcome": 2000}
    assert live_quality(unknown, gate, minimum=200) == (None, None), "199 scored of 2000"


@pytest.fixture(scope="module")
def regressor(repo_params) -> dict:
    """A regression champion on the sample data, whatever task this repository was made for."""
    params = copy.deepcopy(repo_params)
    params["model"]["task"] = "regression"
    params["data"].update(target="monthly_spend", target_classes=None)
    return train_champion(params)


def with_outcomes(
    tmp_path: Path,
    champion: dict,
    seed: int,
    actual=lambda target: target,
    thresholds: dict = THRESHOLDS,
):
    """Monitor one day of the champion's traffic, in a database of its own, with outcomes:
    `actual` of the batch's target."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / f'outcomes-{uuid.uuid4().hex}.db'}")
    metadata.create_all(engine)
    frame = batch(champion, seed)
    ids = log_frame(engine, champion, frame)
    outcomes = actual(frame[champion["target"]])
    store_outcomes(engine, pd.DataFrame({"request_id": ids, "actual": outcomes}))
    return run(engine, champion, thresholds)


def live_bias_of(
    tmp_path: Path, champion: dict, seed: int, rise: float = 1.0, thresholds: dict = THRESHOLDS
) -> dict:
    """Monitor one day of the champion's traffic whose outcomes are the actual values times
    `rise`."""
    return with_outcomes(tmp_path, champion, seed, lambda target: target * rise, thresholds)


def test_actual_outcomes_are_compared_with_the_training_target(champion, tmp_path):
    """Far more of one class than training had (a fraud surge), or values twice as large:
    named as `actual outcome`, whatever the features and predictions show."""
    clean = with_outcomes(tmp_path, champion, 23)
    section = clean["actual"]
    assert section["kind"] == "actual" and section["verdict"]["current_count"] == 1500
    assert not section["verdict"]["drifted"] and "actual outcome" not in clean["drifted"]
    assert "| actual outcome | actual | ok |" in reports.markdown(clean)
    if champion["task"] == "classification":
        common = champion["profile"]["target"]["frequencies"]
        rare = min(common, key=common.get)  # the rarer class, now three records in four

        def moved(target: pd.Series) -> pd.Series:
            return target.where(np.arange(len(target)) % 4 == 0, type(target.iloc[0])(rare))
    else:

        def moved(target: pd.Series) -> pd.Series:
            return target * 2

    surge = with_outcomes(tmp_path, champion, 23, moved)
    assert surge["actual"]["verdict"]["drifted"] and "actual outcome" in surge["drifted"]
    assert "| actual outcome | actual | DRIFT |" in reports.markdown(surge)
    if champion["task"] == "classification":
        shares = surge["actual"]["distributions"]
        now = shares["current"][shares["labels"].index(rare)]
        share = f"{rare} {now:.1%} (training {common[rare]:.1%})"
        said = reports.markdown(surge)
        assert "\nActual outcomes by class: " in said and share in said and now > 0.75, share
    else:  # twice the values: the mean says so in words
        then, now = surge["actual"]["distributions"]["mean"]
        assert now == pytest.approx(2 * clean["actual"]["distributions"]["mean"][1])
        line = f"Actual outcomes: mean {readable(now)} (training {readable(then)}, +"
        assert line in reports.markdown(surge)
    assert reports.page(surge).count('<h3>actual outcome</h3><img alt="actual outcome"') == 1


def test_a_regression_whose_actuals_rose_is_named_by_its_live_bias(regressor, tmp_path):
    error = regressor["profile"]["prediction"]["error"]
    assert error["count"] > 100 and error["std"] > 0 and abs(error["mean"]) < error["std"]
    for seed in range(60, 66):  # outcomes as the training rows had them: no alert
        report = live_bias_of(tmp_path, regressor, seed)
        bias = report["live_bias"]
        assert not bias["failing"] and report["drift"] is False, (bias, report["drifted"])
        assert bias["mean_error"] == report["live_metrics"]["mean_error"]
    # Prices up 10 %: the features, and so the predictions, are as they were.
    risen = live_bias_of(tmp_path, regressor, 66, rise=1.1)
    bias = risen["live_bias"]
    assert bias["failing"] and bias["shift"] < -bias["threshold"] * error["std"], bias
    assert risen["drifted"] == ["live mean_error"], risen["drifted"]
    [said] = [m for m in risen["messages"] if m.startswith("live mean error")]
    # The bias now, not its move: the validation rows' own bias is not counted twice.
    moved, now = readable(bias["shift"], True), readable(abs(bias["mean_error"]))
    assert f": a move of {moved} (" in said and "retrain" in said, said
    assert f"the champion now predicts too low by {now} on average" in said, said
    assert "monitor.bias 0.25 SD: FAILING" in reports.markdown(risen)
    # Up 5 % (about half an SD of the errors, whichever model) with monitor.bias 2: beyond the
    # noise, under monitor.bias: a warning, no alert.
    lenient = {**THRESHOLDS, "bias": 2.0}
    slight = live_bias_of(tmp_path, regressor, 67, rise=1.05, thresholds=lenient)
    bias = slight["live_bias"]
    assert not bias["failing"] and bias["p_value"] < 0.01 and slight["drift"] is False, bias
    [said] = [m for m in slight["messages"] if m.startswith("live mean error")]
    assert said.endswith("under monitor.bias 2.0 SD: a warning, no alert"), said
    # Too few outcomes: no judgement either way.
    few = {"records_scored": 150, "mean_error": -40.0, "rmse": 45.0}
    assert live_bias(few, error, THRESHOLDS) == (None, None)


def test_welch_p_value_is_small_only_for_a_shift_beyond_the_noise():
    assert welch_p_value(0.0, (10.0, 500), (10.0, 500)) == 1.0
    assert welch_p_value(0.5, (10.0, 500), (10.0, 500)) > 0.4
    assert welch_p_value(3.0, (10.0, 500), (10.0, 500)) < 1e-5
    assert welch_p_value(3.0, (10.0, 5), (10.0, 5)) > 0.6  # few rows: a t-test, not a z-test
    assert welch_p_value(1.0, (0.0, 100), (0.0, 100)) == 0.0


def test_monitor_report_html_embeds_plots_of_drifted_features(engine, champion, tmp_path):
    log_frame(engine, champion, batch(champion, 12, monthly_charges=lambda c, r: c + 30))
    paths = reports.write(run(engine, champion), tmp_path)
    page = paths["html"].read_text()
    assert "Drift detected" in page and page.count("data:image/png;base64,") >= 1


def test_a_feature_name_keeps_to_its_markdown_table_cell():
    row = ["a|b <b>", "numeric", "ok", "0.01", "0.02", "0.9", "0.0% → 0.0%", "100"]
    assert reports._cell(row[0]) == "a\\|b &lt;b&gt;"
    line = "| " + " | ".join(map(reports._cell, row)) + " |"
    assert len(line.replace("\\|", "").split("|")) == len(reports.HEADER) + 2


def test_a_plot_of_any_category_text_draws_it_as_text(recwarn):
    # A shop's product titles (the axis shows each one's start, the summary table all of it),
    # prices with $ (no mathtext), text the font has no glyph for, a line break.
    labels = [f"product {n} " + "with a very long descriptive title " * 4 for n in range(24)]
    labels += ["$\\frac$", "$10-$20", "日本語", "😀😃", "😀😄", "new\nline"]
    labels.append("unseen in training (1234 categories)")
    shares = [1 / len(labels)] * len(labels)
    section = {"distributions": {"labels": labels, "reference": shares, "current": shares}}
    section.update(kind="categorical", verdict={"drifted": True, "reasons": ["distribution"]})
    assert base64.b64decode(reports._plot("$x^$", section)).startswith(b"\x89PNG")
    assert not [str(w.message) for w in recwarn]  # no layout or missing-glyph warning
    drawn = [plots.shown(label, reports.PLOT_LABEL) for label in labels]
    assert len(set(drawn)) == len(labels) and drawn[-1] == labels[-1]
    assert drawn[24:27] == ["$\\frac$", "$10-$20", "\\u65e5\\u672c\\u8a9e"]


# --------------------------------------------------------------------------- rollups


def drifted(champion: dict, seed: int) -> pd.DataFrame:
    """A batch with monthly_charges shifted and contract leaning to month-to-month."""
    return make_sample(3000, seed, champion["task"], champion["target"], drift=True)


def assert_same_statistics(rolled: dict, raw: dict, champion: dict) -> None:
    """The rollups give the raw rows' counts, moments, bins and verdicts; percentiles within
    the width of the rollup cell holding the exact value."""
    assert (rolled["source"], raw["source"]) == ("rollups", "prediction_log")
    for key in ("records", "records_by_version", "status", "drift", "drifted", "prediction"):
        assert rolled[key] == raw[key], key
    assert rolled["features"].keys() == raw["features"].keys()
    axes = rollups.axes(rollups.grid(champion["profile"]))
    for name, section in raw["features"].items():
        mine = rolled["features"][name]
        assert mine["verdict"] == section["verdict"], name
        assert mine["distributions"] == section["distributions"], name
        summary, exact = mine["summary"], section["summary"]
        assert summary["count"] == exact["count"], name
        assert summary["missing_rate"] == pytest.approx(exact["missing_rate"], abs=1e-12)
        if section["kind"] == "categorical":
            assert summary["frequencies"] == exact["frequencies"], name
            continue
        for key in ("mean", "std", "min", "max"):
            assert summary[key] == pytest.approx(exact[key], rel=1e-9), (name, key)
        assert summary["quantiles"].keys() == exact["quantiles"].keys()
        for point, value in exact["quantiles"].items():
            assert abs(summary["quantiles"][point] - value) <= cell_width(axes[name], value), (
                name,
                point,
            )
    for point, value in raw["latency_ms"].items():
        width = cell_width(axes[rollups.LATENCY], value)
        assert abs(rolled["latency_ms"][point] - value) <= width, point


def cell_width(axis: rollups.Axis, value: float) -> float:
    """The width of the rollup cell holding a value."""
    low, high = axis.bounds(int(axis.cells(np.array([value]))[0]))
    return high - low + 1e-9


@pytest.mark.parametrize("case", ["clean", "shifted", "prediction"])
def test_rollups_and_raw_rows_give_the_same_statistics_and_verdicts(
    engine, champion, tmp_path, case
):
    frame = drifted(champion, 21) if case == "shifted" else batch(champion, 20, rows=3000)
    shift = 0.3 if case == "prediction" and champion["task"] == "classification" else 0.0
    # 10 s apart: 3000 records over 8 hours, so batches straddle the hourly buckets.
    records = log_records(champion, frame, proba_shift=shift, step=timedelta(seconds=10))
    if case == "prediction" and champion["task"] == "regression":
        for record in records:
            record["prediction_value"] += 40
            record["prediction"] = str(record["prediction_value"])
    log_through_writer(str(engine.url), tmp_path / "spool", champion, records)
    rolled = run(engine, champion)
    raw = monitor(engine, champion, END - timedelta(days=1), END, THRESHOLDS, exact=True)
    assert_same_statistics(rolled, raw, champion)
    expected = {"clean": [], "shifted": ["monthly_charges", "contract"], "prediction": []}
    assert set(expected[case]) <= set(rolled["drifted"])
    if case == "prediction":
        assert rolled["drifted"] == [OUTPUT]
    if case == "clean":
        assert rolled["drift"] is False
    assert store_daily_stats(engine, rolled) > 20


def test_feature_names_outside_ascii_and_with_punctuation_read_the_same_from_raw_rows(
    engine, champion, tmp_path
):
    # A user's own column names are keys of the logged features' JSON, which SQL must find.
    names = {"monthly_charges": "Monatsgebühr (€)", "contract": "type.de contrat", "region": "地域"}
    renamed = copy.deepcopy(champion)
    renamed["features"] = [names.get(n, n) for n in champion["features"]]
    features = renamed["profile"]["features"]
    renamed["profile"]["features"] = {names.get(n, n): v for n, v in features.items()}
    records = log_records(champion, drifted(champion, 22), step=timedelta(seconds=10))
    for record in records:
        record["features"] = {names.get(n, n): v for n, v in record["features"].items()}
    log_through_writer(str(engine.url), tmp_path / "spool", renamed, records)
    rolled = run(engine, renamed)
    raw = monitor(engine, renamed, END - timedelta(days=1), END, THRESHOLDS, exact=True)
    assert_same_statistics(rolled, raw, renamed)
    assert {"Monatsgebühr (€)", "type.de contrat"} <= set(raw["drifted"])
    assert raw["features"]["地域"]["summary"]["missing_rate"] < 0.2


def test_rollups_count_a_replayed_batch_once(engine, champion, tmp_path):
    records = log_records(champion, batch(champion, 22), step=timedelta(seconds=1))
    writer = log_through_writer(str(engine.url), tmp_path / "spool", champion, records[:1000])
    # A replay of written records mixed with new ones, one of them twice in the batch.
    assert writer.write(records[500:1000] + records[1000:] + records[1000:1001]) == 500
    assert writer.write(records[:700]) == 0
    rolled = run(engine, champion)
    assert (rolled["source"], rolled["records"]) == ("rollups", 1500)
    assert rolled["features"]["region"]["summary"]["count"] == 1500
    raw = monitor(engine, champion, END - timedelta(days=1), END, THRESHOLDS, exact=True)
    assert_same_statistics(rolled, raw, champion)


def test_rollups_count_records_replayed_from_the_spool_once(engine, champion, tmp_path):
    records = log_records(champion, batch(champion, 27), step=timedelta(seconds=1))
    writer = PredictionLog(
        str(engine.url),
        tmp_path / "spool",
        flush_interval=0.05,
        model_version=champion["version"],
        profile=champion["profile"],
    )
    # As if the database had been away: spooled, one batch twice (a crash before its delete).
    writer.spool.write(records[:1000])
    writer.spool.write(records[500:1000])
    writer.start()
    writer.log(records[1000:])
    deadline = time.monotonic() + 30
    while writer.spool.files() or writer.counts["logged"] < 1500:  # the repeat counts once
        assert time.monotonic() < deadline, writer.counts
        time.sleep(0.05)
    writer.close()
    rolled = run(engine, champion)
    assert (rolled["source"], rolled["records"]) == ("rollups", 1500)
    raw = monitor(engine, champion, END - timedelta(days=1), END, THRESHOLDS, exact=True)
    assert_same_statistics(rolled, raw, champion)


def test_monitor_reads_the_raw_rows_where_rollups_do_not_cover_the_window(
    engine, champion, tmp_path
):
    log_through_writer(
        str(engine.url), tmp_path / "spool", champion, log_records(champion, batch(champion, 23))
    )
    unaligned = monitor(engine, champion, END - timedelta(hours=23.5), END, THRESHOLDS)
    assert unaligned["source"] == "prediction_log" and unaligned["records"] == 1500
    assert "whole hours" in unaligned["messages"][-1]

    ids = log_frame(engine, champion, batch(champion, 24, rows=300))  # no rollups
    uncovered = run(engine, champion)
    assert (uncovered["source"], uncovered["records"]) == ("prediction_log", 1800)
    assert "300 of the 1800 records in the window have no rollup" in uncovered["messages"][-1]

    with engine.begin() as conn:  # the other tool's rows, and 200 rolled-up ones, deleted
        conn.execute(prediction_log.delete().where(prediction_log.c.request_id.in_(ids)))
        kept = sa.select(prediction_log.c.request_id).limit(200).scalar_subquery()
        conn.execute(prediction_log.delete().where(prediction_log.c.request_id.in_(kept)))
    deleted = run(engine, champion)
    assert (deleted["source"], deleted["records"]) == ("prediction_log", 1300)
    message = deleted["messages"][-1]
    assert "the rollups count 1500 records in the window but the log holds 1300" in message


def test_monitor_reads_the_raw_rows_of_versions_rolled_up_on_another_grid(
    engine, champion, tmp_path
):
    other = copy.deepcopy(champion["profile"])
    other["features"]["monthly_charges"]["bin_edges"][0] -= 1.0  # as if retrained
    records = log_records(champion, batch(champion, 25))
    log_through_writer(str(engine.url), tmp_path / "spool", champion, records, profile=other)
    report = run(engine, champion)
    assert report["source"] == "prediction_log" and report["drift"] is False
    assert "rolled up on another grid" in report["messages"][-1]


def test_rollups_on_postgres_match_the_raw_rows(postgres, champion, tmp_path):  # noqa: F811
    database = sa.create_engine(postgres.url)
    metadata.create_all(database)
    records = log_records(champion, drifted(champion, 26), step=timedelta(seconds=10))
    log_through_writer(postgres.url, tmp_path / "spool", champion, records)
    writer = log_through_writer(postgres.url, tmp_path / "spool", champion, records[:600])
    assert writer.counts["dropped"] == 0
    rolled = run(database, champion)
    raw = monitor(database, champion, END - timedelta(days=1), END, THRESHOLDS, exact=True)
    assert rolled["records"] == 3000
    assert_same_statistics(rolled, raw, champion)
    database.dispose()


# --------------------------------------------------------------------------- missing values and
# two-sample tests


def null_most(column: pd.Series, rng: np.random.Generator) -> pd.Series:
    """80 % of the values nulled, as a broken upstream feed would send them."""
    return column.where(rng.random(len(column)) >= 0.8)


def test_monitor_names_a_missing_rate_jump_and_says_how_far_it_moved(engine, champion):
    # age (numeric, ~5 % missing in training) and payment_method (categorical, ~3 %): the values
    # that still arrive look like training, so only the missing share can tell.
    frame = batch(champion, 31, rows=1000, age=null_most, payment_method=null_most)
    log_frame(engine, champion, frame)
    report = run(engine, champion)
    assert {"age", "payment_method"} <= set(report["drifted"])
    for name in ("age", "payment_method"):
        verdict = report["features"][name]["verdict"]
        assert list(verdict["reasons"]) == ["missing rate"], name
        assert verdict["reference_missing_rate"] < 0.1 < 0.75 < verdict["current_missing_rate"]
        [note] = [m for m in report["messages"] if f"feature '{name}': missing rate" in m]
        assert f"from {verdict['reference_missing_rate']:.1%} in training" in note
        assert f"to {verdict['current_missing_rate']:.1%} in this window" in note
        assert note.endswith("is an upstream feed sending nulls?")
        [row] = [row for row in reports.table_rows(report) if row[0] == name]
        assert row[2] == "DRIFT (missing rate)"
        rates = (verdict["reference_missing_rate"], verdict["current_missing_rate"])
        assert row[6] == "{:.1%} → {:.1%}".format(*rates)
        # Its plot's bars count the present values: the title gives the missing rates.
        _labels, title = reports.plot_text(name, report["features"][name])
        assert title == f"{name}: missing {row[6]}"
    untouched = {"tenure_months", "monthly_charges", "support_calls", "contract", "region"}
    assert not untouched & set(report["drifted"])
    # The drifted rows lead the summary table, and the page marks them.
    drifted = [row[2] != "ok" for row in reports.table_rows(report)]
    assert drifted == sorted(drifted, reverse=True) and sum(drifted) >= 2
    assert reports.page(report).count("<tr class='drift'>") == sum(drifted)


def test_a_missing_rate_that_falls_is_not_blamed_on_nulls():
    verdict = {"name": "city", "reasons": [drift.MISSING], "missing_psi": 0.75}
    verdict |= {"reference_missing_rate": 0.1, "current_missing_rate": 0.0, "missing_p_value": 0}
    note = drift.missing_note(verdict)
    assert "from 10.0% in training to 0.0% in this window" in note
    assert "nulls" not in note and "where training had gaps" in note


def test_a_feature_sent_only_as_nulls_shows_no_distribution_numbers(engine, champion):
    frame = batch(champion, 33, rows=500, age=lambda column, _rng: column.where(column.isna()))
    log_frame(engine, champion, frame)
    report = run(engine, champion)
    assert list(report["features"]["age"]["verdict"]["reasons"]) == ["missing rate"]
    [row] = [row for row in reports.table_rows(report) if row[0] == "age"]
    assert row[2:6] == ["DRIFT (missing rate)", "-", "no values", "-"]
    assert row[6].endswith(" → 100.0%") and row[7] == "0"


def log_beside_an_older_version(
    engine, champion: dict, seed: int, change, champion_logged: bool = True
) -> None:
    """1000 records of the champion (unless not `champion_logged`: right after a promotion) and
    1000 of an older version "0", whose logged features `change` edits in place (as that
    version logged them)."""
    if champion_logged:
        log_frame(engine, champion, batch(champion, seed, rows=1000))
    older = log_frame(engine, champion, batch(champion, seed + 1, rows=1000), version="0")
    log = prediction_log.c
    with engine.begin() as conn:
        query = sa.select(log.request_id, log.features).where(log.request_id.in_(older))
        for request_id, features in conn.execute(query).all():
            change(features)
            conn.execute(
                prediction_log.update()
                .where(log.request_id == request_id)
                .values(features=features)
            )


def test_monitor_reads_no_missing_rate_drift_into_another_versions_absent_key(engine, champion):
    """Records of an older version without a feature's key are not nulls of the champion's."""
    log_beside_an_older_version(engine, champion, 41, lambda features: features.pop("age"))
    report = run(engine, champion)
    assert "age" not in report["drifted"]
    assert report["features"]["age"]["verdict"]["missing_p_value"] is None
    [said] = [m for m in report["messages"] if "mixes model versions" in m]
    assert f"(records v0: 1000, v{champion['version']}: 1000)" in said


def test_monitor_checks_missing_rates_in_a_window_of_versions_that_all_log_them(engine, champion):
    """A feed that starts sending nulls just after a promotion is still named: both versions in
    the window log the feature, so its absence is no key another version lacks."""
    log_frame(engine, champion, batch(champion, 44, rows=1000, age=null_most))
    log_frame(engine, champion, batch(champion, 45, rows=1000), version="0")
    kinds = {name: f["kind"] for name, f in champion["profile"]["features"].items()}
    report = monitor(
        engine, champion, END - timedelta(days=1), END, THRESHOLDS, kinds_of=lambda _: kinds
    )
    assert "age" in report["drifted"]
    assert "missing rate" in report["features"]["age"]["verdict"]["reasons"]
    [said] = [m for m in report["messages"] if "mixes model versions" in m]
    assert said.endswith("all of which log every feature compared")
    unknown = run(engine, champion)  # v0's features unknown: its records may lack the key
    assert unknown["features"]["age"]["verdict"]["missing_p_value"] is None
    [said] = [m for m in unknown["messages"] if "mixes model versions" in m]
    assert "'age'" in said and "not checked" in said


@pytest.mark.parametrize("champion_logged", [True, False], ids=["mixed", "older-version-only"])
def test_monitor_does_not_compare_a_feature_another_version_logged_as_another_kind(
    engine, champion, champion_logged
):
    """A type change between versions (v0 took contract as a number, the champion takes it as
    a category) leaves the other kind of value in the window, beside the champion's records or,
    right after the promotion, alone: named, not read as drift."""

    def numeric_code(features: dict) -> None:
        features["contract"] = float(len(features["contract"] or ""))

    log_beside_an_older_version(engine, champion, 43, numeric_code, champion_logged)
    assert "contract" in run(engine, champion)["drifted"], "the premise: 1.0 is no category"
    kinds = {name: f["kind"] for name, f in champion["profile"]["features"].items()}
    older_kinds = {**kinds, "contract": "numeric"}
    report = monitor(
        engine,
        champion,
        END - timedelta(days=1),
        END,
        THRESHOLDS,
        kinds_of=lambda version: older_kinds if version == "0" else kinds,
    )
    assert report["drift"] is False, report["drifted"]
    assert "contract" not in report["features"] and "region" in report["features"]
    [said] = [m for m in report["messages"] if "'contract'" in m]
    version = champion["version"]
    assert said.startswith(f"feature 'contract' is categorical for champion v{version} but v0 ")
    assert "not compared" in said


def test_rollups_and_raw_rows_agree_on_a_missing_rate_jump(engine, champion, tmp_path):
    frame = batch(champion, 32, rows=3000, age=null_most, payment_method=null_most)
    records = log_records(champion, frame, step=timedelta(seconds=10))
    log_through_writer(str(engine.url), tmp_path / "spool", champion, records)
    rolled = run(engine, champion)
    raw = monitor(engine, champion, END - timedelta(days=1), END, THRESHOLDS, exact=True)
    assert_same_statistics(rolled, raw, champion)
    assert {"age", "payment_method"} <= set(rolled["drifted"])


@pytest.mark.parametrize("seed", range(40, 43))
def test_monitor_clean_traffic_far_larger_than_the_training_set_is_not_significant(
    engine, champion, seed
):
    # 5000 records against a profile of about a thousand training rows: a test that took the
    # training frequencies as exact would find "significant" differences in their own noise.
    log_frame(engine, champion, batch(champion, seed, rows=5000))
    report = run(engine, champion)
    assert report["drift"] is False, report["drifted"]
    cut = THRESHOLDS["alpha"] / len(report["features"])
    p_values = {name: f["verdict"]["p_value"] for name, f in report["features"].items()}
    assert min(p_values.values()) >= cut, p_values


def test_drift_p_values_are_calibrated_against_a_small_reference_sample():
    """Under no drift, p < alpha about alpha of the time, with a 1920-row reference and 5000
    current records (a goodness-of-fit test against the reference shares is far off)."""
    rng = np.random.default_rng(2026)
    categories, shares = np.array(["a", "b", "c", "d"]), [0.4, 0.3, 0.2, 0.1]
    low = {"categorical": 0, "numeric": 0}
    runs = 200
    for _ in range(runs):
        kind = profiles.categorical_profile(pd.Series(rng.choice(categories, 1920, p=shares)))
        counts = pd.Series(rng.choice(categories, 5000, p=shares)).value_counts()
        verdict = drift.categorical_verdict("c", kind, counts.to_dict(), THRESHOLDS, 1)
        low["categorical"] += verdict.p_value < 0.01
        numeric = profiles.numeric_profile(pd.Series(rng.gamma(4.0, 16.0, 1920)), 10)
        edges = numeric["bin_edges"]
        values = rng.gamma(4.0, 16.0, 5000)
        bins = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
        verdict = drift.numeric_verdict("x", numeric, bins.tolist(), THRESHOLDS, 1)
        low["numeric"] += verdict.p_value < 0.01
    assert low["categorical"] <= 0.03 * runs and low["numeric"] <= 0.03 * runs, low


def test_drift_of_a_feature_of_thousands_of_categories_is_judged_on_pooled_rare_ones():
    """Merchant ids: 2000 categories, a 16000-row training profile (some ids never in it),
    small clean windows hold rare and unseen ids by chance, which must not read as drift; a
    window of mostly new ids must."""
    rng = np.random.default_rng(7)
    ids = np.array([f"M{i:04d}" for i in range(2000)])
    shares = rng.lognormal(0, 1.5, 2000)  # a long tail of rare ids
    shares /= shares.sum()
    kind = profiles.categorical_profile(pd.Series(rng.choice(ids, 16000, p=shares)))
    assert len(kind["frequencies"]) < 2000, "the premise: some ids are unseen in training"
    thresholds, features = {**THRESHOLDS}, 73  # the Bonferroni cut of a wide model
    flagged = 0
    for rows in (200, 300, 600) * 40:
        counts = pd.Series(rng.choice(ids, rows, p=shares)).value_counts().to_dict()
        flagged += drift.categorical_verdict("m", kind, counts, thresholds, features).drifted
    assert flagged <= 1, f"{flagged} of 120 clean windows read as drift"
    new = [f"NEW{i}" for i in range(500)]
    window = np.concatenate([rng.choice(ids, 240, p=shares), rng.choice(new, 360)])
    counts = pd.Series(window).value_counts().to_dict()
    shifted = drift.categorical_verdict("m", kind, counts, thresholds, features)
    assert shifted.drifted and shifted.psi > 1, shifted
    unseen = sum(n for c, n in counts.items() if c not in kind["frequencies"]) / 600
    assert shifted.unseen_share == pytest.approx(unseen) and unseen >= 0.6
    expected = kind["unseen_expected"]
    assert 0.005 <= expected < 0.05, "the premise: the tail brings a few new ids"
    label = f"DRIFT ({unseen:.0%} unseen in training, {expected:.0%} expected)"
    assert reports.drift_label(shifted.as_dict()) == label


@pytest.mark.parametrize(("categories", "exponent", "rows"), [(300, 1.1, 3200), (2000, 1.0, 5000)])
def test_a_long_tail_s_routine_new_categories_are_no_drift_but_a_new_one_s_surge_is(
    categories, exponent, rows
):
    """Cities or merchant ids by Zipf's law: new traffic from the training distribution holds
    categories the training rows lack (2 % of 300 cities, 10 % of 2000 ids), in windows large
    enough that their cell is not pooled. The profile expects that share (Good-Turing: the
    share of training rows whose category occurs once), so no window drifts or is watched; one
    new category taking a quarter of the traffic on top of that drifts."""
    rng = np.random.default_rng(11)
    names = np.array([f"C{i:04d}" for i in range(categories)])
    shares = 1.0 / np.arange(1, categories + 1) ** exponent
    shares /= shares.sum()
    found = Counter()
    for size in (1500, 5000, 20000):
        for _ in range(10):
            kind = profiles.categorical_profile(pd.Series(rng.choice(names, rows, p=shares)))
            counts = pd.Series(rng.choice(names, size, p=shares)).value_counts().to_dict()
            verdict = drift.categorical_verdict("city", kind, counts, THRESHOLDS, 7)
            found["drifted" if verdict.drifted else "watch" if verdict.watch else "ok"] += 1
            assert verdict.unseen_share > 0, "the premise: unseen categories in every window"
    assert found == {"ok": 30}, found
    counts = pd.Series(rng.choice(names, 5000, p=shares)).value_counts().to_dict()
    surge = drift.categorical_verdict("city", kind, {**counts, "New Town": 1700}, THRESHOLDS, 7)
    assert surge.drifted and surge.psi > 0.3, surge


def test_drift_missing_rate_check_uses_the_present_values_and_the_training_row_count():
    profile = {"count": 1000, "missing_rate": 0.1, "frequencies": {"x": 0.5, "y": 0.5}}
    same = drift.categorical_verdict("c", profile, {"x": 450, "y": 450}, THRESHOLDS, 1, 100)
    assert (same.drifted, same.reference_count, same.current_missing_rate) == (False, 900, 0.1)
    broken = drift.categorical_verdict("c", profile, {"x": 100, "y": 100}, THRESHOLDS, 1, 800)
    assert broken.reasons == ("missing rate",) and broken.psi < 0.01
    # A few nulls where training had none: significant, but too small a shift to matter.
    never = {**profile, "missing_rate": 0.0}
    few = drift.categorical_verdict("c", never, {"x": 2475, "y": 2475}, THRESHOLDS, 1, 50)
    assert few.drifted is False and few.missing_p_value < 0.01


# --------------------------------------------------------------------------- robustness


def reject_constant(name: str):
    """A strict JSON parser's answer to NaN or Infinity."""
    raise ValueError(f"{name} is not valid JSON")


def with_value(records: list[dict], feature: str, value: float) -> list[dict]:
    """The records with one record's feature set to `value` (as a client could send it)."""
    records[0]["features"][feature] = value
    return records


@pytest.mark.parametrize("value", [1e160, 1e308, -1e308])
@pytest.mark.parametrize("exact", [False, True])
def test_monitor_survives_a_huge_finite_value(engine, champion, tmp_path, value, exact):
    records = with_value(log_records(champion, batch(champion, 40)), "monthly_charges", value)
    log_through_writer(str(engine.url), tmp_path / "spool", champion, records)
    report = monitor(engine, champion, END - timedelta(days=1), END, THRESHOLDS, exact=exact)
    assert report["source"] == ("prediction_log" if exact else "rollups")
    assert report["status"] == "checked" and report["drift"] is False, report["drifted"]
    summary = report["features"]["monthly_charges"]["summary"]
    assert value in (summary["min"], summary["max"])
    for key in ("mean", "std"):  # finite where computable, else null: never inf or NaN
        assert summary[key] is None or np.isfinite(summary[key]), (key, summary[key])
    if exact:  # the raw rows give finite moments whatever the values
        assert summary["std"] > abs(value) / 100
    said = [m for m in report["messages"] if "sums of monthly_charges overflowed" in m]
    assert bool(said) == (summary["std"] is None), report["messages"]  # null moments are named
    assert all(f"a value of {value:g}" in m and "--exact" in m for m in said)
    nulls = "its mean and std are null" if summary["mean"] is None else "its std is null"
    assert all(nulls in m for m in said)  # as the summary has them
    assert store_daily_stats(engine, report) > 20
    paths = reports.write(report, tmp_path / "reports")
    json.loads(paths["json"].read_text(), parse_constant=reject_constant)


def test_moments_of_huge_and_tiny_values_on_postgres(postgres, champion):  # noqa: F811
    database = sa.create_engine(postgres.url)
    metadata.create_all(database)
    # Squared, 1e160 overflows and 1e-200 underflows: double precision arithmetic raises there.
    # Set after predicting: a model may refuse such values (trees cast to float32).
    records = log_records(champion, batch(champion, 41, rows=400))
    records[0]["features"]["monthly_charges"] = 1e160
    records[1]["features"]["monthly_charges"] = 1e-200
    with database.begin() as conn:
        conn.execute(prediction_log.insert(), records)
    report = monitor(database, champion, END - timedelta(days=1), END, THRESHOLDS, exact=True)
    summary = report["features"]["monthly_charges"]["summary"]
    assert summary["max"] == 1e160 and np.isfinite(summary["std"])
    assert summary["mean"] == pytest.approx(1e160 / 400, rel=1e-9)
    database.dispose()


def test_live_metrics_leave_out_outcomes_the_model_cannot_score(engine, champion, tmp_path):
    frame = batch(champion, 42, rows=400)
    ids = log_frame(engine, champion, frame)
    actual = frame[champion["target"]].astype(object)
    actual.iloc[:3] = ["RARA", "RARA", "abc"]  # a typo or a new class; not a number
    store_outcomes(engine, pd.DataFrame({"request_id": ids, "actual": actual}))
    report = run(engine, champion)
    live = report["live_metrics"]
    assert (live["records_with_outcome"], live["outcomes_left_out"]) == (400, 3)
    assert live["records_scored"] == 397
    metric = "roc_auc" if champion["task"] == "classification" else "rmse"
    assert np.isfinite(live[metric])
    message = next(m for m in report["messages"] if "outcomes left out" in m)
    assert "3 of 400" in message and "'RARA'" in message and "'abc'" in message
    reports.write(report, tmp_path)


def test_undefined_metrics_are_null_with_a_reason():
    reasons: dict[str, str] = {}
    proba = np.array([[0.5, 0.3, 0.2], [0.2, 0.6, 0.2], [0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])
    scores = score_all("classification", list("abab"), np.array(list("abab")), proba, list("abc"))
    assert scores["roc_auc"] is None and scores["accuracy"] == 1.0
    binary = score_all(
        "classification",
        [1, 1],
        np.array([1, 0]),
        np.array([[0.2, 0.8], [0.6, 0.4]]),
        [0, 1],
        reasons,
    )
    assert binary["roc_auc"] is None and "['0'] absent" in reasons["roc_auc"]
    one_row = score_all("regression", [1.0], [2.0], None, None, reasons)
    assert one_row["r2"] is None and one_row["rmse"] == 1.0 and reasons["r2"]


def test_live_metric_undefined_on_one_class_is_null_in_strict_json(engine, champion, tmp_path):
    if champion["task"] != "classification":
        pytest.skip("ROC AUC is a classification metric")
    frame = batch(champion, 43, rows=400)
    ids = log_frame(engine, champion, frame)
    label = frame[champion["target"]].iloc[0]
    only = [i for i, a in zip(ids, frame[champion["target"]], strict=True) if a == label]
    store_outcomes(engine, pd.DataFrame({"request_id": only, "actual": label}))
    report = run(engine, champion)
    assert report["live_metrics"]["roc_auc"] is None
    assert any("live roc_auc undefined" in m and "absent" in m for m in report["messages"])
    report["live_metrics"]["nan_elsewhere"] = float("nan")  # whatever else is not finite
    paths = reports.write(report, tmp_path)
    written = json.loads(paths["json"].read_text(), parse_constant=reject_constant)
    assert written["live_metrics"]["roc_auc"] is None
    assert written["live_metrics"]["nan_elsewhere"] is None
    assert "roc_auc undefined" in paths["md"].read_text()


def test_outcomes_refuse_repeated_keys_and_non_numeric_regression_actuals(engine):
    # 10 requests of 3 records each, the file lacking record_index: 20 would collapse.
    ids = [f"req{n}" for n in range(10) for _record in range(3)]
    with pytest.raises(PipelineError, match="needs a record_index column") as refused:
        store_outcomes(engine, pd.DataFrame({"request_id": ids, "actual": 1.0}))
    assert "request_id req0 record_index 0 (3 rows)" in str(refused.value)
    positions = [r for _n in range(10) for r in range(3)]
    frame = pd.DataFrame({"request_id": ids, "record_index": positions, "actual": 1.0})
    assert len(outcome_rows(frame)) == 30
    bad = pd.DataFrame({"request_id": ["a", "b"], "actual": ["12.5", "abc"]})
    said = r"^1 outcome rows \(rows \[1\], counted from 0, [^)]+\) have an actual that is not a"
    with pytest.raises(PipelineError, match=said) as refused:
        outcome_rows(bad, "regression")
    assert "e.g. row 1 (request_id b) has 'abc': a regression model's" in str(refused.value)
    with pytest.raises(PipelineError, match=r"not a whole number from 0, e\.g\. -1: it is the"):
        outcome_rows(pd.DataFrame({"request_id": ["a"], "record_index": [-1], "actual": [1]}))
    # Every kind of problem of a file at once, not one a run.
    messy = pd.DataFrame(
        {
            "request_id": ["a", "b", "b", "c", "d", "e"],
            "record_index": [0, 1, 1, 0, 0.5, 0],
            "actual": [1.0, 2.0, 2.0, None, 3.0, "about 30"],
        }
    )
    with pytest.raises(PipelineError) as refused:
        outcome_rows(messy, "regression")
    said = str(refused.value)
    assert said.startswith("1 outcome rows have no actual (rows [3], counted from 0"), said
    for part in (
        "; 1 outcome rows (rows [4], counted from 0, the header not counted) have a record_index",
        "; 2 outcome rows share their (request_id, record_index) with another row, e.g. "
        "request_id b record_index 1",
        "; 1 outcome rows (rows [5], counted from 0, the header not counted) have an actual that",
    ):
        assert part in said, (part, said)
    assert said.endswith(" (nothing was loaded)"), said
    misspelt = pd.DataFrame({"request_id": ["a"], "rec_index": [5], "actual": [1]})
    with pytest.raises(PipelineError, match=r"only the columns .*; unknown \['rec_index'\]"):
        outcome_rows(misspelt)
    sent = pd.DataFrame({"row": [0], "request_id": ["a"], "record_index": [0], "prediction": [1]})
    sent = sent.assign(probability_0=0.2, probability_1=0.8)
    assert len(outcome_rows(sent.assign(actual=1))) == 1, "send-batch OUT= with an actual"
    unknown = pd.DataFrame({"request_id": ["a", "b", "c"], "actual": [1.0, None, None]})
    missing = r"^2 outcome rows have no actual \(rows \[1, 2\], counted from 0"
    with pytest.raises(PipelineError, match=missing):
        outcome_rows(unknown, "regression")
    kwh = pd.DataFrame({"request_id": ["a", "b", "c"], "actual": [0.0, -50.0, 12.5]})
    assert len(outcome_rows(kwh, "regression")) == 3
    with pytest.raises(PipelineError) as outside:
        outcome_rows(kwh, "regression", bounds=(0, None))
    assert str(outside.value) == (
        "1 outcomes (rows [1], counted from 0, the header not counted) have an actual value "
        "that is not at least 0 "
        "(the target's data.bounds), "
        "e.g. -50: fix them, or widen data.bounds (nothing was loaded)"
    )


def test_load_counts_outcomes_matching_a_logged_prediction(engine, champion):
    frame = batch(champion, 44, rows=50)
    ids = log_frame(engine, champion, frame)
    outcomes = pd.DataFrame(
        {"request_id": [*ids, "no-such-request"], "actual": [*frame[champion["target"]], 1]}
    )
    loaded = load(engine, outcomes, champion["task"])
    assert (loaded.rows, loaded.new, loaded.matched) == (51, 51, 50)
    assert loaded.unmatched == [("no-such-request", 0)]
    assert load(engine, outcomes, champion["task"]).new == 0


def test_outcomes_refuse_undeclared_labels_and_a_later_load_corrects_them(engine):
    yes_no = pd.DataFrame({"request_id": ["a", "b", "c"], "actual": ["yes", "no", "1"]})
    with pytest.raises(
        PipelineError, match=r"^2 outcomes \(rows \[0, 1\], counted from 0, [^)]+\) have an actual"
    ):
        load(engine, yes_no, "classification", [0, 1])
    assert load(engine, yes_no, "classification").new == 3  # no declared classes: no check
    fixed = pd.DataFrame({"request_id": ["a", "b"], "actual": [1.0, 0]})
    assert load(engine, fixed, "classification", [0, 1]).new == 0
    with engine.connect() as conn:
        query = sa.select(outcomes_table.c.request_id, outcomes_table.c.actual)
        stored = dict(conn.execute(query).all())
    assert stored == {"a": "1", "b": "0", "c": "1"}, "a corrected actual replaces the first"


def test_a_feature_with_thousands_of_categories_shows_those_that_moved_most():
    codes = [f"{n:05d}" for n in range(2000)]
    reference = dict.fromkeys(codes, 1 / 2000)
    counts = dict.fromkeys(codes, 1) | {"00042": 500, "01234": 300, "99999": 200}  # one unseen
    shares = category_shares(reference, counts)
    assert len(shares["labels"]) == SHOWN_CATEGORIES
    assert {"00042", "01234", "99999"} <= set(shares["labels"])
    assert shares["labels"][-1] == f"other ({2001 - SHOWN_CATEGORIES + 1} categories)"
    assert sum(shares["reference"]) == pytest.approx(1.0)
    assert sum(shares["current"]) == pytest.approx(1.0)
    new_ids = dict.fromkeys((f"N{n}" for n in range(600)), 2)  # many new ids, each rare
    flood = category_shares(reference, dict.fromkeys(codes, 1) | new_ids)
    assert len(flood["labels"]) == SHOWN_CATEGORIES
    shown_new = [label for label in flood["labels"] if label.startswith("N")]
    assert flood["labels"][-1] == f"unseen in training ({600 - len(shown_new)} categories)"
    assert flood["labels"][-2] == "other (2000 categories)"
    current = dict(zip(flood["labels"], flood["current"], strict=True))
    new_share = sum(share for label, share in current.items() if label in new_ids)
    assert flood["reference"][-1] == 0.0
    assert new_share + flood["current"][-1] == pytest.approx(1200 / 3200)
    few = category_shares({"a": 0.5, "b": 0.5}, {"a": 3, "c": 1})
    assert few["labels"] == ["a", "b", "c"]
    assert (few["reference"], few["current"]) == ([0.5, 0.5, 0.0], [0.75, 0.0, 0.25])
    # The plot marks the new ids shown one by one; their bar of the rest needs no mark.
    section = {"kind": "categorical", "distributions": flood, "verdict": {"reasons": []}}
    labels, _title = reports.plot_text("merchant", section)
    assert [label for label in labels if label.endswith(" (unseen)")] == [
        f"{label} (unseen)" for label in shown_new
    ]
    assert labels[-2:] == flood["labels"][-2:]
