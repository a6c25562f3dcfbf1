"""Configuration: params.yaml sections and the environment. No other module reads either."""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from .data import FEATURE_TYPES
from .errors import PipelineError

PARAMS_FILE = Path("params.yaml")
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_ARTIFACT_ROOT = "mlartifacts"
DEFAULT_MONITORING_URL = "sqlite:///monitoring.db"


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last,
    so a feature declared twice would silently take the second type)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_params(path: Path = PARAMS_FILE) -> dict[str, Any]:
    """Read params.yaml, refusing a missing, malformed or invalid file (see PARAMS)."""
    try:
        params = yaml.load(Path(path).read_text(), Loader=_UniqueKeyLoader)  # a SafeLoader
    except FileNotFoundError as err:
        raise PipelineError(f"{path} not found: run from the repository root") from err
    except yaml.YAMLError as err:
        raise PipelineError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(params, dict):
        raise PipelineError(f"{path} must hold a mapping of sections, got {type(params).__name__}")
    problems = params_problems(params)
    if len(problems) == 1:
        raise PipelineError(f"{path}: {problems[0]}")
    if problems:  # all at once, so one edit fixes them all
        raise PipelineError(f"{path} has {len(problems)} problems:\n  " + "\n  ".join(problems))
    return params


def section(name: str, path: Path = PARAMS_FILE) -> dict[str, Any]:
    """Return one section of params.yaml (load_params has checked that it exists)."""
    return load_params(path)[name]


@dataclass(frozen=True)
class Rule:
    """One params.yaml key: whether it must be present, what it accepts (in words) and the test."""

    required: bool
    accepts: str
    test: Callable[[Any], bool]
    # The offending part of a large value (one entry of a mapping), to name instead of it all.
    culprit: Callable[[Any], str | None] = lambda _value: None


