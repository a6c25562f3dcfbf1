"""The baked pipeline on its production backends, chosen by environment variables only.

One repo baked with the S3 data remote runs the lifecycle in file order against a throwaway
PostgreSQL (MLflow tracking and registry) and a moto S3 bucket (model artifacts and DVC remote):
first pipeline, unchanged second pipeline, an MLflow server as tracking URI, serving the
champion, and rollback. mlflow is read through the baked repo's own interpreter.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest
import services
import yaml
from conftest import CONFIGS, TEMPLATE_DIR, make, project_env, run_make
from cookiecutter.main import cookiecutter

pytestmark = [pytest.mark.services, pytest.mark.lifecycle]

CONFIG_ID = "data_remote=s3"
BUCKET = "ml-data"
DVC_FILES = "churn-model/dvc/files/md5/"
LINEAGE = ("data.content_hash", "data.dvc_md5", "git.commit", "run_id", "trained_at")
MODEL_FILES = {"MLmodel", "model.skops", "requirements.txt", "input_example.json"}
ROLLBACK_REASON = "backends test: back to v1"

# Every version of a registered model with its tags, aliases and run artifact URI, as JSON.
VERSIONS = """
import json, sys
from mlflow import MlflowClient
client, name, out = MlflowClient(), sys.argv[1], {}
for found in client.search_model_versions(f"name='{name}'"):
    v = client.get_model_version(name, found.version)
    run = client.get_run(v.run_id)
    out[v.version] = {"tags": v.tags, "aliases": sorted(v.aliases), "source": v.source,
                      "run_id": v.run_id, "artifact_uri": run.info.artifact_uri}
print(json.dumps(out))
"""

# The first rows of the dataset's feature columns, as a pandas "split" payload.
ROWS = """
import sys, pandas as pd, yaml
features = list(yaml.safe_load(open("params.yaml"))["data"]["features"])
rows = pd.read_parquet("data/dataset.parquet")[features].head(int(sys.argv[1]))
print(rows.to_json(orient="split", index=False))
"""


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, cookiecutter_config: Path) -> Path:
    """A private bake with the S3 data remote, with `make setup` done.

    Not the session's shared bake: this module runs before test_bake.py, which checks that
    bake's exact file set, and the pipeline adds a venv, data, reports and dvc.lock to it.
    """
    out = tmp_path_factory.mktemp("backends")
    answers = {"extra_context": CONFIGS[CONFIG_ID], "config_file": str(cookiecutter_config)}
    project = Path(cookiecutter(str(TEMPLATE_DIR), no_input=True, output_dir=str(out), **answers))
    make(project, "setup", env=baked_env(project))
    return project


@pytest.fixture(scope="module")
def postgres_url(tmp_path_factory: pytest.TempPathFactory):
    """A throwaway PostgreSQL server, stopped after the module."""
    with services.postgres_server(tmp_path_factory.mktemp("postgres")) as url:
        yield url


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory):
    """A moto S3 endpoint holding the bucket of the bake, stopped after the module."""
    with services.s3_server(tmp_path_factory.mktemp("s3")) as endpoint:
        endpoint.create_bucket(BUCKET)
        yield endpoint


@pytest.fixture(scope="module")
def prod_env(project: Path, postgres_url: str, s3: services.S3Endpoint) -> dict[str, str]:
    """The README's production settings: registry in PostgreSQL, artifacts in S3."""
    return {
        **baked_env(project),
        **s3.env(),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        "MLFLOW_TRACKING_URI": services.create_database(postgres_url, "registry"),
        "MODEL_ARTIFACT_ROOT": f"s3://{BUCKET}/mlartifacts",
    }


@pytest.fixture(scope="module")
def first_run(project: Path, prod_env: dict[str, str]) -> subprocess.CompletedProcess:
    """`make pipeline` on empty backends."""
    return make(project, "pipeline", env=prod_env)


@pytest.fixture(scope="module")
def second_run(project: Path, prod_env: dict[str, str], first_run) -> subprocess.CompletedProcess:
    """`make pipeline` again, with nothing changed."""
    return make(project, "pipeline", env=prod_env)


# --------------------------------------------------------------------------- helpers


def baked_env(project: Path) -> dict[str, str]:
    """A user's environment in the repo, caching bytecode (each script imports mlflow)."""
    env = project_env(project)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def params(project: Path) -> dict:
    """The baked repo's params.yaml."""
    return yaml.safe_load((project / "params.yaml").read_text())


def report(project: Path, name: str) -> dict:
    """One of the JSON reports the pipeline wrote."""
    return json.loads((project / "reports" / name).read_text())


def with_venv(project: Path, env: dict[str, str]) -> dict[str, str]:
    """`env` with the repo's .venv/bin first on PATH, as the Makefile runs every step."""
    return {**env, "PATH": f"{project / '.venv/bin'}:{env['PATH']}"}


