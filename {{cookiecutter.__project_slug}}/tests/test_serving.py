"""The prediction service in-process: readiness, contract, validation, limits, batching, fuzz.

Each test starts the app with its lifespan (so the bundle loads and the batcher runs) on an
event loop of its own, and talks to it through httpx's ASGI transport: no network, no process.
"""

from __future__ import annotations

import asyncio
import copy
import gc
import gzip
import json
import math
import os
import re
import shutil
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import httpx
import pandas as pd
import pytest
import skops.io
import sqlalchemy as sa
import yaml
from conftest import PAYLOAD_TYPE, Payload, load_script, predict_as_served
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from {{ cookiecutter.__package_name }} import modelfile
from {{ cookiecutter.__package_name }}.config import ServeSettings
from {{ cookiecutter.__package_name }}.data import feature_frame
from {{ cookiecutter.__package_name }}.errors import PipelineError
from {{ cookiecutter.__package_name }}.monitoring.tables import prediction_log
from {{ cookiecutter.__package_name }}.serving import bundle as bundles
from {{ cookiecutter.__package_name }}.serving import service as service_module
from {{ cookiecutter.__package_name }}.serving.main import create_app
from {{ cookiecutter.__package_name }}.serving.routers import predict
from {{ cookiecutter.__package_name }}.serving.routers.predict import new_request_id
from {{ cookiecutter.__package_name }}.serving.schema import (
    BOOLEAN_VALUES,
    SCALAR_LABELS,
    SCALAR_VALUES,
    WHOLE_NUMBERS,
    Version,
    request_model,
)
from {{ cookiecutter.__package_name }}.serving.telemetry import Telemetry

CANARY = "zq-canary-7431"  # sent as a value; an error body must never echo it back
MODEL_CALL = {"classification": "predict_proba", "regression": "predict"}  # what the service calls


class Live:
    """The app on its own event loop, and an httpx client reaching it through ASGI."""

    def __init__(self, app) -> None:
        self.app, self.service = app, app.state.service
        self.runner = asyncio.Runner()
        transport = httpx.ASGITransport(app=app)
        self.client = httpx.AsyncClient(transport=transport, base_url="http://test")
        self.lifespan = None

    def start(self) -> Live:
        """Run the app's startup: load and verify the bundle, start the batcher."""
        self.lifespan = self.app.router.lifespan_context(self.app)
        self.run(self.lifespan.__aenter__())
        return self

    def close(self) -> None:
        """Run the app's shutdown and close the loop."""
        if self.lifespan is not None:
            self.run(self.lifespan.__aexit__(None, None, None))
        self.run(self.client.aclose())
        self.runner.close()

    def run(self, coroutine):
        """Run a coroutine on the app's loop."""
        return self.runner.run(coroutine)

    def get(self, path: str) -> httpx.Response:
        """GET a path."""
        return self.run(self.client.get(path))

    def predict(self, body) -> httpx.Response:
        """POST /predict with a body: bytes as they are, anything else as JSON."""
        return self.run(post(self.client, body))


async def post(client: httpx.AsyncClient, body) -> httpx.Response:
    """POST /predict with bytes as they are, or anything else as JSON."""
    if isinstance(body, bytes):
        headers = {"content-type": "application/json"}
        return await client.post("/predict", content=body, headers=headers)
    return await client.post("/predict", json=body)


@pytest.fixture
def serve(exported_model, tmp_path):
    """Start the app: `serve()`, `serve(SERVE_MAX_IN_FLIGHT="1")`, `serve(folder, load=False)`.

    Its prediction log goes to the test's own folder, never to the repository's monitoring.db.
    """
    with ExitStack() as stack:

        def start(bundle_dir: Path | None = None, load: bool = True, **env: str) -> Live:
            env["MODEL_BUNDLE_DIR"] = str(bundle_dir or exported_model.path)
            env.setdefault("MONITORING_DATABASE_URL", f"sqlite:///{tmp_path / 'monitoring.db'}")
            env.setdefault("PREDICTION_LOG_SPOOL_DIR", str(tmp_path / "spool"))
            live = Live(create_app(ServeSettings.from_env(env)))
            stack.callback(live.close)
            return live.start() if load else live

        yield start


@pytest.fixture
def live(serve) -> Live:
    """The app with default settings and the exported model loaded."""
    return serve()


def pipeline_model(monkeypatch, live: Live):
    """The loaded model, with the service predicting through it: the fast path off."""
    monkeypatch.setattr(live.service, "fast_path", None)
    monkeypatch.setattr(live.service.batcher, "inline_rows", 0)
    return live.service.bundle.model


def slow_model(monkeypatch, live: Live, task: str, seconds: float, calls: list | None = None):
    """Make the service's model call sleep first, recording each call's row count."""
    model = pipeline_model(monkeypatch, live)
    original = getattr(model, MODEL_CALL[task])

    def slow(frame):
        if calls is not None:
            calls.append(len(frame))
        time.sleep(seconds)
        return original(frame)

    monkeypatch.setattr(model, MODEL_CALL[task], slow)


def assert_clean_error(response: httpx.Response, status: int) -> dict:
    """The status, a request id, no traceback and no echo of the input; the body."""
    assert response.status_code == status, response.text
    body = response.json()
    assert len(body["request_id"]) == 32
    assert response.headers["x-request-id"] == body["request_id"]
    assert "Traceback" not in response.text
    assert CANARY not in response.text
    return body


def assert_predictions_match_model(answer: dict, exported_model, rows) -> None:
    """The service's predictions are the exported model's own, row for row."""
    frame = exported_model.frame.iloc[rows]
    model = bundles.load(exported_model.path).model
    predictions = answer["predictions"]
    assert len(predictions) == len(frame)
    if exported_model.task == "regression":
        expected = model.predict(frame).tolist()
        assert [p["prediction"] for p in predictions] == pytest.approx(expected, rel=1e-9)
        assert all(p.get("probabilities") is None for p in predictions)
        return
    assert [p["prediction"] for p in predictions] == model.predict(frame).tolist()
    classes = [str(c) for c in model.classes_]
    for prediction, row in zip(predictions, model.predict_proba(frame), strict=True):
        assert list(prediction["probabilities"]) == classes
        assert list(prediction["probabilities"].values()) == pytest.approx(row.tolist())
        assert sum(prediction["probabilities"].values()) == pytest.approx(1.0)


# --- Health, readiness, version, metrics, docs ------------------------------------------------


def test_ready_only_once_the_model_is_loaded(serve, exported_model, monkeypatch):
    live = serve(load=False)
    health = live.get("/health")
    assert (health.status_code, health.json()) == (200, {"status": "alive"})
    before = live.get("/ready")
    assert before.status_code == 503
    assert before.json() == {"status": "not ready", "reason": "loading"}
    refused = live.predict({"records": exported_model.records[:1]})
    assert assert_clean_error(refused, 503)["detail"] == "model not ready: loading"
    assert refused.headers["Retry-After"] == "1"
    assert live.run(live.client.head("/ready")).status_code == 503
    live.start()
    after = live.get("/ready")
    ready = {"status": "ready", "model_name": "test-model", "model_version": "1"}
    assert (after.status_code, after.json()) == (200, ready)
    # Load balancers' health checks may use HEAD.
    assert [live.run(live.client.head(p)).status_code for p in ("/health", "/ready")] == [200, 200]
    # Told to stop: requests still arriving on open connections learn why.
    draining = type(service_module.DRAINING)()
    draining.set()
    monkeypatch.setattr(service_module, "DRAINING", draining)
    assert live.get("/ready").json() == {"status": "not ready", "reason": "shutting down"}
    refused = live.predict({"records": exported_model.records[:1]})
    assert assert_clean_error(refused, 503)["detail"] == "model not ready: shutting down"


def test_startup_freezes_the_loaded_model_out_of_the_garbage_collector(serve):
    gc.unfreeze()
    serve()
    # The model, its libraries and the app: far more objects than any request creates.
    assert gc.get_freeze_count() > 50_000