def _is_number(value: Any) -> bool:
    """A finite int or float; YAML's true/false are bools, not numbers."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _integer(minimum: int, required: bool = True) -> Rule:
    """An integer no smaller than `minimum`."""
    return Rule(
        required,
        f"an integer >= {minimum}",
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum,
    )


def _number(above: float | None = None, below: float | None = None, required: bool = True) -> Rule:
    """A number strictly between `above` and `below` (either bound may be left open)."""
    words = " and ".join(
        f"{sign} {bound}" for sign, bound in ((">", above), ("<", below)) if bound is not None
    )
    return Rule(
        required,
        f"a number {words}" if words else "a number",
        lambda v: _is_number(v) and (above is None or v > above) and (below is None or v < below),
    )


def _text(required: bool = True, nullable: bool = False) -> Rule:
    """A non-empty string, or null when `nullable`."""
    return Rule(
        required,
        "a non-empty string" + (" or null" if nullable else ""),
        lambda v: (isinstance(v, str) and v.strip() != "") or (nullable and v is None),
    )


def _features(value: Any) -> bool:
    """A non-empty mapping of column name to a feature type."""
    return isinstance(value, dict) and bool(value) and _bad_feature(value) is None


# The names monitoring gives the model's outputs and latency beside the features (the report,
# the hourly rollups): no feature may take them.
RESERVED_NAMES = ("model output", "_prediction", "_prediction_value", "_probability", "_latency_ms")


def _bad_feature(value: Any) -> str | None:
    """The first entry of a features mapping that is not `name: type`, as text."""
    if isinstance(value, dict):
        for name, kind in value.items():
            text = isinstance(name, str) and '"' not in name and name not in RESERVED_NAMES
            if not text or kind not in FEATURE_TYPES:
                return f"{name}: {kind!r}"
    return None


def _bounds(value: Any) -> bool:
    """Null, or a mapping of column name to [lowest, highest] (_bad_bound)."""
    return value is None or (isinstance(value, dict) and _bad_bound(value) is None)


def _bad_bound(value: Any) -> str | None:
    """The first entry of a bounds mapping that is not `name: [lowest, highest]`, numbers or
    null (no limit on that side), at least one a number, the lowest no higher, as text."""
    if isinstance(value, dict):
        for name, limits in value.items():
            pair = isinstance(limits, list) and len(limits) == 2
            pair = pair and all(v is None or _is_number(v) for v in limits)
            given = [v for v in limits if v is not None] if pair else []
            why = "not two numbers or null" if not pair else ""
            why = why or ("no limit on either side: leave the column out" if not given else "")
            why = why or ("its lowest is above its highest" if given != sorted(given) else "")
            if why:  # a name that is no numeric feature: _across says so
                return f"{name}: {json.dumps(limits, default=str)} ({why})"
    return None


def _names(value: Any) -> bool:
    """Null, or a list of distinct non-empty column names."""
    return value is None or (
        isinstance(value, list)
        and all(isinstance(v, str) and v.strip() for v in value)
        and len(set(value)) == len(value)
    )


def _labels(value: Any) -> bool:
    """Null, or a list of distinct labels: text or numbers, never YAML's booleans (an unquoted
    no/yes)."""
    return value is None or (
        isinstance(value, list)
        and all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in value)
        and len(set(value)) == len(value)
    )


TASKS = ("classification", "regression")
SEED = _integer(0)  # numpy and scikit-learn refuse negative seeds
SEED_OPTIONAL = _integer(0, required=False)
# Every section and key params.yaml may hold; _across() checks keys against each other. Checks
# that need more than params.yaml stay where the context is: the declared columns against the
# data (data.py), the hyperparameters against the model (training.py).
PARAMS: dict[str, dict[str, Rule]] = {
    "model": {
        "name": _text(),
        "task": Rule(True, "classification or regression", lambda v: v in TASKS),
    },
    "data": {
        "source": _text(),
        "query": _text(required=False, nullable=True),
        "sample_rows": _integer(1, required=False),
        "sample_seed": SEED_OPTIONAL,
        "target": _text(),
        "target_classes": Rule(
            False,
            "a list of distinct labels or null (quote yes/no, true/false and on/off: YAML "
            'reads them as booleans, so write ["no", "yes"])',
            _labels,
        ),
        "time_column": _text(required=False, nullable=True),
        "ignore": Rule(
            False,
            "a list of distinct column names, or null (columns of the source that are no "
            "feature, as an id: dropped when read)",
            _names,
        ),
        "bounds": Rule(  # required: training's DVC stage reads it (null: no bounds)
            True,
            "a mapping of numeric column name to [lowest, highest], null on a side without a "
            "limit (e.g. floor_area: [0, null]), or null",
            _bounds,
            _bad_bound,
        ),
        "features": Rule(
            True,
            # Monitoring's SQL finds a feature by a JSON path, which cannot hold a double quote.
            f"a mapping of column name (text without double quotes, none of {RESERVED_NAMES}) "
            f"to one of {FEATURE_TYPES}",
            _features,
            _bad_feature,
        ),
    },
    "split": {
        "holdout_fraction": _number(0, 1),
        "validation_fraction": _number(0, 1),
        "seed": SEED,
    },
    "train": {
        "seed": SEED,
        # Free-form: build_model() decides which names and values it takes.
        "hyperparameters": Rule(
            False,
            "a mapping of parameter name to value, or null",
            lambda v: v is None or (isinstance(v, dict) and all(isinstance(k, str) for k in v)),
        ),
        # One bin would put every value in it: numeric drift could never show.
        "profile_bins": _integer(2, required=False),
    },
    "promote": {
        "metric": _text(),
        "threshold": _number(),
        "min_improvement": Rule(False, "a number >= 0", lambda v: _is_number(v) and v >= 0),
    },
    "monitor": {
        "window_days": _number(above=0, required=False),
        "psi": _number(above=0),
        "alpha": _number(0, 1),
        "bias": _number(above=0),
        # Zero would give a verdict on an empty window.
        "min_records": _integer(1),
        "not_judged": Rule(
            False,
            "a list of distinct feature names, or null (features reported but never judged as "
            "drift: a calendar feature such as is_weekend, which one day's window always shifts)",
            _names,
        ),
    },
}


def params_problems(params: dict[str, Any]) -> list[str]:
    """Every way `params` departs from PARAMS, one message each naming the key and the rule."""
    problems = _unknown(params, PARAMS, "unknown section ", "the sections are")
    for name, rules in PARAMS.items():
        body = params.get(name)
        if not isinstance(body, dict):
            problems.append(
                f"missing section {name} (it takes {', '.join(rules)})"
                if body is None
                else f"section {name} must be a mapping of keys, got {body!r}"
            )
            continue
        problems += _unknown(body, rules, f"unknown key {name}.", f"{name} takes")
        for key, rule in rules.items():
            if key not in body:
                if rule.required:
                    problems.append(f"missing key {name}.{key}: it must be {rule.accepts}")
            elif not rule.test(body[key]):
                culprit = rule.culprit(body[key])
                shown = f"has {culprit}" if culprit else f"is {body[key]!r}"
                hint = _yaml_hint(body[key])
                problems.append(f"{name}.{key} {shown}: it must be {rule.accepts}{hint}")
    return problems or _across(params)


def _yaml_hint(value: Any) -> str:
    """Why a number written as text reads as text: YAML takes 1e5 as a string (its floats need a
    dot, 1.0e+5), and quotes make any number text."""
    try:
        number = float(value) if isinstance(value, str) else None
    except ValueError:
        return ""
    if number is None or not math.isfinite(number):
        return ""
    written = repr(number)
    if number.is_integer() and abs(number) < 1e15:
        written = str(int(number))
    elif "e" in written:
        written = f"{number:.6e}"  # YAML's exponent form needs a dot: 1.000000e-07
    return f" (YAML reads {value!r} as text: write {written}, without quotes)"


def _across(params: dict[str, Any]) -> list[str]:
    """What is wrong between keys that are each well-formed: a target or time column that is also
    a feature, a time column that is the target, a metric of the other task, a threshold the
    metric cannot reach."""
    from .metrics import get_metric  # imports scikit-learn: only once the keys are known good

    data, promote = params["data"], params["promote"]
    problems = [
        f"data.{key} '{data[key]}' is also declared in data.features: "
        + ("the target cannot be an input" if key == "target" else "the split orders rows by it")
        for key in ("target", "time_column")
        if data.get(key) in data["features"]
    ]
    declared = [*data["features"], data["target"], data.get("time_column")]
    problems += [
        f"data.ignore names '{name}', which data declares as a column it uses: leave it out of "
        "one of them"
        for name in data.get("ignore") or []
        if name in declared
    ]
    for name in data.get("bounds") or {}:
        if data["features"].get(name) != "numeric" and not (
            name == data["target"] and params["model"]["task"] == "regression"
        ):
            problems.append(
                f"data.bounds names '{name}', which is no numeric feature"
                + (" nor the target" if params["model"]["task"] == "regression" else "")
                + ": bound only the columns declared numeric in data.features"
            )
    problems += [
        f"monitor.not_judged names '{name}', which is no feature in data.features"
        for name in params["monitor"].get("not_judged") or []
        if name not in data["features"]
    ]
    if data.get("time_column") == data["target"]:
        problems.append(
            f"data.time_column is the target '{data['target']}': the newest rows would be held "
            "out by their label; name the column that dates each row, or null"
        )
    try:
        metric = get_metric(promote["metric"], params["model"]["task"])
    except PipelineError as err:
        return [*problems, f"promote.metric: {err}"]
    outside = metric.outside(promote["threshold"])
    return problems + ([f"promote.threshold: {outside}"] if outside else [])


def _unknown(found: dict, allowed: dict, what: str, takes: str) -> list[str]:
    """A message per key of `found` not in `allowed` (`what` + key), suggesting the closest."""
    messages = []
    for key in found:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            messages.append(f"{what}{key}{hint}; {takes}: {', '.join(allowed)}")
    return messages


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


# The password of a URL (user:password@): everything up to the last @ of the word, so that one
# holding an unencoded @, : or / is hidden whole; and one given as a query parameter
# (?password=..., libpq's form) up to the next parameter.
_PASSWORD = re.compile(r"(?<=://)([^:/@\s]*):\S*@")
_PASSWORD_PARAMETER = re.compile(r"([?&]password=)[^&\s]*", re.IGNORECASE)
SHIPPED_DATABASES = ("sqlite", "postgresql")


def redact(text: str) -> str:
    """The text with the password of every URL in it replaced by ***."""
    return _PASSWORD_PARAMETER.sub(r"\1***", _PASSWORD.sub(r"\1:***@", text))


def database_url(text: str, variable: str, shipped_only: bool = True):
    """The SQLAlchemy URL in `variable`, PostgreSQL through psycopg 3 (the driver this project
    ships); a URL that cannot be parsed, or names a database without a shipped driver, is refused
    naming the variable and the fix, and never the password."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(text)
        if "@" in (url.host or ""):  # p@ss@host: make_url takes "ss@host" for the host
            raise ValueError("unencoded @")
    except (ArgumentError, ValueError):
        raise PipelineError(
            f"{variable} is not a database URL: expected e.g. "
            "postgresql://user:password@host:5432/dbname or sqlite:///file.db, with special "
            "characters of the user name or password percent-encoded (@ as %40, : as %3A, "
            "/ as %2F, # as %23)"
        ) from None
    backend = url.get_backend_name()
    if backend == "postgres":
        raise PipelineError(f"{variable} starts with postgres://: SQLAlchemy reads postgresql://")
    if shipped_only and backend not in SHIPPED_DATABASES:
        raise PipelineError(
            f"{variable} names a {backend!r} database: this project ships the drivers of "
            f"{' and '.join(SHIPPED_DATABASES)} (postgresql://user:password@host:5432/dbname)"
        )
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    return url


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

    def registry_id(self) -> str:
        """Which model registry this is: a hash of its URI without the password, which a report
        can keep without naming its host (and teammates' passwords may differ)."""
        uri = redact(self.registry_uri or self.tracking_uri)
        return hashlib.sha256(uri.encode()).hexdigest()[:12]


