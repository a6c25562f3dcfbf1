"""The baked repos' GitHub Actions: secure by zizmor, valid by schema, hardened by policy.

Every configuration's workflows and dependabot.yml go through zizmor (offline), the
GitHub-workflow JSON schema (check-jsonschema) and actionlint. A deliberately bad workflow
proves the zizmor and actionlint checks can fail. The policy tests read the parsed
YAML: permissions, pins, checkouts, triggers, expressions, timeouts, schedules, concurrency,
environments; and every `make` target a workflow calls must exist in the baked Makefile.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import CONFIGS, TEMPLATE_DIR, project_env

BIN = Path(sys.executable).parent
ZIZMOR = BIN / "zizmor"
ZIZMOR_ARGS = ["--offline", "--no-progress", "--format", "json"]
CHECK_JSONSCHEMA = BIN / "check-jsonschema"
ACTIONLINT = BIN / "actionlint"
BAD_WORKFLOW = Path(__file__).parent / "data" / "bad-workflow.yml"
TEMPLATE_WORKFLOWS = TEMPLATE_DIR / "{{cookiecutter.__project_slug}}" / ".github" / "workflows"
WORKFLOWS = ("ci", "deploy", "monitor", "retrain", "rollback")
# Template values a workflow may hold outside {% raw %} blocks (STYLE.md point 4).
TEMPLATE_VALUES = {
    "cookiecutter.python_version",
    "cookiecutter.retrain_schedule",
    "cookiecutter.monitor_schedule",
    "cookiecutter.image_name",
    "cookiecutter.__project_slug",
}
# The least permissions each job needs, and so exactly what it may have.
PERMISSIONS = {
    ("ci", "test"): {"contents": "read"},
    ("ci", "changes"): {"contents": "read"},
    ("ci", "candidate"): {"contents": "read", "id-token": "write"},
    ("ci", "comment"): {"pull-requests": "write"},
    ("retrain", "retrain"): {"contents": "read", "id-token": "write"},
    ("retrain", "deploy"): {"contents": "read", "packages": "write", "id-token": "write"},
    ("deploy", "deploy"): {"contents": "read", "packages": "write", "id-token": "write"},
    ("monitor", "monitor"): {"contents": "read", "id-token": "write"},
    ("monitor", "drift-issue"): {"issues": "write"},
    ("monitor", "dispatch-retrain"): {"actions": "write"},
    ("monitor", "retrain-age"): {"contents": "read", "id-token": "write"},
    ("rollback", "rollback"): {"contents": "read", "id-token": "write"},
    ("rollback", "deploy"): {"contents": "read", "packages": "write", "id-token": "write"},
}
# Workflows that move the champion alias, ship an image or write monitoring state.
NEVER_CANCELLED = ("retrain", "deploy", "rollback", "monitor")
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
each_config = pytest.mark.parametrize("config_id", list(CONFIGS))


def tool(path: Path) -> str:
    """A tool of requirements-dev.txt, or a failure that says how to get it."""
    if not path.is_file():
        pytest.fail(f"{path} is missing: install requirements-dev.txt ({path.name})")
    return str(path)


def run(command: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run a checker, capturing its output."""
    return subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, check=False, timeout=300
    )


def workflow_files(project: Path) -> list[str]:
    """The baked workflow files' paths, sorted."""
    return sorted(str(p) for p in (project / ".github" / "workflows").glob("*.yml"))


def workflows(project: Path) -> dict[str, dict]:
    """The baked workflows, parsed, by file stem; YAML's `on:` key read back as "on"."""
    found = {}
    for path in sorted((project / ".github" / "workflows").glob("*.yml")):
        parsed = yaml.safe_load(path.read_text())
        parsed["on"] = parsed.pop(True, parsed.get("on"))
        found[path.stem] = parsed
    return found


def steps(workflow: dict):
    """Every (job id, step) of a workflow."""
    for job_id, job in workflow["jobs"].items():
        for step in job.get("steps", []):
            yield job_id, step


def make_targets(workflow: dict) -> set[str]:
    """The targets of every `make` command in the workflow's run: steps."""
    targets = set()
    for _job, step in steps(workflow):
        for command in re.findall(r"\bmake\b([^;&|>\n]*)", step.get("run", "")):
            words = shlex.split(command)
            targets.update(w for w in words if not w.startswith("-") and "=" not in w)
    return targets