def tampered_copy(exported_model, tmp_path: Path) -> Path:
    """A copy of the bundle whose model file has one byte flipped."""
    folder = Path(shutil.copytree(exported_model.path, tmp_path / "bundle"))
    meta = json.loads((folder / bundles.META_FILE).read_text())
    model_file = folder / "model" / meta["model_file"]
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_file.write_bytes(bytes(data))
    return folder


def test_tampered_model_file_leaves_the_service_up_but_not_ready(
    serve, exported_model, tmp_path, caplog
):
    live = serve(tampered_copy(exported_model, tmp_path))
    ready = live.get("/ready")
    assert ready.status_code == 503
    assert "does not match the sha256" in ready.json()["reason"]
    assert "NOT READY" in caplog.text and "sha256" in caplog.text
    assert live.get("/health").status_code == 200
    version = assert_clean_error(live.get("/version"), 503)["detail"]
    assert version.startswith("no model served: ") and "sha256" in version
    refused = live.predict({"records": exported_model.records[:1]})
    said = assert_clean_error(refused, 503)["detail"]
    assert said == f"model not ready: {ready.json()['reason']}"
    assert "Retry-After" not in refused.headers, "a failed load is not retried"


@pytest.mark.parametrize("where", ["under a file", "refusing new files"])
def test_a_spool_folder_that_cannot_be_made_or_written_leaves_the_service_not_ready(
    serve, tmp_path, where
):
    (tmp_path / "a-file").write_text("")
    # procfs refuses new files even to root, as a read-only mount would.
    folder = tmp_path / "a-file" / "spool" if where == "under a file" else Path("/proc/self")
    live = serve(PREDICTION_LOG_SPOOL_DIR=str(folder))
    ready = live.get("/ready")
    assert ready.status_code == 503
    assert f"spool folder {folder} cannot be used" in ready.json()["reason"]
    assert "PREDICTION_LOG_SPOOL_DIR" in ready.json()["reason"]
    assert live.get("/health").status_code == 200


def test_a_worker_restarted_after_the_bundle_changed_serves_nothing(
    serve, exported_model, monkeypatch
):
    """The supervisor pins the bundle it started with; a worker it restarts after `make bundle`
    rewrote the folder must not serve another version beside the other workers."""
    from {{ cookiecutter.__package_name }}.serving import server

    monkeypatch.setenv("MODEL_BUNDLE_DIR", str(exported_model.path))
    monkeypatch.delenv(server.PINNED_SHA256, raising=False)
    server.pin_bundle()
    meta = json.loads((exported_model.path / bundles.META_FILE).read_text())
    assert os.environ[server.PINNED_SHA256] == meta["sha256"]
    assert serve(exported_model.path).get("/ready").status_code == 200
    monkeypatch.setenv(server.PINNED_SHA256, "0" * 64)  # the folder now holds another model
    ready = serve(exported_model.path).get("/ready")
    assert ready.status_code == 503
    assert "changed since the service started (it now holds v1)" in ready.json()["reason"]


def test_bundle_without_its_metadata_is_not_ready(serve, exported_model, tmp_path):
    folder = Path(shutil.copytree(exported_model.path, tmp_path / "bundle"))
    (folder / bundles.META_FILE).unlink()
    ready = serve(folder).get("/ready")
    assert ready.status_code == 503
    assert "no readable model bundle" in ready.json()["reason"]
    assert bundles.META_FILE in ready.json()["reason"]


def test_a_bundle_cannot_widen_the_types_model_py_trusts(serve, exported_model, tmp_path):
    """Whoever can write a bundle can recompute its sha256 and list any type in bundle.json
    (bundles before this one kept a trusted_types list there): the code alone says what loads."""
    folder = Path(shutil.copytree(exported_model.path, tmp_path / "bundle"))
    meta = json.loads((folder / bundles.META_FILE).read_text())
    model_file = folder / "model" / meta["model_file"]
    marker = tmp_path / "ran"
    skops.io.dump(Payload(marker), model_file)
    meta.update(sha256=bundles.sha256(model_file), trusted_types=[PAYLOAD_TYPE])
    (folder / bundles.META_FILE).write_text(json.dumps(meta))
    with pytest.raises(modelfile.Unloadable, match=rf"does not list: \['{PAYLOAD_TYPE}'\]"):
        bundles.load(folder)
    ready = serve(folder).get("/ready")
    assert ready.status_code == 503 and PAYLOAD_TYPE in ready.json()["reason"]
    assert not marker.exists(), "the tampered bundle ran code"
    skops.io.load(model_file, trusted=[PAYLOAD_TYPE])
    assert marker.exists(), "the payload is live: trusting its type runs it"


def test_bundle_holding_a_class_renamed_since_names_the_fix(exported_model, tmp_path, monkeypatch):
    """A model whose class model.py no longer has by that name: not a trust problem."""
    import importlib
    import sys

    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = tmp_path / "custom_steps.py"
    module.write_text("class RatioFeatures:\n    pass\n")
    importlib.invalidate_caches()
    steps = importlib.import_module("custom_steps")
    folder = Path(shutil.copytree(exported_model.path, tmp_path / "bundle"))
    meta = json.loads((folder / bundles.META_FILE).read_text())
    model_file = folder / "model" / meta["model_file"]
    skops.io.dump(steps.RatioFeatures(), model_file)
    meta.update(sha256=bundles.sha256(model_file))
    (folder / bundles.META_FILE).write_text(json.dumps(meta))
    monkeypatch.setattr(modelfile, "TRUSTED_TYPES", ["custom_steps.RatioFeatures"])
    module.write_text("class RatioTransformer:\n    pass\n")  # renamed, no alias kept
    monkeypatch.delitem(sys.modules, "custom_steps")
    importlib.invalidate_caches()
    with pytest.raises(PipelineError) as failed:
        bundles.load(folder)
    said = str(failed.value)
    assert "cannot be loaded by this code (AttributeError" in said
    assert "keep the old name importable there (OldName = NewName)" in said
    assert "TRUSTED_TYPES" not in said


def test_version_names_the_model_and_its_lineage(live, exported_model):
    tags = exported_model.tags
    response = live.get("/version")
    assert response.status_code == 200
    assert response.json() == {
        "model_name": "test-model",
        "model_version": "1",
        "task": exported_model.task,
        "data_hash": tags["data.content_hash"],
        "git_commit": tags["git.commit"],
        "trained_at": tags["trained_at"],
        "promoted_at": tags["promoted_at"],
        "rolled_back_at": None,
        "rollback_reason": None,
        "run_id": tags["run_id"],
    }
    assert all(v for k, v in response.json().items() if not k.startswith("roll")), "all known"


def test_metrics_count_requests_latency_predictions_and_model(live, exported_model):
    answer = live.predict({"records": exported_model.records[:4]}).json()
    assert live.predict(b"{").status_code == 422
    lines = set(live.get("/metrics").text.splitlines())
    assert 'http_requests_total{path="/predict",status="200"} 1' in lines
    assert 'http_requests_total{path="/predict",status="422"} 1' in lines
    assert 'predict_latency_seconds_bucket{le="+Inf"} 2' in lines
    assert "predict_latency_seconds_count 2" in lines
    assert 'model_info{name="test-model",version="1"} 1' in lines
    if exported_model.task == "classification":
        counted = Counter(str(p["prediction"]) for p in answer["predictions"])
        expected = {'predictions_total{class="' + c + '"} ' + str(n) for c, n in counted.items()}
        assert expected <= lines
    else:
        assert "prediction_value_count 4" in lines
        assert 'prediction_value_bucket{le="+Inf"} 4' in lines
    assert_exposition_format(live.get("/metrics").text)


