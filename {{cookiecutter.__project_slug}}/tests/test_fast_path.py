"""The numpy fast path: used only where it answers exactly like the model, off on request."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from {{ cookiecutter.__package_name }}.config import ServeSettings
from {{ cookiecutter.__package_name }}.data import feature_frame
from {{ cookiecutter.__package_name }}.errors import PipelineError
from {{ cookiecutter.__package_name }}.serving import bundle as bundles
from {{ cookiecutter.__package_name }}.serving import compiled
from {{ cookiecutter.__package_name }}.serving.compiled import TREE_WALK_MAX_ROWS, compile_model
from {{ cookiecutter.__package_name }}.serving.service import Service

BATCH_SIZES = (1, 5, TREE_WALK_MAX_ROWS, TREE_WALK_MAX_ROWS + 1, 300)


@pytest.fixture(scope="module")
def loaded(exported_model) -> bundles.Bundle:
    return bundles.load(exported_model.path)


def model_output(model, meta: dict, records: list[dict]) -> np.ndarray:
    """What the model itself answers for records, typed as in training."""
    frame = feature_frame(records, meta["features"])
    return model.predict(frame) if meta["task"] == "regression" else model.predict_proba(frame)


def assert_exactly_like_the_model(fast, model, meta: dict, records: list[dict]) -> None:
    """The fast path gives bit-identical answers in every batch size, missing values included."""
    assert any(v is None for r in records for v in r.values()), "records lack missing values"
    for size in BATCH_SIZES:
        for start in range(0, len(records), size):
            batch = records[start : start + size]
            expected = model_output(model, meta, batch)
            assert np.array_equal(fast.predict(batch), expected), f"batch of {size} differs"


def variant(loaded, frame, numeric_steps, categorical_steps, estimators) -> Pipeline:
    """A pipeline of other parts, fitted on the sample rows with a target made from them."""
    meta = loaded.meta
    numeric = [n for n, kind in meta["features"].items() if kind == "numeric"]
    categorical = [n for n, kind in meta["features"].items() if kind == "categorical"]
    preprocess = ColumnTransformer(
        [("numeric", numeric_steps, numeric), ("categorical", categorical_steps, categorical)]
    )
    signal = frame[numeric[0]].fillna(frame[numeric[0]].median())
    classification = meta["task"] == "classification"
    target = (signal > signal.median()).astype(int) if classification else signal * 2.0
    estimator = estimators[0] if classification else estimators[1]
    return Pipeline([("preprocess", preprocess), ("model", estimator)]).fit(frame, target)


def one_hot(**options) -> Pipeline:
    encoder = OneHotEncoder(**{"handle_unknown": "ignore", "sparse_output": False, **options})
    return Pipeline(
        [("impute", SimpleImputer(strategy="constant", fill_value="missing")), ("encode", encoder)]
    )


HGB = (HistGradientBoostingClassifier(max_iter=30), HistGradientBoostingRegressor(max_iter=30))
LINEAR = (LogisticRegression(max_iter=500), Ridge())


def shipped(loaded, exported_model, **one_hot_options) -> Pipeline:
    """build_model() as the template ships it, whatever yours builds now (fewer rounds)."""
    numeric = SimpleImputer(strategy="median")
    options = {"handle_unknown": "infrequent_if_exist", "min_frequency": 10, "max_categories": 100}
    categorical = one_hot(**options | one_hot_options)
    return variant(loaded, exported_model.frame, numeric, categorical, HGB)


def test_shipped_model_gets_the_fast_path_and_tree_walk(loaded, exported_model, caplog):
    model = shipped(loaded, exported_model)
    caplog.set_level("INFO")
    fast = compile_model(model, loaded.meta)
    assert fast is not None and 1 <= fast.quick_rows <= TREE_WALK_MAX_ROWS
    assert "serving with the numpy fast path and tree walk" in caplog.text
    assert_exactly_like_the_model(fast, model, loaded.meta, exported_model.records)


def test_your_exported_model_on_the_fast_path_answers_exactly_as_it_predicts(
    loaded, exported_model
):
    fast = compile_model(loaded.model, loaded.meta)
    if fast is None:
        pytest.skip("build_model()'s model has no fast path: it is served through its pipeline")
    assert_exactly_like_the_model(fast, loaded.model, loaded.meta, exported_model.records)


@pytest.mark.parametrize(
    ("unknown", "taken"), [("infrequent_if_exist", True), ("ignore", True), ("error", False)]
)
def test_service_takes_unseen_categories_exactly_when_the_model_does(
    loaded, exported_model, unknown, taken
):
    model = shipped(loaded, exported_model, handle_unknown=unknown)
    service = Service(ServeSettings.from_env({}))
    assert service._takes_unseen_categories(bundles.Bundle(model, loaded.meta)) is taken


@pytest.mark.parametrize("unknown", ["infrequent_if_exist", "ignore"])
@pytest.mark.parametrize(
    "grouping", [{"min_frequency": 0.3}, {"max_categories": 2}], ids=["min_frequency", "max"]
)
def test_rare_categories_grouped_in_one_column_get_the_fast_path(
    loaded, exported_model, unknown, grouping
):
    """Categories the encoder groups (and, under "infrequent_if_exist", unseen ones) share its
    infrequent column; under "ignore" an unseen one is all zeros."""
    model = shipped(loaded, exported_model, handle_unknown=unknown, **grouping)
    encoder = model[0].named_transformers_["categorical"][-1]
    assert any(rare is not None for rare in encoder.infrequent_categories_), "nothing grouped"
    fast = compile_model(model, loaded.meta)
    assert fast is not None
    assert_exactly_like_the_model(fast, model, loaded.meta, exported_model.records)
    unseen = [{**loaded.meta["example"], name: "never-seen"} for name in loaded.meta["categories"]]
    assert np.array_equal(fast.predict(unseen), model_output(model, loaded.meta, unseen))


def test_scaled_linear_model_gets_the_fast_path_without_tree_walk(loaded, exported_model):
    model = variant(
        loaded,
        exported_model.frame,
        Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())]),
        one_hot(),
        LINEAR,
    )
    fast = compile_model(model, loaded.meta)
    assert fast is not None and fast.quick_rows == 0
    assert_exactly_like_the_model(fast, model, loaded.meta, exported_model.records)


def test_one_hot_with_no_imputer_encodes_missing_as_its_own_category(loaded, exported_model):
    frame = exported_model.frame
    categorical = [n for n, kind in loaded.meta["features"].items() if kind == "categorical"]
    assert frame[categorical].isna().any().any(), "the sample rows lack missing categories"
    encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
    model = variant(loaded, frame, SimpleImputer(), encoder, LINEAR)
    assert any(np.nan in list(c) for c in model[0].named_transformers_["categorical"].categories_)
    fast = compile_model(model, loaded.meta)
    assert fast is not None
    assert_exactly_like_the_model(fast, model, loaded.meta, exported_model.records)


def test_trees_on_raw_numbers_walk_missing_values_like_the_model(loaded, exported_model):
    model = variant(loaded, exported_model.frame, "passthrough", one_hot(), HGB)
    fast = compile_model(model, loaded.meta)
    assert fast is not None and 1 <= fast.quick_rows <= TREE_WALK_MAX_ROWS
    assert_exactly_like_the_model(fast, model, loaded.meta, exported_model.records)


@pytest.mark.parametrize(
    ("numeric_steps", "categorical_steps", "reason"),
    [
        (FunctionTransformer(np.abs), one_hot(), "FunctionTransformer in the preprocessing"),
        (SimpleImputer(), one_hot(handle_unknown="error"), "OneHotEncoder refusing unknown"),
        (SimpleImputer(), one_hot(drop="first"), "OneHotEncoder refusing unknown categories, or"),
        (SimpleImputer(add_indicator=True), one_hot(), "SimpleImputer with an indicator"),
    ],
    ids=["custom step", "one-hot refusing unknowns", "one-hot dropping", "missing indicator"],
)
def test_other_parts_are_served_through_the_pipeline(
    loaded, exported_model, numeric_steps, categorical_steps, reason, caplog
):
    caplog.set_level("INFO")
    model = variant(loaded, exported_model.frame, numeric_steps, categorical_steps, HGB)
    assert compile_model(model, loaded.meta) is None
    assert f"serving through the model's own pipeline: {reason}" in caplog.text


def test_fast_path_setting_refuses_other_values():
    with pytest.raises(PipelineError, match=r"SERVE_FAST_PATH='maybe' must be one of 1/0"):
        ServeSettings.from_env({"SERVE_FAST_PATH": "maybe"})
    assert ServeSettings.from_env({"SERVE_FAST_PATH": "off"}).fast_path is False
    assert ServeSettings.from_env({}).fast_path is True


def test_fast_path_that_fails_its_check_stays_off(loaded, exported_model, monkeypatch, caplog):
    def broken(_estimator):
        def walk(_x):
            raise AttributeError("a tree without nodes")

        return walk

    monkeypatch.setattr(compiled, "_tree_walk", broken)
    model = shipped(loaded, exported_model)  # which has a fast path
    assert compile_model(model, loaded.meta) is None
    assert "numpy fast path failed its check" in caplog.text
    assert "a tree without nodes" in caplog.text
