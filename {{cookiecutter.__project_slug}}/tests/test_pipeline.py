"""train -> evaluate -> promote -> rollback against a real MLflow registry in a temp folder."""

from __future__ import annotations

import copy
import json
import logging
import pickle
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlparse

import mlflow
import numpy as np
import pandas as pd
import pytest
import skops.io
import sqlalchemy
import yaml
from botocore.exceptions import NoCredentialsError, ReadTimeoutError
from conftest import PAYLOAD_TYPE, Payload, load_script
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from sklearn.base import BaseEstimator, TransformerMixin

from {{ cookiecutter.__package_name }} import (
    cli,
    evaluation,
    lineage,
    metrics,
    plots,
    promotion,
    registry,
    training,
)
from {{ cookiecutter.__package_name }} import data as datalib
from {{ cookiecutter.__package_name }}.config import Backends
from {{ cookiecutter.__package_name }}.errors import EXIT_ERROR, RENAMED_CLASS, PipelineError
from {{ cookiecutter.__package_name }}.model import REQUIREMENTS, build_model
from {{ cookiecutter.__package_name }}.modelfile import Unloadable
from {{ cookiecutter.__package_name }}.promotion import Gate
from {{ cookiecutter.__package_name }}.serving import bundle


def write_data(params: dict, path: Path, shuffle_target: bool = False) -> Path:
    """Write the sample dataset; `shuffle_target` scrambles the training rows' target only.

    The holdout (the newest rows) keeps its true target, so a model trained on the
    scrambled rows is measurably worse than the champion on the same holdout.
    """
    schema = datalib.Schema.from_params(params["data"], params["model"]["task"])
    frame = datalib.validate(datalib.load_source(params["data"], schema.task, None), schema)
    if shuffle_target:
        rest, _holdout = datalib.split(frame, schema, params["split"]["holdout_fraction"], 0)
        scrambled = rest[schema.target].sample(frac=1, random_state=0).to_numpy()
        frame.loc[rest.index, schema.target] = scrambled
    frame.to_parquet(path, index=False)
    return path


def cycle(params: dict, backends: Backends, data: Path, out: Path) -> dict:
    """Train, evaluate and promote once; return the promotion report."""
    trained = training.train(data, params, backends)
    report = evaluation.evaluate(data, trained, params, backends, out)
    gate = Gate.from_params(params["promote"], params["model"]["task"])
    return promotion.promote(report, gate, backends, reevaluate=lambda: report)


@pytest.fixture
def good_data(params, workdir) -> Path:
    """The sample dataset on disk."""
    return write_data(params, workdir / "good.parquet")


def test_the_input_example_is_made_up_from_middle_and_frequent_values(params, good_data):
    """The example /docs shows, logged with every version, is no training row (a real
    customer's) and has no missing value (MLflow would write NaN, which is no JSON)."""
    schema = datalib.Schema.from_params(params["data"], params["model"]["task"])
    x = pd.read_parquet(good_data)[list(schema.features)]
    example = training.typical_record(x)
    assert list(example.columns) == list(x.columns) and (example.dtypes == x.dtypes).all()
    assert not example.isna().any(axis=None)
    row = example.iloc[0]
    assert not (x == row).all(axis=1).any(), "the example is a training row"
    for name in schema.features:
        values = x[name].dropna()
        if schema.features[name] == "numeric":
            assert (values < row[name]).sum() <= len(values) // 2 <= (values <= row[name]).sum()
        else:
            assert values.value_counts().iloc[0] == (values == row[name]).sum()


def test_training_that_runs_out_of_memory_names_the_widest_categorical_features(
    params, good_data, monkeypatch, caplog
):
    """The default model's dense one-hot columns of a feature of thousands of categories
    (postal codes) ask for tens of GiB: say so, not numpy's traceback."""
    schema = datalib.Schema.from_params(params["data"], params["model"]["task"])
    categorical = schema.of_kind("categorical")
    if not categorical:
        pytest.skip("the sample schema has no categorical feature")

    def too_large(self, *args, **kwargs):
        raise MemoryError("Unable to allocate 48.5 GiB for an array with shape (1280236, 5088)")

    model = build_model(schema.task, schema.of_kind("numeric"), categorical, {}, 0)
    monkeypatch.setattr(type(model), "fit", too_large)
    caplog.set_level(logging.INFO)
    with pytest.raises(PipelineError) as failed:
        training.fit(pd.read_parquet(good_data), schema, params)
    said = str(failed.value)
    assert said.startswith("training ran out of memory on ") and "48.5 GiB" in said
    assert "categories)" in said and "lower MAX_CATEGORY_COLUMNS" in said
    assert all(name in said for name in categorical[:3])
    assert "fitting " in caplog.text, "a long fit says it has started"


def test_train_registers_version_with_full_lineage(params, backends, good_data):
    trained = training.train(good_data, params, backends)
    version = MlflowClient().get_model_version("test-model", trained["version"])
    libraries = ["lib.scikit-learn", *(f"lib.{name}" for name in REQUIREMENTS)]  # the model's too
    for tag in (*registry.REQUIRED_LINEAGE, "git.dirty", *libraries, "data.rows"):
        assert version.tags.get(tag), f"version lacks lineage tag {tag}"
    assert version.tags["data.content_hash"] == trained["data_hash"]
    listed = rf"has no version 999 \(it has [\d, ]*{trained['version']}"  # for a mistyped VERSION=
    with pytest.raises(PipelineError, match=listed):
        registry.version(MlflowClient(), "test-model", 999)
    assert any(k.startswith("metrics.validation.") for k in version.tags)
    profile = registry.load_profile(MlflowClient(), trained["run_id"])
    assert set(profile["features"]) == set(params["data"]["features"])
    assert profile["features"]["monthly_charges"]["bin_edges"], "numeric profile has quantile bins"
    assert profile["features"]["contract"]["frequencies"], "categorical profile has frequencies"


def test_categories_only_the_holdout_holds_are_known_to_the_service(params, backends, workdir):
    """The profile's frequencies come from the training rows; the categories the service accepts
    from the whole dataset."""
    schema = datalib.Schema.from_params(params["data"], params["model"]["task"])
    frame = pd.read_parquet(write_data(params, workdir / "data.parquet"))
    _rest, holdout = datalib.split(frame, schema, params["split"]["holdout_fraction"], 0)
    frame.loc[holdout.index[0], "region"] = "islands"
    frame.to_parquet(workdir / "rare.parquet", index=False)
    trained = training.train(workdir / "rare.parquet", params, backends)
    region = registry.load_profile(MlflowClient(), trained["run_id"])["features"]["region"]
    assert "islands" not in region["frequencies"]
    assert region["categories"] == sorted(frame["region"].dropna().unique())


def test_git_dirty_ignores_the_data_versions_the_pipeline_rewrites(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    for name in ("dvc.lock", "data/dataset.parquet.dvc", "params.yaml"):
        (tmp_path / name).write_text("first\n")
    identity = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
    for command in (["init", "-q"], ["add", "-A"], [*identity, "commit", "-qm", "start"]):
        subprocess.run(["git", *command], check=True)
    for name in ("dvc.lock", "data/dataset.parquet.dvc"):
        (tmp_path / name).write_text("second\n")  # `make data` ran before training
    (tmp_path / "data" / ".gitignore").write_text("/dataset.parquet\n")  # DVC wrote and staged it
    subprocess.run(["git", "add", "data/.gitignore"], check=True)
    assert lineage.git_state()["git.dirty"] == "false"
    (tmp_path / "params.yaml").write_text("changed\n")
    assert lineage.git_state()["git.dirty"] == "true"
    assert lineage.uncommitted() == ["params.yaml"]  # what the training's warning names


def test_git_training_files_change_with_the_training_code_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "src").mkdir()
    for name in ("dvc.lock", "README.md", "params.yaml", "src/model.py"):
        (tmp_path / name).write_text("first\n")
    identity = ["-c", "user.name=t", "-c", "user.email=t@example.com"]

    def commit(*changed: str) -> dict[str, str]:
        for name in changed:
            (tmp_path / name).write_text(f"{name} changed\n")
        subprocess.run(["git", "add", "-A"], check=True)
        subprocess.run(["git", *identity, "commit", "-qm", "change"], check=True)
        return lineage.git_state()

    assert lineage.git_state()["git.training_files"] == "none", "before any commit"
    subprocess.run(["git", "init", "-q"], check=True)
    first = commit()
    later = commit("dvc.lock", "README.md")
    assert later["git.commit"] != first["git.commit"]
    assert later["git.training_files"] == first["git.training_files"] != "none"
    for name in ("params.yaml", "src/model.py"):
        assert commit(name)["git.training_files"] != later["git.training_files"], name
    # A commit no remote branch holds yet is one only this machine has.
    head = lineage.git_state()["git.commit"]
    assert not lineage.unpushed(head), "no remote: nothing to push to"
    subprocess.run(["git", "init", "-q", "--bare", str(tmp_path / "origin.git")], check=True)
    subprocess.run(["git", "remote", "add", "origin", str(tmp_path / "origin.git")], check=True)
    assert lineage.unpushed(head)
    subprocess.run(["git", "push", "-q", "origin", "HEAD:refs/heads/main"], check=True)
    assert not lineage.unpushed(head)


