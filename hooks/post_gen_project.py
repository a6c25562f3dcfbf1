"""Make the baked project a git repository and print the commands to run next."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

# The only template substitution in this file. It is parsed inside main(), so the
# unrendered file still imports for tests.
ANSWERS_JSON = r"""{{ cookiecutter | jsonify }}"""
# Where this machine baked from and into: meaningless to a teammate, so not committed.
LOCAL_PATHS = ("_output_dir", "_repo_dir", "_checkout")


def drop_local_paths(answers_file: Path) -> None:
    """Rewrite the recorded answers without this machine's paths."""
    answers = json.loads(answers_file.read_text())
    kept = {key: value for key, value in answers.items() if key not in LOCAL_PATHS}
    answers_file.write_text(json.dumps(kept, indent=4, sort_keys=True) + "\n")


def init_git(project_dir: Path) -> bool:
    """Run `git init` in project_dir, which DVC needs; return whether it worked."""
    if shutil.which("git") is None:
        print("Note: git is not on PATH; run `git init -b main` before using DVC.")
        return False
    # No commit: the first commit is the user's to make, with their identity.
    command = ["git", "init", "-q", "-b", "main"]
    result = subprocess.run(command, cwd=project_dir, check=False)
    if result.returncode != 0:  # e.g. git before 2.28 lacks -b; keep the bake anyway
        print("Note: `git init` failed; run `git init -b main` before using DVC.")
    return result.returncode == 0


def print_next_steps(answers: dict) -> None:
    """Print the commands that set up and run the baked project."""
    print(f"\nCreated {answers['__project_slug']}. Next:")
    for command in (
        f"cd {answers['__project_slug']}",
        "make setup",
        'git add -A && git commit -m "Start from the template"',
        "make pipeline",
        "make help",
    ):
        print(f"  {command}")


def main() -> int:
    """Initialise git in the baked project and print the next steps."""
    answers = json.loads(ANSWERS_JSON)
    drop_local_paths(Path.cwd() / ".cookiecutter.json")
    init_git(Path.cwd())  # cookiecutter runs this hook inside the baked project
    print_next_steps(answers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
