"""Metrics the gate can use, with their task and direction."""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn import metrics as skm
from sklearn.exceptions import UndefinedMetricWarning

from .errors import PipelineError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Metric:
    """A named score, the task it applies to and whether higher is better."""

    name: str
    task: str
    higher_is_better: bool
    needs_proba: bool = False
    low: float | None = 0.0  # the values the metric can take (None: unbounded)
    high: float | None = None
    zero_is_best: bool = False  # a signed error: the closer to 0, the better
    gate: bool = True  # False: reported beside the others, never what the gate judges

    @property
    def direction(self) -> str:
        """Which way is better, in words for a table."""
        if self.zero_is_best:
            return "closer to 0 is better"
        return "higher is better" if self.higher_is_better else "lower is better"

    def outside(self, value: float) -> str | None:
        """What is wrong with `value` as a value of this metric, or None if it can be one."""
        if (self.low is not None and value < self.low) or (
            self.high is not None and value > self.high
        ):
            low = "-inf" if self.low is None else self.low
            high = "inf" if self.high is None else self.high
            return f"{value} is outside the range of {self.name}, [{low}, {high}]"
        return None

    def better_by(self, candidate: float, champion: float) -> float:
        """How much better `candidate` is than `champion`, positive when better."""
        if self.zero_is_best:
            return abs(champion) - abs(candidate)
        return candidate - champion if self.higher_is_better else champion - candidate

    def passes(self, value: float, threshold: float) -> bool:
        """Whether `value` is at least as good as the threshold."""
        return value >= threshold if self.higher_is_better else value <= threshold


METRICS = {
    m.name: m
    for m in (
        Metric("roc_auc", "classification", True, needs_proba=True, high=1.0),
        Metric("accuracy", "classification", True, high=1.0),
        Metric("f1", "classification", True, high=1.0),
        Metric("log_loss", "classification", False, needs_proba=True),
        Metric("average_precision", "classification", True, needs_proba=True, high=1.0),
        Metric("rmse", "regression", False),
        Metric("mae", "regression", False),
        Metric("r2", "regression", True, low=None, high=1.0),
        # The mean of prediction - actual: the bias. Positive: the model predicts too high.
        Metric("mean_error", "regression", False, low=None, zero_is_best=True, gate=False),
    )
}


def readable(value: float, signed: bool = False, grouped: bool = True) -> str:
    """A figure for a report: 4 significant digits, but from 10,000 up whole and with thousands
    separators (a price's error reads 71,931, not 7.193e+04); `signed` writes a + too, and
    `grouped=False` no separators (where a comma separates figures: a bin's [209891, 254695))."""
    sign, group = ("+" if signed else ""), ("," if grouped else "")
    if math.isfinite(value) and 1e4 <= abs(value) < 1e15:
        return f"{value:{sign}{group}.0f}"
    return f"{value:{sign}.4g}"


def figure(value: float | None, signed: bool = False) -> str:
    """A score for a table or a gate's reason, or a dash: 4 decimals, 2 from 100 up, and from
    1,000 up whole with thousands separators (an error in money reads 71,931 and a mean error
    -2,153 beside it, not 71931.1234 and -2152.7200)."""
    if value is None:
        return "-"
    sign, size = ("+" if signed else ""), abs(value)
    return f"{value:{sign},.0f}" if size >= 1e3 else f"{value:{sign}.{2 if size >= 100 else 4}f}"


def setting(value: float) -> str:
    """A number from params.yaml as a person wrote it: 120,000 and 0.75, not 120000.0."""
    return f"{value:,.12g}"


def difference(value: float | None, signed: bool = False) -> str:
    """A gap between two scores: as figure(), but below 1 with three significant digits at
    least, so a gap finer than the scores' fourth decimal reads as computed (0.00125 between
    0.5455 and 0.5442, not 0.0012 or 0.0000) and never rounds onto a gate's minimum."""
    if value is None or value == 0 or abs(value) >= 1:
        return figure(value, signed)
    decimals = max(4, 2 - math.floor(math.log10(abs(value))))
    return f"{value:{'+' if signed else ''}.{decimals}f}"


def figures(scores: dict[str, float | None]) -> str:
    """Scores by name, in a sentence: "accuracy 0.7524, f1 0.7411"."""
    return ", ".join(f"{metric} {figure(value)}" for metric, value in scores.items())


