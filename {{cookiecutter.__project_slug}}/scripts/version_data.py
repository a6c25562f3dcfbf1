"""Write the rows a registered version was trained and evaluated on to a file: the dataset whose
DVC hash its `data.dvc_md5` tag holds, from DVC's cache or its remote (`make data` pushes every
dataset there), whether or not a commit's dvc.lock names it (a scheduled retrain commits none).
The file written is checked against that hash, so it is those rows or nothing.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from {{ cookiecutter.__package_name }} import lineage, registry
from {{ cookiecutter.__package_name }}.cli import run, version_number
from {{ cookiecutter.__package_name }}.config import Backends, load_params
from {{ cookiecutter.__package_name }}.errors import PipelineError

log = logging.getLogger("version_data")


def fetch(dvc_md5: str, out: Path) -> None:
    """Have DVC check out the dataset of hash `dvc_md5` (pulled from the remote when its cache
    lacks it) through a .dvc file naming only that hash, in a folder removed afterwards, then
    move it to `out`."""
    with tempfile.TemporaryDirectory(prefix=".version-data-", dir=".") as folder:
        stub = Path(folder) / "dataset.parquet.dvc"
        stub.write_text(f"outs:\n- md5: {dvc_md5}\n  hash: md5\n  path: dataset.parquet\n")
        pulled = subprocess.run(
            [sys.executable, "-m", "dvc", "pull", "--quiet", str(stub)],
            capture_output=True,
            text=True,
            check=False,
        )
        rows = Path(folder) / "dataset.parquet"
        if pulled.returncode or not rows.exists():
            said = " ".join((pulled.stderr or pulled.stdout).split())[-400:]
            raise PipelineError(
                f"DVC has no dataset of hash {dvc_md5} in its cache or its remote "
                f"({said or 'nothing pulled'}): check the remote (dvc remote list, and its "
                "credentials); a dataset `make data` could not push is only in the cache of the "
                "machine that made it"
            )
        got = lineage.file_md5(rows)
        if got != dvc_md5:
            raise PipelineError(f"DVC gave a file of hash {got}, not {dvc_md5}: nothing written")
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(rows, out)


def main(argv: list[str] | None = None) -> int:
    """Write VERSION's rows to --out."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--version", type=version_number, required=True, help="the version")
    parser.add_argument("--out", type=Path, help="default: build/version-<N>-dataset.parquet")
    args = parser.parse_args(argv)
    out = args.out or Path(f"build/version-{args.version}-dataset.parquet")
    if out.suffix.lower() != ".parquet":
        parser.error(f"--out {str(out)!r} must end in .parquet: the dataset is written as it is")

    def step() -> int:
        name = load_params()["model"]["name"]
        client = registry.connect(Backends.from_env())
        found = registry.version(client, name, args.version)  # refuses one without lineage
        dvc_md5 = found.tags["data.dvc_md5"]
        fetch(dvc_md5, out)
        log.info(
            "wrote the rows of %s v%s (DVC hash %s, content hash %s) to %s",
            name,
            args.version,
            dvc_md5,
            found.tags["data.content_hash"],
            out,
        )
        return 0

    return run(step)


if __name__ == "__main__":
    raise SystemExit(main())
