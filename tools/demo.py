"""Bake the template with its defaults into a scratch folder and run the generated repo's lifecycle.

setup, the first commit, pipeline (twice: the second run changes nothing), then serve the
champion, send it a drifted batch, stop it, and run the drift check. Prints each step and, at
the end, where to look.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from cookiecutter.main import cookiecutter

ROOT = Path(__file__).resolve().parents[1]
STEPS = [
    ("make setup", "create .venv from uv.lock"),
    (
        'git add -A && git commit -q -m "Start from the template"',
        "the first commit: every model version records the commit it was trained from",
    ),
    ("make pipeline", "data -> train -> evaluate -> promote: the first model becomes champion"),
    ("make pipeline", "again, unchanged: nothing re-runs, no new version"),
    ("make drifted-sample", "write a drifted batch of the same schema"),
]
PORT = 8765


def user_env() -> dict[str, str]:
    """The environment without this tool's own virtualenv, as a user's shell would have it."""
    bin_dir = str(Path(sys.executable).parent)
    # Bytecode caching on: without it every step recompiles MLflow (~6 s instead of ~2 s); and
    # not a sub-make of `make demo`, so the steps print as they would in a user's shell.
    dropped = ("VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE", "MAKELEVEL", "MAKEFLAGS", "MFLAGS")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != bin_dir)
    if subprocess.run(["git", "config", "user.email"], capture_output=True).returncode:
        # A fresh machine may have no git identity; the first commit needs one.
        for role in ("AUTHOR", "COMMITTER"):
            env.setdefault(f"GIT_{role}_NAME", "Demo")
            env.setdefault(f"GIT_{role}_EMAIL", "demo@example.com")
    return env


def run_steps(project: Path) -> None:
    """Run each lifecycle step, stopping at the first failure."""
    for command, purpose in STEPS:
        print(f"\n==> {command}  ({purpose})", flush=True)
        subprocess.run(command, shell=True, cwd=project, env=user_env(), check=True)


def wait_ready(url: str, server: subprocess.Popen, timeout: float = 120) -> None:
    """Wait until the service answers /ready with 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/ready", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"the service at {url} did not become ready")


def serve_drifted_traffic(project: Path) -> None:
    """Serve the champion, send it the drifted batch (every record is logged), stop it."""
    url = f"http://127.0.0.1:{PORT}"
    print(f"\n==> make serve PORT={PORT}  (in the background)", flush=True)
    server = subprocess.Popen(
        ["make", "serve", f"PORT={PORT}"], cwd=project, env=user_env(), start_new_session=True
    )
    try:
        wait_ready(url, server)
        print(f"\n==> make send-batch FILE=data/batches/drifted.csv URL={url}", flush=True)
        subprocess.run(
            ["make", "send-batch", "FILE=data/batches/drifted.csv", f"URL={url}"],
            cwd=project,
            env=user_env(),
            check=True,
        )
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # graceful: the prediction log is flushed
        server.wait(timeout=60)


def monitor(project: Path) -> None:
    """Run the drift check; on this traffic it is expected to find drift (a non-zero exit)."""
    print("\n==> make monitor  (expected to find drift in the batch just served)", flush=True)
    subprocess.run(["make", "monitor"], cwd=project, env=user_env(), check=False)


def summary(project: Path) -> str:
    """Where to look once the lifecycle has run."""
    promotion = json.loads((project / "reports" / "promotion.json").read_text())
    return "\n".join(
        [
            f"\nDone. The generated repository is {project}",
            f"  promotion: {promotion['decision']} - {promotion['reason']}",
            f"  read:      {project / 'reports' / 'evaluation.md'} (and the PNG plots beside it)",
            f"  decision:  {project / 'reports' / 'promotion.json'}",
            f"  registry:  cd {project} && .venv/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db",
            f"  next:      cd {project} && make help",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Bake into --out (replacing an earlier demo) and run the lifecycle."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("build/demo"))
    args = parser.parse_args(argv)
    shutil.rmtree(args.out, ignore_errors=True)
    project = Path(cookiecutter(str(ROOT), no_input=True, output_dir=str(args.out)))
    try:
        run_steps(project)
        serve_drifted_traffic(project)
        monitor(project)
    except subprocess.CalledProcessError as err:
        command = err.cmd if isinstance(err.cmd, str) else " ".join(err.cmd)
        print(
            f"\n`{command}` failed with exit code {err.returncode} in {project}",
            file=sys.stderr,
        )
        return 1
    print(summary(project))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