@each_config
def test_workflows_have_no_zizmor_findings(bake, config_id):
    project = bake(config_id)
    result = run([tool(ZIZMOR), *ZIZMOR_ARGS, "."], project)
    findings = json.loads(result.stdout or "[]")
    summary = [f"{f['ident']}: {f['desc']}" for f in findings]
    assert (result.returncode, summary) == (0, []), "\n".join(summary) or result.stderr[-2000:]


def test_zizmor_fails_on_a_deliberately_bad_workflow():
    result = run([tool(ZIZMOR), *ZIZMOR_ARGS, str(BAD_WORKFLOW)])
    found = {f["ident"] for f in json.loads(result.stdout)}
    assert result.returncode != 0, "zizmor passed a workflow built to fail"
    assert {"dangerous-triggers", "template-injection", "unpinned-uses", "artipacked"} <= found


@each_config
def test_workflows_and_dependabot_match_their_schemas(bake, config_id):
    project = bake(config_id)
    files = workflow_files(project)
    assert len(files) == len(WORKFLOWS), files
    checker = tool(CHECK_JSONSCHEMA)
    for schema, paths in (
        ("vendor.github-workflows", files),
        ("vendor.dependabot", [str(project / ".github" / "dependabot.yml")]),
    ):
        result = run([checker, "--builtin-schema", schema, *paths])
        assert result.returncode == 0, result.stdout + result.stderr


@each_config
def test_workflows_pass_actionlint(bake, config_id):
    project = bake(config_id)
    files = workflow_files(project)
    # shellcheck, where the machine has it, also checks each run: script
    result = run([tool(ACTIONLINT), "-no-color", *files], project)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_fails_on_a_deliberately_bad_workflow():
    result = run(
        [
            tool(ACTIONLINT),
            "-no-color",
            "-format",
            "{{range .}}{{.Kind}}\n{{end}}",
            str(BAD_WORKFLOW),
        ]
    )
    assert result.returncode != 0, "actionlint passed a workflow built to fail"
    assert "expression" in result.stdout.split(), result.stdout + result.stderr


