"""Metrics the gate can use, with their task and direction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn import metrics as skm

from .errors import PipelineError


@dataclass(frozen=True)
class Metric:
    """A named score, the task it applies to and whether higher is better."""

    name: str
    task: str
    higher_is_better: bool
    needs_proba: bool = False

    def better_by(self, candidate: float, champion: float) -> float:
        """How much better `candidate` is than `champion`, positive when better."""
        return candidate - champion if self.higher_is_better else champion - candidate

    def passes(self, value: float, threshold: float) -> bool:
        """Whether `value` is at least as good as the threshold."""
        return value >= threshold if self.higher_is_better else value <= threshold


METRICS = {
    m.name: m
    for m in (
        Metric("roc_auc", "classification", True, needs_proba=True),
        Metric("accuracy", "classification", True),
        Metric("f1", "classification", True),
        Metric("log_loss", "classification", False, needs_proba=True),
        Metric("rmse", "regression", False),
        Metric("mae", "regression", False),
        Metric("r2", "regression", True),
    )
}


def get_metric(name: str, task: str) -> Metric:
    """Look a metric up, refusing one that does not exist or does not fit the task."""
    fitting = [m for m in METRICS.values() if m.task == task]
    metric = METRICS.get(name)
    if metric is None or metric.task != task:
        raise PipelineError(
            f"metric '{name}' does not fit task '{task}': use one of {[m.name for m in fitting]}"
        )
    return metric


def score_all(
    task: str, y_true, prediction: np.ndarray, proba: np.ndarray | None, classes: list[Any] | None
) -> dict[str, float]:
    """Every metric of the task, computed on one set of predictions."""
    if task == "regression":
        return {
            "rmse": float(np.sqrt(skm.mean_squared_error(y_true, prediction))),
            "mae": float(skm.mean_absolute_error(y_true, prediction)),
            "r2": float(skm.r2_score(y_true, prediction)),
        }
    binary = len(classes) == 2
    scores = {
        "accuracy": float(skm.accuracy_score(y_true, prediction)),
        "f1": float(
            skm.f1_score(
                y_true,
                prediction,
                average="binary" if binary else "macro",
                pos_label=classes[-1] if binary else 1,
            )
        ),
        "log_loss": float(skm.log_loss(y_true, proba, labels=classes)),
    }
    if len(set(y_true)) > 1:
        scores["roc_auc"] = float(
            skm.roc_auc_score(y_true, proba[:, 1])
            if binary
            else skm.roc_auc_score(y_true, proba, multi_class="ovr", labels=classes)
        )
    return scores
