"""Copy the files of $PATHS into $ACT_ARTIFACTS/$NAME as upload-artifact v4 would store them."""

import os
import shutil
import sys
from pathlib import Path


def matched(patterns: list[str]) -> list[Path]:
    """Every file the patterns name: files, whole folders and globs, in the workspace."""
    files: set[Path] = set()
    for pattern in patterns:
        pattern = pattern.rstrip("/")
        base = Path("/") if pattern.startswith("/") else Path()
        for hit in base.glob(pattern.lstrip("/")):
            if hit.is_dir():
                files.update(p.resolve() for p in hit.rglob("*") if p.is_file())
            elif hit.is_file():
                files.add(hit.resolve())
    return sorted(files)


def main() -> int:
    """Store the artifact; answer its id and URL on GITHUB_OUTPUT."""
    name, policy = os.environ["NAME"], os.environ["IF_NO_FILES_FOUND"]
    patterns = [line.strip() for line in os.environ["PATHS"].splitlines() if line.strip()]
    files = matched(patterns)
    if not files:
        message = f"No files were found with the provided path: {' '.join(patterns)}."
        level = {"error": "::error::", "warn": "::warning::"}.get(policy, "")
        print(f"{level}{message} No artifacts will be uploaded.")
        return 1 if policy == "error" else 0
    root = Path(os.path.commonpath([f.parent for f in files]))
    store = Path(os.environ["ACT_ARTIFACTS"])
    target = store / name
    if target.exists() and os.environ["OVERWRITE"] != "true":
        print(f"::error::an artifact named {name} already exists in this run")
        return 1
    shutil.rmtree(target, ignore_errors=True)
    for file in files:
        (target / file.relative_to(root)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(file, target / file.relative_to(root))
    number = len([p for p in store.iterdir() if p.is_dir()])
    run = "{GITHUB_SERVER_URL}/{GITHUB_REPOSITORY}/actions/runs/{GITHUB_RUN_ID}".format_map(
        os.environ
    )
    with Path(os.environ["GITHUB_OUTPUT"]).open("a") as out:
        out.write(f"artifact-id={number}\nartifact-url={run}/artifacts/{number}\n")
    print(f"upload-artifact stand-in: {len(files)} file(s) as {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
