"""Shared fixtures: an isolated working folder with its own MLflow registry and sample data.

The tests run on the built-in sample schema, whatever your params.yaml declares, so they keep
passing after you point data.source at your own data.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import functools
import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from {{ cookiecutter.__package_name }} import data as datalib
from {{ cookiecutter.__package_name }} import sample, training
from {{ cookiecutter.__package_name }}.config import Backends, load_params
from {{ cookiecutter.__package_name }}.metrics import METRICS

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_params() -> dict:
    """params.yaml as the repository has it."""
    return load_params(REPO / "params.yaml")


# Hyperparameters that count boosting rounds or trees, the bulk of a fit's time.
ROUNDS = ("max_iter", "n_estimators")


def fewer_rounds(hyperparameters: dict | None, rounds: int) -> dict:
    """The repo's own hyperparameters (build_model() may build any estimator), with at most
    `rounds` boosting rounds or trees where they set them: a faster fit of the same model."""
    return {
        name: min(value, rounds) if name in ROUNDS and isinstance(value, int) else value
        for name, value in (hyperparameters or {}).items()
    }


def sample_params(repo_params: dict) -> dict:
    """The repository's params with the sample schema, fewer rows and a lenient gate."""
    result = copy.deepcopy(repo_params)
    task = result["model"]["task"]
    result["model"]["name"] = "test-model"
    result["data"].update(
        source="sample",
        query=None,
        sample_rows=1500,
        sample_seed=7,
        time_column=sample.TIME_COLUMN,
        features=dict(sample.FEATURES),
        bounds=copy.deepcopy(sample.BOUNDS),
        target_classes=[0, 1] if task == "classification" else None,
    )
    result["train"]["hyperparameters"] = fewer_rounds(result["train"]["hyperparameters"], 40)
    metric = "roc_auc" if task == "classification" else "rmse"
    lenient = 0.5 if METRICS[metric].higher_is_better else 1e6
    result["promote"] = {"metric": metric, "threshold": lenient, "min_improvement": 0.0}
    return result


@pytest.fixture
def params(repo_params: dict) -> dict:
    """Params for the sample schema (see sample_params)."""
    return sample_params(repo_params)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder holding the scripts' relative paths, with embedded backends inside it."""
    use_embedded_backends(monkeypatch, tmp_path)
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


@functools.cache
def empty_registry() -> Path:
    """An MLflow registry that holds nothing yet, made once per test process: making one runs
    MLflow's schema migrations, about a second, so each test copies this one instead."""
    from mlflow import MlflowClient

    folder = Path(tempfile.mkdtemp(prefix="empty-registry-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    with contextlib.chdir(folder):  # MLflow's Default experiment keeps its runs in here
        MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}").search_experiments()
    return folder / "mlflow.db"


def use_embedded_backends(patch: pytest.MonkeyPatch, folder: Path) -> Backends:
    """Work in `folder`, with MLflow's registry (an empty one, unless it has one) and artifacts
    inside it."""
    if not (folder / "mlflow.db").exists():
        shutil.copy(empty_registry(), folder / "mlflow.db")
    patch.chdir(folder)
    patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
    patch.setenv("MODEL_ARTIFACT_ROOT", str(folder / "mlartifacts"))
    patch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    return Backends.from_env()


@pytest.fixture
def backends(workdir: Path) -> Backends:
    """The embedded backends of the working folder."""
    return Backends.from_env()


class Payload:
    """What a tampered model artifact could hold: loading it runs code (writes `marker`), as
    skops and pickle both call __setstate__ of the class a file names."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __setstate__(self, state: dict) -> None:
        Path(state["marker"]).write_text("code ran on load")


PAYLOAD_TYPE = f"{Payload.__module__}.{Payload.__qualname__}"


# --- Serving: one model trained, promoted and exported per session ---------------------------
# test_serving.py and test_server_process.py share it: training once keeps them fast.


class ExportedModel:
    """A bundle exported from a real registry, the registry's tags for it, and sample records."""

    def __init__(self, path: Path, task: str, tags: dict, frame) -> None:
        self.path, self.task, self.tags, self.frame = path, task, tags, frame
        self.features = list(frame.columns)
        self.records = json_records(frame)


def load_script(name: str):
    """Import scripts/<name>.py, which is a script, not a package module."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def predict_as_served(model, records: list[dict], profile: dict, task: str):
    """Predict JSON-like records as the service does: converted to the training types first."""
    kinds = {name: feature["kind"] for name, feature in profile["features"].items()}
    return training.predict(model, datalib.feature_frame(records, kinds), task)


def json_records(frame) -> list[dict]:
    """Rows as JSON-ready dicts: missing values become null, numbers plain floats."""
    rows = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    return [{k: float(v) if isinstance(v, int | float) else v for k, v in r.items()} for r in rows]


@pytest.fixture(scope="session")
def exported_model(repo_params: dict, tmp_path_factory: pytest.TempPathFactory) -> ExportedModel:
    """Train on the sample data, promote, and export the champion with `bundle.export`."""
    from {{ cookiecutter.__package_name }} import data as datalib
    from {{ cookiecutter.__package_name }} import evaluation, promotion, registry, training
    from {{ cookiecutter.__package_name }}.promotion import Gate
    from {{ cookiecutter.__package_name }}.serving import bundle

    folder = tmp_path_factory.mktemp("served")
    settings = sample_params(repo_params)
    data_path, name = folder / "data.parquet", settings["model"]["name"]
    with pytest.MonkeyPatch.context() as patch:
        backends = use_embedded_backends(patch, folder)
        schema = datalib.Schema.from_params(settings["data"], settings["model"]["task"])
        frame = datalib.validate(datalib.load_source(settings["data"], schema.task, None), schema)
        frame.to_parquet(data_path, index=False)
        trained = training.train(data_path, settings, backends)
        report = evaluation.evaluate(data_path, trained, settings, backends, folder / "reports")
        gate = Gate.from_params(settings["promote"], schema.task)
        promotion.promote(report, gate, backends, reevaluate=lambda: report)
        client = registry.connect(backends)
        bundle.export(client, name, None, folder / "bundle")
        tags = dict(client.get_model_version(name, trained["version"]).tags)
    rows = frame[list(settings["data"]["features"])].tail(300).reset_index(drop=True)
    return ExportedModel(folder / "bundle", schema.task, tags, rows)
