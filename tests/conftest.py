"""Bake each configuration once per test session, and share its environment between tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cookiecutter.main import cookiecutter
from docker_engine import EngineUnavailable, start_engine

TEMPLATE_DIR = Path(__file__).resolve().parents[1]
TEMPLATE_JSON = json.loads((TEMPLATE_DIR / "cookiecutter.json").read_text())
BIN = Path(sys.executable).parent


def option_overrides() -> dict[str, dict]:
    """One-factor overrides: every non-default choice, every metric, and the s3 remote."""
    overrides: dict[str, dict] = {}
    for key, value in TEMPLATE_JSON.items():
        if isinstance(value, list) and not key.startswith("_"):
            for choice in value[1:]:
                overrides[f"{key}={choice}"] = {key: choice}
    overrides["data_remote=s3"] = {"data_remote": "s3", "s3_bucket": "ml-data"}
    for metric, spec in TEMPLATE_JSON["_metrics"].items():
        overrides.setdefault(
            f"primary_metric={metric}", {"task": spec["task"], "primary_metric": metric}
        )
    overrides["project_name=Fraud Score 2"] = {"project_name": "Fraud Score 2"}
    return overrides


CONFIGS = {"baseline": {}, **option_overrides()}


@pytest.fixture(scope="session")
def cookiecutter_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cookiecutter config that keeps replay files out of the home directory."""
    home = tmp_path_factory.mktemp("cookiecutter-home")
    config = home / "config.yaml"
    config.write_text(f"cookiecutters_dir: {home / 'templates'}\nreplay_dir: {home / 'replay'}\n")
    return config


@pytest.fixture(scope="session")
def bake(tmp_path_factory: pytest.TempPathFactory, cookiecutter_config: Path):
    """Return bake(config_id) -> project path, baking each configuration once per session."""
    baked: dict[str, Path] = {}

    def _bake(config_id: str) -> Path:
        if config_id not in baked:
            out = tmp_path_factory.mktemp(f"bake-{config_id.replace('=', '-').replace(' ', '_')}")
            baked[config_id] = Path(
                cookiecutter(
                    str(TEMPLATE_DIR),
                    no_input=True,
                    extra_context=CONFIGS[config_id],
                    output_dir=str(out),
                    config_file=str(cookiecutter_config),
                )
            )
        return baked[config_id]

    return _bake


def project_env(project: Path) -> dict[str, str]:
    """The environment a user has in a baked repo: no variables of the template's own venv."""
    # Bytecode caching on: without it every process recompiles MLflow (~6 s instead of ~2 s).
    # and no make variables of the `make test` that started these tests: a user's make is not
    # a sub-make (it would print "Entering directory" lines and inherit our flags).
    dropped = (
        "VIRTUAL_ENV",
        "PYTHONPATH",
        "PYTHONDONTWRITEBYTECODE",
        "MAKELEVEL",
        "MAKEFLAGS",
        "MFLAGS",
    )
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if Path(p) != BIN)
    env.update(DVC_NO_ANALYTICS="1", MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true")
    return env


def registry_state(project: Path) -> dict:
    """Versions, their tags and the champion, read with the baked repo's own MLflow."""
    script = (
        "import json, yaml; from mlflow import MlflowClient\n"
        "name = yaml.safe_load(open('params.yaml'))['model']['name']\n"
        "c = MlflowClient(tracking_uri='sqlite:///mlflow.db')\n"
        "vs = c.search_model_versions(f\"name='{name}'\")\n"
        "try: champion = str(c.get_model_version_by_alias(name, 'champion').version)\n"
        "except Exception: champion = None\n"
        "tags = {str(v.version): v.tags for v in vs}\n"
        "print(json.dumps({'champion': champion, 'versions': tags}))"
    )
    result = subprocess.run(
        [str(project / ".venv/bin/python"), "-c", script],
        cwd=project,
        env=project_env(project),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


GIT = ["git", "-c", "user.name=template tests", "-c", "user.email=tests@example.com"]


def git(project: Path, *args: str) -> str:
    """Run git in a working copy, as a user with a name; its output, failing with git's."""
    result = subprocess.run([*GIT, *args], cwd=project, capture_output=True, text=True)
    assert result.returncode == 0, f"git {' '.join(args)}: {result.stderr}"
    return result.stdout.strip()


def linked_copy(project: Path, destination: Path, *ignored: str) -> Path:
    """A copy of a baked repo at `destination` sharing its environment (.venv linked), without
    the `ignored` patterns, for tests that change its files or its state."""
    shutil.copytree(
        project, destination, symlinks=True, ignore=shutil.ignore_patterns(".venv", *ignored)
    )
    (destination / ".venv").symlink_to(project / ".venv")
    return destination


def run_tool(project: Path, *command: str) -> subprocess.CompletedProcess:
    """Run a linter or checker in a baked repo; the completed process, pass or fail."""
    return subprocess.run(command, cwd=project, capture_output=True, text=True, check=False)


def run_make(project: Path, *targets: str, env: dict | None = None, timeout: int = 900):
    """Run make targets in a baked repo as a user would; the completed process, pass or fail."""
    return subprocess.run(
        ["make", *targets],
        cwd=project,
        env=env or project_env(project),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def make(project: Path, *targets: str, env: dict | None = None, timeout: int = 900):
    """Run make targets in a baked repo, failing with the output when they fail."""
    result = run_make(project, *targets, env=env, timeout=timeout)
    if result.returncode != 0:
        pytest.fail(
            f"make {' '.join(targets)} exited {result.returncode} in {project}\n"
            f"--- stdout ---\n{result.stdout[-6000:]}\n--- stderr ---\n{result.stderr[-6000:]}"
        )
    return result


@pytest.fixture(scope="session")
def set_up(bake, tmp_path_factory: pytest.TempPathFactory):
    """Return set_up(config_id) -> a working copy of the bake with `make setup` done, once each.

    The copy keeps the pristine bake untouched for the file-set checks.
    """
    ready: dict[str, Path] = {}

    def _set_up(config_id: str) -> Path:
        if config_id not in ready:
            baked = bake(config_id)
            work = tmp_path_factory.mktemp(f"work-{baked.parent.name}") / baked.name
            shutil.copytree(baked, work, symlinks=True)
            make(work, "setup")
            ready[config_id] = work
        return ready[config_id]

    return _set_up


@pytest.fixture(scope="session")
def engine():
    """A private dockerd for the container tiers, stopped (with its containers) at the end.

    Skips, saying why, where none can start.
    """
    try:
        started = start_engine()
    except EngineUnavailable as err:
        pytest.skip(f"no container engine can start here: {err}")
    try:
        yield started
    finally:
        started.stop()
