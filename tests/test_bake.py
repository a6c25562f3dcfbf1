"""Every configuration bakes into exactly the expected files: rendered, lint-clean, valid."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import yaml
from conftest import CONFIGS, TEMPLATE_JSON, run_tool

RUFF = Path(sys.executable).with_name("ruff")
UV = Path(sys.executable).with_name("uv")
COMMON_FILES = {
    ".cookiecutter.json",
    ".dockerignore",
    ".dvc/.gitignore",
    ".dvc/config",
    ".dvcignore",
    ".github/dependabot.yml",
    ".github/workflows/ci.yml",
    ".github/workflows/deploy.yml",
    ".github/workflows/monitor.yml",
    ".github/workflows/retrain.yml",
    ".github/workflows/rollback.yml",
    ".gitignore",
    ".hadolint.yaml",
    "Dockerfile",
    "Makefile",
    "README.md",
    "bench/ceiling.py",
    "bench/load_test.py",
    "bench/locustfile.py",
    "dvc.yaml",
    "params.yaml",
    "pyproject.toml",
    "uv.lock",
    *(
        f"scripts/{name}.py"
        for name in (
            "bundle",
            "check_env",
            "evaluate",
            "get_data",
            "github_bodies",
            "history",
            "load_outcomes",
            "make_sample",
            "monitor",
            "predict",
            "promote",
            "record_deployment",
            "retrain_age",
            "rollback",
            "send_batch",
            "serve",
            "train",
            "version_data",
        )
    ),
    *(
        f"tests/{name}.py"
        for name in (
            "conftest",
            "test_data",
            "test_fast_path",
            "test_gate",
            "test_github_bodies",
            "test_monitoring",
            "test_params",
            "test_pipeline",
            "test_prediction_log",
            "test_sample",
            "test_server_process",
            "test_serving",
        )
    ),
}
PACKAGE_MODULES = {
    "__init__",
    "batches",
    "cli",
    "config",
    "data",
    "errors",
    "evaluation",
    "lineage",
    "metrics",
    "model",
    "modelfile",
    "plots",
    "profile",
    "promotion",
    "registry",
    "sample",
    "training",
}


MONITORING_MODULES = {
    "monitoring/__init__",
    "monitoring/bulk",
    "monitoring/drift",
    "monitoring/monitor",
    "monitoring/outcomes",
    "monitoring/prediction_log",
    "monitoring/report",
    "monitoring/rollups",
    "monitoring/sources",
    "monitoring/stats",
    "monitoring/tables",
}
SERVING_MODULES = {
    "serving/__init__",
    "serving/batcher",
    "serving/bundle",
    "serving/compiled",
    "serving/main",
    "serving/schema",
    "serving/server",
    "serving/service",
    "serving/telemetry",
    "serving/routers/__init__",
    "serving/routers/health",
    "serving/routers/metrics",
    "serving/routers/predict",
}


def expected_files(answers: dict) -> set[str]:
    """The exact file set a bake with these answers must have."""
    package = answers["__package_name"]
    modules = PACKAGE_MODULES | SERVING_MODULES | MONITORING_MODULES
    return COMMON_FILES | {f"src/{package}/{module}.py" for module in modules}


def baked_files(project: Path) -> set[str]:
    """Every file of a baked repo, outside .git."""
    return {
        p.relative_to(project).as_posix()
        for p in project.rglob("*")
        if p.is_file() and ".git" not in p.relative_to(project).parts[:1]
    }


def answers_of(project: Path) -> dict:
    """The answers the bake recorded."""
    return json.loads((project / ".cookiecutter.json").read_text())


each_config = pytest.mark.parametrize("config_id", list(CONFIGS))


@each_config
def test_bake_has_exact_file_set(bake, config_id):
    project = bake(config_id)
    assert baked_files(project) == expected_files(answers_of(project))


@each_config
def test_bake_leaves_no_unrendered_template_syntax(bake, config_id):
    project = bake(config_id)
    leftovers = [
        f"{name}: {match}"
        for name in sorted(baked_files(project))
        for match in re.findall(
            r"(?<!\$)\{\{[^}]*\}\}|\{%[^%]*%\}|\{#", (project / name).read_text(errors="replace")
        )
    ]
    assert leftovers == []


@each_config
def test_bake_is_ruff_clean(bake, config_id):
    project = bake(config_id)
    result = run_tool(project, str(RUFF), "check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr
    formatted = run_tool(project, str(RUFF), "format", "--check", "--no-cache", ".")
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr


@each_config
def test_bake_yaml_files_parse(bake, config_id):
    project = bake(config_id)
    documents = [p for p in project.rglob("*") if p.suffix in (".yml", ".yaml")]
    assert (
        project / "params.yaml" in documents and project / ".github/workflows/ci.yml" in documents
    )
    for path in documents:
        assert isinstance(yaml.safe_load(path.read_text()), dict), f"{path} is not a mapping"


@each_config
def test_bake_records_answers_and_carries_them_into_params(bake, config_id):
    project = bake(config_id)
    answers = answers_of(project)
    for key, value in CONFIGS[config_id].items():
        assert answers[key] == value
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["model"] == {"name": answers["__project_slug"], "task": answers["task"]}
    assert params["data"]["target"] == answers["target_column"]
    assert params["promote"] == {
        "metric": answers["primary_metric"],
        "threshold": float(answers["promotion_threshold"]),
        "min_improvement": float(answers["min_improvement"]),
    }


@each_config
def test_bake_lock_matches_pyproject(bake, config_id):
    project = bake(config_id)
    result = run_tool(project, str(UV), "lock", "--check", "--offline")
    assert result.returncode == 0, result.stderr


@each_config
def test_bake_dvc_remote_follows_answer(bake, config_id):
    project = bake(config_id)
    answers = answers_of(project)
    config = (project / ".dvc" / "config").read_text()
    prefix = f"{answers['s3_prefix']}/" if answers["s3_prefix"] else ""
    expected = (
        f"s3://{answers['s3_bucket']}/{prefix}dvc"
        if answers["data_remote"] == "s3"
        else "../.dvc-storage"
    )
    assert f"url = {expected}\n" in config


def test_option_matrix_covers_every_choice():
    choices = {
        k: v for k, v in TEMPLATE_JSON.items() if isinstance(v, list) and not k.startswith("_")
    }
    covered = {f"{k}={c}" for k, options in choices.items() for c in options[1:]}
    assert covered <= set(CONFIGS)