ENV_MAXIMUM = 2**31 - 1  # beyond any sensible limit, timeout or size, and within every C int


def _number(env: dict[str, str], name: str, default: float, kind=int, minimum: float = 0):
    """A numeric environment variable, refusing text and values outside `minimum`..ENV_MAXIMUM."""
    raw = env.get(name)
    if raw in (None, ""):
        return kind(default)
    rule = f"{'a whole number' if kind is int else 'a number'} of at least {minimum}"
    rule += f" and at most {ENV_MAXIMUM}"
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or not minimum <= value <= ENV_MAXIMUM:  # NaN fails both comparisons
        raise PipelineError(f"{name}={raw!r} is not allowed: give {rule}")
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
    read_timeout: float
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
            read_timeout=_number(env, "SERVE_READ_TIMEOUT_SECONDS", 10.0, float, 0.001),
            max_batch_rows=_number(env, "SERVE_MAX_BATCH_ROWS", 2048, minimum=1),
            fast_path=_switch(env, "SERVE_FAST_PATH", True),
            prediction_log=_switch(env, "PREDICTION_LOG", True),
            monitoring_database_url=env.get("MONITORING_DATABASE_URL") or DEFAULT_MONITORING_URL,
            spool_dir=Path(env.get("PREDICTION_LOG_SPOOL_DIR") or "build/prediction-log-spool"),
            spool_cap_bytes=_number(env, "PREDICTION_LOG_SPOOL_CAP_BYTES", 256 << 20, minimum=1),
        )


def main() -> int:
    """`python -m <package>.config`: check params.yaml as every script does before it starts
    (make runs it before a DVC stage, which skips an unchanged stage without starting it)."""
    from .cli import run

    def check() -> int:
        load_params()
        return 0

    return run(check)


if __name__ == "__main__":
    raise SystemExit(main())
