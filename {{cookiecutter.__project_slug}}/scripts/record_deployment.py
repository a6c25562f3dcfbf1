"""Record in the registry that the bundle's model version was deployed: its `deployed_at` (now,
UTC) and `deployed_image` (the image reference deploy.yml pushed and smoke-tested), beside the
lineage tags training and promotion wrote. deploy.yml runs it last, once the pushed image has
passed its smoke test; a rollback's deploy records it on the version rolled back to.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from {{ cookiecutter.__package_name }} import registry
from {{ cookiecutter.__package_name }}.cli import run
from {{ cookiecutter.__package_name }}.config import Backends
from {{ cookiecutter.__package_name }}.errors import PipelineError

log = logging.getLogger("record_deployment")
BUNDLE = Path("build/model/bundle.json")


def main(argv: list[str] | None = None) -> int:
    """Tag the bundle's version with deployed_at and deployed_image."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--image", required=True, help="the image deployed, registry/name:tag")
    args = parser.parse_args(argv)
    if ":" not in args.image.rpartition("/")[2]:
        parser.error(f"--image {args.image!r} has no tag: give registry/owner/name:tag")

    def step() -> int:
        try:
            meta = json.loads(BUNDLE.read_text())
        except FileNotFoundError:
            raise PipelineError(f"{BUNDLE} does not exist: run `make bundle` first") from None
        name, version = meta["model_name"], str(meta["version"])
        client = registry.connect(Backends.from_env())
        registry.version(client, name, version)  # refuses a version this registry lacks
        when = registry.now()
        client.set_model_version_tag(name, version, "deployed_image", args.image)
        client.set_model_version_tag(name, version, "deployed_at", when)
        registry.record_history(client, name, f"v{version} deployed as {args.image}")
        log.info("recorded %s v%s deployed at %s as %s", name, version, when, args.image)
        return 0

    return run(step)


if __name__ == "__main__":
    raise SystemExit(main())