def test_promote_refuses_data_other_than_dvc_lock_names(tmp_path, monkeypatch, caplog):
    """As after a git pull that brought a teammate's data version and no `make pipeline`."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    data = tmp_path / "data/dataset.parquet"
    data.write_bytes(b"the rows of the last run here")
    outs = [{"path": "data/dataset.parquet", "hash": "md5", "md5": lineage.file_md5(data)}]
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump({"stages": {"data": {"outs": outs}}}))
    assert lineage.locked_md5(Path("data/dataset.parquet")) == lineage.file_md5(data)
    load_script("promote").refuse_data_not_locked(Path("data/dataset.parquet"))
    outs[0]["md5"] = "0" * 32  # the pulled dvc.lock names other rows
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump({"stages": {"data": {"outs": outs}}}))
    assert load_script("promote").main([]) == EXIT_ERROR
    said = caplog.records[-1].getMessage()
    assert "is not the data dvc.lock names (md5 00000000)" in said and "make pipeline" in said


def test_promote_refuses_an_evaluation_of_other_data(tmp_path, monkeypatch, caplog):
    """As after `make data` brought new rows and `make train` was interrupted: evaluation.json
    still holds the previous candidate's scores on the previous rows."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "reports").mkdir()
    data = tmp_path / "data/dataset.parquet"
    data.write_bytes(b"the previous rows")
    evaluation = {"candidate": {"version": "2"}, "holdout": {"data_md5": lineage.file_md5(data)}}
    (tmp_path / "reports/evaluation.json").write_text(json.dumps(evaluation))
    promote = load_script("promote")
    promote.refuse_evaluation_of_other_data(evaluation, Path("data/dataset.parquet"), Path("e"))
    data.write_bytes(b"the new rows")
    assert promote.main([]) == EXIT_ERROR
    said = caplog.records[-1].getMessage()
    assert "scored candidate v2 on other data (md5 " in said and "make pipeline" in said


def test_a_train_report_of_another_registry_is_forgotten_so_dvc_trains_again(
    params, backends, good_data, workdir, caplog, monkeypatch
):
    """As after MLFLOW_TRACKING_URI moved from the local file to the team's database: DVC keeps
    reports/train.json (the stage's inputs are unchanged), which names a version the new
    registry lacks; `make pipeline` removes it first, so the stage runs."""
    forget = load_script("train").main
    report = workdir / "reports" / "train.json"
    report.parent.mkdir()
    trained = training.train(good_data, params, backends)
    report.write_text(json.dumps(trained))
    assert trained["registry"] == backends.registry_id()
    assert forget(["--forget-unregistered", "--report", str(report)]) == 0
    assert report.is_file(), "written against this registry: kept"
    report.write_text(json.dumps({**trained, "registry": "another spelling of its URI"}))
    assert forget(["--forget-unregistered", "--report", str(report)]) == 0
    assert report.is_file(), "the registry holds it: kept"
    report.write_text(json.dumps({**trained, "registry": "another", "run_id": "another run"}))
    assert forget(["--forget-unregistered", "--report", str(report)]) == 0
    assert not report.exists(), "another registry's version of the same number: forgotten"
    report.write_text(json.dumps(trained))
    elsewhere = workdir / "elsewhere"
    elsewhere.mkdir()
    unmade = elsewhere / "mlflow.db"  # a registry of its own, not made yet
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{unmade}")
    assert forget(["--forget-unregistered", "--report", str(report)]) == 0
    assert not report.exists()
    said = caplog.records[-1].getMessage()
    assert said.startswith(f"{report} names test-model v{trained['version']}, which the ")
    assert said.endswith("does not hold: training again into it")
    assert forget(["--forget-unregistered", "--report", str(report)]) == 0, "none: nothing to do"


def test_evaluate_and_promote_refuse_reports_of_another_registrys_version(
    params, backends, good_data, workdir
):
    """A shell without the team's MLFLOW_TRACKING_URI reads the local registry, whose v1 is
    another model: neither is scored nor judged in its place, and the gate tags nothing."""
    trained = training.train(good_data, params, backends)
    elsewhere = {**trained, "run_id": "0" * 32}
    with pytest.raises(PipelineError, match=f"version {trained['version']} of this registry is"):
        evaluation.evaluate(good_data, elsewhere, params, backends, workdir / "r")
    report = evaluation.evaluate(good_data, trained, params, backends, workdir / "r")
    assert report["candidate"]["run_id"] == trained["run_id"]
    gate = Gate.from_params(params["promote"], params["model"]["task"])
    misplaced = {**report, "candidate": {**report["candidate"], "run_id": "0" * 32}}
    with pytest.raises(PipelineError, match="run `make pipeline`, which trains into this one"):
        promotion.promote(misplaced, gate, backends, reevaluate=lambda: misplaced)
    tags = registry.version(registry.connect(backends), "test-model", trained["version"]).tags
    assert "gate.last_decision" not in tags


def test_promote_refuses_an_evaluation_of_an_earlier_candidate(tmp_path, monkeypatch, caplog):
    """As after `make train` without `make evaluate`: the gate would rule on the version
    evaluated before, not the one just trained."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports/evaluation.json").write_text(json.dumps({"candidate": {"version": "4"}}))
    (tmp_path / "reports/train.json").write_text(json.dumps({"version": "5"}))
    assert load_script("promote").main([]) == EXIT_ERROR
    said = caplog.records[-1].getMessage()
    assert "scored candidate v4, but reports/train.json names v5" in said
    assert "run `make evaluate`" in said


def _unchanged(frame):
    """A module-level function in a model: skops saves it, but loads it only once trusted."""
    return frame


def test_a_model_skops_would_not_load_back_is_refused_before_anything_is_logged(
    params, backends, good_data, monkeypatch
):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    base = training.build_model

    def engineered(*args, **kwargs):
        return make_pipeline(FunctionTransformer(engineered.step), base(*args, **kwargs))

    local = r"top level of a module.*, and list each in TRUSTED_TYPES"  # both steps at once
    for step, says in ((_unchanged, "add them to TRUSTED_TYPES"), (lambda x: x, local)):
        engineered.step = step
        monkeypatch.setattr(training, "build_model", engineered)
        with pytest.raises(PipelineError, match=says):
            training.train(good_data, params, backends)
    assert mlflow.search_runs(search_all_experiments=True).empty, "no run was started"
    assert not MlflowClient().search_registered_models(), "nothing was registered"


class BatchScaled(BaseEstimator, TransformerMixin):
    """Standardises each numeric column with the rows it is given: a notebook's mistake."""

    def fit(self, frame, y=None):
        return self

    def transform(self, frame):
        numbers = frame.select_dtypes("number")
        return frame.assign(**((numbers - numbers.mean()) / (numbers.std() + 1e-9)))


def complete_categorical(frame: pd.DataFrame) -> str:
    """The first categorical column with no missing value."""
    return next(c for c in frame.select_dtypes(exclude="number") if frame[c].notna().all())


class NeedsRegion(BaseEstimator, TransformerMixin):
    """Reads a text length from a categorical column training never missed: fails on null."""

    def fit(self, frame, y=None):
        self.column_ = complete_categorical(frame)
        return self

    def transform(self, frame):
        return frame.assign(**{self.column_: frame[self.column_].map(len).astype(str)})


def test_a_model_scoring_a_record_by_the_others_is_refused_and_missing_values_it_fails_on_named(
    params, backends, good_data, monkeypatch, caplog
):
    from sklearn.pipeline import make_pipeline

    base = training.build_model

    def engineered(*args, **kwargs):
        return make_pipeline(engineered.step(), base(*args, **kwargs))

    engineered.step = BatchScaled
    monkeypatch.setattr(training, "build_model", engineered)
    schema = datalib.Schema.from_params(params["data"], params["model"]["task"])
    frame = datalib.validate(pd.read_parquet(good_data), schema)
    with pytest.raises(PipelineError, match="scores a record differently alone") as refused:
        training.fit(frame, schema, params)
    assert "learn its statistics in fit" in str(refused.value)
    engineered.step = NeedsRegion
    training.fit(frame, schema, params)
    name = complete_categorical(frame[list(schema.features)])
    assert f"the model fails on a record missing {name} (TypeError)" in caplog.text