def assert_exposition_format(text: str) -> None:
    """Prometheus' text format, as `promtool check metrics` reads it: every family opens with
    its HELP and TYPE lines, every sample belongs to the family above it (a histogram's
    _bucket, _sum and _count), and label values are quoted and escaped."""
    family, kinds = None, {}
    lines = text.splitlines()
    for previous, line in zip(["", *lines], lines, strict=False):
        if line.startswith("# TYPE "):
            family, kind = line.split()[2:4]
            assert previous.startswith(f"# HELP {family} ") and len(previous.split()) > 3, line
            kinds[family] = kind
        elif not line.startswith("#"):
            name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group()
            suffixes = ("_bucket", "_sum", "_count") if kinds.get(family) == "histogram" else ()
            assert name == family or name in {family + s for s in suffixes}, line
            label = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
            labels = r"(\{" + label + "(," + label + r")*\})?"
            assert re.fullmatch(name + labels + r" \S+", line), line
    assert {"http_requests_total", "predict_latency_seconds", "model_info"} <= set(kinds)


def test_metrics_escape_label_values_a_class_label_may_hold():
    telemetry = Telemetry()
    telemetry.model = {"name": "m", "version": "1"}
    telemetry.predictions(['say "yes"', "back\\slash", "two\nlines"])
    telemetry.extra = {"prediction_log_logged_total": ("Records stored", lambda: 3)}
    text = telemetry.render()
    assert_exposition_format(text)
    assert 'predictions_total{class="say \\"yes\\""} 1' in text
    assert 'predictions_total{class="back\\\\slash"} 1' in text
    assert 'predictions_total{class="two\\nlines"} 1' in text


