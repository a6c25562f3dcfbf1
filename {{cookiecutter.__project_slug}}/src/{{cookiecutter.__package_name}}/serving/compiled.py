"""A numpy fast path for the usual scikit-learn preprocessing, checked against the model itself.

A ColumnTransformer over a pandas DataFrame costs milliseconds a call whatever the number of
rows (DataFrame construction, column selection, per-step validation), several times the cost of
the estimator on a few rows. `compile_model` recognizes a Pipeline of a ColumnTransformer and a
final estimator whose branches are made of SimpleImputer, StandardScaler, OneHotEncoder
(dense, no drop, unknown categories ignored or grouped with infrequent ones), "passthrough" and
"drop", alone or in nested Pipelines, and builds the same feature matrix with numpy straight
from the validated records.

A HistGradientBoosting estimator pays ~6 µs per tree and call in scikit-learn whatever the number
of rows (over a millisecond for 200 trees), so for small batches its trees are walked here, all
at once, with numpy; larger batches go to scikit-learn, which is faster per row there.

Before the fast path is used it must give exactly the model's own answers on probe rows (the
example, each feature missing, every known category, unusual numbers); any other model, or a
failed check, keeps the pipeline's own predict. The service logs which path it took.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import sklearn
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from ..data import feature_frame
from .schema import UNSEEN_PROBE

log = logging.getLogger(__name__)

Rows = list[dict[str, Any]]
Step = Callable[[np.ndarray], np.ndarray]
# Up to this many rows the numpy tree walk beats scikit-learn's per-tree calls (measured on the
# default model: 0.09 vs 1.2 ms for 1 row, 0.56 vs 1.3 ms for 32, 1.1 vs 1.5 ms for 64, 1.9 vs
# 1.8 ms for 128).
TREE_WALK_MAX_ROWS = 64
# Batches the fast path predicts within this long run on the event loop itself (quick_rows).
QUICK_SECONDS = 0.0015


class Unsupported(Exception):
    """The model has a part the fast path does not reproduce."""


def _imputer(step: SimpleImputer) -> Step:
    if step.add_indicator or not isinstance(step.missing_values, float):
        raise Unsupported("SimpleImputer with an indicator or a non-NaN missing marker")
    fill = np.asarray(step.statistics_)
    if fill.dtype.kind == "f" and np.isnan(fill).any():
        raise Unsupported("SimpleImputer that drops all-missing columns")

    def impute(block: np.ndarray) -> np.ndarray:
        missing = pd.isna(block) if block.dtype == object else np.isnan(block)
        return np.where(missing, fill, block) if missing.any() else block

    return impute


def _scaler(step: StandardScaler) -> Step:
    mean = step.mean_ if step.with_mean else 0.0
    scale = step.scale_ if step.with_std else 1.0
    return lambda block: (block.astype(float) - mean) / scale


def _one_hot(step: OneHotEncoder) -> Step:
    if step.handle_unknown not in ("ignore", "infrequent_if_exist") or step.drop is not None:
        raise Unsupported("OneHotEncoder refusing unknown categories, or dropping one")
    if getattr(step, "sparse_output", True):
        raise Unsupported("OneHotEncoder with sparse output")
    lookups, unknown, width = _one_hot_columns(step)

    def encode(block: np.ndarray) -> np.ndarray:
        out = np.zeros((block.shape[0], width))
        for j, (lookup, otherwise) in enumerate(zip(lookups, unknown, strict=True)):
            for i, value in enumerate(block[:, j]):
                column = lookup.get(value, otherwise)
                if column is not None:
                    out[i, column] = 1.0
        return out

    return encode


def _one_hot_columns(step: OneHotEncoder) -> tuple[list[dict], list[int | None], int]:
    """Per feature, the output column of each category and that of an unknown one (None: no
    column), and the output's width: frequent categories in the encoder's order, then one
    column for the infrequent ones where there are any, which also takes unknown ones under
    handle_unknown="infrequent_if_exist"."""
    infrequent = getattr(step, "infrequent_categories_", None) or [None] * len(step.categories_)
    lookups, unknown, width = [], [], 0
    for categories, rare in zip(step.categories_, infrequent, strict=True):
        rare = set() if rare is None else {_missing_as_none(value) for value in rare}
        frequent = [v for v in map(_missing_as_none, categories) if v not in rare]
        lookups.append({value: width + k for k, value in enumerate(frequent)})
        width += len(frequent)
        grouped = None
        if rare:
            lookups[-1] |= dict.fromkeys(rare, width)
            grouped, width = width, width + 1
        unknown.append(grouped if step.handle_unknown == "infrequent_if_exist" else None)
    return lookups, unknown, width


def _missing_as_none(category):
    """A category as the service's records hold it: an encoder fitted on missing values with no
    imputer in front learns NaN as a category, which a record sends as None."""
    return None if isinstance(category, float) and np.isnan(category) else category


def _identity(transformer) -> bool:
    """Whether it is a do-nothing FunctionTransformer (a fitted ColumnTransformer's passthrough)."""
    return type(transformer) is FunctionTransformer and transformer.func is None


def _steps(transformer) -> list[Step]:
    """The fast version of one ColumnTransformer branch, step by step."""
    if transformer == "passthrough" or _identity(transformer):
        return []
    if isinstance(transformer, Pipeline):
        return [step for _, inner in transformer.steps for step in _steps(inner)]
    fast_versions = {SimpleImputer: _imputer, StandardScaler: _scaler, OneHotEncoder: _one_hot}
    if type(transformer) in fast_versions:
        return [fast_versions[type(transformer)](transformer)]
    raise Unsupported(f"{type(transformer).__name__} in the preprocessing")


def _branches(preprocess: ColumnTransformer, features: dict[str, str]) -> list:
    """(columns, numeric?, steps) for each branch whose output the estimator sees."""
    branches = []
    for _, transformer, columns in preprocess.transformers_:
        if transformer == "drop" or len(columns) == 0:
            continue
        if not all(isinstance(c, str) and c in features for c in columns):
            raise Unsupported("columns selected other than by feature name")
        kinds = {features[c] for c in columns}
        if len(kinds) > 1:
            raise Unsupported("a branch mixing numeric and categorical features")
        branches.append((list(columns), kinds == {"numeric"}, _steps(transformer)))
    return branches


def build(model, features: dict[str, str]) -> Callable[[Rows], np.ndarray]:
    """The model's feature matrix in numpy, or Unsupported."""
    if not isinstance(model, Pipeline) or len(model.steps) != 2:
        raise Unsupported("not a Pipeline of two steps, a ColumnTransformer and an estimator")
    preprocess = model.steps[0][1]
    if not isinstance(preprocess, ColumnTransformer) or preprocess.sparse_output_:
        raise Unsupported("preprocessing other than a dense ColumnTransformer")
    branches = _branches(preprocess, features)

    def matrix(rows: Rows) -> np.ndarray:
        blocks = []
        for columns, numeric, steps in branches:
            values = [[row[c] for c in columns] for row in rows]
            block = np.array(values, dtype=float) if numeric else np.array(values, dtype=object)
            for step in steps:
                block = step(block)
            blocks.append(np.asarray(block, dtype=float))
        return np.hstack(blocks)

    return matrix


class _Forest:
    """The trees of one class of a fitted HistGradientBoosting model, as flat node arrays.

    Leaves point to themselves, so walking every tree the maximum depth of the forest stops
    each one on its leaf; values are then added in the model's own order, from its baseline,
    which gives bit-identical raw predictions.
    """

    def __init__(self, trees: list, baseline: float) -> None:
        nodes = np.concatenate([tree.nodes for tree in trees])
        if nodes["is_categorical"].any():
            raise Unsupported("HistGradientBoosting with native categorical splits")
        sizes = [len(tree.nodes) for tree in trees]
        self.roots = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp)
        offset = np.repeat(self.roots, sizes)
        leaf, own = nodes["is_leaf"].astype(bool), np.arange(len(nodes))
        self.left = np.where(leaf, own, nodes["left"] + offset).astype(np.intp)
        self.right = np.where(leaf, own, nodes["right"] + offset).astype(np.intp)
        self.feature = np.where(leaf, 0, nodes["feature_idx"]).astype(np.intp)
        self.threshold = np.where(leaf, np.inf, nodes["num_threshold"])
        self.missing_left = leaf | nodes["missing_go_to_left"].astype(bool)
        self.value, self.depth = nodes["value"], int(nodes["depth"].max())
        self.baseline = baseline
        # For rows without NaN: node i as 2i, its children at 2i (left) and 2i + 1 (right),
        # so each level is three gathers, a comparison and an add.
        self._feature2, self._threshold2 = np.repeat(self.feature, 2), np.repeat(self.threshold, 2)
        self._child2 = np.column_stack([2 * self.left, 2 * self.right]).ravel()

    def raw(self, x: np.ndarray) -> np.ndarray:
        """The raw prediction of each row: baseline plus each tree's leaf value, in order."""
        leaves = self._with_missing(x) if np.isnan(x).any() else self._complete(x)
        terms = np.hstack([np.full((x.shape[0], 1), self.baseline), self.value[leaves]])
        return np.cumsum(terms, axis=1)[:, -1]

    def _complete(self, x: np.ndarray) -> np.ndarray:
        """Each row's leaf in each tree, for rows without missing values."""
        flat = x.ravel()
        start = (np.arange(x.shape[0], dtype=np.intp) * x.shape[1])[:, None]
        node2 = np.broadcast_to(2 * self.roots, (x.shape[0], len(self.roots)))
        for _ in range(self.depth):
            right = flat.take(start + self._feature2.take(node2)) > self._threshold2.take(node2)
            node2 = self._child2.take(node2 + right)
        return node2 // 2

    def _with_missing(self, x: np.ndarray) -> np.ndarray:
        """Each row's leaf in each tree; a missing value goes the way the split learned."""
        rows = np.arange(x.shape[0])[:, None]
        node = np.broadcast_to(self.roots, (x.shape[0], len(self.roots)))
        for _ in range(self.depth):
            value = x[rows, self.feature[node]]
            left = np.where(np.isnan(value), self.missing_left[node], value <= self.threshold[node])
            node = np.where(left, self.left[node], self.right[node])
        return node