def test_a_model_of_a_library_requirements_leave_out_is_refused_before_anything_is_logged(
    params, backends, good_data, monkeypatch
):
    """Its library would be missing from the logged model's environment and lib. tags. (Any
    model of model.py: which of its types need trusting, and so are checked, depends on it.)"""
    monkeypatch.setattr(registry, "REQUIREMENTS", ["numpy"])
    held = [
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "numpy.dtype",  # listed
        "collections.OrderedDict",  # the standard library
        f"{registry.__name__.split('.')[0]}.model.RatioFeatures",  # this project's own
    ]
    assert registry._unlisted_libraries(held) == {"scikit-learn": held[0]}
    unlisted = {"scikit-learn": held[0]}
    monkeypatch.setattr(registry, "_unlisted_libraries", lambda types: unlisted)
    said = r"types of scikit-learn \(sklearn\..*add \['scikit-learn'\] there"
    with pytest.raises(PipelineError, match=said):
        training.train(good_data, params, backends)
    assert mlflow.search_runs(search_all_experiments=True).empty, "no run was started"


def test_a_classifier_without_probabilities_is_refused_before_the_fit(
    params, backends, good_data, monkeypatch
):
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import RidgeClassifier

    with pytest.raises(PipelineError, match=r"has no predict_proba.*CalibratedClassifierCV"):
        training._refuse_without_probabilities(RidgeClassifier(), "classification")
    calibrated = CalibratedClassifierCV(RidgeClassifier())
    training._refuse_without_probabilities(calibrated, "classification")
    training._refuse_without_probabilities(RidgeClassifier(), "regression")
    if params["model"]["task"] == "classification":
        # Text categories would fail RidgeClassifier's fit: the refusal comes first.
        monkeypatch.setattr(training, "build_model", lambda *args: RidgeClassifier())
        with pytest.raises(PipelineError, match="has no predict_proba"):
            training.train(good_data, params, backends)
        assert mlflow.search_runs(search_all_experiments=True).empty, "no run was started"


def test_train_same_inputs_same_metrics(params, backends, good_data):
    first = training.train(good_data, params, backends)
    second = training.train(good_data, params, backends)
    assert first["validation_metrics"] == second["validation_metrics"]
    assert first["version"] != second["version"]


def test_serving_with_no_champion_says_whether_the_gate_rejected_what_was_trained(
    params, backends, good_data, workdir
):
    client = registry.connect(backends, create=True)
    with pytest.raises(PipelineError, match="has no champion yet: run `make pipeline` first"):
        bundle.export(client, "test-model", None, workdir / "none")
    if params["model"]["task"] == "classification":  # a scrambled model's AUC: 0.5, give or take
        params["promote"]["threshold"] = 0.6
    bad = write_data(params, workdir / "bad.parquet", shuffle_target=True)
    rejected = cycle(params, backends, bad, workdir / "r1")
    assert rejected["decision"] == "rejected", rejected["reason"]
    version = rejected["candidate"]["version"]
    with pytest.raises(PipelineError) as refused:
        bundle.export(client, "test-model", None, workdir / "b")
    message = str(refused.value)
    assert f"the gate promoted none of its 1 version(s); the last, v{version}: " in message
    assert rejected["reason"] in message and f"make serve VERSION={version}" in message


def test_the_monitor_reads_a_versions_feature_kinds_from_the_registry(
    params, backends, good_data, workdir
):
    first = cycle(params, backends, good_data, workdir / "r1")
    kinds_of = load_script("monitor").feature_kinds(registry.connect(backends), "test-model")
    assert kinds_of(first["candidate"]["version"]) == params["data"]["features"]
    assert kinds_of("999") is None, "an unknown version: the monitor compares as usual"


def test_gate_promotes_good_then_keeps_champion_over_shuffled(
    params, backends, good_data, workdir, caplog
):
    first = cycle(params, backends, good_data, workdir / "r1")
    assert first["decision"] == "promoted"
    bad = write_data(params, workdir / "bad.parquet", shuffle_target=True)
    second = cycle(params, backends, bad, workdir / "r2")
    assert second["decision"] == "rejected", second["reason"]
    assert "WARNING" not in second["reason"], "the champion still passes the threshold"
    champion = registry.champion(MlflowClient(), "test-model")
    assert str(champion.version) == first["candidate"]["version"]
    evaluated = json.loads((workdir / "r2" / "evaluation.json").read_text())
    assert evaluated["champion"]["version"] == first["candidate"]["version"]
    assert sorted(p.name for p in (workdir / "r2").glob("*.png")), "evaluation wrote its plots"
    # The rejected version is no former champion: rolling "back" to it would bypass the gate.
    gate = Gate.from_params(params["promote"], params["model"]["task"])
    rejected = second["candidate"]["version"]
    client = registry.connect(backends)
    with caplog.at_level("WARNING"):
        bundle.export(client, "test-model", first["candidate"]["version"], workdir / "b1")
        assert "bypasses the gate" not in caplog.text
        bundle.export(client, "test-model", rejected, workdir / "b2")
    assert f"v{rejected} was not promoted by the gate" in caplog.text
    refused = promotion.rollback(bad, params, gate, backends, rejected, "try", force=False)
    assert not refused["moved"] and "never champion" in refused["refusal"]
    assert refused["forceable"]
    forced = promotion.rollback(bad, params, gate, backends, rejected, "try", force=True)
    assert forced["moved"]
    # Scored beside the champion it replaced, on the same rows: worse, and the report says so.
    assert forced["worse_than_champion"], forced
    assert gate.metric.better_by(forced["value_today"], forced["champion_value_today"]) < 0
    # It was never promoted, so it has no predecessor of its own: a rollback undoes the forced one.
    undone = promotion.rollback(bad, params, gate, backends, None, "undo", force=False)
    assert undone["moved"] and undone["to_version"] == first["candidate"]["version"]
    assert undone["worse_than_champion"] is False
    caplog.clear()
    with caplog.at_level("WARNING"):  # rejected, then served by force and left: both said
        bundle.export(client, "test-model", rejected, workdir / "b3")
    assert f"v{rejected} was not promoted by the gate (" in caplog.text
    assert ") and was taken out of service by a rollback (undo)" in caplog.text


def test_rollback_rescores_and_refuses_below_threshold_unless_forced(
    params, backends, good_data, workdir
):
    cycle(params, backends, good_data, workdir / "r1")
    second = cycle(params, backends, good_data, workdir / "r2")
    assert second["decision"] == "promoted"
    gate = Gate.from_params(params["promote"], params["model"]["task"])
    back = promotion.rollback(good_data, params, gate, backends, None, "test", force=False)
    assert back["moved"] and back["to_version"] == "1"
    tags = MlflowClient().get_model_version("test-model", "1").tags
    assert (tags["rollback_reason"], tags["rolled_back_from"]) == ("test", "2")
    restored = bundle.export(MlflowClient(), "test-model", None, workdir / "restored")
    assert restored["lineage"]["rollback_reason"] == "test", "the service's /version says so"
    assert restored["lineage"]["rolled_back_at"] == tags["rolled_back_at"]
    # v1 had no predecessor when it was promoted: a second rollback does not undo the first.
    said = r"no previous champion: pass VERSION=<n> \(former champions: 2\)"
    with pytest.raises(PipelineError, match=said):
        promotion.rollback(good_data, params, gate, backends, None, "again", force=False)
    strict = Gate(gate.metric, 0.999 if gate.metric.higher_is_better else 0.001, 0.0)
    refused = promotion.rollback(good_data, params, strict, backends, "2", "test", force=False)
    assert not refused["moved"] and refused["worse_than_champion"] is None, "not compared"
    assert str(registry.champion(MlflowClient(), "test-model").version) == "1"
    forced = promotion.rollback(good_data, params, strict, backends, "2", "test", force=True)
    assert forced["moved"] and str(registry.champion(MlflowClient(), "test-model").version) == "2"


def test_holdout_words_count_the_rarest_classes_and_say_how_many_more():
    counts = {f"team{n}": 100 + n for n in range(7)}
    six = dict(list(counts.items())[:6])
    said = evaluation.holdout_words({"rows": 615, "class_counts": six})
    assert said.endswith(" and 1 more class)"), said
    said = evaluation.holdout_words({"rows": 721, "class_counts": counts})
    assert said.endswith(" and 2 more classes)") and "100 of class 'team0'" in said, said