def test_docs_and_openapi_show_the_predict_schema_with_an_example(live, exported_model):
    docs = live.get("/docs")
    assert docs.status_code == 200 and "swagger-ui" in docs.text
    document = live.get("/openapi.json").json()
    body = document["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/PredictRequest"}
    schemas = document["components"]["schemas"]
    example = schemas["PredictRequest"]["examples"][0]["records"][0]
    assert sorted(example) == sorted(exported_model.features)
    record = schemas["Record"]
    assert list(record["properties"]) == exported_model.features
    assert sorted(record["required"]) == sorted(exported_model.features)
    assert record["additionalProperties"] is False
    errors = document["paths"]["/predict"]["post"]["responses"]
    assert {"408", "413", "415", "422", "500", "503", "504"} <= set(errors)
    error_body = {"$ref": "#/components/schemas/ErrorResponse"}
    assert all(
        errors[status]["content"]["application/json"]["schema"] == error_body
        for status in errors
        if status.startswith(("4", "5"))
    )
    assert set(schemas["ErrorResponse"]["required"]) == {"detail", "request_id"}
    assert all("X-Request-ID" in errors[status]["headers"] for status in errors)
    ready = document["paths"]["/ready"]["get"]["responses"]
    for status, model in (("200", "Ready"), ("503", "NotReady")):
        schema = ready[status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": f"#/components/schemas/{model}"}
    version = document["paths"]["/version"]["get"]["responses"]["200"]["content"]
    assert version["application/json"]["schema"] == {"$ref": "#/components/schemas/Version"}
    assert Version.model_validate(live.get("/version").json()).model_version == "1"
    answer = schemas["Prediction"]["properties"]
    classes = live.service.bundle.classes
    if classes is None:
        assert answer["prediction"] == {"type": "number"}
    else:
        assert answer["prediction"] == {"enum": classes}
        assert answer["probabilities"]["required"] == [str(c) for c in classes]


def test_every_error_has_one_shape_with_a_request_id(live, monkeypatch):
    """Also a path or method that does not exist, and a failure no route catches."""
    assert assert_clean_error(live.get("/nowhere"), 404)["detail"] == "Not Found"
    wrong_method = live.get("/predict")
    assert assert_clean_error(wrong_method, 405)["detail"] == "Method Not Allowed"
    assert wrong_method.headers["allow"] == "POST"

    class Broken:
        def is_set(self):
            raise RuntimeError("a bug")

    monkeypatch.setattr(live.service, "bundle", None)  # /ready then asks DRAINING
    monkeypatch.setattr(service_module, "DRAINING", Broken())  # the traceback: the server's log
    transport = httpx.ASGITransport(app=live.app, raise_app_exceptions=False)
    client = httpx.AsyncClient(transport=transport, base_url="http://test")
    failed = live.run(client.get("/ready"))
    assert "a bug" not in failed.text
    assert assert_clean_error(failed, 500)["detail"].startswith("internal error")


def test_an_example_with_a_missing_value_shows_null_and_validates(serve, exported_model, tmp_path):
    """MLflow saves a missing value of the input example as NaN, which is no JSON."""
    folder = Path(shutil.copytree(exported_model.path, tmp_path / "bundle"))
    meta = json.loads((folder / bundles.META_FILE).read_text())
    first = exported_model.features[0]
    saved = json.loads((folder / "model" / "input_example.json").read_text())
    saved["data"][0][saved["columns"].index(first)] = float("nan")
    (folder / "model" / "input_example.json").write_text(json.dumps(saved))
    assert bundles._example(folder / "model", exported_model.features)[first] is None
    meta["example"][first] = float("nan")  # a bundle exported before the fix
    (folder / bundles.META_FILE).write_text(json.dumps(meta))
    live = serve(folder)
    document = live.get("/openapi.json")
    assert document.status_code == 200
    example = document.json()["components"]["schemas"]["PredictRequest"]["examples"][0]
    assert example["records"][0][first] is None
    assert live.predict(example).status_code == 200, "a client may send the example as it is"


# --- Predictions --------------------------------------------------------------------------------


def test_one_record_gets_the_models_own_prediction(live, exported_model):
    response = live.predict({"records": exported_model.records[:1]})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model_name"] == "test-model" and answer["model_version"] == "1"
    assert len(answer["request_id"]) == 32
    assert response.headers["x-request-id"] == answer["request_id"]
    assert_predictions_match_model(answer, exported_model, slice(0, 1))


def test_a_batch_gets_one_prediction_per_record_in_order(live, exported_model):
    response = live.predict({"records": exported_model.records[:120]})
    assert response.status_code == 200, response.text
    assert_predictions_match_model(response.json(), exported_model, slice(0, 120))
    again = live.predict({"records": exported_model.records[:120]}).json()
    assert again["request_id"] != response.json()["request_id"]


def test_request_ids_are_uuid7_in_time_order(live, exported_model):
    """Time-ordered ids keep the prediction log's key index growing at one end."""
    ids = []
    for _ in range(3):
        ids.append(live.predict({"records": exported_model.records[:1]}).json()["request_id"])
        time.sleep(0.002)  # the leading bits count milliseconds
    parsed = [uuid.UUID(hex=i) for i in ids]
    assert {(u.version, u.variant) for u in parsed} == {(7, uuid.RFC_4122)}
    assert ids == sorted(ids) and len(set(ids)) == 3
    millis = int(ids[0][:12], 16)
    assert abs(millis / 1000 - time.time()) < 60
    made = [new_request_id(millis) for _ in range(1000)]
    assert len(set(made)) == 1000 and {m[:12] for m in made} == {ids[0][:12]}


def test_fast_path_off_serves_through_the_pipeline(serve, exported_model, caplog):
    caplog.set_level("INFO")
    live = serve(SERVE_FAST_PATH="0")
    assert live.service.fast_path is None and live.service.batcher.inline_rows == 0
    assert "SERVE_FAST_PATH=0: serving through the model's own pipeline" in caplog.text
    response = live.predict({"records": exported_model.records[:40]})
    assert response.status_code == 200, response.text
    assert_predictions_match_model(response.json(), exported_model, slice(0, 40))


def test_prediction_log_off_serves_and_logs_nothing(serve, exported_model, tmp_path, caplog):
    live = serve(PREDICTION_LOG="0")
    assert "predictions are NOT logged" in caplog.text
    assert live.predict({"records": exported_model.records[:3]}).status_code == 200
    assert live.service.prediction_log is None
    assert "prediction_log_logged_total" not in live.get("/metrics").text
    assert not (tmp_path / "monitoring.db").exists()


@pytest.mark.parametrize("fast_path", ["1", "0"], ids=["fast path", "pipeline"])
def test_record_with_missing_values_predicts_the_same_alone_or_in_a_batch(
    serve, exported_model, fast_path
):
    live = serve(SERVE_FAST_PATH=fast_path)
    meta = live.service.bundle.meta
    categorical = [n for n, kind in meta["features"].items() if kind == "categorical"]
    # Each categorical feature missing in turn: alone, a request's column is all missing.
    for name in categorical:
        record = {**exported_model.records[0], name: None}
        alone = live.predict({"records": [record]}).json()["predictions"][0]
        batch = [record, *exported_model.records[1:20]]
        among = live.predict({"records": batch}).json()["predictions"][0]
        # Equal up to the last bits a linear model's sums give with another batch size.
        for key, value in alone.items():
            close = isinstance(value, float | dict)  # a value, or class probabilities
            assert among[key] == (pytest.approx(value, rel=1e-9) if close else value), name


# --- Bad input ------------------------------------------------------------------------------------


def spoiled(exported_model, change) -> dict:
    """A body of one valid record after `change(record)`."""
    record = dict(exported_model.records[0])
    change(record)
    return {"records": [record]}


def raw_number(exported_model, token: str) -> bytes:
    """A body whose first numeric field holds a raw JSON token such as NaN."""
    record = dict(exported_model.records[0], tenure_months="PLACEHOLDER")
    return json.dumps({"records": [record]}).replace('"PLACEHOLDER"', token).encode()


BAD_RECORDS = {  # name: (how to spoil the record, the error type, where)
    "missing field": (lambda r: r.pop("monthly_charges"), "missing", "monthly_charges"),
    "unknown field": (lambda r: r.update(colour=CANARY), "extra_forbidden", "colour"),
    "text for a number": (lambda r: r.update(age=CANARY), "float_type", "age"),
    "number for a category": (lambda r: r.update(contract=3), "category", "contract"),
    "list for a number": (lambda r: r.update(age=[CANARY]), "float_type", "age"),
    # The sample's data.bounds: age [18, 120], monthly_charges [0, null].
    "number under its bound": (lambda r: r.update(age=17.5), "greater_than_equal", "age"),
    "number over its bound": (lambda r: r.update(age=121), "less_than_equal", "age"),
    "negative charge": (
        lambda r: r.update(monthly_charges=-0.01),
        "greater_than_equal",
        "monthly_charges",
    ),
}


@pytest.mark.parametrize("case", BAD_RECORDS)
def test_invalid_record_is_422_naming_the_field(live, exported_model, case):
    change, kind, field = BAD_RECORDS[case]
    if kind == "category":  # any text, or one of training's categories (see the next test)
        kind = "string_type" if live.service.open_categories else "literal_error"
    body = assert_clean_error(live.predict(spoiled(exported_model, change)), 422)
    assert [(e["loc"], e["type"]) for e in body["detail"]] == [(["records", 0, field], kind)]
    allowed = {  # what the message says is allowed instead (categories: the next tests)
        "missing": "every feature, null where its value is unknown",
        "extra_forbidden": f"whose features are: {', '.join(exported_model.features)}",
        "float_type": "a valid number, or null where it is unknown",
        "greater_than_equal": "Input should be greater than or equal to ",
        "less_than_equal": "Input should be less than or equal to 120, or null where",
    }
    assert allowed.get(kind, "") in body["detail"][0]["msg"], body["detail"]
    at_the_bounds = spoiled(exported_model, lambda r: r.update(age=18, monthly_charges=0))
    assert live.predict(at_the_bounds).status_code == 200


def test_an_unknown_field_name_is_not_repeated_whole(live, exported_model):
    name = "x" * 900_000
    answer = live.predict(spoiled(exported_model, lambda r: r.update({name: 1})))
    [error] = assert_clean_error(answer, 422)["detail"]
    assert error["loc"] == ["records", 0, "x" * 100 + "..."] and len(answer.content) < 1000


def test_a_trailing_slash_is_not_redirected_to_where_the_host_header_says(live):
    answer = live.run(live.client.post("/predict/", headers={"host": "elsewhere.example"}))
    assert answer.status_code == 404 and "location" not in answer.headers


@pytest.mark.parametrize("open_categories", [False, True])
def test_text_postgresql_cannot_keep_is_refused_in_any_category_column(open_categories):
    """A NUL, and text longer than any category (the rollups' key, which PostgreSQL's index
    caps), are refused whether or not the model takes unseen categories."""
    meta = {
        "features": {"city": "categorical"},
        "categories": {"city": ["north", "x" * 250]},
        "example": {"city": "north"},
    }
    model = request_model(meta, 10, open_categories)

    def validated(value):
        return model.model_validate_json(json.dumps({"records": [{"city": value}]})).records[0]

    assert validated("x" * 250).city == "x" * 250, "training's own longest category"
    for bad, said in (("no\x00rth", "NUL"), ("y" * 251, "at most 250 characters")):
        with pytest.raises(ValidationError) as refused:
            validated(bad)
        if open_categories:
            assert said in str(refused.value)
    if open_categories:
        assert validated("y" * 200).city == "y" * 200


def test_unseen_category_is_predicted_if_the_model_takes_it_and_422_if_not(live, exported_model):
    answer = live.predict(spoiled(exported_model, lambda r: r.update(region=CANARY)))
    if live.service.open_categories:
        assert answer.status_code == 200 and len(answer.json()["predictions"]) == 1
        assert CANARY not in answer.text
    else:
        body = assert_clean_error(answer, 422)
        assert [(e["loc"], e["type"]) for e in body["detail"]] == [
            (["records", 0, "region"], "literal_error")
        ]


@pytest.mark.parametrize("open_categories", [False, True])
def test_empty_text_for_a_category_is_missing_unless_training_had_it(open_categories):
    meta = {
        "features": {"region": "categorical", "code": "categorical"},
        "categories": {"region": ["north", "south"], "code": ["", "A1"]},
        "example": {"region": "north", "code": "A1"},
    }
    body = request_model(meta, 10, open_categories).model_validate_json(
        '{"records": [{"region": "", "code": ""}]}'
    )
    assert body.records[0].__dict__ == {"region": None, "code": ""}


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_number_is_422(live, exported_model, token):
    body = assert_clean_error(live.predict(raw_number(exported_model, token)), 422)
    assert [e["loc"] for e in body["detail"]] == [["records", 0, "tenure_months"]]


@pytest.mark.parametrize(
    "raw",
    [b'{"records": [', b"", b"\xff\xfe", b"[]", b'{"records": []}', b'{"rows": []}', b"null"],
)
def test_malformed_or_empty_body_is_422(live, raw):
    body = assert_clean_error(live.predict(raw), 422)
    assert body["detail"] and all({"loc", "msg", "type"} == set(e) for e in body["detail"])


@pytest.mark.parametrize("media", ["text/plain", "application/x-www-form-urlencoded", None])
def test_body_not_sent_as_json_is_415(live, exported_model, media):
    body = json.dumps({"records": exported_model.records[:1]}).encode()
    headers = {"content-type": media} if media else {}
    answer = live.run(live.client.post("/predict", content=body, headers=headers))
    assert "application/json" in assert_clean_error(answer, 415)["detail"]
    charset = {"content-type": "application/json; charset=utf-8"}
    assert live.run(live.client.post("/predict", content=body, headers=charset)).is_success


@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate"])
def test_a_compressed_body_is_415_naming_its_encoding(live, exported_model, encoding):
    plain = json.dumps({"records": exported_model.records[:1]}).encode()
    body = gzip.compress(plain) if encoding == "gzip" else plain  # any encoding is refused
    headers = {"content-type": "application/json", "content-encoding": encoding}
    answer = live.run(live.client.post("/predict", content=body, headers=headers))
    said = assert_clean_error(answer, 415)["detail"]
    assert f"not {encoding!r}" in said and "uncompressed" in said, said
    headers["content-encoding"] = "identity"
    assert live.run(live.client.post("/predict", content=plain, headers=headers)).is_success


def test_true_false_and_number_categories_accept_the_json_values_training_labelled():
    """A column of booleans or whole numbers trains on the labels "True" or "3"; a client's
    JSON true or 3 (or 3.0) names the same category, and validates to the label training used."""
    meta = {
        "features": {"flag": "categorical", "grade": "categorical", "region": "categorical"},
        "categories": {"flag": ["False", "True"], "grade": ["1", "2", "-3"], "region": ["north"]},
        "example": {"flag": "True", "grade": "1", "region": "north"},
    }
    record = request_model(meta, 10).model_validate_json
    sent = [{"flag": True, "grade": 2, "region": "north"}, {"flag": "False", "grade": -3.0}]
    sent[1]["region"] = None
    sent += [{"flag": "true", "grade": 1, "region": None}, {"flag": "FALSE", "grade": 1}]
    sent[3]["region"] = None  # true/false as text in any case, as a CSV's trained
    records = [r.__dict__ for r in record(json.dumps({"records": sent})).records]
    assert records == [
        {"flag": "True", "grade": "2", "region": "north"},
        {"flag": "False", "grade": "-3", "region": None},
        {"flag": "True", "grade": "1", "region": None},
        {"flag": "False", "grade": "1", "region": None},
    ]
    trained = feature_frame(sent, meta["features"]).to_dict("records")
    assert [r["flag"] for r in trained[:2]] == ["True", "False"]
    assert [r["grade"] for r in trained[:2]] == ["2", "-3"]
    for bad in ({"grade": 2.5}, {"grade": 7}, {"flag": 1}, {"flag": "yes"}, {"region": 1}):
        with pytest.raises(ValidationError, match="literal_error") as refused:
            record(json.dumps({"records": [{**meta["example"], **bad}]}))
        # The message says which JSON values such a column takes, and only for those columns.
        (error,) = refused.value.errors(include_url=False)
        said = predict._message(error)
        # A true/false column takes no number, a column of whole numbers (not only 0 and 1)
        # no true/false: each names only what it takes.
        assert (BOOLEAN_VALUES in said) is ("flag" in bad), bad
        assert (WHOLE_NUMBERS in said) is ("grade" in bad), (bad, said)
        if "flag" in bad:  # no list of labels to read past: what it takes, plainly
            assert said == f"Input should be {BOOLEAN_VALUES}, or null where it is unknown"
    # The schema at /docs says so, for those columns only, in words and as JSON types.
    fields = request_model(meta, 10).model_json_schema()["$defs"]["Record"]["properties"]
    assert [field["title"] for field in fields.values()] == list(meta["features"])
    assert fields["flag"]["anyOf"][1:] == [{"type": "boolean"}, {"type": "null"}]
    assert fields["grade"]["anyOf"][1] == {"type": "integer", "enum": [-3, 1, 2]}
    assert len(fields["region"]["anyOf"]) == 2
    assert fields["flag"]["description"] == SCALAR_LABELS.format(BOOLEAN_VALUES)
    assert fields["grade"]["description"] == SCALAR_LABELS.format(WHOLE_NUMBERS)
    assert "description" not in fields["region"]
    # With a model that takes unseen categories, any text goes, and JSON values map the same;
    # but true/false has no third value: 0, 1 or "yes" would be predicted as an unseen category.
    taking = request_model(meta, 10, open_categories=True)
    sent = [{"flag": True, "grade": 7, "region": "west"}, {"flag": None, "grade": 3.0}]
    sent[1]["region"] = "north"
    body = taking.model_validate_json(json.dumps({"records": sent}))
    assert [r.__dict__ for r in body.records] == [
        {"flag": "True", "grade": "7", "region": "west"},
        {"flag": None, "grade": "3", "region": "north"},
    ]
    for bad, kind in [
        ({"grade": 2.5}, r"2\.5 is not a whole number"),  # not "a valid string": 3 goes
        ({"region": 1}, "string_type"),
        ({"flag": 0}, "literal_error"),
        ({"flag": "yes"}, "literal_error"),
    ]:
        with pytest.raises(ValueError, match=kind):
            taking.model_validate_json(json.dumps({"records": [{**meta["example"], **bad}]}))
    fields = taking.model_json_schema()["$defs"]["Record"]["properties"]
    assert fields["flag"]["description"].startswith(SCALAR_LABELS.format(BOOLEAN_VALUES))
    said = fields["region"]["description"]
    assert said.startswith("Categories of the training data: north; any other text")


@pytest.mark.parametrize("open_categories", [False, True])
def test_a_column_of_0_and_1_takes_true_and_false_and_other_codes_refuse_them(open_categories):
    """SQLite stores booleans as 0 and 1, which training labels "0" and "1": JSON true is 1
    there. In a column of other whole numbers true/false is no category (not an unseen one)."""
    meta = {
        "features": {"trial": "categorical", "grade": "categorical"},
        "categories": {"trial": ["0", "1"], "grade": ["1", "2", "3"]},
        "example": {"trial": "1", "grade": "2"},
    }
    record = request_model(meta, 10, open_categories).model_validate_json
    sent = [{"trial": True, "grade": 2}, {"trial": "false", "grade": 3}, {"trial": 0, "grade": 1}]
    body = record(json.dumps({"records": sent}))
    assert [r.__dict__ for r in body.records] == [
        {"trial": "1", "grade": "2"},
        {"trial": "0", "grade": "3"},
        {"trial": "0", "grade": "1"},
    ]
    for grade in (True, "TRUE"):
        with pytest.raises(ValidationError) as refused:
            record(json.dumps({"records": [{"trial": 1, "grade": grade}]}))
        (error,) = refused.value.errors(include_url=False)
        assert error["loc"] == ("records", 0, "grade")
        assert "true is not a category of this column, made from whole numbers" in error["msg"]
    for trial in (2, "yes"):  # a flag has no third value, even for a model taking unseen ones
        with pytest.raises(ValidationError, match="literal_error"):
            record(json.dumps({"records": [{"trial": trial, "grade": 1}]}))
    # /docs says so: true/false and whole numbers for the flag, whole numbers for the grade.
    schema = request_model(meta, 10, open_categories).model_json_schema()
    fields = schema["$defs"]["Record"]["properties"]
    assert fields["trial"]["description"].startswith(SCALAR_LABELS.format(SCALAR_VALUES))
    assert fields["grade"]["description"].startswith(SCALAR_LABELS.format(WHOLE_NUMBERS))
    assert BOOLEAN_VALUES not in fields["grade"]["description"]


@pytest.mark.parametrize("open_categories", [False, True])
def test_a_whole_number_names_the_code_training_wrote_with_leading_zeros(open_categories):
    """A JSON number cannot keep a code's leading zeros: 2134 is "02134" when no other code
    reads as 2134; otherwise it stays "2134" (a category, or unknown)."""
    meta = {
        "features": {"zip": "categorical"},
        "categories": {"zip": ["02134", "10001", "0042", "042", "7", "07"]},
        "example": {"zip": "02134"},
    }
    model = request_model(meta, 10, open_categories)

    def validated(value):
        return model.model_validate_json(json.dumps({"records": [{"zip": value}]})).records[0].zip

    assert [validated(v) for v in (2134, 2134.0, 10001, 7)] == ["02134", "02134", "10001", "7"]
    for value in (42, "2134"):  # 42 reads as "0042" and "042"; text is taken as written
        if open_categories:
            assert validated(value) == str(value)
        else:
            with pytest.raises(ValidationError, match="literal_error"):
                validated(value)
    # A fraction: a listed column's refusal lists the codes; an open one's says why, not
    # "should be a valid string" (101 is taken).
    said = r"101\.5 is not a whole number: this column's categories were made from whole"
    with pytest.raises(ValidationError, match=said if open_categories else "literal_error"):
        validated(101.5)


def test_unknown_category_among_thousands_gets_a_short_message():
    codes = [f"{n:05d}" for n in range(2000)]
    meta = {
        "features": {"zip": "categorical"},
        "categories": {"zip": codes},
        "example": {"zip": "00501"},
    }
    with pytest.raises(ValidationError) as refused:
        request_model(meta, 10).model_validate_json('{"records": [{"zip": "99999"}]}')
    (error,) = refused.value.errors(include_url=False)
    assert error["type"] == "literal_error"
    assert "categories in the training data" in predict._message(error)
    assert len(predict._message(error)) < predict.MAX_MESSAGE < len(error["msg"])


def test_error_lists_every_bad_field_of_every_record(live, exported_model):
    records = [dict(r, age=CANARY) for r in exported_model.records[:3]]
    body = assert_clean_error(live.predict({"records": records}), 422)
    assert [e["loc"] for e in body["detail"]] == [["records", i, "age"] for i in range(3)]


def test_body_over_the_byte_limit_is_413_declared_or_chunked(serve, exported_model):
    live = serve(SERVE_MAX_BODY_BYTES="2048")
    body = json.dumps({"records": exported_model.records[:40]}).encode()
    assert len(body) > 2048
    declared = assert_clean_error(live.predict(body), 413)
    limit = "request body is over the limit of 2048 bytes (SERVE_MAX_BODY_BYTES)"
    assert declared["detail"] == limit

    async def chunks():
        for start in range(0, len(body), 256):
            yield body[start : start + 256]

    async def chunked():
        headers = {"content-type": "application/json"}
        return await live.client.post("/predict", content=chunks(), headers=headers)

    streamed = live.run(chunked())
    assert "content-length" not in streamed.request.headers
    assert streamed.request.headers["transfer-encoding"] == "chunked"
    assert assert_clean_error(streamed, 413)["detail"] == declared["detail"]
    small = json.dumps({"records": exported_model.records[:3]}).encode()
    assert len(small) < 2048 and live.predict(small).status_code == 200


def test_a_body_that_trickles_in_gets_408_and_holds_no_in_flight_slot(serve, exported_model):
    live = serve(SERVE_READ_TIMEOUT_SECONDS="0.3", SERVE_MAX_IN_FLIGHT="1")
    body = json.dumps({"records": exported_model.records[:1]}).encode()

    async def trickle():
        yield body[:10]
        await asyncio.sleep(3)  # a slow client: the rest never comes in time
        yield body[10:]

    async def slow_and_quick():
        headers = {"content-type": "application/json"}
        slow = asyncio.create_task(live.client.post("/predict", content=trickle(), headers=headers))
        await asyncio.sleep(0.1)
        quick = await post(live.client, {"records": exported_model.records[:1]})
        return await slow, quick

    slow, quick = live.run(slow_and_quick())
    assert quick.status_code == 200, "the slow body held the only in-flight slot"
    assert assert_clean_error(slow, 408)["detail"] == (
        "the request body did not arrive within 0.3 s (SERVE_READ_TIMEOUT_SECONDS)"
    )


def test_batch_over_the_record_limit_is_413_naming_the_limit(serve, exported_model):
    live = serve(SERVE_MAX_RECORDS="5")
    body = assert_clean_error(live.predict({"records": exported_model.records[:6]}), 413)
    assert body["detail"] == "a request holds at most 5 records (SERVE_MAX_RECORDS)"
    assert live.predict({"records": exported_model.records[:5]}).status_code == 200


# --- Failures, overload, timeout --------------------------------------------------------------


def test_model_failure_is_500_for_that_request_only(live, exported_model, monkeypatch):
    def explode(frame):
        raise RuntimeError(f"model exploded on {CANARY}")

    monkeypatch.setattr(pipeline_model(monkeypatch, live), MODEL_CALL[exported_model.task], explode)
    body = assert_clean_error(live.predict({"records": exported_model.records[:2]}), 500)
    assert body["detail"] == "prediction failed; the request id is in the service log"
    assert live.get("/ready").status_code == 200
    monkeypatch.undo()
    assert live.predict({"records": exported_model.records[:2]}).status_code == 200


def test_request_over_the_in_flight_limit_is_refused_at_once(serve, exported_model, monkeypatch):
    live = serve(SERVE_MAX_IN_FLIGHT="1")
    slow_model(monkeypatch, live, exported_model.task, 0.5)
    body = {"records": exported_model.records[:1]}

    async def two_requests():
        first = asyncio.create_task(post(live.client, body))
        while live.service.in_flight == 0:
            await asyncio.sleep(0.005)
        second = await post(live.client, body)
        first_still_running = not first.done()
        return await first, second, first_still_running

    first, second, first_still_running = live.run(two_requests())
    assert first_still_running, "the refusal came at once, not after the first request finished"
    assert first.status_code == 200
    refused = assert_clean_error(second, 503)
    assert refused["detail"] == "overloaded: too many requests in flight"
    assert second.headers["retry-after"] == "1"
    assert live.get("/ready").status_code == 200


def test_slow_prediction_times_out_with_504(serve, exported_model, monkeypatch):
    live = serve(SERVE_PREDICT_TIMEOUT_SECONDS="0.1")
    slow_model(monkeypatch, live, exported_model.task, 3.0)
    started = time.perf_counter()
    response = live.predict({"records": exported_model.records[:1]})
    # Generous: only shows the answer did not wait for the 3 s prediction.
    assert time.perf_counter() - started < 2.5
    assert assert_clean_error(response, 504)["detail"] == "prediction took longer than 0.1 s"
    assert live.get("/ready").status_code == 200


# --- Micro-batching -------------------------------------------------------------------------------


def test_concurrent_requests_share_model_calls_and_get_their_own_answer(
    live, exported_model, monkeypatch
):
    calls: list[int] = []
    slow_model(monkeypatch, live, exported_model.task, 0.01, calls)
    records = exported_model.records[:50]

    async def fifty():
        return await asyncio.gather(*(post(live.client, {"records": [r]}) for r in records))

    responses = live.run(fifty())
    assert [r.status_code for r in responses] == [200] * 50
    assert sum(calls) == 50 and len(calls) < 50 and max(calls) > 1
    answers = {"predictions": [r.json()["predictions"][0] for r in responses]}
    assert_predictions_match_model(answers, exported_model, slice(0, 50))
    assert len({r.json()["request_id"] for r in responses}) == 50


def test_a_record_the_model_fails_on_fails_its_own_request_only(live, exported_model, monkeypatch):
    calls: list[int] = []
    slow_model(monkeypatch, live, exported_model.task, 0.01)
    model = live.service.bundle.model
    batched = getattr(model, MODEL_CALL[exported_model.task])
    numeric = next(k for k, v in exported_model.records[0].items() if isinstance(v, float))
    poison = 123456.5  # valid input, which this model cannot score

    def picky(frame):
        calls.append(len(frame))
        if (frame[numeric] == poison).any():
            raise ValueError("cannot score this record")
        return batched(frame)

    monkeypatch.setattr(model, MODEL_CALL[exported_model.task], picky)
    records = [dict(r) for r in exported_model.records[:30]]
    for index in (3, 17):
        records[index][numeric] = poison

    async def thirty():
        return await asyncio.gather(*(post(live.client, {"records": [r]}) for r in records))

    responses = live.run(thirty())
    assert max(calls) > 1, "the requests were predicted in shared batches"
    assert [r.status_code for r in responses] == [422 if i in (3, 17) else 200 for i in range(30)]
    said = responses[3].json()["detail"]
    assert said == "the model cannot score these records: cannot score this record"
    good = [i for i in range(30) if i not in (3, 17)]
    answers = {"predictions": [responses[i].json()["predictions"][0] for i in good]}
    assert_predictions_match_model(answers, exported_model, good)


# --- Fuzz -----------------------------------------------------------------------------------------

JSON_LEAF = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
JSON_JUNK = st.recursive(
    JSON_LEAF,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=6,
)
RAW_TOKENS = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1" * 400, "1e-400", "-0", "0x1"]
HUGE = st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(10**30), 10**30)
# HUGE: out of a bounded feature's range (and a valid number for the others).
WRONG_VALUE = JSON_JUNK.map(json.dumps) | st.sampled_from(RAW_TOKENS) | HUGE.map(json.dumps)


