"""The promotion gate, in both metric directions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from {{ cookiecutter.__package_name }} import evaluation, promotion
from {{ cookiecutter.__package_name }}.data import Schema
from {{ cookiecutter.__package_name }}.errors import PipelineError
from {{ cookiecutter.__package_name }}.metrics import (
    METRICS,
    delta_interval,
    figure,
    positive_class,
    readable,
    score_all,
    setting,
)
from {{ cookiecutter.__package_name }}.promotion import Gate, decide


def gate(metric: str, threshold: float, margin: float = 0.01) -> Gate:
    """A gate for the task the metric belongs to."""
    task = METRICS[metric].task if metric in METRICS else "classification"
    return Gate.from_params(
        {"metric": metric, "threshold": threshold, "min_improvement": margin}, task
    )


@pytest.mark.parametrize(
    ("metric", "threshold", "candidate", "champion", "promoted"),
    [
        ("roc_auc", 0.7, 0.8, None, True),
        ("roc_auc", 0.7, 0.65, None, False),
        ("roc_auc", 0.7, 0.80, 0.78, True),
        ("roc_auc", 0.7, 0.785, 0.78, False),
        ("roc_auc", 0.7, 0.75, 0.78, False),
        ("rmse", 20.0, 12.0, None, True),
        ("rmse", 20.0, 25.0, None, False),
        ("rmse", 20.0, 11.0, 12.0, True),
        ("rmse", 20.0, 11.995, 12.0, False),
        ("rmse", 20.0, 13.0, 12.0, False),
    ],
    ids=[
        "first-passes",
        "first-fails-threshold",
        "beats-champion",
        "below-margin",
        "worse",
        "rmse-first-passes",
        "rmse-first-fails",
        "rmse-beats",
        "rmse-below-margin",
        "rmse-worse",
    ],
)
def test_gate_decide_in_the_metrics_direction(metric, threshold, candidate, champion, promoted):
    accepted, reason = gate(metric, threshold).decide(candidate, champion)
    assert accepted is promoted, reason
    assert metric in reason


def test_an_improvement_of_exactly_the_minimum_passes_despite_floating_point():
    accepted, reason = gate("log_loss", 1.0, margin=0.1).decide(0.2, 0.3, None, 1.19)
    assert accepted, reason  # 0.3 - 0.2 == 0.09999999999999998
    worse, said = gate("log_loss", 1.0, margin=0.005).decide(0.31, 0.3)
    assert not worse and said.startswith("log_loss 0.3100 is worse than champion 0.3000 by 0.0100")


def test_a_tie_passes_a_zero_margin_and_says_it_ties():
    accepted, reason = gate("rmse", 20.0, margin=0.0).decide(12.0, 12.0)
    assert accepted and "ties champion 12.0000" in reason and "beats" not in reason
    assert "beats champion 12.0000 by 1.0000" in gate("rmse", 20.0).decide(11.0, 12.0)[1]


def test_a_gap_finer_than_the_scores_decimals_reads_as_computed_not_onto_the_minimum():
    _, worse = gate("f1", 0.5, margin=0.0).decide(0.54418, 0.54543)
    assert worse.startswith("f1 0.5442 is worse than champion 0.5454 by 0.00125 ")
    _, short = gate("f1", 0.5, margin=0.0013).decide(0.54668, 0.54543)
    assert "improvement 0.00125 is below the minimum 0.0013" in short


def test_a_threshold_failure_gives_the_scale_of_the_target():
    """A regression's default threshold suits the sample's target, not house prices: the
    refusal says what a model that ignores the features scores, so the scale is plain."""
    accepted, reason = gate("mae", 20.0).decide(71931.2, None, None, 104250.0)
    assert not accepted and reason == (
        "mae 71,931 fails the threshold (<= 20); for scale, a model that ignores the "
        "features scores 104,250"
    )
    _, worse = gate("mae", 20.0).decide(29.7, None, None, 24.1)
    assert worse == (
        "mae 29.7000 fails the threshold (<= 20); a model that ignores the features scores "
        "24.1000, better than this candidate"
    )
    _, compared = gate("mae", 1e6, margin=0.0).decide(71931.2, 72103.9)
    assert compared.startswith("mae 71,931 passes the threshold and beats champion 72,104 by 172.7")


def test_a_rejection_warns_when_the_champion_kept_fails_the_threshold_too():
    evaluation = {
        "candidate": {"metrics": {"roc_auc": 0.57}},
        "champion": {"version": "2", "metrics": {"roc_auc": 0.56}},
    }
    roc = gate("roc_auc", 0.7)
    accepted, _reason = decide(evaluation, roc)
    warning = promotion._failing_champion(evaluation, roc)
    assert not accepted and "champion v2 itself scores roc_auc 0.5600" in warning
    evaluation["champion"]["metrics"]["roc_auc"] = 0.8
    assert promotion._failing_champion(evaluation, roc) == ""


def test_gate_never_promotes_on_an_undefined_metric_and_says_when_the_champion_lacks_one():
    """roc_auc is undefined on a holdout holding one class: no promotion on a missing number."""
    roc = gate("roc_auc", 0.7)
    accepted, reason = roc.decide(None, 0.8)
    assert not accepted and "roc_auc is undefined on this holdout" in reason
    evaluation = {
        "candidate": {"metrics": {"roc_auc": 0.9}},
        "champion": {"version": "1", "metrics": {"roc_auc": None}},
    }
    accepted, reason = decide(evaluation, roc)
    assert accepted and "champion's roc_auc is undefined on this holdout" in reason
    evaluation["champion"] = None
    assert decide(evaluation, roc) == (True, roc.decide(0.9, None)[1])
    assert "no champion yet" in decide(evaluation, roc)[1]


def test_gate_refuses_metric_of_the_other_task():
    with pytest.raises(PipelineError, match="metric 'rmse' does not fit task 'classification'"):
        Gate.from_params({"metric": "rmse", "threshold": 1}, "classification")


def test_gate_refuses_non_numeric_threshold_and_negative_margin():
    with pytest.raises(PipelineError, match="must be numbers"):
        gate("roc_auc", "high")
    with pytest.raises(PipelineError, match=r"min_improvement is -0\.1"):
        gate("roc_auc", 0.7, margin=-0.1)


@pytest.mark.parametrize(
    ("metric", "threshold"), [("mae", -5), ("roc_auc", 1.5), ("r2", 2), ("log_loss", -0.1)]
)
def test_gate_refuses_a_threshold_the_metric_cannot_take(metric, threshold):
    message = f"promote.threshold: {float(threshold)} is outside the range"
    with pytest.raises(PipelineError, match=message):
        gate(metric, threshold)


def test_the_mean_error_is_reported_but_never_the_gates_metric():
    """A bias is better the closer it is to 0, from either side: it ranks a regression's
    candidate against its champion in the table, but no threshold fits it."""
    with pytest.raises(PipelineError, match=r"'mean_error' is reported .* use one of \['rmse'"):
        gate("mean_error", 1.0)
    scores = score_all("regression", [10.0, 20.0], np.array([12.0, 24.0]), None, None)
    assert scores["mean_error"] == 3.0  # prediction - actual: it predicts too high
    metric = METRICS["mean_error"]
    assert metric.direction == "closer to 0 is better"
    assert metric.better_by(-1.0, 2.0) > 0 and metric.better_by(2.0, -1.0) < 0


def test_the_delta_interval_tells_a_better_model_from_noise():
    """Paired: both models scored on the same resampled rows, so a model against itself gives
    exactly 0, and a real gain an interval clear of 0."""
    rng = np.random.default_rng(5)
    actual = rng.integers(0, 2, 2000)
    good = np.clip(actual * 0.6 + rng.uniform(0, 0.4, 2000), 0, 1)
    noise = rng.uniform(0, 1, 2000)

    def scored(p):
        return (p > 0.5).astype(int), np.column_stack([1 - p, p])

    task, classes = "classification", [0, 1]
    low, high = delta_interval("roc_auc", task, actual, scored(good), scored(noise), classes)
    assert 0.3 < low < high < 0.6, (low, high)
    assert delta_interval("roc_auc", task, actual, scored(good), scored(good), classes) == (0, 0)
    exact, off = (actual, None), (actual + 1.0, None)  # off by 1 on every row
    assert delta_interval("rmse", "regression", actual, exact, off, None) == (-1.0, -1.0)


def test_report_figures_read_whole_from_ten_thousand_up():
    assert [readable(v) for v in (71931.24, -250000.0, 1234.567, 0.123456)] == [
        "71,931",
        "-250,000",
        "1235",
        "0.1235",
    ]
    assert readable(31189.7, signed=True) == "+31,190" and readable(0.5, signed=True) == "+0.5"
    assert readable(209891.4, grouped=False) == "209891"  # in a bin's [209891, 254695)
    figures = [figure(v, signed=True) for v in (71931.24, -2152.72, 159.3352, -0.5, None)]
    assert figures == ["+71,931", "-2,153", "+159.34", "-0.5000", "-"]  # the evaluation table's
    assert [setting(v) for v in (120000.0, 0.75, 0.0)] == ["120,000", "0.75", "0"]


def test_repository_params_build_a_gate(repo_params):
    built = Gate.from_params(repo_params["promote"], repo_params["model"]["task"])
    assert built.metric.task == repo_params["model"]["task"]


def test_binary_f1_scores_the_last_declared_class_as_positive():
    """target_classes: [legit, fraud] makes fraud the positive class, as [0, 1] makes 1, though
    "fraud" sorts first."""
    classes = ["fraud", "legit"]  # the fitted model's sorted classes
    assert positive_class(classes, ["legit", "fraud"]) == "fraud"
    assert positive_class([0, 1], [0, 1]) == 1
    assert positive_class(classes, None) == "legit"
    actual = np.array(["legit"] * 8 + ["fraud"] * 2)
    predicted = np.array(["legit"] * 7 + ["fraud"] * 3)  # catches both frauds, one false alarm
    proba = np.where(predicted[:, None] == np.array(classes), 0.9, 0.1)
    fraud = score_all("classification", actual, predicted, proba, classes, positive="fraud")
    assert fraud["f1"] == pytest.approx(0.8)  # precision 2/3, recall 1
    legit = score_all("classification", actual, predicted, proba, classes)
    assert legit["f1"] == pytest.approx(14 / 15)  # the majority class: a flattering number


def test_average_precision_scores_the_positive_class_and_tells_rare_positives_apart():
    """Two models with the same ROC AUC: the one whose top-ranked cases are frauds has the
    higher average precision; a constant scores the positive rate; no fraud: undefined."""
    classes = ["fraud", "legit"]
    actual = np.array(["fraud", "fraud"] + ["legit"] * 6)
    top = np.array([0.9, 0.4, 0.8, 0.7, 0.6, 0.5, 0.3, 0.2])  # frauds ranked 1st and 6th
    late = np.array([0.7, 0.6, 0.9, 0.8, 0.5, 0.4, 0.3, 0.2])  # frauds 3rd and 4th
    scores = []
    for fraud in (top, late):
        proba = np.column_stack([fraud, 1 - fraud])
        predicted = np.where(fraud > 0.5, "fraud", "legit")
        scores.append(
            score_all("classification", actual, predicted, proba, classes, positive="fraud")
        )
    assert scores[0]["roc_auc"] == scores[1]["roc_auc"] == pytest.approx(8 / 12)
    assert scores[0]["average_precision"] == pytest.approx((1 + 2 / 6) / 2)
    assert scores[1]["average_precision"] == pytest.approx((1 / 3 + 2 / 4) / 2)
    flat = np.full((len(actual), 2), 0.5)
    constant = score_all("classification", actual, actual, flat, classes, positive="fraud")
    assert constant["average_precision"] == pytest.approx(2 / 8)
    reasons: dict[str, str] = {}
    legit = np.array(["legit"] * 8)
    none = score_all("classification", legit, legit, flat, classes, reasons, positive="fraud")
    assert none["average_precision"] is None and "absent" in reasons["average_precision"]


def test_macro_f1_averages_over_the_classes_the_actual_labels_hold():
    """A class absent from the rows weighs on no model, whether it predicts it or not."""
    classes = ["bronze", "gold", "platinum", "silver"]
    actual = np.array(["bronze", "gold", "silver", "bronze", "silver", "gold"])
    once = np.array(["bronze", "gold", "silver", "platinum", "silver", "gold"])
    never = np.array(["bronze", "gold", "silver", "silver", "silver", "gold"])
    proba = np.full((len(actual), len(classes)), 0.25)
    scores = [score_all("classification", actual, p, proba, classes)["f1"] for p in (once, never)]
    assert scores == pytest.approx([(2 / 3 + 1 + 1) / 3, (2 / 3 + 1 + 0.8) / 3])


@pytest.mark.parametrize(
    ("metric", "candidate", "baseline", "promoted"),
    [
        ("log_loss", 0.2461, 0.2016, False),  # passes a 0.6 threshold, worse than the prior
        ("log_loss", 0.15, 0.2016, True),
        ("accuracy", 0.95, 0.96, False),  # below always predicting the majority class
        ("roc_auc", 0.5, 0.5, False),  # a tie with a constant is no better
        ("rmse", 12.0, 30.0, True),
    ],
)
def test_candidate_must_beat_a_model_that_ignores_the_features(
    metric, candidate, baseline, promoted
):
    threshold = {"log_loss": 0.6, "accuracy": 0.7, "roc_auc": 0.5, "rmse": 25}[metric]
    accepted, reason = gate(metric, threshold).decide(candidate, None, baseline=baseline)
    assert accepted is promoted, reason
    if not promoted:
        assert "ignores the features" in reason


def test_a_regression_baseline_is_the_best_constant_for_each_metric():
    """On a heavy-tailed target the mean is a poor constant for absolute errors: the baseline
    of mae predicts the median, so a candidate that a constant beats is not called better."""
    trained_on = pd.Series([1.0] * 8 + [2.0, 1000.0])
    actual = pd.Series([1.0, 1.0, 2.0, 3.0])
    schema = Schema({"x": "numeric"}, "y", "regression")
    scores = evaluation.baseline_metrics(trained_on, actual, schema, None)
    assert scores["mae"] == pytest.approx(np.mean([0, 0, 1, 2]))  # the median, 1.0
    assert scores["rmse"] == pytest.approx(np.sqrt(np.mean((actual - 101.0) ** 2)))  # the mean


def test_a_feature_change_names_only_the_sides_that_differ():
    change = evaluation.schema_change
    assert change("2", {"a": "numeric"}, {"a": "numeric", "b": "categorical"}) == (
        "version 2 was trained on other features than params.yaml declares (it never saw ['b'])"
    )
    assert change("2", {"a": "numeric", "b": "numeric"}, {"a": "numeric"}).endswith(
        "(it needs ['b'], which the data lacks)"
    )
    assert change("2", {"a": "numeric"}, {"a": "numeric"}) is None