def test_record_deployment_tags_the_bundled_version_with_its_date_and_image(
    params, backends, good_data, workdir, caplog, capsys
):
    """deploy.yml's last step: the registry holds when a version was deployed, as which image."""
    script = load_script("record_deployment")
    image = ["--image", "ghcr.io/ml-team/churn-model:1-0123456789ab"]
    assert script.main(image) == EXIT_ERROR
    assert "build/model/bundle.json does not exist: run `make bundle` first" in caplog.text
    cycle(params, backends, good_data, workdir / "r1")
    bundle.export(MlflowClient(), "test-model", None, Path("build/model"))
    before = datetime.now(UTC).replace(microsecond=0)
    assert script.main(image) == 0
    tags = MlflowClient().get_model_version("test-model", "1").tags
    assert tags["deployed_image"] == image[1]
    assert before <= datetime.fromisoformat(tags["deployed_at"]) <= datetime.now(UTC)
    with pytest.raises(SystemExit):  # a reference without a tag is no deployed image
        script.main(["--image", "localhost:5000/churn-model"])
    # The model's history keeps each deployment, which the version's tags keep only the last of.
    assert script.main([*image[:1], f"{image[1]}-again"]) == 0
    assert load_script("history").main(["--name", "test-model"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [line.split("  ", 1)[1] for line in printed[-2:]] == [
        f"v1 deployed as {image[1]}",
        f"v1 deployed as {image[1]}-again",
    ]
    assert datetime.fromisoformat(printed[-1].split("  ")[0]) >= before.replace(tzinfo=None)
    assert load_script("history").main(["--name", "no-such-model"]) == EXIT_ERROR
    assert "model no-such-model is not in this registry" in caplog.text


def test_version_data_fetches_a_dataset_by_its_hash_from_the_remote_or_says_it_cannot(
    good_data, tmp_path, monkeypatch
):
    """`make version-data`: a version's rows by its data.dvc_md5 tag alone, from the DVC remote
    when the cache lacks them, whether or not a commit's dvc.lock names them; a hash the remote
    lacks writes nothing and says so."""
    script = load_script("version_data")
    monkeypatch.chdir(tmp_path)
    subprocess.run(["git", "init", "--quiet"], check=True)
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "init", "--quiet"], check=True)
    subprocess.run([*dvc, "remote", "add", "--default", "storage", str(tmp_path / "remote")])
    Path("data").mkdir()
    shutil.copy(good_data, "data/dataset.parquet")
    subprocess.run([*dvc, "add", "--quiet", "data/dataset.parquet"], check=True)
    subprocess.run([*dvc, "push", "--quiet"], check=True)
    md5 = yaml.safe_load(Path("data/dataset.parquet.dvc").read_text())["outs"][0]["md5"]
    shutil.rmtree(".dvc/cache")  # another clone: only the remote holds the rows
    script.fetch(md5, Path("out/rows.parquet"))
    assert lineage.file_md5(Path("out/rows.parquet")) == md5
    with pytest.raises(PipelineError, match=f"DVC has no dataset of hash {'0' * 32} in its"):
        script.fetch("0" * 32, Path("out/none.parquet"))
    assert not Path("out/none.parquet").exists()
    assert [p.name for p in tmp_path.glob(".version-data-*")] == [], "its folder is removed"


