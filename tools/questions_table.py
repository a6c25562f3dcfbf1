"""Write the README's table of questions from cookiecutter.json (a test keeps the two in sync)."""

from __future__ import annotations

import argparse
import copy
import json
import re
from pathlib import Path

from cookiecutter.prompt import prompt_for_config

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
START, END = "<!-- questions:start -->", "<!-- questions:end -->"


def default_text(value, rendered) -> str:
    """A question's default as the README shows it: choices listed, templates resolved."""
    if isinstance(value, list):
        return " / ".join(f"`{choice}`" for choice in value) + " (first is the default)"
    if "{{" in str(value):
        return f"`{rendered}` (follows earlier answers)"
    return f"`{value}`" if value != "" else "empty"


def table(context: dict) -> str:
    """The Markdown table of every question the template asks."""
    prompts = context["__prompts__"]
    defaults = prompt_for_config({"cookiecutter": copy.deepcopy(context)}, no_input=True)
    rows = ["| answer | question | default |", "|---|---|---|"]
    for key, value in context.items():
        if not key.startswith("_"):
            rows.append(f"| `{key}` | {prompts[key]} | {default_text(value, defaults[key])} |")
    return "\n".join(rows)


def render(readme: str, context: dict) -> str:
    """The README with its questions section replaced by the current table."""
    pattern = re.compile(f"{re.escape(START)}.*?{re.escape(END)}", re.DOTALL)
    return pattern.sub(lambda _: f"{START}\n{table(context)}\n{END}", readme)


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__).parse_args()
    context = json.loads((ROOT / "cookiecutter.json").read_text())
    old = README.read_text()
    new = render(old, context)
    README.write_text(new)
    done = "updated" if new != old else "no change to"
    print(f"{done} the questions table in {README.name}")
