"""Fail, naming each one, when environment variables a job needs are missing or empty, or are
database URLs that cannot work (postgres://, an unencoded special character in the password).

The first step of every GitHub Actions job that uses secrets: GitHub turns a secret that was
never set into an empty string, which would otherwise surface much later as a confusing error
(or, worse, as a run against the embedded SQLite defaults on a throw-away runner).
Standard library only: it runs before `make setup`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from urllib.parse import urlsplit

log = logging.getLogger("check_env")

# Where each known name is set, and what it is for (the README's "GitHub Actions" checklist).
HINTS = {
    "MLFLOW_TRACKING_URI": "a secret, the MLflow tracking and registry database or server URL",
    "MONITORING_DATABASE_URL": "a secret, the database of the prediction log and daily stats",
    "MODEL_ARTIFACT_ROOT": "a variable, where model files go, e.g. s3://bucket/prefix/mlartifacts "
    "(not needed with an MLflow server URL)",
    "AWS_ACCESS_KEY_ID": "a secret, the S3 access key; or set the variable AWS_ROLE_ARN for OIDC",
    "AWS_SECRET_ACCESS_KEY": "a secret, the S3 secret key; or set the variable AWS_ROLE_ARN",
    "SOURCE_DATABASE_URL": "a secret, the database that params.yaml data.query reads",
}


def missing(names: list[str], env: dict[str, str]) -> list[str]:
    """The names that are unset or set to an empty string, in the order given; an MLflow server
    (an http(s) tracking URI) keeps model files in its own store, so it needs no
    MODEL_ARTIFACT_ROOT."""
    server = env.get("MLFLOW_TRACKING_URI", "").strip().startswith(("http://", "https://"))
    return [
        name
        for name in names
        if not env.get(name, "").strip() and not (server and name == "MODEL_ARTIFACT_ROOT")
    ]


DATABASE_URLS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MONITORING_DATABASE_URL")
DATABASE_URLS += ("SOURCE_DATABASE_URL",)


# The databases whose drivers the project ships (config.SHIPPED_DATABASES), and what else an
# MLflow URI may name.
SHIPPED_DATABASES = ("sqlite", "postgresql")
MLFLOW_SCHEMES = ("http", "https", "file", "databricks")


def url_problem(name: str, value: str) -> str | None:
    """What is wrong with a database URL variable's value, or None (only the form is checked)."""
    if name not in DATABASE_URLS or not value.strip():
        return None
    scheme, separator, rest = value.strip().partition("://")
    if scheme == "postgres" or scheme.startswith("postgres+"):
        return f"{name} starts with postgres://: SQLAlchemy and MLflow read postgresql://"
    others = MLFLOW_SCHEMES if name.startswith("MLFLOW_") else ()
    if separator and scheme.partition("+")[0] not in SHIPPED_DATABASES + others:
        return (
            f"{name} names a {scheme!r} database: this project ships the drivers of "
            f"{' and '.join(SHIPPED_DATABASES)} (postgresql://user:password@host:5432/dbname)"
        )
    try:
        _port = urlsplit(value.strip()).port  # where an unencoded @, : or # shows
        if rest.partition("/")[0].count("@") > 1:
            raise ValueError("unencoded @")
    except ValueError:
        return (
            f"{name} does not parse as a URL: percent-encode special characters of the user name "
            "or password (@ as %40, : as %3A, / as %2F, # as %23)"
        )
    return None


def message(name: str) -> str:
    """One line naming a missing variable, where to set it and what it is for."""
    hint = HINTS.get(name, "a secret or variable")
    return (
        f"{name} is not set: {hint}. Add it to the job's environment (production, or "
        "pull-request) in Settings > Environments: deploy, a called workflow, sees environment "
        "secrets, not repository ones (README: GitHub Actions, Setup checklist)."
    )


def main(argv: list[str] | None = None, env: dict[str, str] | None = None) -> int:
    """Exit 1 listing every missing name of NAME ...; exit 0 when all are set."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help="variables the job needs")
    args = parser.parse_args(argv)
    if not args.names:
        parser.error('name the variables to check: make check-env NEEDS="MLFLOW_TRACKING_URI ..."')
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    env = dict(os.environ) if env is None else env
    absent = missing(args.names, env)
    problems = [message(name) for name in absent]
    problems += filter(None, (url_problem(name, env.get(name, "")) for name in args.names))
    for problem in problems:
        log.error("%s", problem)
        if env.get("GITHUB_ACTIONS") == "true":  # an annotation shows on the run's summary page
            sys.stdout.write(f"::error title=Configuration::{problem}\n")
    if problems:
        return 1
    log.info("all set: %s", " ".join(args.names))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
