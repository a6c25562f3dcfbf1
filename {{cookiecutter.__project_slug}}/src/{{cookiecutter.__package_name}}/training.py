"""Train a candidate from params.yaml and register it with its lineage."""

from __future__ import annotations

import difflib
import inspect
import json
import logging
import math
import re
import time
from typing import Any

import numpy as np
import pandas as pd
from mlflow.models import infer_signature

# Private module, but the documented error every estimator's parameter check raises since 1.2.
from sklearn.utils._param_validation import InvalidParameterError

from . import data as datalib
from . import lineage, registry
from .config import Backends
from .errors import PipelineError
from .metrics import figures, positive_class, score_all
from .model import REQUIREMENTS, build_model
from .profile import prediction_profile, target_profile, training_profile

log = logging.getLogger(__name__)


def predict(model, features: pd.DataFrame, task: str):
    """Labels or values, and class probabilities for classification."""
    proba = model.predict_proba(features) if task == "classification" else None
    return np.asarray(model.predict(features)), proba


def classes_of(model, task: str) -> list | None:
    """The class labels a fitted classifier knows, as plain Python values."""
    return (
        [c.item() if hasattr(c, "item") else c for c in model.classes_]
        if task == "classification"
        else None
    )


def _unaccepted(err: TypeError, hyperparameters: dict[str, Any], built) -> str:
    """What to write instead of a name build_model()'s estimator refused: the name it takes
    that is closest, and all it takes (read from the model built without hyperparameters)."""
    said = (
        f"params.yaml train.hyperparameters {hyperparameters} are not accepted by build_model() "
        f"in {build_model.__module__}: {err}"
    )
    if twice := re.search(r"multiple values for keyword argument '([^']+)'", str(err)):
        seed = " (from train.seed)" if twice[1] == "random_state" else ""
        return (
            f"params.yaml train.hyperparameters.{twice[1]} is set by build_model() itself{seed}: "
            "leave it out of hyperparameters, or take it out of build_model()"
        )
    refused = re.search(r"unexpected keyword argument '([^']+)'", str(err))
    if not refused:
        return said
    try:
        plain = built({})
        estimator = plain[-1] if hasattr(plain, "steps") else plain
        taken = sorted(estimator.get_params(deep=False))
    except Exception:  # build_model() needs some of them: the error as it came
        return said
    close = difflib.get_close_matches(refused[1], taken, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return (
        f"params.yaml train.hyperparameters.{refused[1]}{hint} is not a parameter of "
        f"{type(estimator).__name__}, which takes: {', '.join(taken)}"
    )


def _refuse_undeclared(model, hyperparameters: dict[str, Any]) -> None:
    """Refuse a hyperparameter an estimator of the model took without declaring it: one that
    passes unknown keywords on (LightGBM's, XGBoost's) would ignore a misspelt name."""
    estimators = [model, *(v for v in model.get_params().values() if hasattr(v, "get_params"))]
    for estimator in estimators:
        declared = {
            p.name
            for p in inspect.signature(type(estimator).__init__).parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"
        }
        taken = set(estimator.get_params(deep=False))
        undeclared = sorted(name for name in hyperparameters if name in taken - declared)
        if undeclared:
            named = f"{', '.join(undeclared)} {'is' if len(undeclared) == 1 else 'are'}"
            raise PipelineError(
                f"params.yaml train.hyperparameters: {named} not among the parameters "
                f"{type(estimator).__name__} declares (it passes other keywords on unchecked, "
                f"so a misspelt name would be ignored): {', '.join(sorted(declared))}. Set any "
                "other keyword it takes in build_model() itself"
            )


def _refuse_without_probabilities(model, task: str) -> None:
    """Refuse, before the fit, a classifier with no predict_proba (LinearSVC, RidgeClassifier):
    evaluation, the gate's metrics, serving and monitoring all read its class probabilities."""
    if task == "classification" and not hasattr(model, "predict_proba"):
        raise PipelineError(
            f"build_model() returned a {type(model).__name__} that has no predict_proba: a "
            "classifier here must give class probabilities (evaluation, serving and monitoring "
            "read them). Wrap the estimator in sklearn.calibration.CalibratedClassifierCV, or "
            "choose one that has predict_proba (for SVC: probability=True)"
        )


def fit(frame: pd.DataFrame, schema: datalib.Schema, params: dict[str, Any]):
    """Fit the model on the training rows; return it, the training and validation features,
    and the validation metrics."""
    split_p, train_p = params["split"], params["train"]
    rest, _holdout = datalib.split(frame, schema, split_p["holdout_fraction"], split_p["seed"])
    random_split = datalib.Schema(schema.features, schema.target, schema.task)
    train_rows, valid_rows = datalib.split(
        rest, random_split, split_p["validation_fraction"], split_p["seed"], "validation"
    )
    x_train, y_train = datalib.features_and_target(train_rows, schema)
    hyperparameters = dict(train_p.get("hyperparameters") or {})

    def built(chosen: dict[str, Any]):
        kinds = schema.of_kind("numeric"), schema.of_kind("categorical")
        return build_model(schema.task, *kinds, chosen, int(train_p["seed"]))

    try:
        model = built(hyperparameters)
    except TypeError as err:  # an unknown name: the estimator's __init__ refuses the keyword
        raise PipelineError(_unaccepted(err, hyperparameters, built)) from err
    _refuse_undeclared(model, hyperparameters)
    _refuse_without_probabilities(model, schema.task)
    log.info(
        "fitting %s on %d rows of %d features (nothing more is logged until it ends)",
        type(model).__name__,
        len(x_train),
        x_train.shape[1],
    )
    started = time.monotonic()
    try:
        model.fit(x_train, y_train)
    except InvalidParameterError as err:  # a known name with a bad value, checked at fit
        raise PipelineError(f"params.yaml train.hyperparameters: {err}") from err
    except MemoryError as err:
        raise PipelineError(_out_of_memory(err, x_train, schema)) from err
    except Exception as err:  # another library's own check (LightGBM's) naming a value we set
        if any(name in str(err) for name in hyperparameters):
            raise PipelineError(f"params.yaml train.hyperparameters: {err}") from err
        raise
    log.info("fitted in %.0f s", time.monotonic() - started)
    x_valid, y_valid = datalib.features_and_target(valid_rows, schema)
    _refuse_batch_dependence(model, x_valid, schema.task)
    _warn_of_missing_values_it_fails_on(model, x_valid, schema)
    classes = classes_of(model, schema.task)
    metrics = score_all(
        schema.task,
        y_valid,
        *predict(model, x_valid, schema.task),
        classes,
        positive=positive_class(classes, schema.target_classes),
    )
    return model, x_train, x_valid, metrics


ALONE = 16  # validation rows scored one by one against all of them together


def _refuse_batch_dependence(model, x_valid: pd.DataFrame, task: str) -> None:
    """Refuse a model whose answer for a record depends on the records scored with it (a
    transformer computing statistics in transform instead of fit), or that fails on one record:
    the service scores requests one by one or in micro-batches with other clients' requests,
    while evaluation and the gate score the holdout all together."""
    rows = x_valid.head(ALONE)
    together = _scores(model, rows, task)
    for position in range(len(rows)):
        try:
            alone = _scores(model, rows.iloc[[position]], task)
        except Exception as err:
            said = next(iter(str(err).strip().splitlines()), "")
            raise PipelineError(
                f"the model fails on one record, as the service sends it ({type(err).__name__}: "
                f"{said}): its transformers must give the same columns for any number of rows "
                "(a fixed category list, not pandas.get_dummies)"
            ) from err
        if not np.allclose(alone, together[position], rtol=1e-6, atol=1e-9, equal_nan=True):
            raise PipelineError(
                f"the model scores a record differently alone ({_shown(alone)}) than among "
                f"{len(rows)} (validation row {position}: {_shown(together[position])}): the "
                "service scores each request with whichever others share its micro-batch; "
                "a transformer must learn its statistics in fit, not compute them in transform"
            )


def _shown(scores: np.ndarray) -> str:
    """A record's scores for a message: all of them, up to six classes' probabilities."""
    values = scores.ravel()
    return np.array2string(values[:6], precision=3) + (" ..." if len(values) > 6 else "")


def _scores(model, rows: pd.DataFrame, task: str) -> np.ndarray:
    """Class probabilities, or predicted values, one row per record, as floats."""
    prediction, proba = predict(model, rows, task)
    scores = proba if proba is not None else prediction.astype(float)
    return np.asarray(scores, dtype=float).reshape(len(rows), -1)


def _warn_of_missing_values_it_fails_on(
    model, x_valid: pd.DataFrame, schema: datalib.Schema
) -> None:
    """Say which features the model cannot score when missing: the service takes null for
    any of them, and such a request would get 500."""
    record = x_valid.head(1).to_dict("records")[0]
    rows = [{**record, name: None} for name in schema.features]  # each one missing in turn
    try:  # one call where the model copes with them all, as most do
        predict(model, datalib.feature_frame(rows, schema.features), schema.task)
        return
    except Exception:
        pass
    failing = []
    for name, row in zip(schema.features, rows, strict=True):
        try:
            predict(model, datalib.feature_frame([row], schema.features), schema.task)
        except Exception as err:
            failing.append(f"{name} ({type(err).__name__})")
    if failing:
        log.warning(
            "the model fails on a record missing %s: the service takes null for every feature "
            "and answers such a request 500; impute them in model.py (or the source must "
            "never send null)",
            ", ".join(failing),
        )


def _out_of_memory(err: MemoryError, x_train: pd.DataFrame, schema: datalib.Schema) -> str:
    """Why the fit ran out of memory, naming the categorical features with most categories:
    the default model one-hot encodes categories into dense columns."""
    widest = sorted(
        ((int(x_train[name].nunique()), name) for name in schema.of_kind("categorical")),
        reverse=True,
    )[:3]
    named = ", ".join(f"{name} ({n} categories)" for n, name in widest)
    return (
        f"training ran out of memory on {len(x_train)} rows ({err}). The default model in "
        "model.py one-hot encodes categories into dense columns, up to MAX_CATEGORY_COLUMNS "
        "per feature"
        + (f"; the categorical features with most categories: {named}" if widest else "")
        + ". Raise MIN_CATEGORY_ROWS, lower MAX_CATEGORY_COLUMNS or use an encoder that does not "
        "grow with the categories (TargetEncoder) in model.py, leave such a feature out of "
        "params.yaml data.features, or train on a machine with more memory"
    )


def run_record(
    model,
    x_train: pd.DataFrame,
    x_valid: pd.DataFrame,
    metrics: dict,
    frame: pd.DataFrame,
    schema: datalib.Schema,
    params: dict,
    dvc_md5: str,
) -> dict[str, Any]:
    """Everything one MLflow run logs: params, metrics, lineage tags, profile, signature.

    The profile's features are the training rows'; its prediction distribution is the model's
    on the validation rows, which it never saw: on its own training rows a model is more sure
    of itself than on new data (a random forest's probabilities there sit near 0 and 1), and
    every day's predictions would look drifted.
    """
    prediction, proba = predict(model, x_valid, schema.task)
    bins = int(params["train"].get("profile_bins", 10))
    classes = classes_of(model, schema.task)
    positive = positive_class(classes, schema.target_classes)
    outputs = prediction_profile(schema.task, prediction, proba, classes, bins, positive)
    if schema.task == "regression" and metrics.get("mean_error") is not None:
        # The validation errors (prediction - actual), which monitoring compares the live ones
        # with: their mean is the model's bias; their spread, from the RMSE and that mean.
        bias = metrics["mean_error"]
        spread = math.sqrt(max(metrics["rmse"] ** 2 - bias**2, 0.0))
        outputs["error"] = {"mean": bias, "std": spread, "count": len(x_valid)}
    # The training rows' target, by their labels in the frame (datalib.validate numbers them
    # 0..n-1 and the splits keep them).
    target = target_profile(schema.task, frame[schema.target].loc[x_train.index], bins)
    profile = training_profile(x_train, schema.features, bins, outputs, target)
    # The service accepts every category of the dataset, not only those the training split
    # drew: a rare code seen in the holdout is no reason to refuse a request.
    for name in schema.of_kind("categorical"):
        profile["features"][name]["categories"] = sorted(frame[name].dropna().astype(str).unique())
    # The service refuses what data.bounds refused in training (a negative area).
    for name, limits in schema.bounds.items():
        (profile["features"].get(name) or profile["target"])["bounds"] = list(limits)
    tags = {
        "data.content_hash": datalib.content_hash(frame),
        "data.dvc_md5": dvc_md5,
        "data.rows": str(len(frame)),
        "data.training_rows": str(len(x_train)),
        "task": schema.task,
        "features": ",".join(schema.features),
        "classes": json.dumps(classes_of(model, schema.task)),
        "trained_at": registry.now(),
        **lineage.git_state(),
        **lineage.library_versions(REQUIREMENTS),
    }
    flat_params = {f"hp.{k}": v for k, v in (params["train"].get("hyperparameters") or {}).items()}
    flat_params.update(
        seed=params["train"]["seed"], **{f"split.{k}": v for k, v in params["split"].items()}
    )
    example = typical_record(x_train)
    return {
        "params": flat_params,
        "metrics": {f"validation.{k}": v for k, v in metrics.items()},
        "tags": tags,
        "profile": profile,
        "input_example": example,
        "signature": infer_signature(example, model.predict(example)),
    }


def typical_record(x: pd.DataFrame) -> pd.DataFrame:
    """One made-up record, the version's input example (the example /docs shows, that anyone
    reaching the service or pulling the image can read): each feature's middle value (an
    observed one) or most frequent value, so no training row, a real customer's, is published,
    and no missing value, which MLflow would save as NaN."""
    example = x.iloc[:1].copy().reset_index(drop=True)
    for name, column in x.items():
        values = column.dropna()
        if values.empty:
            continue
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            example.at[0, name] = values.sort_values().iloc[len(values) // 2]
        else:
            example.at[0, name] = values.value_counts().index[0]
    return example


def train(data_path, params: dict[str, Any], backends: Backends) -> dict[str, Any]:
    """Train, log one run and register a version; return what reports/train.json records.

    A version already trained on the same rows from the same committed code, params.yaml and
    packages (a teammate's, or the one a fresh checkout's pipeline would repeat) is returned
    instead, and nothing is trained or registered."""
    schema = datalib.Schema.from_params(params["data"], params["model"]["task"])
    frame = datalib.validate(pd.read_parquet(data_path), schema)
    client = registry.connect(backends, create=True)
    name = params["model"]["name"]
    same = trained_before(client, name, datalib.content_hash(frame))
    if same is not None:
        log.info(
            "%s version %s was trained on the same data from the same committed code, "
            "params.yaml and packages (commit %s): using it, nothing trained or registered",
            name,
            same.version,
            same.tags.get("git.commit"),
        )
        metrics = client.get_run(same.run_id).data.metrics
        validation = {k.removeprefix("validation."): v for k, v in metrics.items()}
        return _report(name, same, same.tags["data.content_hash"], validation, backends)
    # Before the fit: an artifact root the models could not reach is refused in seconds.
    experiment = registry.experiment_id(client, name, backends.artifact_root)
    model, x_train, x_valid, metrics = fit(frame, schema, params)
    md5 = lineage.file_md5(data_path)
    record = run_record(model, x_train, x_valid, metrics, frame, schema, params, md5)
    created = registry.log_and_register(client, experiment, name, model, record)
    log.info("registered %s version %s (validation: %s)", name, created.version, figures(metrics))
    commit = record["tags"]["git.commit"]
    if record["tags"]["git.dirty"] == "true" and commit != "none":
        changed = lineage.uncommitted()
        log.warning(
            "version %s was trained from uncommitted changes%s: it records git.dirty=true, and "
            "commit %s does not hold its code; commit them and run `make pipeline` again for a "
            "version its commit reproduces",
            created.version,
            f" to {', '.join(changed[:5])}{', ...' * (len(changed) > 5)}" if changed else "",
            commit[:12],
        )
    if commit != "none" and lineage.unpushed(commit):
        log.warning(
            "commit %s, which version %s names, is on no remote branch yet: push it, or the "
            "version's lineage points at a commit only this machine has",
            commit,
            created.version,
        )
    return _report(name, created, record["tags"]["data.content_hash"], metrics, backends)


def trained_before(client, name: str, data_hash: str):
    """The first version of the same training as here (lineage.same_training) on rows of
    `data_hash`, with the same library versions too, or None."""
    libraries = lineage.library_versions(REQUIREMENTS)
    here = {"data.content_hash": data_hash, **lineage.git_state(), **libraries}
    found = [
        version
        for version in client.search_model_versions(f"name='{name}'")
        if lineage.same_training(version.tags, here)
        and all(version.tags.get(tag) == value for tag, value in libraries.items())
    ]
    return min(found, key=lambda version: int(version.version), default=None)


def _report(
    name: str, version, data_hash: str, metrics: dict, backends: Backends
) -> dict[str, Any]:
    """What reports/train.json records of the version trained (or found), and in which
    registry (Backends.registry_id)."""
    return {
        "model_name": name,
        "version": str(version.version),
        "run_id": version.run_id,
        "data_hash": data_hash,
        "validation_metrics": metrics,
        "registry": backends.registry_id(),
    }
