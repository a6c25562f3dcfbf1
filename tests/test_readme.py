"""The top-level README, .ci/run and the template's CI agree with the code."""

from __future__ import annotations

import importlib.util
import re

import yaml
from conftest import TEMPLATE_DIR, TEMPLATE_JSON

README = (TEMPLATE_DIR / "README.md").read_text()


def load_tool(name: str):
    """Import a script from tools/ by path."""
    spec = importlib.util.spec_from_file_location(name, TEMPLATE_DIR / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_questions_table_matches_cookiecutter_json():
    tool = load_tool("questions_table")
    assert tool.render(README, TEMPLATE_JSON) == README, (
        "run: .venv/bin/python tools/questions_table.py"
    )
    asked = [k for k in TEMPLATE_JSON if not k.startswith("_")]
    assert re.findall(r"^\| `(\w+)` \|", README, re.MULTILINE) == asked


def test_readme_gives_the_two_commands_and_ci_runs_the_test_one():
    block = re.search(r"## The two commands.*?```sh\n(.*?)```", README, re.DOTALL).group(1)
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make demo", "make test"]
    ci_run = (TEMPLATE_DIR / ".ci" / "run").read_text().strip().splitlines()
    assert ci_run[-1] == "make test"
    workflow = yaml.safe_load((TEMPLATE_DIR / ".github" / "workflows" / "ci.yml").read_text())
    runs = [step.get("run") for job in workflow["jobs"].values() for step in job["steps"]]
    assert "bash .ci/run" in runs


def test_readme_tree_names_every_make_target_of_the_generated_repo():
    makefile = (TEMPLATE_DIR / "{{cookiecutter.__project_slug}}" / "Makefile").read_text()
    targets = re.findall(r"^([a-z-]+):.*## ", makefile, re.MULTILINE)
    tree = README.split("## What it generates")[1]
    missing = [t for t in targets if not re.search(rf"\b{t}\b", tree)]
    assert missing == []