def test_a_new_class_is_left_out_of_scores_until_trained_on_then_the_champion_not_compared(
    params, backends, good_data, workdir
):
    """A class new in the data, first only in the newest rows (the holdout): no model here was
    trained on it, so its rows are left out of every score, and named. Once older rows hold it
    too, the candidate learns it and the champion, which never did, is not compared."""
    if params["model"]["task"] != "classification":
        pytest.skip("classes are classification's")
    first = cycle(params, backends, good_data, workdir / "r1")
    assert first["decision"] == "promoted", first["reason"]
    target = params["data"]["target"]
    params["data"]["target_classes"] = [*params["data"]["target_classes"], 2]
    frame = pd.read_parquet(good_data).sort_values("event_date", ignore_index=True)
    frame.loc[len(frame) - 40 :, target] = 2  # in the holdout only
    newest = workdir / "newest.parquet"
    frame.to_parquet(newest, index=False)
    trained = training.train(newest, params, backends)
    report = evaluation.evaluate(newest, trained, params, backends, workdir / "r2")
    assert report["holdout"]["left_out"] == {"2": 40}
    assert report["champion"]["metrics"], "both scored on the rows of classes they know"
    said = (workdir / "r2" / "evaluation.md").read_text()
    assert "Left out of every score: the holdout's rows of classes the candidate was not" in said
    assert report["candidate"]["undefined"] == {} and "undefined" not in said
    why = {"roc_auc": "class(es) ['1'] absent from the 40 actual labels"}
    said = evaluation.markdown({**report, "candidate": {**report["candidate"], "undefined": why}})
    assert f"roc_auc is undefined on this holdout: {why['roc_auc']}." in said
    frame.loc[: len(frame) // 2 : 5, target] = 2  # older rows too: learnt
    frame.to_parquet(newest, index=False)
    trained = training.train(newest, params, backends)
    report = evaluation.evaluate(newest, trained, params, backends, workdir / "r3")
    assert report["holdout"]["left_out"] == {}
    unscored = report["champion"]["unscored"]
    assert unscored.startswith(f"champion version {first['candidate']['version']} was not")
    assert "which 40 holdout rows hold" in unscored
    gate = Gate.from_params(params["promote"], params["model"]["task"])
    decided = promotion.promote(report, gate, backends, lambda: report)
    assert decided["decision"] == "promoted", decided["reason"]
    back = promotion.rollback(newest, params, gate, backends, None, "test", force=True)
    assert back["moved"] and back["left_out"] == {"2": 40}, "v1 never learnt it"


def test_gate_never_promotes_a_rolled_back_version_or_the_same_training_again(
    params, backends, good_data, workdir, monkeypatch
):
    clean = {"git.commit": "c0ffee", "git.dirty": "false", "git.training_files": "code-1"}
    monkeypatch.setattr(lineage, "git_state", lambda: dict(clean))
    cycle(params, backends, good_data, workdir / "r1")
    # A fresh checkout (a CI runner, a teammate's clone) runs the champion's training again:
    # train finds it in the registry, registers nothing, and the champion stays.
    later = "2099-01-01T00:00:00+00:00"
    with monkeypatch.context() as clock:
        clock.setattr(registry, "now", lambda: later)
        twin = cycle(params, backends, good_data, workdir / "twin")
    assert twin["decision"] == "unchanged", twin["reason"]
    registered = MlflowClient().search_model_versions("name='test-model'")
    assert [str(v.version) for v in registered] == ["1"], "the same training is not registered"
    # The gate looked again: the retrain-age alert counts from then, not from the training.
    assert registered[0].tags["gate.decided_at"] == later
    assert registered[0].tags["gate.last_decision"] == "unchanged"
    assert load_script("retrain_age").last_retraining(registered)[1].isoformat() == later
    clean["git.commit"] = "decaf"  # a new commit of the training files: another training
    clean["git.training_files"] = "code-2"
    trained = training.train(good_data, params, backends)
    report = evaluation.evaluate(good_data, trained, params, backends, workdir / "r2")
    gate = Gate.from_params(params["promote"], params["model"]["task"])
    assert promotion.promote(report, gate, backends, lambda: report)["decision"] == "promoted"
    # The scores the gate decided on stay in the registry, where reports/ is not kept.
    tags = MlflowClient().get_model_version("test-model", trained["version"]).tags
    metric, compared = gate.metric.name, report["comparison"][gate.metric.name]
    assert tags["gate.holdout.rows"] == str(report["holdout"]["rows"])
    assert tags["gate.holdout.champion_version"] == "1"
    for side in ("candidate", "champion"):  # written with 6 significant digits
        written = float(tags[f"gate.holdout.{side}.{metric}"])
        assert written == pytest.approx(compared[side], rel=1e-5)
    promotion.rollback(good_data, params, gate, backends, None, "bad in production", False)
    tags = MlflowClient().get_model_version("test-model", trained["version"]).tags
    assert tags[lineage.DEMOTED_REASON] == "bad in production"
    # Each move of the champion is in the model's history, which no later event replaces.
    events = [event for _when, event in registry.history(MlflowClient(), "test-model")]
    assert events[0].startswith("v1 became champion (was none) by the gate: ")
    version = trained["version"]
    assert events[1].startswith(f"v{version} became champion (was v1) by the gate: ")
    assert events[2] == f"v1 became champion (was v{version}) by a rollback: bad in production"
    # `make pipeline` right after: nothing re-ran, promote reads the same evaluation.
    again = promotion.promote(report, gate, backends, lambda: report)
    assert again["decision"] == "rejected" and "was rolled back on" in again["reason"]
    demoted = MlflowClient().get_model_version("test-model", trained["version"]).tags
    assert demoted["gate.decision"] == "promoted", "the decision that promoted it stands"
    # ...while the gate's last decision on it says what promotion.json says.
    last = (demoted["gate.last_decision"], demoted["gate.last_reason"])
    assert last == ("rejected", again["reason"]), last
    # The scheduled retrain on the same data and code, also after a commit that changed other
    # files (the dvc.lock of the last run), finds the rolled-back version: not promoted again.
    clean["git.commit"] = "dvc-lock-committed"
    repeat = cycle(params, backends, good_data, workdir / "r3")
    assert repeat["decision"] == "rejected" and "was rolled back on" in repeat["reason"]
    # Trained again where a package differs (not the same version then), the gate still sees
    # a repeat of the rolled-back training.
    versions = lineage.library_versions()
    monkeypatch.setattr(lineage, "library_versions", lambda *a: {**versions, "lib.numpy": "0"})
    repeat = cycle(params, backends, good_data, workdir / "r4")
    assert repeat["decision"] == "rejected"
    assert f"repeats version {trained['version']} ({lineage.SAME})" in repeat["reason"]
    # The evaluation says so beforehand (the PR comment's gate preview reads it).
    evaluated = json.loads((workdir / "r4" / "evaluation.json").read_text())
    assert evaluated["repeats"] and repeat["reason"].startswith(evaluated["repeats"])
    said = (workdir / "r4" / "evaluation.md").read_text()
    assert f"the gate will not promote it: {evaluated['repeats']}." in said
    assert str(registry.champion(MlflowClient(), "test-model").version) == "1"
    # Restored on purpose, it is in service again.
    promotion.rollback(good_data, params, gate, backends, trained["version"], "fixed", False)
    restored = MlflowClient().get_model_version("test-model", trained["version"]).tags
    assert lineage.DEMOTED_AT not in restored


def test_a_champion_trained_from_uncommitted_changes_says_so(
    params, backends, good_data, workdir, monkeypatch, caplog
):
    state = {"git.commit": "c0ffee", "git.dirty": "false", "git.training_files": "code-1"}
    monkeypatch.setattr(lineage, "git_state", lambda: dict(state))
    first = cycle(params, backends, good_data, workdir / "r1")
    assert first["decision"] == "promoted" and "uncommitted" not in first["reason"]
    state.update({"git.commit": "decaf", "git.dirty": "true"})
    second = cycle(params, backends, good_data, workdir / "r2")
    assert second["decision"] == "promoted", second["reason"]
    assert "trained from uncommitted changes, so commit decaf does not hold" in second["reason"]
    said = "version 2 was trained from uncommitted changes: it records git.dirty=true, and commit"
    assert said in caplog.text  # said at training time too, before any gate


def test_failed_evaluation_moves_no_alias(params, backends, good_data, workdir, monkeypatch):
    cycle(params, backends, good_data, workdir / "r1")
    trained = training.train(good_data, params, backends)

    def crash(*args, **kwargs):
        raise RuntimeError("evaluation crashed")

    monkeypatch.setattr(evaluation, "score_version", crash)
    with pytest.raises(RuntimeError):
        evaluation.evaluate(good_data, trained, params, backends, workdir / "r2")
    assert str(registry.champion(MlflowClient(), "test-model").version) == "1"
    assert not (workdir / "r2" / "evaluation.json").exists()


@pytest.mark.parametrize("stop", [ConnectionError, KeyboardInterrupt])
def test_alias_that_fails_to_move_leaves_no_promotion_record(
    params, backends, good_data, workdir, monkeypatch, stop
):
    """The registry goes away (or Ctrl-C lands) between the tags and the alias: the candidate
    must not look like a former champion, which a rollback would accept."""
    cycle(params, backends, good_data, workdir / "r1")
    trained = training.train(good_data, params, backends)
    report = evaluation.evaluate(good_data, trained, params, backends, workdir / "r2")

    def gone(*args):
        raise stop("registry went away")

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", gone)
    gate = Gate.from_params(params["promote"], params["model"]["task"])
    with pytest.raises(stop):
        promotion.promote(report, gate, backends, lambda: report)
    tags = MlflowClient().get_model_version("test-model", trained["version"]).tags
    assert not {"promoted_at", "promotion_reason", "previous_champion"} & set(tags), tags
    assert str(registry.champion(MlflowClient(), "test-model").version) == "1"


def test_marks_a_killed_move_left_are_undone_by_the_next_promote_or_rollback(
    params, backends, good_data, workdir
):
    """kill -9 between the tags and the alias (or just after it) runs no clean-up: the next run
    trusts the alias, and leaves alone marks fresh enough to be a run still in progress."""
    cycle(params, backends, good_data, workdir / "r1")
    newer = workdir / "newer.parquet"
    pd.read_parquet(good_data).iloc[5:].to_parquet(newer, index=False)
    other = training.train(newer, params, backends)["version"]
    client, champion = MlflowClient(), str(registry.champion(MlflowClient(), "test-model").version)
    long_ago = (datetime.now(UTC) - timedelta(hours=2)).isoformat(timespec="seconds")
    marks = {"demoted_at": long_ago, "demoted_reason": "a rollback killed before the move"}
    promoted = {"gate.decision": "promoted", "gate.decided_at": long_ago, "previous_champion": "1"}
    for version, tags in ((champion, marks), (other, promoted)):
        for key, value in tags.items():
            client.set_model_version_tag("test-model", version, key, value)
    fresh = {"gate.decision": "promoted", "gate.decided_at": registry.now()}
    client.set_model_version_tag("test-model", "1", "gate.reason", "kept")  # the champion's own
    promotion.repair_interrupted(client, "test-model")
    assert not set(marks) & set(client.get_model_version("test-model", champion).tags)
    left = client.get_model_version("test-model", other).tags
    assert not set(promotion.PROMOTION_MARKS) & set(left), left
    assert client.get_model_version("test-model", "1").tags["gate.reason"] == "kept"
    for key, value in fresh.items():  # a promotion in progress elsewhere: its marks stay
        client.set_model_version_tag("test-model", other, key, value)
    promotion.repair_interrupted(client, "test-model")
    assert client.get_model_version("test-model", other).tags["gate.decision"] == "promoted"


def test_a_promotion_stops_when_the_champion_moves_while_it_decides(
    params, backends, good_data, workdir, monkeypatch
):
    """A teammate's rollback (or another promote) moves the alias between this promote's
    decision and its move: the promote must not undo it unseen."""
    cycle(params, backends, good_data, workdir / "r1")
    trained = training.train(good_data, params, backends)
    report = evaluation.evaluate(good_data, trained, params, backends, workdir / "r2")
    newer = workdir / "newer.parquet"
    pd.read_parquet(good_data).iloc[5:].to_parquet(newer, index=False)
    other = training.train(newer, params, backends)["version"]
    record = MlflowClient.set_model_version_tag

    def meanwhile(self, name, version, key, value):
        if key == "gate.decision" and value == "promoted":
            MlflowClient().set_registered_model_alias(name, registry.CHAMPION, other)
        return record(self, name, version, key, value)

    monkeypatch.setattr(MlflowClient, "set_model_version_tag", meanwhile)
    gate = Gate.from_params(params["promote"], params["model"]["task"])
    monkeypatch.setattr(promotion, "decide", lambda evaluation, gate: (True, "passes"))
    with pytest.raises(registry.ChampionMoved) as stopped:
        promotion.promote(report, gate, backends, lambda: report)
    assert str(stopped.value).startswith(
        f"the champion of test-model became version {other} while this decision was taken "
        "against version 1"
    )
    assert str(registry.champion(MlflowClient(), "test-model").version) == other
    tags = MlflowClient().get_model_version("test-model", trained["version"]).tags
    assert not {"gate.decision", "promoted_at", "previous_champion"} & set(tags), tags


def test_a_rollback_stopped_by_ctrl_c_before_the_alias_moves_leaves_no_marks(
    params, backends, good_data, workdir, monkeypatch
):
    cycle(params, backends, good_data, workdir / "r1")
    newer = workdir / "newer.parquet"
    pd.read_parquet(good_data).iloc[5:].to_parquet(newer, index=False)
    cycle(params, backends, newer, workdir / "r2")
    left = str(registry.champion(MlflowClient(), "test-model").version)
    target = "1" if left == "2" else "2"

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", interrupted)
    gate = Gate.from_params(params["promote"], params["model"]["task"])
    with pytest.raises(KeyboardInterrupt):
        promotion.rollback(newer, params, gate, backends, target, "bad model", force=True)
    client = MlflowClient()
    assert str(registry.champion(client, "test-model").version) == left
    marked = client.get_model_version("test-model", left).tags
    assert not {"demoted_at", "demoted_reason"} & set(marked), marked
    assert "rolled_back_from" not in client.get_model_version("test-model", target).tags


def test_a_rollback_whose_confirmation_cannot_be_recorded_keeps_the_left_version_demoted(
    params, backends, good_data, workdir, monkeypatch
):
    """The registry goes away just after the alias moved: the move stands, the version taken
    out of service stays marked so (the gate must never promote it again), and the error says
    which tag to record by hand."""
    cycle(params, backends, good_data, workdir / "r1")
    newer = workdir / "newer.parquet"
    pd.read_parquet(good_data).iloc[5:].to_parquet(newer, index=False)
    cycle(params, backends, newer, workdir / "r2")  # version 2, promoted or not
    left = str(registry.champion(MlflowClient(), "test-model").version)
    target = "1" if left == "2" else "2"
    record = MlflowClient.set_model_version_tag

    def gone_after_the_move(self, name, version, key, value):
        if key == "rolled_back_at":
            raise ConnectionError("registry went away")
        return record(self, name, version, key, value)

    monkeypatch.setattr(MlflowClient, "set_model_version_tag", gone_after_the_move)
    monkeypatch.setattr(registry.time, "sleep", lambda seconds: None)
    gate = Gate.from_params(params["promote"], params["model"]["task"])
    with pytest.raises(registry.Unconfirmed) as failed:
        promotion.rollback(newer, params, gate, backends, target, "bad model", force=True)
    said = str(failed.value)
    assert said.startswith(f"alias champion of test-model now points at version {target}, but")
    assert f"set_model_version_tag('test-model', '{target}', 'rolled_back_at'" in said
    assert str(registry.champion(MlflowClient(), "test-model").version) == target
    tags = MlflowClient().get_model_version("test-model", left).tags
    assert tags["demoted_reason"] == "bad model", "still out of service"


def test_an_experiment_made_under_another_artifact_root_is_named(backends, caplog):
    client = registry.connect(backends, create=True)
    made = registry.experiment_id(client, "test-model", backends.artifact_root)
    kept = client.get_experiment(made).artifact_location
    assert registry.experiment_id(client, "test-model", backends.artifact_root) == made
    with pytest.raises(PipelineError) as refused:  # models meant for S3 would stay local
        registry.experiment_id(client, "test-model", "s3://team-bucket/mlartifacts")
    assert f"keeps its artifacts in {kept}" in str(refused.value)
    assert f"rename --experiment-id {made} --new-name test-model-old" in str(refused.value)
    moved = backends.artifact_root + "-moved"  # a local folder: the repository moved
    assert registry.experiment_id(client, "test-model", moved) == made
    assert f"not under MODEL_ARTIFACT_ROOT ({moved})" in caplog.text


def test_unreachable_registry_fails_clearly_and_registers_nothing(params, good_data, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    dead = Backends("http://127.0.0.1:9", None, "file:///tmp/unused", None, "sqlite://")
    with pytest.raises(PipelineError, match="unreachable"):
        training.train(good_data, params, dead)


def test_a_tracking_database_that_does_not_answer_fails_in_seconds_without_its_password(caplog):
    closed = "postgresql://mlops:s3cret@127.0.0.1:9/mlflow"  # nothing listens on port 9
    started = time.monotonic()
    assert cli.run(lambda: registry.connect(Backends(closed, None, None, None, "sqlite://"))) == 1
    assert time.monotonic() - started < 30, "MLflow's own retries take about two minutes"
    [said] = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert said.startswith("MLflow tracking database postgresql://mlops:***@127.0.0.1:")
    assert "Check MLFLOW_TRACKING_URI (user, password" in said and "s3cret" not in caplog.text


def test_a_mistyped_sqlite_tracking_uri_is_refused_not_made_an_empty_registry(tmp_path):
    typo = Backends(f"sqlite:///{tmp_path}/mlfow.db", None, None, None, "sqlite://")
    with pytest.raises(PipelineError, match=r"mlfow\.db does not exist \(MLFLOW_TRACKING_URI="):
        registry.connect(typo)
    assert not list(tmp_path.iterdir()), "nothing was created"
    registry.connect(typo, create=True)  # training makes the first registry
    assert (tmp_path / "mlfow.db").exists()


def test_a_backend_that_refuses_is_one_line_naming_what_to_check_and_a_bug_a_traceback(caplog):
    def unreachable_database() -> int:
        sqlalchemy.create_engine("postgresql+psycopg://u:p@127.0.0.1:9/db").connect()
        return 0

    def unsupported_registry() -> int:
        registry.connect(Backends("postgres://u:p@127.0.0.1:9/db", None, None, None, "sqlite://"))
        return 0

    assert cli.run(unreachable_database) == EXIT_ERROR
    assert "OperationalError: " in caplog.text and "MONITORING_DATABASE_URL" in caplog.text

    def mlflow_store_logs_a_database_error() -> int:  # as MLflow's SQL store does, then raises
        try:
            raise RuntimeError("connection failed\n[SQL: SELECT ...]\n(Background on ...)")
        except RuntimeError as err:
            store = logging.getLogger("mlflow.store.db.utils")
            store.exception(
                "SQLAlchemy database error. The following exception is caught.\n%s", err
            )
        return 0

    cli.run(mlflow_store_logs_a_database_error)
    [logged] = [r for r in caplog.records if r.name == "mlflow.store.db.utils"]
    assert logged.getMessage() == (
        "SQLAlchemy database error. The following exception is caught. connection failed"
    )
    assert logged.exc_info is None
    assert cli.run(unsupported_registry) == EXIT_ERROR
    assert "postgres://" in caplog.text and "MLFLOW_TRACKING_URI" in caplog.text

    def s3_behind_mlflow() -> int:  # MLflow wraps the S3 error that says what is wrong
        try:
            raise NoCredentialsError
        except NoCredentialsError as err:
            raise MlflowException("Failed to download artifacts from path 'model'") from err

    assert cli.run(s3_behind_mlflow) == EXIT_ERROR
    said = caplog.records[-1].getMessage()
    assert said.startswith(
        "MlflowException: Failed to download artifacts from path 'model' (from "
        "NoCredentialsError: Unable to locate credentials). Check the S3 settings "
        "(MODEL_ARTIFACT_ROOT, AWS_ACCESS_KEY_ID"
    )
    assert "Traceback" not in caplog.text

    def s3_never_answers() -> int:  # botocore's read timeout is an OSError as well
        raise ReadTimeoutError(endpoint_url="http://127.0.0.1:9/bucket")

    assert cli.run(s3_never_answers) == EXIT_ERROR
    said = caplog.records[-1].getMessage()
    assert said.startswith("ReadTimeoutError: Read timeout on endpoint URL")
    assert "Check the S3 settings" in said
    with pytest.raises(KeyError):
        cli.run(lambda: {}["bug"])


def test_an_artifact_store_that_refuses_is_named_when_a_profile_is_read(
    backends, caplog, monkeypatch
):
    client = registry.connect(backends, create=True)
    experiment = client.create_experiment("on-s3", artifact_location="s3://no-bucket/artifacts")
    run_id = client.create_run(experiment).info.run_id
    for name, value in {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",  # nothing listens there
        "MLFLOW_S3_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_ACCESS_KEY_ID": "id",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_MAX_ATTEMPTS": "1",
    }.items():
        monkeypatch.setenv(name, value)
    assert cli.run(lambda: registry.load_profile(client, run_id)) == EXIT_ERROR
    said = caplog.records[-1].getMessage()
    assert "EndpointConnectionError" in said and "Check the S3 settings" in said, said


def test_evaluation_names_the_bias_of_a_regression_on_the_newest_rows(
    params, backends, good_data, workdir
):
    """Prices up 30 % in the newest rows only (the holdout): the candidate, trained on the
    older ones, predicts them too low, and evaluation says so before monitoring would."""
    if params["model"]["task"] != "regression":
        pytest.skip("a bias is a regression's: a classifier's evaluation has none")
    frame = pd.read_parquet(good_data)
    time, target = params["data"]["time_column"], params["data"]["target"]
    when = pd.to_datetime(frame[time])
    newest = when >= when.quantile(1 - params["split"]["holdout_fraction"] / 2)
    frame.loc[newest, target] *= 1.3
    risen = workdir / "risen.parquet"
    frame.to_parquet(risen, index=False)
    trained = training.train(risen, params, backends)
    report = evaluation.evaluate(risen, trained, params, backends, workdir / "r1")
    assert "the candidate's mean error (prediction - actual) on the holdout is -" in report["bias"]
    assert "it predicts the newest rows too low" in report["bias"]
    said = (workdir / "r1" / "evaluation.md").read_text()
    assert f"Bias: {report['bias']}." in said
    again = training.train(good_data, params, backends)
    same = evaluation.evaluate(good_data, again, params, backends, workdir / "r2")
    assert same["bias"] is None, same["bias"]


def test_evaluate_markdown_lists_both_models_and_deltas(params, backends, good_data, workdir):
    cycle(params, backends, good_data, workdir / "r1")
    trained = training.train(good_data, params, backends)
    report = evaluation.evaluate(good_data, trained, params, backends, workdir / "r2")
    text = (workdir / "r2" / "evaluation.md").read_text()
    assert "candidate v2" in text and "champion v1" in text
    metric = params["promote"]["metric"]
    delta = report["comparison"][metric]["delta"]
    assert metrics.difference(delta, signed=True) in text
    # Both models scored on the same resampled rows: the delta's interval holds the delta.
    low, high = report["comparison"][metric]["delta_interval"]
    assert low <= delta <= high, (low, delta, high)
    assert f"The {metric} delta's 95 % paired bootstrap interval over the holdout rows: " in text
    rows = report["holdout"]["rows"]
    assert f"Holdout: the newest {rows} rows by {params['data']['time_column']}" in text
    # The sample's dates are days: the holdout's follow the rows before them.
    (first, last), (before, until) = report["holdout"]["dates"].values()
    assert until <= first <= last and before <= until and len(first) == len("2026-01-31")
    assert f", dated {first} to {last} (the rows before them: {before} to {until})" in text
    unordered = {**report["holdout"], "newest_by": None, "class_counts": None, "dates": None}
    random_rows = f"{rows} rows chosen by a seeded hash of each row (no data.time_column)"
    assert evaluation.holdout_words(unordered) == random_rows
    # A classifier's holdout rows per class, the rarest first: few positives judge little.
    counts = report["holdout"]["class_counts"]
    if params["model"]["task"] == "classification":
        assert sum(counts.values()) == rows and len(counts) == 2, counts
        (rare, few), (_common, many) = sorted(counts.items(), key=lambda item: item[1])
        assert f"by {params['data']['time_column']} ({few} of class '{rare}', {many} of" in text
        assert "precision_recall.png" in text
        table = report["per_class"]
        assert [(row["class"], row["rows"]) for row in table] == [(rare, few), (_common, many)]
        assert f"| {rare} | {few:,} | " in text and "| champion recall |" in text
        assert "| f1, of class '" in text, "a binary F1 scores one class"
    else:
        assert counts is None
    # The model that ignores the features: the sample's candidate beats it, and the report says.
    gate = Gate.from_params(params["promote"], params["model"]["task"])
    baseline = report["baseline"]["metrics"][metric]
    assert gate.metric.better_by(report["candidate"]["metrics"][metric], baseline) > 0
    assert "Baseline, a model that ignores the features" in text


@pytest.mark.parametrize("change", ["dropped", "retyped"])
def test_changed_features_judge_the_candidate_alone_and_refuse_a_rollback_across(
    params, backends, good_data, workdir, change, caplog
):
    """A feature dropped from params.yaml, or declared with another type: the champion cannot
    score the new data, so the candidate is judged by the threshold alone, saying so; the old
    version cannot come back."""
    cycle(params, backends, good_data, workdir / "r1")
    changed = copy.deepcopy(params)
    data, frame = workdir / "changed.parquet", pd.read_parquet(good_data)
    if change == "dropped":
        feature = list(changed["data"]["features"])[-1]
        del changed["data"]["features"][feature]
        frame = frame.drop(columns=[feature])
    else:  # a count the first version read as a number, now declared a category
        feature = next(n for n, kind in changed["data"]["features"].items() if kind == "numeric")
        changed["data"]["features"][feature] = "categorical"
        changed["data"]["bounds"].pop(feature, None)  # bounds are a numeric column's
        frame[feature] = frame[feature].round().astype("Int64").astype(str)
    frame.to_parquet(data, index=False)
    second = cycle(changed, backends, data, workdir / "r2")
    assert second["decision"] == "promoted", second["reason"]
    assert "not compared" in second["reason"] and feature in second["reason"]
    evaluated = json.loads((workdir / "r2" / "evaluation.json").read_text())
    assert evaluated["champion"]["version"] == "1" and evaluated["champion"]["metrics"] is None
    assert "Not compared: the champion version 1" in (workdir / "r2" / "evaluation.md").read_text()
    gate = Gate.from_params(changed["promote"], changed["model"]["task"])
    refused = promotion.rollback(data, changed, gate, backends, "1", "test", force=True)
    assert not refused["moved"] and "trained on other feature" in refused["refusal"]
    assert not refused["forceable"]
    # The way back: the version's own params.yaml (its commit), make data, then roll back again.
    commit = MlflowClient().get_model_version("test-model", "1").tags["git.commit"]
    assert f"`git checkout {commit} -- params.yaml`" in refused["refusal"]
    assert "`make serve VERSION=1`" in refused["refusal"]
    assert str(registry.champion(MlflowClient(), "test-model").version) == "2"
    # Bundling version 1 by number says it serves other features than params.yaml declares.
    (workdir / "params.yaml").write_text(yaml.safe_dump(changed))
    assert load_script("bundle").main(["--version", "1", "--out", str(workdir / "v1")]) == 0
    assert "version 1 was trained on other feature" in caplog.text
    assert "the service takes the features it was trained on" in caplog.text


def test_a_version_this_code_cannot_load_stops_the_gate_and_rollbacks_name_why(
    params, backends, good_data, workdir, monkeypatch
):
    """A class of model.py renamed after a version was registered: that version no longer loads
    (its classes are stored by import path). The gate refuses a candidate it cannot compare with
    such a champion (a renaming alone would let a worse model through), a rollback to it is
    refused saying so, and a rollback away from it still works."""
    cycle(params, backends, good_data, workdir / "r1")
    load, unloadable = registry.load_model, {"1"}

    def renamed(name, number):
        if str(number) in unloadable:  # as modelfile.load says
            raise Unloadable(
                f"version {number} cannot be loaded by this code (AttributeError: module 'model' "
                f"has no attribute 'RatioFeatures'): {RENAMED_CLASS}"
            )
        return load(name, number)

    monkeypatch.setattr(registry, "load_model", renamed)
    newer = workdir / "newer.parquet"
    pd.read_parquet(good_data).iloc[5:].to_parquet(newer, index=False)  # other data: no repeat
    second = cycle(params, backends, newer, workdir / "r2")
    assert second["decision"] == "rejected", second["reason"]
    assert "version 1 cannot be loaded by this code (AttributeError" in second["reason"]
    assert "keep the old name importable there (OldName = NewName)" in second["reason"]
    assert str(registry.champion(MlflowClient(), "test-model").version) == "1"
    gate = Gate.from_params(params["promote"], params["model"]["task"])
    unloadable = set()  # the old name importable again: version 2 served by a forced rollback
    forced = promotion.rollback(newer, params, gate, backends, "2", "test", force=True)
    assert forced["moved"], forced
    unloadable = {"1"}
    refused = promotion.rollback(newer, params, gate, backends, "1", "test", force=True)
    assert not refused["moved"] and not refused["forceable"]
    assert "keep the old name importable there (OldName = NewName)" in refused["refusal"]
    unloadable = {"2"}  # now the champion is the one that no longer loads
    back = promotion.rollback(newer, params, gate, backends, None, "test", force=False)
    assert back["moved"] and back["to_version"] == "1"
    assert back["champion_value_today"] is None and back["worse_than_champion"] is None


@pytest.mark.parametrize("tampering", ["trusts its own payload", "is a pickle"])
def test_a_tampered_version_runs_no_code_where_it_is_loaded(
    params, backends, good_data, workdir, tampering
):
    """Whoever can write the registry's artifact store can rewrite a version's files and its
    MLmodel: a pickle format, or a skops file listing its own type as trusted. MLflow's loader
    runs either; evaluation, the gate, rollbacks and `make bundle` refuse both, naming why."""
    cycle(params, backends, good_data, workdir / "r1")
    client = MlflowClient()
    folder = Path(urlparse(client.get_model_version_download_uri("test-model", "1")).path)
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    flavor = mlmodel["flavors"]["sklearn"]
    model_file, marker = folder / flavor["pickled_model"], workdir / "ran"
    if tampering == "is a pickle":
        flavor["serialization_format"] = "cloudpickle"
        model_file.write_bytes(pickle.dumps(Payload(marker)))
        refusal = "is not saved as a skops file"
    else:
        flavor["skops_trusted_types"] = [*flavor.get("skops_trusted_types", []), PAYLOAD_TYPE]
        skops.io.dump(Payload(marker), model_file)
        refusal = f"does not list: ['{PAYLOAD_TYPE}']"
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    mlflow.sklearn.load_model("models:/test-model/1")
    assert marker.exists(), "the payload is live: MLflow's own loader runs it"
    marker.unlink()
    with pytest.raises(Unloadable) as loading:
        registry.load_model("test-model", "1")
    with pytest.raises(PipelineError) as bundling:
        bundle.export(client, "test-model", None, workdir / "build" / "model")
    assert refusal in str(loading.value) and refusal in str(bundling.value)
    assert not marker.exists(), "the tampered version ran code"
    assert not (workdir / "build" / "model").exists()


def test_renamed_labels_judge_the_candidate_alone_and_refuse_a_rollback_across(
    params, backends, good_data, workdir
):
    """0/1 renamed stay/leave: the champion's labels are not the data's, so it is not compared
    (scikit-learn would refuse to mix them), and no rollback may bring it back."""
    if params["model"]["task"] != "classification":
        pytest.skip("labels are a classification matter")
    cycle(params, backends, good_data, workdir / "r1")
    changed = copy.deepcopy(params)
    names = dict(zip(params["data"]["target_classes"], ["stay", "leave"], strict=True))
    changed["data"]["target_classes"] = list(names.values())
    target, data = params["data"]["target"], workdir / "renamed.parquet"
    frame = pd.read_parquet(good_data)
    frame.assign(**{target: frame[target].map(names)}).to_parquet(data, index=False)
    second = cycle(changed, backends, data, workdir / "r2")
    assert second["decision"] == "promoted" and "labels were renamed" in second["reason"]
    gate = Gate.from_params(changed["promote"], changed["model"]["task"])
    refused = promotion.rollback(data, changed, gate, backends, "1", "test", force=True)
    assert not refused["moved"] and "labels were renamed" in refused["refusal"]


def test_roc_curves_show_each_class_against_the_rest_or_the_positive_class():
    """Not just the last class: every class of the holdout has its named curve."""
    rng = np.random.default_rng(0)
    actual = rng.choice(["a", "b", "c"], 300)
    three = {"version": "2", "classes": ["a", "b", "c"], "proba": rng.dirichlet(np.ones(3), 300)}
    names = [name for name, _is, _score in plots.roc_curves(actual, [("candidate", three)])]
    assert names == [f"candidate v2, {c} vs rest" for c in "abc"]
    absent = plots.roc_curves(np.where(actual == "c", "a", actual), [("champion", three)])
    assert [name for name, *_ in absent] == ["champion v2, a vs rest", "champion v2, b vs rest"]
    binary = {"version": "1", "classes": [0, 1], "proba": rng.dirichlet(np.ones(2), 300)}
    ((name, is_class, score),) = plots.roc_curves(rng.integers(0, 2, 300), [("candidate", binary)])
    assert name == "candidate v1" and np.array_equal(score, binary["proba"][:, 1])
    assert is_class.dtype == bool


def test_a_multiclass_roc_keeps_its_legend_beside_the_curves(tmp_path, monkeypatch):
    """Eight curves (four classes, two models): a class keeps its colour across the models, the
    champion's are dashed, and the legend sits right of the axes instead of over the curves."""
    rng = np.random.default_rng(0)
    classes = ["billing", "bug", "feature_request", "other"]
    actual = rng.choice(classes, 400)
    models = [
        (label, {"version": v, "classes": classes, "proba": rng.dirichlet(np.ones(4), 400)})
        for label, v in (("candidate", "2"), ("champion", "1"))
    ]
    drawn = []
    monkeypatch.setattr(plots, "_save", lambda figure, path: drawn.append(figure))
    plots._roc(actual, models, tmp_path / "roc.png")
    (axis,) = drawn[0].axes
    curves = [line for line in axis.get_lines() if line.get_label() != "no skill"]
    assert len(curves) == 8
    assert [c.get_color() for c in curves[:4]] == [c.get_color() for c in curves[4:]]
    assert {c.get_linestyle() for c in curves[:4]} == {"-"}
    assert {c.get_linestyle() for c in curves[4:]} == {"--"}
    drawn[0].canvas.draw()
    legend, plot = axis.get_legend().get_window_extent(), axis.get_window_extent()
    assert legend.x0 >= plot.x1
    plots.plt.close(drawn[0])


def test_precision_recall_axes_name_recall_and_precision_not_a_true_label(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    actual = np.where(rng.random(300) < 0.3, "yes", "no")
    scored = {"version": "2", "classes": ["no", "yes"], "proba": rng.dirichlet(np.ones(2), 300)}
    drawn = []
    monkeypatch.setattr(plots, "_save", lambda figure, path: drawn.append(figure))
    plots._precision_recall(actual, [("candidate", scored)], ["no", "yes"], tmp_path / "pr.png")
    (axis,) = drawn[0].axes
    assert (axis.get_xlabel(), axis.get_ylabel()) == ("recall", "precision")
    assert axis.get_title() == "Precision-recall of class yes on the holdout"
    plots.plt.close(drawn[0])


def test_evaluation_plots_draw_class_labels_as_text(tmp_path, recwarn):
    """A "$" is a dollar, not mathtext (which stops on "$\\frac$"); text the font cannot draw
    is shown escaped, not as empty boxes."""
    rng = np.random.default_rng(0)
    classes = ["$\\frac$", "$10-$20", "日本語"]
    actual = rng.choice(classes, 300)
    model = {"version": "1", "classes": classes, "proba": rng.dirichlet(np.ones(3), 300)}
    model["prediction"] = rng.choice(classes, 300)
    schema = SimpleNamespace(task="classification", target_classes=classes)
    paths = plots.evaluation_plots(schema, actual, model, {**model, "version": "0"}, tmp_path)
    assert [Path(p).read_bytes()[:4] for p in paths] == [b"\x89PNG"] * 2
    assert not [str(w.message) for w in recwarn]


@pytest.mark.parametrize("holdout", [[0] * 5, [1] * 5, ["a"] * 5])
def test_a_holdout_of_one_class_draws_no_curves_and_no_crash(tmp_path, holdout):
    """A tiny holdout holding one class: no ROC or precision-recall curve can be drawn (its
    metrics are undefined and named), the confusion matrix still is."""
    rng = np.random.default_rng(0)
    classes = [0, 1] if holdout[0] in (0, 1) else ["a", "b", "c"]
    model = {"version": "2", "classes": classes, "proba": rng.dirichlet(np.ones(len(classes)), 5)}
    model["prediction"] = rng.choice(classes, 5)
    schema = SimpleNamespace(task="classification", target_classes=classes)
    paths = plots.evaluation_plots(schema, np.array(holdout), model, None, tmp_path)
    assert [Path(p).name for p in paths] == ["confusion_matrix.png"]


def test_per_class_table_shows_a_weak_rare_class_that_a_macro_average_hides():
    """Three classes: the rare "c" is never predicted by the champion (precision undefined,
    recall 0) and half found by the candidate; the table lists it first."""
    actual = ["a"] * 6 + ["b"] * 3 + ["c"] * 2
    rows = pd.DataFrame({"x": range(11), "label": actual})
    schema = datalib.Schema({"x": "numeric"}, "label", "classification")
    candidate = {
        "rows": rows,
        "classes": ["a", "b", "c"],
        "prediction": np.array(["a"] * 6 + ["b"] * 3 + ["c", "a"]),
    }
    champion = {**candidate, "prediction": np.array(["a"] * 6 + ["b"] * 3 + ["a", "a"])}
    table = evaluation.per_class(candidate, champion, schema)
    assert [(row["class"], row["rows"]) for row in table] == [("c", 2), ("b", 3), ("a", 6)]
    assert table[0]["candidate"] == [1.0, 0.5] and table[0]["champion"] == [None, 0.0]
    lines = evaluation.per_class_lines(table)
    heads = "| class | rows | candidate precision | candidate recall | champion precision |"
    assert lines[3].startswith(heads)
    assert lines[5] == "| c | 2 | 100.0% | 50.0% | - | 0.0% |"
    alone = evaluation.per_class_lines(evaluation.per_class(candidate, None, schema))
    assert alone[3] == "| class | rows | candidate precision | candidate recall |"
    assert evaluation.per_class(candidate, None, replace(schema, task="regression")) == []
    assert metrics.scope("f1", ["a", "b", "c"]) == "macro average over the classes"
    assert metrics.scope("f1", [0, 1], 1) == "of class '1'"
    assert not metrics.scope("accuracy", [0, 1])


@pytest.mark.parametrize("script", ["rollback", "bundle"])
@pytest.mark.parametrize("version", ["abc", "0", "-1", "1.5"])
def test_a_version_that_is_no_number_is_a_usage_error(script, version, capsys):
    with pytest.raises(SystemExit) as exited:
        load_script(script).main(["--version", version])
    assert exited.value.code == 2
    assert f"{version!r} is not a model version number" in capsys.readouterr().err