def valid_record(meta: dict):
    """A record's fields as JSON text: every feature, each null or a value of its type (within
    its data.bounds)."""
    fields = {}
    for name, kind in meta["features"].items():
        if kind == "numeric":
            lowest, highest = meta["bounds"].get(name) or (None, None)
            values = HUGE if lowest is None and highest is None else within(lowest, highest)
        else:
            values = st.sampled_from(meta["categories"][name])
        fields[name] = (st.none() | values).map(json.dumps)
    return st.fixed_dictionaries(fields)


def within(lowest: float | None, highest: float | None):
    """Numbers from `lowest` to `highest`, either side open, whole ones too."""
    floats = st.floats(lowest, highest, allow_nan=False, allow_infinity=False)
    integers = st.integers(
        None if lowest is None else math.ceil(lowest),
        None if highest is None else math.floor(highest),
    )
    return floats | integers


def object_text(fields: dict[str, str]) -> str:
    """A JSON object from its keys and its values' JSON text."""
    return "{" + ",".join(json.dumps(k) + ":" + v for k, v in fields.items()) + "}"


def record_text(meta: dict):
    """One record as JSON text: valid, or with one field mistyped, missing, or unknown added."""
    valid, names = valid_record(meta), st.sampled_from(list(meta["features"]))
    mistyped = st.tuples(valid, names, WRONG_VALUE).map(lambda t: {**t[0], t[1]: t[2]})
    missing = st.tuples(valid, names).map(lambda t: {k: v for k, v in t[0].items() if k != t[1]})
    unknown = st.tuples(valid, st.text(max_size=8)).map(lambda t: {**t[0], t[1]: f'"{CANARY}"'})
    return st.one_of(valid, mistyped, missing, unknown).map(object_text)