def run_ok(project: Path, env: dict[str, str], *cmd: str) -> subprocess.CompletedProcess:
    """Run `cmd` in the repo with its venv on PATH, failing with the output if it fails."""
    done = subprocess.run(
        cmd,
        cwd=project,
        env=with_venv(project, env),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, (
        f"{' '.join(cmd)} exited {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    )
    return done


def project_json(project: Path, env: dict[str, str], script: str, *args: str):
    """Run `script` with the repo's interpreter and parse the JSON of its last stdout line."""
    done = run_ok(project, env, str(project / ".venv/bin/python"), "-c", script, *args)
    return json.loads(done.stdout.strip().splitlines()[-1])


def versions(project: Path, env: dict[str, str]) -> dict[str, dict]:
    """Every registered version of the repo's model on the backends of `env`."""
    return project_json(project, env, VERSIONS, params(project)["model"]["name"])


def force_retrain(project: Path, env: dict[str, str]) -> dict:
    """Re-run train and evaluate whatever DVC thinks, then the gate; return its decision."""
    run_ok(project, env, ".venv/bin/dvc", "repro", "--force", "--single-item", "train", "evaluate")
    run_ok(project, env, ".venv/bin/python", "scripts/promote.py")
    return report(project, "promotion.json")


def bucket_keys(s3: services.S3Endpoint, prefix: str) -> list[str]:
    """Every key of the bucket under `prefix`."""
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def file_md5(path: Path) -> str:
    """The md5 of a file's bytes, as DVC records it."""
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def git_head(project: Path) -> str:
    """The commit checked out, or "none" in a repo without commits (as lineage records it)."""
    done = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True, check=False
    )
    return done.stdout.strip() if done.returncode == 0 else "none"


def serve_command(project: Path, port: int) -> list[str]:
    """`mlflow models serve` of the champion, in the repo's own environment."""
    model = f"models:/{params(project)['model']['name']}@champion"
    options = f"--env-manager local --host {services.HOST} --port {port}".split()
    return [str(project / ".venv/bin/mlflow"), "models", "serve", "-m", model, *options]


def post_json(url: str, payload: dict) -> dict:
    """POST `payload` as JSON and return the JSON answer."""
    body, headers = json.dumps(payload).encode(), {"Content-Type": "application/json"}
    request = urllib.request.Request(url, data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def assert_lineage(version: dict, train: dict) -> None:
    """The version's tags carry the lineage of the training run in reports/train.json."""
    tags = version["tags"]
    assert [name for name in LINEAGE if not tags.get(name)] == []
    assert tags["run_id"] == version["run_id"] == train["run_id"]
    assert tags["data.content_hash"] == train["data_hash"]
    assert datetime.fromisoformat(tags["trained_at"]).tzinfo is not None
    validation = train["validation_metrics"].items()
    metrics = {f"metrics.validation.{k}": f"{v:.6g}" for k, v in validation}
    assert metrics
    assert {name: tags.get(name) for name in metrics} == metrics


def assert_model_files(keys: list[str], version: dict) -> None:
    """The bucket keys hold the version's MLflow model and its run's training profile."""
    model_id = version["source"].rsplit("/", 1)[-1]
    files = {key.rsplit("/", 1)[-1] for key in keys if f"/{model_id}/artifacts/" in key}
    assert files >= MODEL_FILES, keys
    profile = f"/{version['run_id']}/artifacts/training_profile.json"
    assert any(key.endswith(profile) for key in keys), keys


# --------------------------------------------------------------------------- the lifecycle


def test_first_pipeline_promotes_v1_with_lineage_in_postgres_and_s3(
    project: Path, prod_env: dict[str, str], s3: services.S3Endpoint, first_run
) -> None:
    """v1 is registered in PostgreSQL with its lineage; model and data versions land in S3."""
    assert report(project, "promotion.json")["decision"] == "promoted"
    found = versions(project, prod_env)
    assert list(found) == ["1"]
    v1 = found["1"]
    assert v1["aliases"] == ["champion"]
    assert_lineage(v1, report(project, "train.json"))
    md5 = file_md5(project / "data/dataset.parquet")
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert v1["tags"]["data.dvc_md5"] == md5 == lock["stages"]["data"]["outs"][0]["md5"]
    assert v1["tags"]["data.content_hash"] == report(project, "data.json")["content_hash"]
    assert v1["tags"]["git.commit"] == git_head(project)
    assert v1["artifact_uri"].startswith(f"s3://{BUCKET}/mlartifacts/")
    assert_model_files(bucket_keys(s3, "mlartifacts/"), v1)
    assert f"{DVC_FILES}{md5[:2]}/{md5[2:]}" in bucket_keys(s3, DVC_FILES)


def test_second_pipeline_retrains_nothing(
    project: Path, prod_env: dict[str, str], second_run
) -> None:
    """Unchanged data, code and params: no training, no new version, the champion stays."""
    assert "Stage 'train' didn't change" in second_run.stdout
    assert "Stage 'evaluate' didn't change" in second_run.stdout
    promotion = report(project, "promotion.json")
    assert (promotion["decision"], promotion["reason"]) == (
        "unchanged",
        "version 1 is already the champion",
    )
    found = versions(project, prod_env)
    assert list(found) == ["1"]
    assert found["1"]["aliases"] == ["champion"]


def test_mlflow_server_as_tracking_uri_proxies_artifacts_to_s3(
    project: Path,
    prod_env: dict[str, str],
    postgres_url: str,
    s3: services.S3Endpoint,
    first_run,
    tmp_path: Path,
) -> None:
    """With a server URL and no MODEL_ARTIFACT_ROOT, the server registers and stores the model."""
    backend = services.create_database(postgres_url, "server")
    python = str(project / ".venv/bin/python")
    destination = f"s3://{BUCKET}/server-artifacts"
    server_env = {**s3.env(), "PYTHONDONTWRITEBYTECODE": ""}  # empty: bytecode is cached
    with services.mlflow_server(backend, destination, python, server_env, workdir=tmp_path) as url:
        env = {k: v for k, v in prod_env.items() if k != "MODEL_ARTIFACT_ROOT"}
        env["MLFLOW_TRACKING_URI"] = url
        promotion = force_retrain(project, env)
        found = versions(project, env)
    assert promotion["decision"] == "promoted"
    assert list(found) == ["1"]
    assert found["1"]["aliases"] == ["champion"]
    assert_lineage(found["1"], report(project, "train.json"))
    uri = found["1"]["artifact_uri"]
    assert uri.startswith("mlflow-artifacts:/"), f"artifacts bypassed the server: {uri}"
    assert_model_files(bucket_keys(s3, "server-artifacts/"), found["1"])


def test_an_artifact_root_in_a_bucket_the_store_lacks_is_refused_before_the_fit(
    project: Path, prod_env: dict[str, str], postgres_url: str, first_run, tmp_path: Path
) -> None:
    """A first run on a misspelt bucket stops in seconds, and creates no experiment that would
    keep the wrong root for good."""
    env = {
        **prod_env,
        "MLFLOW_TRACKING_URI": services.create_database(postgres_url, "misspelt"),
        "MODEL_ARTIFACT_ROOT": "s3://no-such-bucket/mlartifacts",
    }
    command = [".venv/bin/python", "scripts/train.py", "--report", str(tmp_path / "train.json")]
    done = subprocess.run(
        command, cwd=project, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "names the bucket 'no-such-bucket', which the S3 store does not have" in done.stderr
    assert "Traceback" not in done.stderr
    experiments = project_json(
        project,
        env,
        "from mlflow import MlflowClient; import json; "
        "print(json.dumps([e.name for e in MlflowClient().search_experiments()]))",
    )
    assert params(project)["model"]["name"] not in experiments


def test_champion_is_a_standard_mlflow_model_that_serves(
    project: Path, prod_env: dict[str, str], first_run, tmp_path: Path
) -> None:
    """`mlflow models serve` loads the champion from PostgreSQL and S3 and predicts each row."""
    rows = project_json(project, prod_env, ROWS, "3")
    port, log, env = services.free_port(), tmp_path / "serve.log", with_venv(project, prod_env)
    url = f"http://{services.HOST}:{port}"
    with services.running_process(serve_command(project, port), log, env=env, cwd=project) as proc:
        with services.explain_failure("mlflow models serve", log):
            services.wait_until(
                lambda: services.http_status(f"{url}/ping", proc) == 200, 120, "/ping of the server"
            )
        predictions = post_json(f"{url}/invocations", {"dataframe_split": rows})["predictions"]
    assert len(rows["data"]) == 3
    assert len(predictions) == 3
    classes = params(project)["data"]["target_classes"]
    assert classes is None or set(predictions) <= set(classes)


def test_rollback_moves_champion_back_on_production_backends(
    project: Path, prod_env: dict[str, str], first_run
) -> None:
    """A tie promotes v2; `make rollback` restores v1 and records why; v1 again is refused."""
    assert float(params(project)["promote"]["min_improvement"]) == 0  # so a tie passes the gate
    promotion = force_retrain(project, prod_env)
    assert (promotion["decision"], promotion["candidate"]["version"]) == ("promoted", "2")
    make(project, "rollback", f"REASON={ROLLBACK_REASON}", env=prod_env)
    rolled = report(project, "rollback.json")
    assert (rolled["from_version"], rolled["to_version"], rolled["moved"]) == ("2", "1", True)
    found = versions(project, prod_env)
    assert (found["1"]["aliases"], found["2"]["aliases"]) == (["champion"], [])
    assert found["1"]["tags"]["rollback_reason"] == ROLLBACK_REASON
    assert found["1"]["tags"]["rolled_back_from"] == "2"
    assert found["1"]["tags"]["previous_champion"] == "none"  # as when v1 was first promoted
    assert found["2"]["tags"]["previous_champion"] == "1"
    refused = run_make(project, "rollback", "VERSION=1", env=prod_env, timeout=300)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "version 1 is already the champion" in refused.stderr
    assert "] Error 1" in refused.stderr  # the script's own exit code: a failed step