@each_config
def test_workflow_make_targets_exist_in_the_makefile(bake, config_id):
    project = bake(config_id)
    makefile = (project / "Makefile").read_text()
    defined = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.MULTILINE))
    called = set().union(*(make_targets(w) for w in workflows(project).values()))
    assert called >= {"setup", "lint", "test", "data", "train", "evaluate", "promote", "monitor"}
    assert called - defined == set(), f"not in the Makefile: {sorted(called - defined)}"
    for target in sorted(called):  # make parses each one's recipe without running it
        result = subprocess.run(
            ["make", "-n", target],
            cwd=project,
            env=project_env(project),
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, f"make -n {target}: {result.stderr}"


@each_config
def test_workflows_schedules_come_from_the_answers_and_pair_with_dispatch(bake, config_id):
    project = bake(config_id)
    answers = json.loads((project / ".cookiecutter.json").read_text())
    found = workflows(project)
    assert set(found) == set(WORKFLOWS)
    assert found["retrain"]["on"]["schedule"] == [{"cron": answers["retrain_schedule"]}]
    assert found["monitor"]["on"]["schedule"] == [{"cron": answers["monitor_schedule"]}]
    for name, workflow in found.items():
        if "schedule" in workflow["on"]:
            assert "workflow_dispatch" in workflow["on"], f"{name}: schedule without dispatch"


@each_config
def test_workflows_permissions_are_empty_on_top_and_least_per_job(bake, config_id):
    for name, workflow in workflows(bake(config_id)).items():
        assert workflow["permissions"] == {}, f"{name}: top-level permissions must be {{}}"
        for job_id, job in workflow["jobs"].items():
            assert job.get("permissions") == PERMISSIONS[(name, job_id)], f"{name}.{job_id}"


@each_config
def test_workflows_pin_every_action_to_a_commit_with_a_version_comment(bake, config_id):
    project = bake(config_id)
    pins: dict[str, set[str]] = {}
    for path in sorted((project / ".github" / "workflows").glob("*.yml")):
        for line in path.read_text().splitlines():
            used = re.match(r"^\s*(?:-\s+)?uses:\s+(\S+)(.*)$", line)
            if not used or used[1].startswith("./"):
                continue
            assert PINNED.match(used[1]), f"{path.name}: {line.strip()} is not pinned to a SHA"
            assert re.match(r"^\s+# v\d+\.\d+\.\d+$", used[2]), f"{path.name}: {line.strip()}"
            pins.setdefault(used[1].split("@")[0], set()).add(used[1])
    assert {action: refs for action, refs in pins.items() if len(refs) > 1} == {}


@each_config
def test_workflows_checkout_without_credentials_and_no_untrusted_triggers(bake, config_id):
    for name, workflow in workflows(bake(config_id)).items():
        assert not {"pull_request_target", "workflow_run"} & set(workflow["on"]), name
        for job_id, step in steps(workflow):
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False, f"{name}.{job_id}"


@each_config
def test_workflows_keep_expressions_out_of_scripts(bake, config_id):
    for name, workflow in workflows(bake(config_id)).items():
        for job_id, step in steps(workflow):
            for code in (step.get("run", ""), step.get("with", {}).get("script", "")):
                assert "${{" not in code, f"{name}.{job_id}: pass it through env: instead"


@each_config
def test_workflows_time_out_and_run_secrets_in_an_environment(bake, config_id):
    found = workflows(bake(config_id))
    for name, workflow in found.items():
        for job_id, job in workflow["jobs"].items():
            if "uses" in job:  # a reusable workflow's own jobs carry the limits
                called = found[Path(job["uses"].split("@")[0]).stem]
                assert all("timeout-minutes" in j for j in called["jobs"].values())
                continue
            assert job.get("timeout-minutes", 0) > 0, f"{name}.{job_id} has no timeout-minutes"
            text = re.sub(r"secrets\.GITHUB_TOKEN", "", json.dumps(job))
            if "secrets." in text:
                assert job.get("environment"), f"{name}.{job_id}: secrets outside an environment"


@each_config
def test_workflows_never_cancel_a_retrain_promotion_or_deploy(bake, config_id):
    found = workflows(bake(config_id))
    for name in NEVER_CANCELLED:
        blocks = [found[name].get("concurrency")]
        blocks += [job.get("concurrency") for job in found[name]["jobs"].values()]
        blocks = [block for block in blocks if block]
        assert blocks, f"{name} has no concurrency group"
        assert all(block["cancel-in-progress"] is False for block in blocks), name


@each_config
def test_pull_requests_never_move_an_alias(bake, config_id):
    ci = workflows(bake(config_id))["ci"]
    assert make_targets(ci) & {"promote", "pipeline", "rollback"} == set()
    candidate = ci["jobs"]["candidate"]
    assert "github.event.pull_request.head.repo.full_name == github.repository" in candidate["if"]
    assert ci["jobs"]["comment"]["needs"] == "candidate"
    assert "steps" in ci["jobs"]["comment"] and not any(
        s.get("uses", "").startswith("actions/checkout@") for s in ci["jobs"]["comment"]["steps"]
    ), "the job holding a write token runs no code from the pull request"


@each_config
def test_dependabot_updates_actions_and_python_after_a_cooldown(bake, config_id):
    """Not the base image: Dependabot does not follow the Dockerfile's ARG into FROM, so an
    entry for it would promise updates that never come (the README says how to bump it)."""
    config = yaml.safe_load((bake(config_id) / ".github" / "dependabot.yml").read_text())
    updates = {u["package-ecosystem"]: u for u in config["updates"]}
    assert set(updates) == {"github-actions", "uv"}
    assert "FROM ${PYTHON_IMAGE}" in (bake(config_id) / "Dockerfile").read_text()
    assert all(u["cooldown"]["default-days"] >= 1 for u in updates.values())


def test_workflow_templates_keep_github_expressions_in_raw_blocks():
    for path in sorted(TEMPLATE_WORKFLOWS.glob("*.yml")):
        text = path.read_text()
        assert '{{"{{"}}' not in text and "{{ '{{' }}" not in text, f"{path.name}: an escape"
        outside = re.sub(r"{%-? raw -?%}.*?{%-? endraw -?%}", "", text, flags=re.DOTALL)
        assert "${{" not in outside, f"{path.name}: a GitHub expression outside {{% raw %}}"
        used = set(re.findall(r"{{\s*([\w.]+)\s*}}", outside))
        assert used <= TEMPLATE_VALUES, f"{path.name}: {used - TEMPLATE_VALUES}"