def request_body(meta: dict):
    """A whole body: valid or spoiled records, junk JSON, deeply nested arrays or any bytes."""

    def batch(records: list[str]) -> bytes:
        return ('{"records":[' + ",".join(records) + "]}").encode()

    valid = st.lists(valid_record(meta).map(object_text), min_size=1, max_size=3).map(batch)
    spoiled = st.lists(record_text(meta), min_size=1, max_size=3).map(batch)
    junk = JSON_JUNK.map(lambda v: json.dumps({"records": v}).encode())
    nested = st.integers(1, 3000).map(lambda n: ("[" * n + "]" * n).encode())
    return st.one_of(valid, spoiled, spoiled, junk, nested, st.binary(max_size=200))


# scikit-learn's finiteness check sums the input first: huge values of both signs make that sum
# NaN, and numpy warns before the check looks value by value and passes them.
@pytest.mark.filterwarnings("ignore:invalid value encountered in reduce:RuntimeWarning")
def test_fuzzed_requests_never_get_a_5xx(live):
    statuses: Counter = Counter()

    async def send(bodies: list[bytes]) -> list[int]:
        answers = await asyncio.gather(*(post(live.client, b) for b in bodies))
        return [a.status_code for a in answers]

    @settings(
        max_examples=420,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.lists(request_body(live.service.bundle.meta), min_size=25, max_size=25))
    def requests(bodies: list[bytes]) -> None:
        codes = live.run(send(bodies))
        statuses.update(codes)
        assert all(code < 500 for code in codes), codes

    requests()
    assert sum(statuses.values()) >= 10_000
    assert statuses[200] >= 1000 and statuses[422] >= 1000
    assert set(statuses) <= {200, 413, 422}
    assert live.get("/ready").status_code == 200


