"""Where a model came from: code version, data version and library versions."""

from __future__ import annotations

import hashlib
import platform
import subprocess
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import yaml

LIBRARIES = ("scikit-learn", "pandas", "numpy", "mlflow", "dvc")


def _git(*args: str) -> str | None:
    """Run a git command, None when git or the repository is not there."""
    try:
        result = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
    except OSError:
        return None
    return result.stdout.strip() if result.returncode == 0 else None


# What the pipeline itself rewrites before training: the data versions, which the lineage holds
# apart (data.content_hash, data.dvc_md5), and the .gitignore files DVC writes (and stages) beside
# its outputs. Changes there do not make the code dirty.
DATA_VERSION_FILES = (
    ":(exclude)dvc.lock",
    ":(exclude,glob)**/*.dvc",
    ":(exclude,glob)**/.gitignore",
)


# What shapes a trained model besides its rows: the code, params.yaml and the locked packages.
# Two clean versions trained on the same rows with these files the same are the same training,
# whatever else their commits changed (a dvc.lock committed after a run, the README).
TRAINING_FILES = (
    "src",
    "scripts/get_data.py",
    "scripts/train.py",
    "params.yaml",
    "dvc.yaml",
    "pyproject.toml",
    "uv.lock",
)


# The tracked files changed since the last commit, data version files aside.
STATUS = ("status", "--porcelain", "--untracked-files=no", "--", ".", *DATA_VERSION_FILES)


def git_state() -> dict[str, str]:
    """The commit checked out (or 'none' before the first commit), whether the tree differs
    from it, data version files aside, and a hash of the commit's TRAINING_FILES."""
    commit = _git("rev-parse", "HEAD") or "none"
    status = _git(*STATUS)
    dirty = "unknown" if status is None else str(bool(status) or commit == "none").lower()
    # ls-tree names each file or folder with the hash of its content: one line each.
    listing = _git("ls-tree", commit, "--", *TRAINING_FILES) if commit != "none" else None
    tree = hashlib.sha256(listing.encode()).hexdigest() if listing else "none"
    return {"git.commit": commit, "git.dirty": dirty, "git.training_files": tree}


def uncommitted() -> list[str]:
    """The tracked files whose changes are not committed, data version files aside."""
    return [line.split(maxsplit=1)[-1] for line in (_git(*STATUS) or "").splitlines()]


def same_training(one: dict, other: dict) -> bool:
    """Whether two versions' tags pin down the same training: the same rows, both trained from a
    clean checkout, and the same TRAINING_FILES in their commits (versions without that tag:
    the same commit)."""
    if not one.get("git.dirty") == other.get("git.dirty") == "false":
        return False
    both = "git.training_files" in one and "git.training_files" in other
    key = "git.training_files" if both else "git.commit"
    return all(one.get(t) == other.get(t) for t in ("data.content_hash", key))


def unpushed(commit: str) -> bool:
    """Whether the repository has a remote and no remote branch holds `commit` (as far as the
    last fetch knows): a version naming it points at a commit only this machine has."""
    if not _git("remote"):
        return False
    return _git("branch", "--remotes", "--contains", commit) == ""


def locked_md5(path: Path, lock: Path = Path("dvc.lock")) -> str | None:
    """The md5 dvc.lock records for `path` as an output of a stage, or None."""
    try:
        stages = yaml.safe_load(lock.read_text())["stages"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None
    outs = [out for stage in stages.values() for out in stage.get("outs") or []]
    return next((out.get("md5") for out in outs if out.get("path") == str(path)), None)


def file_md5(path: Path) -> str:
    """The md5 DVC records for a file: the md5 of its bytes."""
    digest = hashlib.md5(usedforsecurity=False)
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pinned(packages: list[str]) -> list[str]:
    """Requirement lines pinning each package to the version installed here."""
    return [f"{name}=={version(name)}" for name in packages]


def library_versions(model_requirements: Sequence[str] = ()) -> dict[str, str]:
    """Versions of Python and the libraries that shape a model: ours, and the packages the model
    needs at prediction time (model.REQUIREMENTS: LightGBM, say)."""
    versions = {"lib.python": platform.python_version()}
    for name in dict.fromkeys([*LIBRARIES, *model_requirements]):
        try:
            versions[f"lib.{name}"] = version(name)
        except PackageNotFoundError:
            versions[f"lib.{name}"] = "not installed"
    return versions


# Tags of a version a rollback took out of service.
DEMOTED_AT, DEMOTED_REASON = "demoted_at", "demoted_reason"
SAME = "same data hash, same committed code and params.yaml"


def repeated_training(client, name: str, candidate, champion) -> str | None:
    """Why the gate must not promote `candidate` whatever its metrics, or None: it is a version a
    rollback took out of service, or the same training (same_training) as such a
    version or as the champion.

    Without this, the next scheduled retrain on unchanged data would quietly undo a rollback, and
    each fresh checkout (a CI runner) would promote its identical copy of the champion."""
    tags = candidate.tags
    if DEMOTED_AT in tags:
        return (
            f"version {candidate.version} was rolled back on {tags[DEMOTED_AT]} "
            f"({tags.get(DEMOTED_REASON)}); the gate does not promote it again: "
            f"`make rollback VERSION={candidate.version}` restores it on purpose"
        )
    if tags.get("git.dirty") != "false":
        return None  # uncommitted changes: not provably the same training
    if champion is not None and same_training(champion.tags, tags):
        return (
            f"it repeats the training of champion v{champion.version} ({SAME}): promoting it "
            "would change nothing"
        )
    for other in client.search_model_versions(f"name='{name}'"):
        if DEMOTED_AT in other.tags and same_training(other.tags, tags):
            return (
                f"it repeats version {other.version} ({SAME}), which was "
                f"rolled back on {other.tags[DEMOTED_AT]} ({other.tags.get(DEMOTED_REASON)}): "
                "change the data, code or params.yaml, or restore that version on purpose "
                f"with `make rollback VERSION={other.version}`"
            )
    return None
