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
import socket
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
    ("make pipeline", "again, unchanged: only the data step re-reads the source; no new version"),
    ("make drifted-sample", "write a drifted batch of the same schema"),
]


class DemoError(Exception):
    """A step that did not do what the demo needs, with what to check."""


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def run_steps(project: Path) -> dict:
    """Run each lifecycle step, stopping at the first failure; the first pipeline's promotion."""
    first = None
    for command, purpose in STEPS:
        print(f"\n==> {command}  ({purpose})", flush=True)
        subprocess.run(command, shell=True, cwd=project, env=user_env(), check=True)
        if command == "make pipeline" and first is None:
            first = json.loads((project / "reports" / "promotion.json").read_text())
    return first


def wait_ready(url: str, server: subprocess.Popen, timeout: float = 120) -> None:
    """Wait until the service answers /ready with 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/ready", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise DemoError(f"the service at {url} did not become ready (its log is above)")


def serve_drifted_traffic(project: Path) -> None:
    """Serve the champion, send it the drifted batch (every record is logged), stop it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    print(f"\n==> make serve PORT={port}  (in the background)", flush=True)
    server = subprocess.Popen(
        ["make", "serve", f"PORT={port}"], cwd=project, env=user_env(), start_new_session=True
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
    """Run the drift check; on this traffic it finds drift, which fails the make target."""
    print("\n==> make monitor  (expected to find drift in the batch just served)", flush=True)
    subprocess.run(["make", "monitor"], cwd=project, env=user_env(), check=False)
    report = project / "reports" / "monitoring.json"
    verdict = json.loads(report.read_text()) if report.exists() else {}
    if not verdict.get("drift"):
        raise DemoError(f"make monitor found no drift in the drifted batch: see {report}")
    print(
        f"\nmake monitor exited {verdict['exit_code']} (make says Error {verdict['exit_code']}):"
        " drift found, as expected on this batch",
        flush=True,
    )


def summary(project: Path, promotion: dict) -> str:
    """Where to look once the lifecycle has run; the first pipeline's promotion."""
    reports = project / "reports"
    return "\n".join(
        [
            f"\nDone. The generated repository is {project}",
            f"  promotion: {promotion['decision']} - {promotion['reason']}",
            f"  read:      {reports / 'evaluation.md'} (and the PNG plots beside it)",
            f"  decision:  {reports / 'promotion.json'} (the second pipeline's: unchanged)",
            f"  drift:     {reports / 'monitoring.html'} (and monitoring.md, monitoring.json)",
            f"  registry:  cd {project} && .venv/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db",
            f"  next:      cd {project} && make help",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Bake into --out (replacing an earlier demo) and run the lifecycle."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("build/demo"))
    args = parser.parse_args(argv)
    if shutil.which("git") is None:
        print(
            "make demo needs git (each model version records the commit it was trained from,"
            " and DVC versions data in the repository): install git and run it again",
            file=sys.stderr,
        )
        return 1
    shutil.rmtree(args.out, ignore_errors=True)
    project = Path(cookiecutter(str(ROOT), no_input=True, output_dir=str(args.out)))
    try:
        promotion = run_steps(project)
        serve_drifted_traffic(project)
        monitor(project)
    except subprocess.CalledProcessError as err:
        command = err.cmd if isinstance(err.cmd, str) else " ".join(err.cmd)
        print(
            f"\n`{command}` failed with exit code {err.returncode} in {project}",
            file=sys.stderr,
        )
        return 1
    except DemoError as err:
        print(f"\n{err}", file=sys.stderr)
        return 1
    print(summary(project, promotion))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