def get_metric(name: str, task: str) -> Metric:
    """Look a metric up, refusing one that does not exist or does not fit the task."""
    fitting = [m.name for m in METRICS.values() if m.task == task and m.gate]
    metric = METRICS.get(name)
    if metric is None or metric.task != task:
        raise PipelineError(f"metric '{name}' does not fit task '{task}': use one of {fitting}")
    if not metric.gate:
        raise PipelineError(
            f"metric '{name}' is reported beside the others but cannot be the gate's: a bias "
            f"is judged by its size either way; use one of {fitting}"
        )
    return metric


def score_all(
    task: str,
    y_true,
    prediction: np.ndarray,
    proba: np.ndarray | None,
    classes: list[Any] | None,
    reasons: dict[str, str] | None = None,
    positive: Any = None,
) -> dict[str, float | None]:
    """Every metric of the task, computed on one set of predictions; a binary F1 scores
    `positive` (default: the last class, see positive_class).

    A metric these rows cannot define (ROC AUC when a class is absent from the actual labels,
    R2 on one row) is None, not NaN: NaN compares false with everything and is not valid JSON.
    The reason is logged and, when `reasons` is given, stored there under the metric's name.
    """
    scorers = _scorers(task, classes, positive)
    return {
        name: _defined(name, lambda s=score: s(y_true, prediction, proba), reasons)
        for name, score in scorers.items()
    }


def _scorers(task: str, classes: list[Any] | None, positive: Any = None) -> dict:
    """Each metric of the task as a function of (actuals, predictions, probabilities)."""
    if task == "regression":
        return {
            "rmse": lambda y, p, _q: np.sqrt(skm.mean_squared_error(y, p)),
            "mae": lambda y, p, _q: skm.mean_absolute_error(y, p),
            "r2": lambda y, p, _q: skm.r2_score(y, p),
            "mean_error": lambda y, p, _q: float(
                np.mean(np.asarray(p, dtype=float) - np.asarray(y, dtype=float))
            ),
        }
    binary = len(classes) == 2
    positive = classes[-1] if positive is None else positive
    f1 = {"average": "binary", "pos_label": positive}

    def macro_f1(y, p, _q=None):
        # Over the classes the actual labels hold: the same for every model scored on these
        # rows (scikit-learn's default also takes the classes each model predicts).
        return skm.f1_score(y, p, average="macro", labels=np.unique(np.asarray(y)))

    return {
        "accuracy": lambda y, p, _q: skm.accuracy_score(y, p),
        "f1": (lambda y, p, _q: skm.f1_score(y, p, **f1)) if binary else macro_f1,
        "log_loss": lambda y, _p, q: skm.log_loss(y, q, labels=classes),
        "roc_auc": lambda y, _p, q: _roc_auc(y, q, classes),
        "average_precision": lambda y, _p, q: _average_precision(y, q, classes, positive),
    }


# The bootstrap's resamples, and the most rows each holds: more rows would narrow the interval
# less than they cost (a resample of fewer rows than there are gives a wider, safer interval).
BOOTSTRAP_ROUNDS = 200
BOOTSTRAP_ROWS = 20_000


def bootstrap_interval(
    name: str,
    task: str,
    y_true,
    prediction,
    proba,
    classes: list[Any] | None,
    positive: Any = None,
    level: float = 0.95,
) -> tuple[float, float] | None:
    """A percentile-bootstrap interval of one metric over these rows: the range its value takes
    on `level` of the resamples (drawn with replacement, fixed seed). None when the metric is
    undefined on more than a tenth of the resamples (e.g. a class that is rarely present)."""
    score = _scorers(task, classes, positive)[name]
    y, p = np.asarray(y_true), np.asarray(prediction)
    q = _array(proba)
    return _bootstrap(len(y), lambda rows: score(y[rows], p[rows], _rows(q, rows)), level)


def delta_interval(
    name: str,
    task: str,
    y_true,
    candidate: tuple,
    champion: tuple,
    classes: list[Any] | None,
    positive: Any = None,
    level: float = 0.95,
) -> tuple[float, float] | None:
    """A paired percentile-bootstrap interval of candidate - champion for one metric: both
    models scored on the same resampled rows (`candidate`, `champion`: predictions and
    probabilities). An interval holding 0 says the holdout cannot tell the two apart."""
    score = _scorers(task, classes, positive)[name]
    y = np.asarray(y_true)
    (p1, q1), (p2, q2) = [(np.asarray(p), _array(q)) for p, q in (candidate, champion)]

    def delta(rows):
        first = score(y[rows], p1[rows], _rows(q1, rows))
        return first - score(y[rows], p2[rows], _rows(q2, rows))

    return _bootstrap(len(y), delta, level)


def _array(values) -> np.ndarray | None:
    """An optional array (probabilities: None for a regression)."""
    return None if values is None else np.asarray(values)


