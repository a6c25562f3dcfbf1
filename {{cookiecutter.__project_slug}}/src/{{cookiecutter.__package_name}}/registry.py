"""The MLflow model registry: log and register with lineage, find and move the champion."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import re
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
import skops.io
import sqlalchemy as sa
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from . import modelfile
from .config import Backends, database_url
from .errors import PipelineError, driver_said
from .lineage import pinned
from .model import REQUIREMENTS, TRUSTED_TYPES

log = logging.getLogger(__name__)

CHAMPION = "champion"
PROFILE_FILE = "training_profile.json"
REQUIRED_LINEAGE = ("data.content_hash", "data.dvc_md5", "git.commit", "run_id", "trained_at")


def now() -> str:
    """The current UTC time, ISO formatted, as every tag records it."""
    return datetime.now(UTC).isoformat(timespec="seconds")


HTTP_RETRIES = 3  # about 15 s of backoff before an MLflow server is declared away


def connect(backends: Backends, create: bool = False) -> MlflowClient:
    """Point MLflow at the configured backends and check they answer. A SQLite tracking file
    that does not exist is refused unless `create`: MLflow would make an empty registry there,
    which a mistyped URI then reads as "no model yet"."""
    # MLflow's default retries a server that does not answer for about four minutes.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(HTTP_RETRIES))
    # Download progress bars fill CI logs with carriage returns; =true brings them back.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    _probe_database(backends.tracking_uri, create)
    mlflow.set_tracking_uri(backends.tracking_uri)
    if backends.registry_uri:
        mlflow.set_registry_uri(backends.registry_uri)
    try:
        client = MlflowClient()
        client.search_experiments(max_results=1)
    except Exception as err:
        raise PipelineError(
            f"MLflow tracking at {backends.tracking_uri} is unreachable: {err.__class__.__name__}: "
            f"{str(err)[:300]}. Check MLFLOW_TRACKING_URI and that the database or server is up."
        ) from err
    return client


def _probe_database(uri: str, create: bool) -> None:
    """Refuse a tracking URI naming a database that cannot be used, does not answer (in
    seconds: MLflow itself retries a database for about two minutes, logging each attempt) or,
    unless `create`, a SQLite file that does not exist."""
    if urlparse(uri).scheme in ("", "file", "http", "https", "databricks"):
        return
    url = database_url(uri, "MLFLOW_TRACKING_URI")
    if url.get_backend_name() == "sqlite":
        path = url.database
        if path and path != ":memory:" and not Path(path).exists():
            if not create:
                raise PipelineError(
                    f"MLflow tracking database {Path(path).resolve()} does not exist "
                    f"(MLFLOW_TRACKING_URI={uri}): check the URI, or run `make pipeline` first "
                    "to train and register a model"
                )
            # MLflow then runs its schema migrations, silently, for up to a minute or so.
            log.info("creating the MLflow tracking database %s (once; this takes a while)", path)
        return
    if url.get_backend_name() != "postgresql":
        return
    engine = sa.create_engine(url, connect_args={"connect_timeout": 5})
    try:
        for attempt in range(HTTP_RETRIES):
            try:
                with engine.connect():
                    return
            except sa.exc.OperationalError as err:
                failure = str(err.orig).strip().splitlines()[0]
                time.sleep(2**attempt)
    finally:
        engine.dispose()
    raise PipelineError(
        f"MLflow tracking database {uri} does not answer: {failure}. Check MLFLOW_TRACKING_URI "
        "(user, password, host, port, database name) and that the database is up"
    )


def experiment_id(client: MlflowClient, name: str, artifact_root: str | None) -> str:
    """Get or create the experiment of this model, storing artifacts under `artifact_root`.

    With no root (an MLflow server and MODEL_ARTIFACT_ROOT unset) the server's own artifact
    store is used, through its proxy. An experiment keeps the location it was created with:
    another root is refused when it is remote (s3://...), as the models would not reach it, and
    a warning when it is a local folder (a repository that moved).
    """
    location = f"{artifact_root.rstrip('/')}/{name}" if artifact_root else None
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        _refuse_a_missing_bucket(artifact_root)  # else the experiment keeps it for good
        return client.create_experiment(name, artifact_location=location)
    kept = experiment.artifact_location.rstrip("/")
    if location and kept != location:
        message = (
            f"MLflow experiment '{name}' keeps its artifacts in {kept}, fixed when it was "
            f"created, not under MODEL_ARTIFACT_ROOT ({artifact_root}): MLflow cannot move an "
            "experiment. Set MODEL_ARTIFACT_ROOT to match, or rename the experiment (`mlflow "
            f"experiments rename --experiment-id {experiment.experiment_id} --new-name "
            f"{name}-old`) so that the next run creates one under the new root"
        )
        if not location.startswith("file:"):  # models meant for shared storage must reach it
            raise PipelineError(message)
        log.warning("%s", message)
    return experiment.experiment_id


def _refuse_a_missing_bucket(artifact_root: str | None) -> None:
    """Refuse an s3:// root whose bucket the S3 store does not have; other refusals (a wrong
    key, an endpoint away) reach the caller as botocore's errors, which name the S3 settings."""
    if not (artifact_root or "").startswith("s3://"):
        return
    import boto3
    from botocore.exceptions import ClientError

    bucket = urlparse(artifact_root).netloc
    endpoint = os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None  # as MLflow's uploads use
    try:
        boto3.client("s3", endpoint_url=endpoint).head_bucket(Bucket=bucket)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
            raise
        raise PipelineError(
            f"MODEL_ARTIFACT_ROOT {artifact_root} names the bucket '{bucket}', which the S3 "
            "store does not have: create it or correct MODEL_ARTIFACT_ROOT (the model's MLflow "
            "experiment keeps the root of its first run)"
        ) from err