def _tree_walk(estimator) -> Callable[[np.ndarray], np.ndarray] | None:
    """predict_proba / predict of a HistGradientBoosting model by numpy tree walks, or None."""
    if type(estimator) not in (HistGradientBoostingClassifier, HistGradientBoostingRegressor):
        return None
    try:
        baseline = np.asarray(estimator._baseline_prediction, dtype=float).reshape(-1)
        forests = [
            _Forest([trees[k] for trees in estimator._predictors], baseline[k])
            for k in range(len(baseline))
        ]
        loss = estimator._loss
    except (AttributeError, IndexError, ValueError, Unsupported) as why:
        log.info("no numpy tree walk for %s: %s", type(estimator).__name__, why)
        return None

    def raw(x: np.ndarray) -> np.ndarray:
        return np.column_stack([forest.raw(x) for forest in forests])

    if isinstance(estimator, HistGradientBoostingRegressor):
        return lambda x: loss.link.inverse(raw(x).ravel())
    return lambda x: loss.predict_proba(raw(x))


def probe_rows(meta: dict[str, Any]) -> Rows:
    """Rows that exercise every path: each feature missing, each category and an unseen one, odd
    numbers."""
    example = meta["example"]
    rows = [dict(example)]
    for name, kind in meta["features"].items():
        rows.append({**example, name: None})
        if kind == "numeric":
            rows += [{**example, name: value} for value in (0.0, -1.0, 0.5, 1e6, -1e6)]
        else:
            known = meta["categories"].get(name, [])
            rows += [{**example, name: value} for value in [*known, UNSEEN_PROBE]]
    return rows


