"""Configuration: params.yaml sections and the environment. No other module reads either."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from .errors import PipelineError

PARAMS_FILE = Path("params.yaml")
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_ARTIFACT_ROOT = "mlartifacts"
DEFAULT_MONITORING_URL = "sqlite:///monitoring.db"


def load_params(path: Path = PARAMS_FILE) -> dict[str, Any]:
    """Read params.yaml, refusing a missing or malformed file."""
    try:
        params = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError as err:
        raise PipelineError(f"{path} not found: run from the repository root") from err
    except yaml.YAMLError as err:
        raise PipelineError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(params, dict):
        raise PipelineError(f"{path} must hold a mapping of sections, got {type(params).__name__}")
    return params


def section(name: str, path: Path = PARAMS_FILE) -> dict[str, Any]:
    """Return one section of params.yaml, refusing a missing one."""
    params = load_params(path)
    if not isinstance(params.get(name), dict):
        raise PipelineError(f"{path} has no '{name}:' section; see the README for its keys")
    return params[name]


def artifact_root(configured: str | None, tracking_uri: str) -> str | None:
    """Where model artifacts go: a URI (s3://, mlflow-artifacts:/, file://) or a local folder.

    Unset with an MLflow server means the server's own artifact store (None); unset otherwise
    means the embedded ./mlartifacts folder.
    """
    if not configured:
        if urlparse(tracking_uri).scheme in ("http", "https"):
            return None
        configured = DEFAULT_ARTIFACT_ROOT
    if len(urlparse(configured).scheme) >= 2:  # a URI; one letter would be a Windows drive
        return configured
    return Path(configured).resolve().as_uri()


@dataclass(frozen=True)
class Backends:
    """Where MLflow state and source data live, from environment variables."""

    tracking_uri: str
    registry_uri: str | None
    artifact_root: str | None
    source_database_url: str | None
    monitoring_database_url: str

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Backends:
        """Read the backends from the environment, with the embedded defaults."""
        env = os.environ if env is None else env
        tracking = env.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
        return cls(
            tracking_uri=tracking,
            registry_uri=env.get("MLFLOW_REGISTRY_URI") or None,
            artifact_root=artifact_root(env.get("MODEL_ARTIFACT_ROOT"), tracking),
            source_database_url=env.get("SOURCE_DATABASE_URL") or None,
            monitoring_database_url=env.get("MONITORING_DATABASE_URL") or DEFAULT_MONITORING_URL,
        )


def _number(env: dict[str, str], name: str, default: float, kind=int, minimum: float = 0):
    """A numeric environment variable, refusing text and values below `minimum`."""
    raw = env.get(name)
    if raw in (None, ""):
        return kind(default)
    try:
        value = kind(raw)
    except ValueError as err:
        raise PipelineError(f"{name}={raw!r} is not a {kind.__name__}") from err
    if value < minimum:
        raise PipelineError(f"{name}={raw!r} must be at least {minimum}")
    return value


def _switch(env: dict[str, str], name: str, default: bool) -> bool:
    """An on/off environment variable, refusing anything but 1/0, true/false, on/off."""
    raw = (env.get(name) or "").strip().lower()
    if raw in ("", "1", "true", "on", "0", "false", "off"):
        return default if raw == "" else raw in ("1", "true", "on")
    raise PipelineError(f"{name}={env[name]!r} must be one of 1/0, true/false, on/off")


@dataclass(frozen=True)
class ServeSettings:
    """The prediction service's knobs, from environment variables (documented in the README)."""

    bundle_dir: Path
    max_records: int
    max_body_bytes: int
    max_in_flight: int
    predict_timeout: float
    max_batch_rows: int
    fast_path: bool
    prediction_log: bool
    monitoring_database_url: str
    spool_dir: Path
    spool_cap_bytes: int

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> ServeSettings:
        """Read the settings, refusing values that are not positive numbers."""
        env = os.environ if env is None else env
        return cls(
            bundle_dir=Path(env.get("MODEL_BUNDLE_DIR") or "build/model"),
            max_records=_number(env, "SERVE_MAX_RECORDS", 1000, minimum=1),
            max_body_bytes=_number(env, "SERVE_MAX_BODY_BYTES", 1 << 20, minimum=1024),
            max_in_flight=_number(env, "SERVE_MAX_IN_FLIGHT", 256, minimum=1),
            predict_timeout=_number(env, "SERVE_PREDICT_TIMEOUT_SECONDS", 5.0, float, 0.001),
            max_batch_rows=_number(env, "SERVE_MAX_BATCH_ROWS", 2048, minimum=1),
            fast_path=_switch(env, "SERVE_FAST_PATH", True),
            prediction_log=_switch(env, "PREDICTION_LOG", True),
            monitoring_database_url=env.get("MONITORING_DATABASE_URL") or DEFAULT_MONITORING_URL,
            spool_dir=Path(env.get("PREDICTION_LOG_SPOOL_DIR") or "build/prediction-log-spool"),
            spool_cap_bytes=_number(env, "PREDICTION_LOG_SPOOL_CAP_BYTES", 256 << 20, minimum=1),
        )
