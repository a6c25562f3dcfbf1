"""Shared fixtures: an isolated working folder with its own MLflow registry and sample data.

The tests run on the built-in sample schema, whatever your params.yaml declares, so they keep
passing after you point data.source at your own data.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest

from {{ cookiecutter.__package_name }} import sample
from {{ cookiecutter.__package_name }}.config import Backends, load_params
from {{ cookiecutter.__package_name }}.metrics import METRICS

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_params() -> dict:
    """params.yaml as the repository has it."""
    return load_params(REPO / "params.yaml")


@pytest.fixture
def params(repo_params: dict) -> dict:
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
        target_classes=[0, 1] if task == "classification" else None,
    )
    result["train"]["hyperparameters"] = {"max_iter": 40, "learning_rate": 0.1}
    metric = "roc_auc" if task == "classification" else "rmse"
    lenient = 0.5 if METRICS[metric].higher_is_better else 1e6
    result["promote"] = {"metric": metric, "threshold": lenient, "min_improvement": 0.0}
    return result


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder holding the scripts' relative paths, with embedded backends inside it."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MODEL_ARTIFACT_ROOT", str(tmp_path / "mlartifacts"))
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    return tmp_path


@pytest.fixture
def backends(workdir: Path) -> Backends:
    """The embedded backends of the working folder."""
    return Backends.from_env()
