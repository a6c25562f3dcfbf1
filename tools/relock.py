"""Refresh the generated repository's uv.lock after its pyproject.toml dependencies change.

Bakes the template with its defaults, runs `uv lock` there (starting from the current lock, so
only what the change requires moves; pass --upgrade to move everything), and writes the lock
back with the project's own name turned into the template variable again.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from cookiecutter.main import cookiecutter

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "{{cookiecutter.__project_slug}}" / "uv.lock"
PLACEHOLDER = "{{ cookiecutter.__project_slug }}"


def relock(upgrade: bool) -> None:
    """Lock a default bake and copy the result back into the template."""
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(cookiecutter(str(ROOT), no_input=True, output_dir=tmp))
        slug = project.name
        uv = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
        subprocess.run([uv, "lock", *(["--upgrade"] if upgrade else [])], cwd=project, check=True)
        text = (project / "uv.lock").read_text()
    entry = f'name = "{slug}"\nversion = "0.1.0"\nsource = {{ editable = "." }}'
    if text.count(entry) != 1:
        raise SystemExit(f"expected one editable entry for {slug} in the lock")
    LOCK.write_text(text.replace(entry, entry.replace(slug, PLACEHOLDER)))
    packages = len(re.findall(r"^\[\[package\]\]", text, re.MULTILINE))
    print(f"wrote {LOCK.relative_to(ROOT)}: {packages} packages")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--upgrade", action="store_true", help="move every package to its newest version"
    )
    relock(parser.parse_args().upgrade)