def log_and_register(client: MlflowClient, experiment: str, name: str, model, run: dict[str, Any]):
    """Log one training run into `experiment` (experiment_id) and register its model as a new
    version of `name` carrying the lineage tags.

    The version is created with all its tags in one call, after everything else is logged,
    so a failure anywhere leaves no version, or a version with its full lineage.
    """
    check_serializable(model)
    mlflow.set_experiment(experiment_id=experiment)
    with mlflow.start_run() as active:
        mlflow.log_params(run["params"])
        mlflow.set_tags(run["tags"])
        _log_profile(run["profile"])
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=run["signature"],
            input_example=run["input_example"],
            serialization_format="skops",
            skops_trusted_types=TRUSTED_TYPES,
            pip_requirements=pinned(["mlflow", *REQUIREMENTS]),
        )
        # After log_model, and linked to its model: log_model copies the run's metrics to the
        # model, a second insert of each that PostgreSQL refuses (MLflow then warns and retries).
        # A metric the validation rows cannot define (None) is a tag, not a logged metric.
        metrics = {k: v for k, v in run["metrics"].items() if v is not None}
        mlflow.log_metrics(metrics, model_id=info.model_id)
        tags = {
            **run["tags"],
            **{
                f"metrics.{k}": "undefined" if v is None else f"{v:.6g}"
                for k, v in run["metrics"].items()
            },
            "run_id": active.info.run_id,
        }
        _ensure_registered_model(client, name)
        return client.create_model_version(
            name, info.model_uri, run_id=active.info.run_id, tags=tags, model_id=info.model_id
        )


def check_serializable(model) -> None:
    """Refuse, before anything is logged, a model skops cannot save or would not load back."""
    top_level = (
        "define custom functions and classes at the top level of a module, not as lambdas or "
        "inside build_model()"
    )
    try:
        untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    except Exception as err:
        raise PipelineError(
            f"the model cannot be saved in skops format ({type(err).__name__}: {err}): {top_level}"
        ) from err
    missing = sorted(set(untrusted) - set(TRUSTED_TYPES))
    local = [name for name in missing if "<" in name]  # <lambda>, <locals>: no name to load by
    if local:
        raise PipelineError(
            f"the model holds {local}, which cannot be loaded back: {top_level}, and list each "
            f"in TRUSTED_TYPES in model.py ('{__package__}.model.log_amount' for a function "
            "log_amount there)"
        )
    if missing:
        raise PipelineError(
            f"the model holds types skops does not load unless trusted: {missing}. Review them "
            "and add them to TRUSTED_TYPES in model.py"
        )
    if unlisted := _unlisted_libraries(untrusted):
        named = ", ".join(f"{dist} ({kind})" for dist, kind in unlisted.items())
        raise PipelineError(
            f"the model holds types of {named}, which REQUIREMENTS in model.py does not list: "
            f"add {sorted(unlisted)} there, so the logged model's environment pins them and "
            "the version records their lib. tags"
        )