@dataclass(frozen=True)
class FastPath:
    """The model's predict_proba (classification) or predict (regression) on records."""

    predict: Callable[[Rows], np.ndarray]
    # Batches up to this many rows take at most QUICK_SECONDS, measured at load (0: unknown).
    quick_rows: int


def compile_model(model, meta: dict[str, Any]) -> FastPath | None:
    """The checked fast path of a model, or None to predict through the model's pipeline."""
    method = "predict" if meta["task"] == "regression" else "predict_proba"
    try:
        matrix = build(model, meta["features"])
    except Unsupported as why:
        log.info("serving through the model's own pipeline: %s", why)
        return None
    estimator = getattr(model.steps[-1][1], method)
    walk = _tree_walk(model.steps[-1][1])

    def fast(rows: Rows) -> np.ndarray:
        x = matrix(rows)
        if walk is not None and len(rows) <= TREE_WALK_MAX_ROWS:
            return walk(x)
        with sklearn.config_context(skip_parameter_validation=True):
            return estimator(x)

    def pipeline(batch: Rows) -> np.ndarray:
        return getattr(model, method)(feature_frame(batch, meta["features"]))

    rows = probe_rows(meta)
    try:
        # In batches small enough for the tree walk, and in one batch too large for it, each
        # against the pipeline on the same batch: a linear model's sums may differ in the last
        # bit from one batch size to another, in the pipeline as well.
        step = TREE_WALK_MAX_ROWS
        batches = [rows[i : i + step] for i in range(0, len(rows), step)]
        batches.append(rows * (step // len(rows) + 1))
        same = all(np.array_equal(fast(batch), pipeline(batch)) for batch in batches)
    except Exception as err:  # an optimization that fails in any way just stays off
        log.warning("numpy fast path failed its check (%r): serving through the pipeline", err)
        return None
    if not same:
        log.warning("numpy fast path differs from the pipeline: serving through the pipeline")
        return None
    log.info(
        "serving with the numpy fast path%s, checked on %d probe rows",
        " and tree walk" if walk else "",
        len(rows),
    )
    return FastPath(fast, _quick_rows(fast, rows) if walk else 0)


def _quick_rows(fast: Callable[[Rows], np.ndarray], rows: Rows) -> int:
    """How many rows the tree walk predicts within QUICK_SECONDS on this machine (best of 3)."""
    batch = (rows * (TREE_WALK_MAX_ROWS // len(rows) + 1))[:TREE_WALK_MAX_ROWS]
    seconds = []
    for _ in range(3):
        started = time.perf_counter()
        fast(batch)
        seconds.append(time.perf_counter() - started)
    per_row = min(seconds) / len(batch)
    return max(1, min(TREE_WALK_MAX_ROWS, int(QUICK_SECONDS / per_row)))
