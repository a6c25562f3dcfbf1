"""Export the champion (or --version) from the registry into a model bundle for serving."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from {{ cookiecutter.__package_name }} import registry
from {{ cookiecutter.__package_name }}.cli import run, version_number
from {{ cookiecutter.__package_name }}.config import Backends, section
from {{ cookiecutter.__package_name }}.evaluation import schema_change
from {{ cookiecutter.__package_name }}.serving import bundle

log = logging.getLogger("bundle")


def main(argv: list[str] | None = None) -> int:
    """Write the bundle to --out: the model files and bundle.json with its lineage."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("build/model"))
    parser.add_argument(
        "--version", type=version_number, help="a version number (default: the champion)"
    )
    args = parser.parse_args(argv)

    def step() -> int:
        client = registry.connect(Backends.from_env())
        meta = bundle.export(client, section("model")["name"], args.version, args.out)
        log.info("bundled %s v%s into %s", meta["model_name"], meta["version"], args.out)
        declared = section("data").get("features") or {}
        if problem := schema_change(meta["version"], meta["features"], declared):
            log.warning("%s: the service takes the features it was trained on", problem)
        return 0

    return run(step)


if __name__ == "__main__":
    raise SystemExit(main())