def _rows(values: np.ndarray | None, rows: np.ndarray) -> np.ndarray | None:
    """The resampled rows of an optional array."""
    return None if values is None else values[rows]


def _bootstrap(count: int, value_of, level: float) -> tuple[float, float] | None:
    """The central `level` range of value_of(rows) over BOOTSTRAP_ROUNDS resamples of at most
    BOOTSTRAP_ROWS of `count` rows (fixed seed); None when it is undefined on more than a tenth."""
    rng = np.random.default_rng(0)
    size = min(count, BOOTSTRAP_ROWS)
    values = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined resamples are counted, not reported
        for _ in range(BOOTSTRAP_ROUNDS):
            rows = rng.integers(0, count, size)
            try:
                value = float(value_of(rows))
            except (Undefined, ValueError):
                continue
            if math.isfinite(value):
                values.append(value)
    if len(values) < 0.9 * BOOTSTRAP_ROUNDS:
        return None
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def positive_class(classes: list[Any] | None, declared: list | tuple | None) -> Any:
    """The class a binary F1 scores: the last of data.target_classes when declared (list them
    as [negative, positive]), else the last in sorted order (1 of 0/1, "yes" of no/yes). None
    for a regression (no classes)."""
    if not classes:
        return None
    if declared and len(classes) == 2:
        return {str(c): c for c in classes}.get(str(declared[-1]), classes[-1])
    return classes[-1]


def scope(name: str, classes: list[Any] | None, positive: Any = None) -> str:
    """What a classification metric averages over, in words for a table ("" when it needs
    none): a binary F1 or average precision scores one class, a multi-class one averages."""
    if not classes:
        return ""
    if len(classes) == 2:
        scored = classes[-1] if positive is None else positive
        return f"of class '{scored}'" if name in ("f1", "average_precision") else ""
    return {
        "f1": "macro average over the classes",
        "roc_auc": "one class against the rest, macro average",
        "average_precision": "one class against the rest, macro average",
    }.get(name, "")


class Undefined(Exception):
    """A metric that the rows at hand cannot define."""


def _roc_auc(y_true, proba: np.ndarray, classes: list[Any]) -> float:
    """ROC AUC (one-vs-rest when multi-class); Undefined unless every class is among the actuals.

    sklearn returns NaN with a warning (or raises, depending on its version) in that case.
    """
    present = {str(label) for label in y_true}
    absent = [str(c) for c in classes if str(c) not in present]
    if absent:
        raise Undefined(
            f"class(es) {absent} absent from the {len(y_true)} actual labels: ROC AUC needs "
            f"examples of every class {[str(c) for c in classes]}"
        )
    if len(classes) == 2:
        return skm.roc_auc_score(y_true, proba[:, 1])
    return skm.roc_auc_score(y_true, proba, multi_class="ovr", labels=classes)


def _average_precision(y_true, proba: np.ndarray, classes: list[Any], positive: Any) -> float:
    """The area under the precision-recall curve (scikit-learn's average precision) of the
    `positive` class, or one class against the rest macro-averaged when multi-class; Undefined
    unless the actual labels hold every class scored. Unlike ROC AUC it weighs the rare class's
    precision, so it tells apart models of rare positives (fraud) that ROC AUC ranks alike."""
    actual = np.asarray([str(label) for label in y_true])
    scored = [positive] if len(classes) == 2 else classes
    absent = [str(c) for c in scored if str(c) not in set(actual)]
    if absent:
        raise Undefined(
            f"class(es) {absent} absent from the {len(actual)} actual labels: average precision "
            "needs examples of every class it scores"
        )
    columns = [classes.index(c) for c in scored]
    values = [
        skm.average_precision_score(actual == str(c), proba[:, k])
        for c, k in zip(scored, columns, strict=True)
    ]
    return float(np.mean(values))


def _defined(name: str, scorer, reasons: dict[str, str] | None) -> float | None:
    """The scorer's value as a float, or None (reason logged) when it is undefined or not finite."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UndefinedMetricWarning)
        try:
            value, reason = float(scorer()), None
        except Undefined as err:
            value, reason = math.nan, str(err)
    if math.isfinite(value):
        for w in caught:  # a defined value keeps its warnings (e.g. F1's zero division)
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return value
    # sklearn's own warning, when it gave one, says best why (e.g. R2 on fewer than two rows).
    said = [str(w.message) for w in caught if issubclass(w.category, UndefinedMetricWarning)]
    reason = reason or (said[0] if said else f"{name} came out as {value}")
    log.warning("%s is undefined on these rows, reported as null: %s", name, reason)
    if reasons is not None:
        reasons[name] = reason
    return None
