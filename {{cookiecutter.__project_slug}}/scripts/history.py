"""Print the model's history, oldest first: each time a version became champion (by the gate or
a rollback, with the reason) and each deployment (make record-deployment). A version's own tags
keep only the last event of each kind; this answers which version was champion, or deployed,
on a given day.
"""

from __future__ import annotations

import argparse

from {{ cookiecutter.__package_name }} import registry
from {{ cookiecutter.__package_name }}.cli import run
from {{ cookiecutter.__package_name }}.config import Backends, load_params


def main(argv: list[str] | None = None) -> int:
    """Print one line per event: UTC time, then the event."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", help="registered model (default: params.yaml model.name)")
    args = parser.parse_args(argv)

    def step() -> int:
        name = args.name or load_params()["model"]["name"]
        events = registry.history(registry.connect(Backends.from_env()), name)
        for when, event in events:
            print(f"{when}  {event}")
        if not events:
            print(f"no champion or deployment of {name} recorded yet")
        return 0

    return run(step)


if __name__ == "__main__":
    raise SystemExit(main())
