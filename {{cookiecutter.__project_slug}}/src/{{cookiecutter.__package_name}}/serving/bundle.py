"""A model bundle: the champion's files plus what serving must know, verified before use.

`make bundle` exports the champion from the registry into a folder; the image copies that
folder, so an image is one model version and serving needs no registry credentials.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import modelfile
from ..errors import PipelineError

log = logging.getLogger(__name__)
META_FILE = "bundle.json"
LINEAGE_TAGS = (
    *("data.content_hash", "git.commit", "trained_at", "promoted_at", "run_id"),
    *("rolled_back_at", "rollback_reason"),  # a champion a rollback restored
)


def sha256(path: Path) -> str:
    """The sha256 of a file."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _example(model_dir: Path, features: list[str]) -> dict[str, Any]:
    """The record MLflow saved as the input example (training.typical_record), a missing value
    as None: versions logged before that hold a training row, whose missing values MLflow wrote
    as NaN, which is no JSON (/openapi.json could not be served, and a client copying the
    example would be refused)."""
    saved = json.loads((model_dir / "input_example.json").read_text())
    row = dict(zip(saved["columns"], saved["data"][0], strict=True))
    return {name: _none_if_nan(row.get(name)) for name in features}


def _none_if_nan(value: Any) -> Any:
    """None for a float NaN, the value otherwise."""
    return None if isinstance(value, float) and math.isnan(value) else value


def _no_champion(client, name: str) -> str:
    """Why there is no champion to serve: nothing trained yet, or the gate let nothing through."""
    versions = client.search_model_versions(f"name='{name}'")
    if not versions:
        return f"model {name} has no champion yet: run `make pipeline` first"
    last = max(versions, key=lambda v: int(v.version))
    reason = last.tags.get("gate.reason", "not judged by the gate yet (`make pipeline` does)")
    return (
        f"model {name} has no champion: the gate promoted none of its {len(versions)} "
        f"version(s); the last, v{last.version}: {reason} (reports/promotion.json). "
        f"`make serve VERSION={last.version}` serves it anyway, bypassing the gate"
    )


def export(client, name: str, version: str | None, out_dir: Path) -> dict[str, Any]:
    """Copy a version (default: the champion) and its metadata into `out_dir`."""
    # Imported here: serving loads bundles and never needs MLflow, which takes seconds to import.
    import mlflow

    from .. import registry

    chosen = registry.version(client, name, version) if version else registry.champion(client, name)
    if chosen is None:
        raise PipelineError(_no_champion(client, name))
    if version and (unfit := _unfit(chosen.tags)):
        log.warning("%s v%s %s: serving it bypasses the gate", name, chosen.version, unfit)
    profile = registry.load_profile(client, chosen.run_id)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(
            mlflow.artifacts.download_artifacts(f"models:/{name}/{chosen.version}", dst_path=tmp)
        )
        model_file = modelfile.skops_file(local, f"{name} v{chosen.version}")
        features = {n: f["kind"] for n, f in profile["features"].items()}
        meta = {
            "model_name": name,
            "version": str(chosen.version),
            "task": chosen.tags.get("task"),
            "features": features,
            "categories": {
                n: f.get("categories") or sorted(f["frequencies"])  # older profiles lack them
                for n, f in profile["features"].items()
                if f["kind"] == "categorical"
            },
            "bounds": {n: f["bounds"] for n, f in profile["features"].items() if f.get("bounds")},
            "example": _example(local, list(features)),
            "prediction_buckets": profile["prediction"].get("bin_edges"),
            # The training profile: the prediction log's rollups bin live traffic on its edges.
            "profile": profile,
            "model_file": model_file.name,
            "sha256": sha256(model_file),
            "lineage": {tag: chosen.tags.get(tag) for tag in LINEAGE_TAGS},
        }
        staging = Path(f"{out_dir}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(local, staging / "model")
        _readable(staging)
        (staging / META_FILE).write_text(json.dumps(meta, indent=2, allow_nan=False))
    try:  # as the service will: a bundle it could not load would leave it never ready
        load(staging)
    except PipelineError as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise PipelineError(f"{name} v{chosen.version} was not bundled: {err}") from err
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
    return meta


def _unfit(tags: dict[str, str]) -> str | None:
    """Why a version asked for by number is not one the gate would serve, or None."""
    from ..lineage import DEMOTED_AT, DEMOTED_REASON

    reasons = []
    if tags.get("gate.decision") != "promoted":
        reason = tags.get("gate.reason", "never evaluated")
        reasons.append(f"was not promoted by the gate ({reason})")
    if DEMOTED_AT in tags:  # a forced rollback may have served a rejected one, then left it
        reasons.append(
            f"was taken out of service by a rollback ({tags.get(DEMOTED_REASON, 'no reason')})"
        )
    return " and ".join(reasons) or None


def _readable(folder: Path) -> None:
    """Folders 0755 and files 0644: MLflow's temporary download is private to its user."""
    folder.chmod(0o755)
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


@dataclass(frozen=True)
class Bundle:
    """A verified, loaded model with its metadata."""

    model: Any
    meta: dict[str, Any]

    @property
    def classes(self) -> list | None:
        """Class labels of a classifier, as plain values."""
        if self.meta["task"] != "classification":
            return None
        return [c.item() if hasattr(c, "item") else c for c in self.model.classes_]


def load(bundle_dir: Path) -> Bundle:
    """Verify the bundle's checksum, then load its model allowing only the types model.py
    trusts (modelfile.load: never those the bundle lists)."""
    bundle_dir = Path(bundle_dir)
    try:
        meta = json.loads((bundle_dir / META_FILE).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise PipelineError(
            f"no readable model bundle at {bundle_dir}: run `make bundle` ({err})"
        ) from err
    model_file = bundle_dir / "model" / meta["model_file"]
    if not model_file.is_file() or sha256(model_file) != meta["sha256"]:
        raise PipelineError(
            f"model file {model_file} does not match the sha256 in {META_FILE}: "
            "refusing to load a file that changed after export"
        )
    try:
        model = modelfile.load(model_file, f"model file {model_file}")
    except modelfile.Unloadable:
        raise
    except Exception as err:  # not a skops file, or a damaged one
        raise PipelineError(
            f"model file {model_file} could not be loaded ({type(err).__name__}: {err})"
        ) from err
    # Bundles exported before missing values became None in the example.
    meta["example"] = {name: _none_if_nan(value) for name, value in meta["example"].items()}
    log.info("loaded %s v%s from %s", meta["model_name"], meta["version"], bundle_dir)
    return Bundle(model, meta)