def _unlisted_libraries(types: list[str]) -> dict[str, str]:
    """The installed distributions providing `types` that model.REQUIREMENTS leaves out, each
    with one of its types; the standard library and this package need no listing."""

    def key(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    owners = importlib.metadata.packages_distributions()
    ours = __name__.split(".")[0]
    # This project's own distribution (its package, and any module beside it) needs no listing.
    listed = {key(name) for name in [*REQUIREMENTS, *owners.get(ours, [])]}
    unlisted: dict[str, str] = {}
    for kind in types:
        top = kind.split(".")[0]
        if top in sys.stdlib_module_names or top == ours:
            continue
        for dist in owners.get(top, []):
            if key(dist) not in listed:
                unlisted.setdefault(dist, kind)
    return unlisted


def _log_profile(profile: dict[str, Any]) -> None:
    """Attach the training profile to the active run as a JSON artifact."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / PROFILE_FILE
        path.write_text(json.dumps(profile, indent=2))
        mlflow.log_artifact(str(path))


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    """Create the registered model on first use."""
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="Registered by scripts/train.py")


def champion(client: MlflowClient, name: str):
    """The version holding the champion alias, or None before the first promotion."""
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as err:
        if "RESOURCE_DOES_NOT_EXIST" in str(err.error_code) or "not found" in str(err).lower():
            return None
        raise


def version(client: MlflowClient, name: str, number: str | int, run_id: str | None = None):
    """One registered version, refusing a missing one, one without its lineage, or one of
    another run than `run_id` (a report naming the version of another registry)."""
    try:
        found = client.get_model_version(name, str(number))
    except MlflowException as err:
        raise PipelineError(
            f"model {name} has no version {number} (it has {_numbers(client, name)}): {err.message}"
        ) from err
    missing = [t for t in REQUIRED_LINEAGE if t not in found.tags]
    if missing:
        raise PipelineError(f"model {name} version {number} lacks lineage tags {missing}")
    if run_id and found.run_id != run_id:
        raise PipelineError(
            f"model {name} version {number} of this registry is run {found.run_id}, not run "
            f"{run_id} the reports name: they come from another registry (MLFLOW_TRACKING_URI "
            "changed since?): run `make pipeline`, which trains into this one"
        )
    return found


def _numbers(client: MlflowClient, name: str) -> str:
    """The version numbers a model has, for a message."""
    try:
        found = client.search_model_versions(f"name='{name}'")
    except MlflowException:
        return "versions that could not be listed"
    return ", ".join(map(str, sorted(int(v.version) for v in found))) or "none"


def former_champions(client: MlflowClient, name: str, champion: str) -> str:
    """The versions other than `champion` that once were champion (promoted or rolled back
    to), newest first, for a message."""
    try:
        found = client.search_model_versions(f"name='{name}'")
    except MlflowException:
        return "versions that could not be listed"
    former = [
        int(v.version)
        for v in found
        if {"promoted_at", "rolled_back_at"} & set(v.tags) and str(v.version) != str(champion)
    ]
    return ", ".join(map(str, sorted(former, reverse=True))) or "none"


def load_model(name: str, number: str | int):
    """Load a registered version's model from its skops file, trusting model.py only
    (modelfile.py): not through mlflow.sklearn.load_model, which does what the version's own
    MLmodel file says (unpickle, or trust the types it lists)."""
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(f"models:/{name}/{number}", dst_path=tmp)
        what = f"version {number}"
        return modelfile.load(modelfile.skops_file(Path(local), what), what)


def load_profile(client: MlflowClient, run_id: str) -> dict[str, Any]:
    """Read back the training profile logged with a run.

    From the run's artifact location itself: through a runs:/ URI MLflow swallows the store's
    error (an S3 that refuses, missing credentials), tries the model's artifacts as well, then
    says only that the path may be wrong."""
    location = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{PROFILE_FILE}"
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=tmp)
        return json.loads(Path(path).read_text())


# Tags that say a version was champion: written only once the alias points at it, so a move
# that fails half-way (the registry went away) never leaves a version that looks like a former
# champion, which a rollback would accept.
CONFIRMING = ("promoted_at", "rolled_back_at")


class ChampionMoved(PipelineError):
    """Another promote or rollback moved the alias while this one decided: nothing moved."""


def move_champion(
    client: MlflowClient, name: str, number: str, tags: dict[str, str], judged: str | None
) -> None:
    """Record why on the version, move the alias, then confirm it (CONFIRMING); undo the record
    if the alias does not move.

    `judged` is the champion the decision was taken against (None: there was none). The alias
    moves only while it still points there: a promote and a rollback that run at once (a
    scheduled retrain, a teammate's rollback) would otherwise undo each other unseen. MLflow
    has no compare-and-set, so this reads the alias just before moving it."""
    written = []
    try:
        for key, value in tags.items():
            if key not in CONFIRMING:
                client.set_model_version_tag(name, number, key, value)
                written.append(key)
        now = champion(client, name)
        if (str(now.version) if now else None) != judged:
            raise ChampionMoved(
                f"the champion of {name} became version {now.version if now else 'none'} while "
                f"this decision was taken against version {judged} (another promote or rollback "
                "ran at the same time): nothing moved; run it again to decide against the new "
                "champion"
            )
        client.set_registered_model_alias(name, CHAMPION, number)
    except BaseException:  # Ctrl-C too: a kill -9 leaves them to repair_interrupted
        for key in written:
            quietly(client.delete_model_version_tag, name, number, key)
        raise
    log.info("alias %s of %s now points at version %s", CHAMPION, name, number)
    how = "a rollback" if "rolled_back_at" in tags else "the gate"
    why = tags.get("rollback_reason") or tags.get("promotion_reason") or ""
    was = f"v{judged}" if judged else "none"
    record_history(client, name, f"v{number} became champion (was {was}) by {how}: {why}")
    for key in CONFIRMING:
        if key in tags:
            _confirm(client, name, number, key, tags[key])


HISTORY = "history."  # then a UTC time: a registered-model tag per champion move or deployment
HISTORY_TIME = "%Y%m%dT%H%M%S.%fZ"


def record_history(client: MlflowClient, name: str, event: str) -> None:
    """Add an event to the model's history, a registered-model tag `history.<UTC time>`: a
    version's own tags keep only the last event of each kind (a second rollback to it, or
    deployment of it, replaces the first), the history keeps them all. A failure to record it
    is logged, as the event itself has happened."""
    stamp = datetime.now(UTC).strftime(HISTORY_TIME)
    try:
        client.set_registered_model_tag(name, f"{HISTORY}{stamp}", event[:5000])
    except Exception as err:
        log.warning("the history of %s lacks %r (%s): %s", name, event, stamp, driver_said(err))


def history(client: MlflowClient, name: str) -> list[tuple[str, str]]:
    """The model's history, oldest first: (UTC time, ISO; event)."""
    try:
        tags = client.get_registered_model(name).tags
    except MlflowException as err:
        raise PipelineError(
            f"model {name} is not in this registry ({err.message}): `make pipeline` registers it"
        ) from err
    return [
        (datetime.strptime(key.removeprefix(HISTORY), HISTORY_TIME).isoformat(), event)
        for key, event in sorted(tags.items())
        if key.startswith(HISTORY)
    ]


class Unconfirmed(PipelineError):
    """The alias moved, but a tag confirming the move could not be recorded: the move stands."""


CONFIRM_ATTEMPTS = 4  # about 7 s of a registry briefly away (1, 2 and 4 s apart)


def _confirm(client: MlflowClient, name: str, number: str, key: str, value: str) -> None:
    """Record a CONFIRMING tag once the alias has moved, retrying a registry briefly away; an
    Unconfirmed error names the tag to record by hand if it stays away."""
    for attempt in range(CONFIRM_ATTEMPTS):
        try:
            client.set_model_version_tag(name, number, key, value)
            return
        except Exception as err:
            failure = err
            if attempt + 1 < CONFIRM_ATTEMPTS:
                log.warning("recording %s on %s v%s failed (%s); retrying", key, name, number, err)
                time.sleep(2**attempt)
    raise Unconfirmed(
        f"alias {CHAMPION} of {name} now points at version {number}, but recording {key}="
        f"{value} on it failed ({driver_said(failure)}): the move stands. When the registry "
        'answers again, record it: .venv/bin/python -c "from mlflow import MlflowClient; '
        f"MlflowClient().set_model_version_tag('{name}', '{number}', '{key}', '{value}')\""
    ) from failure


def quietly(call, *args) -> None:
    """Best-effort clean-up: log instead of masking the original error."""
    try:
        call(*args)
    except Exception as err:
        log.warning("clean-up %s%s failed: %s", call.__name__, args, err)