# --- scripts/send_batch.py, the service's client ----------------------------------------------


def fake_service(answered: list, refuse):
    """A stand-in for post(): refuses a batch as refuse(records, file_rows) says (an exception
    or None), else predicts 1 for each record."""

    def post(url, records, file_rows=None):
        refusal = refuse(records, file_rows)
        if refusal:
            raise refusal
        predictions = [{"prediction": 1}] * len(records)
        return {"request_id": f"r{len(answered)}", "predictions": predictions}

    return post


def refusing(send_batch, bad_zip: str, listed: int | None = None):
    """A refuse() for fake_service: a 422 naming the records whose zip is `bad_zip`, at most
    `listed` of them (all when None)."""

    def refuse(records, file_rows):
        bad = [k for k, record in enumerate(records) if record["zip"] == bad_zip][:listed]
        detail = [{"loc": ["records", k, "zip"], "msg": "Input should be one of ..."} for k in bad]
        body = json.dumps({"detail": detail}).encode()
        if bad:
            said = send_batch._detail(body, file_rows)
            return send_batch.Refused(f"answered 422: {said}", 422, send_batch._named_records(body))
        return None

    return refuse


def test_send_batch_leaves_out_only_the_rows_a_service_refused_as_invalid(monkeypatch):
    send_batch = load_script("send_batch")
    answered: list[dict] = []
    monkeypatch.setattr(send_batch, "post", fake_service(answered, refusing(send_batch, "00123")))
    rows = [{"zip": "02134"} for _ in range(400)]
    for row in (250, 251, 252, 260):
        rows[row]["zip"] = "00123"
    with pytest.raises(PipelineError) as failed:
        send_batch.send("http://service", rows, 100, answered)
    message = str(failed.value)
    assert message.startswith("4 of 400 file rows were refused and left out; the other 396 were")
    assert "): file rows 250-252, 260: answered 422:" in message
    # The service names records by their place in the request; the message by file row.
    assert "file row 250 zip: Input should be one of" in message
    assert "file row 260 zip: Input should be one of" in message
    assert [a["row"] for a in answered] == [r for r in range(400) if r not in (250, 251, 252, 260)]
    # The batch sent again without them: record indices count within that request.
    assert answered[200] == {"row": 200, "request_id": "r200", "record_index": 0, "prediction": 1}
    assert answered[250] == {"row": 253, "request_id": "r200", "record_index": 50, "prediction": 1}


def test_send_batch_sends_again_until_a_batch_with_more_refusals_than_a_422_lists_is_answered(
    monkeypatch,
):
    from {{ cookiecutter.__package_name }}.serving.routers.predict import MAX_ERRORS

    send_batch = load_script("send_batch")
    answered: list[dict] = []
    refuse = refusing(send_batch, "00123", listed=MAX_ERRORS)  # as the service lists them
    monkeypatch.setattr(send_batch, "post", fake_service(answered, refuse))
    rows = [{"zip": "02134"} for _ in range(100)]
    invalid = range(10, 55)  # 45 rows of one batch, more than two refusals list
    for row in invalid:
        rows[row]["zip"] = "00123"
    with pytest.raises(PipelineError) as failed:
        send_batch.send("http://service", rows, 100, answered)
    assert str(failed.value).startswith("45 of 100 file rows were refused and left out; the other")
    assert [a["row"] for a in answered] == [r for r in range(100) if r not in invalid]


