"""The ceiling for POST /predict: the same FastAPI stack and request validation, and no model.

It validates the body with the model's request schema (from the bundle's metadata, exactly as
the service does) and answers a fixed prediction per record, so it measures what the HTTP layer,
JSON and validation alone cost on this machine. The template's bench/serving.py serves it beside
the real service and `mlflow models serve`; by hand, from the repository root:

    OMP_NUM_THREADS=1 .venv/bin/python bench/ceiling.py --port 8001 --workers 2

It runs under the service's own runner (serving/server.py, as scripts/serve.py does), so both
spread connections over their workers the same way.

It reads the bundle's bundle.json only (MODEL_BUNDLE_DIR, default build/model) and never loads
or calls the model.
"""

from __future__ import annotations

import argparse
import json
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from {{ cookiecutter.__package_name }}.config import ServeSettings
from {{ cookiecutter.__package_name }}.serving.bundle import META_FILE
from {{ cookiecutter.__package_name }}.serving.schema import request_model
from {{ cookiecutter.__package_name }}.serving.server import run

SETTINGS = ServeSettings.from_env()
META = json.loads((SETTINGS.bundle_dir / META_FILE).read_text())
REQUEST_TYPE = request_model(META, SETTINGS.max_records)

app = FastAPI(title="Ceiling: validation only, no model")


@app.get("/ready")
async def ready() -> dict[str, str]:
    """Always ready: there is no model to load."""
    return {"status": "ready", "model_version": META["version"]}


@app.post("/predict")
async def predict(request: Request) -> Response:
    """Validate the records as the service does; answer a fixed prediction for each."""
    request_id = uuid.uuid4().hex
    try:
        payload = REQUEST_TYPE.model_validate_json(await request.body())
    except ValidationError as err:
        errors = err.errors(include_url=False, include_input=False, include_context=False)
        return JSONResponse({"detail": errors[:20], "request_id": request_id}, status_code=422)
    rows = [record.__dict__ for record in payload.records]
    body = {
        "request_id": request_id,
        "model_name": META["model_name"],
        "model_version": META["version"],
        "predictions": [{"prediction": None, "probabilities": None} for _ in rows],
    }
    return Response(
        json.dumps(body), media_type="application/json", headers={"X-Request-ID": request_id}
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Serve the ceiling app.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    run(args.host, args.port, args.workers, app="ceiling:app", factory=False)