def test_send_batch_leaves_out_rows_whose_numbers_are_text_and_sends_the_rest(monkeypatch):
    send_batch = load_script("send_batch")
    features = {"distance": "numeric", "carrier": "categorical"}
    frame = pd.DataFrame({"distance": ["1.5", "abc", None, "7"], "carrier": ["a", "b", "c", None]})
    rows, unreadable = send_batch.records(frame, features)
    assert unreadable == {1: "distance 'abc' is not a number"}
    assert rows == [
        {"distance": 1.5, "carrier": "a"},
        None,
        {"distance": None, "carrier": "c"},
        {"distance": 7.0, "carrier": None},
    ]
    answered: list[dict] = []
    monkeypatch.setattr(send_batch, "post", fake_service(answered, lambda *batch: None))
    with pytest.raises(PipelineError) as failed:
        send_batch.send("http://service", rows, 2, answered, unreadable)
    assert str(failed.value).startswith("1 of 4 file rows were refused and left out; the other 3")
    assert "file row 1: distance 'abc' is not a number (not sent)" in str(failed.value)
    assert send_batch.ROW_NUMBERS in str(failed.value), "the message says how rows are counted"
    assert [a["row"] for a in answered] == [0, 2, 3]
    # A column of text only is the file's mistake (decimal commas, say): refused before sending.
    with pytest.raises(PipelineError, match=r"none of its values is a number \(file row 0 .*'1,5'"):
        send_batch.records(frame.assign(distance=["1,5", "2,5", None, "3,5"]), features)


def test_send_batch_leaves_out_a_whole_batch_refused_without_naming_records(monkeypatch):
    send_batch = load_script("send_batch")
    answered: list[dict] = []

    def refuse(records, _file_rows):
        if any(record["zip"] == "00123" for record in records):
            return send_batch.Refused("answered 422: the model cannot score these records", 422)
        return None

    monkeypatch.setattr(send_batch, "post", fake_service(answered, refuse))
    rows = [{"zip": "02134"} for _ in range(300)]
    rows[150]["zip"] = "00123"
    with pytest.raises(PipelineError, match="100 of 300 file rows were refused") as failed:
        send_batch.send("http://service", rows, 100, answered)
    assert "file rows 100-199: answered 422: the model cannot" in str(failed.value)
    assert [a["row"] for a in answered] == [*range(100), *range(200, 300)]


def test_send_batch_stops_at_a_refusal_other_than_invalid_input(monkeypatch):
    send_batch = load_script("send_batch")
    answered: list[dict] = []

    def refuse(_records, _file_rows):
        if len(answered) >= 200:
            return send_batch.Refused("answered 503: overloaded", 503)
        return None

    monkeypatch.setattr(send_batch, "post", fake_service(answered, refuse))
    rows = [{"zip": "02134"} for _ in range(400)]
    with pytest.raises(PipelineError) as failed:
        send_batch.send("http://service", rows, 100, answered)
    message = str(failed.value)
    assert "file rows 200-299 (records 0-99 of that batch) were refused" in message
    assert "after 200 of 400 rows were predicted and logged (file rows count" in message
    assert message.endswith("answered 503: overloaded"), message
    assert [a["row"] for a in answered] == list(range(200))


def test_predict_logs_a_file_as_the_service_does_at_the_time_given(
    exported_model, repo_params, tmp_path, monkeypatch, caplog, capsys
):
    """`make predict FILE= AT= OUT=`: a batch job's rows (or a backfill's) predicted and
    logged in-process as /predict would, stamped AT, where `make monitor` of that day reads
    them; a row /predict would refuse is left out and named (exit 1), the rest go through."""
    url = f"sqlite:///{tmp_path / 'monitoring.db'}"
    monkeypatch.setenv("MODEL_BUNDLE_DIR", str(exported_model.path))
    monkeypatch.setenv("MONITORING_DATABASE_URL", url)
    monkeypatch.setenv("PREDICTION_LOG_SPOOL_DIR", str(tmp_path / "spool"))
    params = copy.deepcopy(repo_params)
    params["data"]["ignore"] = ["customer_id"]  # an id: OUT= carries it, to join on
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    loaded = bundles.load(exported_model.path)
    frame = exported_model.frame.head(250).copy()
    categorical = [n for n, kind in loaded.meta["features"].items() if kind == "categorical"]
    assert categorical, "the sample schema has a categorical feature"
    frame[categorical[0]] = frame[categorical[0]].astype(object)
    frame.loc[7, categorical[0]] = "x" * 300  # an unseen category past the service's length
    numeric = next(n for n, kind in loaded.meta["features"].items() if kind == "numeric")
    frame[numeric] = frame[numeric].astype(object)
    frame.loc[12, numeric] = "unknown"  # text in a numeric column: never predicted
    frame["customer_id"] = [f"c{n}" for n in range(len(frame))]  # not a feature, not sent
    source, out = tmp_path / "batch.csv", tmp_path / "answers.csv"
    frame.to_csv(source, index=False)
    script = load_script("predict")
    caplog.set_level("INFO")
    argv = ["--file", str(source), "--at", "2026-03-02T10:30", "--out", str(out)]
    started = time.perf_counter()
    assert script.main(argv) == 1
    took_ms = (time.perf_counter() - started) * 1000
    said = "2 rows the service would refuse, or unreadable, were left out (file rows 7, 12; file"
    assert said in caplog.text
    assert f"file row 7: {categorical[0]}: String should have at most" in caplog.text
    assert f"file row 12: {numeric} 'unknown' is not a number" in caplog.text
    answered = pd.read_csv(out)
    assert len(answered) == 248 and not {7, 12} & set(answered["row"])
    assert (answered["record_index"] == 0).all() and answered["request_id"].is_unique
    assert list(answered.columns[:3]) == ["row", "customer_id", "request_id"]
    assert answered["customer_id"].tolist() == [f"c{n}" for n in answered["row"]]
    assert "logged at 2026-03-02T10:30:00 UTC: 248 new" in caplog.text
    # Logged as the service logs, at the time given; the predictions those of the model.
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        logged = pd.read_sql(sa.select(prediction_log), conn)
    assert len(logged) == 248 and set(logged["request_id"]) == set(answered["request_id"])
    # Each row's latency is its share of the model call, not the whole call's time.
    assert 0 < logged["latency_ms"].sum() < took_ms
    assert set(pd.to_datetime(logged["logged_at"], utc=True)) == {
        pd.Timestamp("2026-03-02T10:30", tz="UTC")
    }
    kept = [r for i, r in enumerate(exported_model.records[:250]) if i not in (7, 12)]
    labels, _ = predict_as_served(loaded.model, kept, loaded.meta["profile"], loaded.meta["task"])
    assert [str(p) for p in answered["prediction"]] == [str(p) for p in labels]
    # Rollups of that hour, which `make monitor` reads.
    with engine.connect() as conn:
        hours = conn.execute(sa.text("select distinct bucket from rollup_moments")).scalars()
        assert set(hours) == {int(pd.Timestamp("2026-03-02T10:00", tz="UTC").timestamp())}
    # OUT= with an actual column is an outcomes file, its id column passed over.
    actual = answered["prediction"]
    actual = actual.abs() if loaded.meta["task"] == "regression" else actual
    answered.assign(actual=actual).to_csv(tmp_path / "outcomes.csv", index=False)
    assert load_script("load_outcomes").main(["--file", str(tmp_path / "outcomes.csv")]) == 0
    assert "248 match a logged prediction" in caplog.text
    # A retried job (the same rows, the same time) logs no row twice: the same request ids.
    caplog.clear()
    assert script.main(argv) == 1
    assert "logged at 2026-03-02T10:30:00 UTC: 0 new" in caplog.text
    assert pd.read_csv(out)["request_id"].tolist() == answered["request_id"].tolist()
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(prediction_log)).scalar() == 248
    # A time to come, or no time at all, is refused before anything runs.
    for at in ("2999-01-01", "yesterday"):
        with pytest.raises(SystemExit) as refused:
            script.main(["--file", str(source), "--at", at])
        assert refused.value.code == 2
    said = capsys.readouterr().err
    assert "'2999-01-01' is in the future" in said and "'yesterday' is not an ISO date" in said
