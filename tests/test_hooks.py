"""Test the pre_gen and post_gen hooks: every answer rule, and real refused bakes."""

import ast
import copy
import importlib.util
import json
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest
from cookiecutter.exceptions import FailedHookException
from cookiecutter.main import cookiecutter
from cookiecutter.prompt import prompt_for_config
from cookiecutter.utils import create_env_with_context

TEMPLATE_DIR = Path(__file__).resolve().parents[1]
HOOKS_DIR = TEMPLATE_DIR / "hooks"
TEMPLATE_JSON = json.loads((TEMPLATE_DIR / "cookiecutter.json").read_text())
NEEDS_GIT = pytest.mark.skipif(shutil.which("git") is None, reason="git is not on PATH")


def load_module(path: Path) -> ModuleType:
    """Import a Python file as a module by its path."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pre_gen = load_module(HOOKS_DIR / "pre_gen_project.py")
post_gen = load_module(HOOKS_DIR / "post_gen_project.py")


def render_answers(overrides: dict | None = None) -> dict:
    """Render cookiecutter.json with no input, as if the overrides were its defaults.

    Derived answers (slug, package, metric and threshold defaults) follow the
    overrides, as they do for `cookiecutter --no-input key=value`; a scalar put in
    place of a choice list stands in for a --replay file, which skips the choice check.
    """
    context = copy.deepcopy(TEMPLATE_JSON)
    context.update(overrides or {})
    return dict(prompt_for_config({"cookiecutter": context}, no_input=True))


def messages_about(problems: list[str], key: str, value: str) -> list[str]:
    """Return the messages that name the answer key and the value given."""
    return [message for message in problems if f"{key}={value!r}" in message]


# --- the hook files ----------------------------------------------------------------


@pytest.mark.parametrize("hook", ["pre_gen_project.py", "post_gen_project.py"])
def test_hook_source_has_one_substitution(hook: str) -> None:
    source = (HOOKS_DIR / hook).read_text()
    assert source.count("{{") == 1, f"{hook} must hold exactly one '{{{{ }}}}'"
    assert "{%" not in source and "{#" not in source, f"{hook} holds Jinja tags"


def test_pre_gen_choices_match_cookiecutter_json() -> None:
    choice_lists = {
        key: tuple(value)
        for key, value in TEMPLATE_JSON.items()
        if isinstance(value, list) and not key.startswith("_")
    }
    assert choice_lists == pre_gen.CHOICES


def test_pre_gen_render_round_trips_awkward_text(tmp_path: Path) -> None:
    # Given answers holding quotes, triple quotes, backslashes and non-ASCII text
    answers = render_answers({"description": 'Says """hi""" \\ to "Zoë" \\'})
    context = {"cookiecutter": answers}
    source = (HOOKS_DIR / "pre_gen_project.py").read_text()
    # When cookiecutter's own Jinja environment renders the hook
    rendered = create_env_with_context(context).from_string(source).render(**context)
    (tmp_path / "rendered_hook.py").write_text(rendered)
    # Then the rendered hook parses and reads back exactly those answers
    hook = load_module(tmp_path / "rendered_hook.py")
    assert json.loads(hook.ANSWERS_JSON) == answers


def test_pre_gen_sample_columns_match_the_sample_data() -> None:
    source = (TEMPLATE_DIR / "{{cookiecutter.__project_slug}}" / "src").glob("*/sample.py")
    tree = ast.parse(next(source).read_text())
    values = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
    }
    assert tuple(values["FEATURES"]) == pre_gen.SAMPLE_FEATURES
    assert values["TIME_COLUMN"] == pre_gen.SAMPLE_TIME_COLUMN


def test_pre_gen_reads_the_generated_lock() -> None:
    locked = pre_gen.locked_packages({"_repo_dir": str(TEMPLATE_DIR)})
    assert {"mlflow", "dvc", "fastapi", "scikit-learn"} <= locked
    assert not any("cookiecutter" in name for name in locked)


@pytest.mark.parametrize("description", ['Predicts who will "churn"', "100% \\ done \\", '"""'])
def test_package_docstring_holds_any_description(description: str) -> None:
    answers = render_answers({"description": description})
    context = {"cookiecutter": answers}
    init = TEMPLATE_DIR / "{{cookiecutter.__project_slug}}" / "src"
    source = next(init.glob("*/__init__.py")).read_text()
    rendered = create_env_with_context(context).from_string(source).render(**context)
    assert ast.get_docstring(ast.parse(rendered), clean=False) == description


# --- pre_gen: validate() -----------------------------------------------------------


def test_validate_baseline_has_no_problems() -> None:
    assert pre_gen.validate(render_answers()) == []


VALID_VARIATIONS = [
    *[
        pytest.param({key: choice}, id=f"{key}-{choice}")
        for key in ("python_version", "task")
        for choice in TEMPLATE_JSON[key]
    ],
    pytest.param({"data_remote": "local"}, id="data_remote-local"),
    pytest.param({"data_remote": "s3", "s3_bucket": "ml.team-data"}, id="s3-bucket"),
    pytest.param({"s3_prefix": ""}, id="empty-s3-prefix"),
    *[  # each metric with its task and its default threshold from cookiecutter.json
        pytest.param({"task": spec["task"], "primary_metric": name}, id=f"metric-{name}")
        for name, spec in TEMPLATE_JSON["_metrics"].items()
    ],
    pytest.param(
        {"task": "regression", "primary_metric": "r2", "promotion_threshold": "-0.5"},
        id="r2-negative-threshold",
    ),
    pytest.param({"promotion_threshold": "1"}, id="roc_auc-threshold-at-max"),
    pytest.param({"retrain_schedule": "*/15 * * * MON-FRI"}, id="cron-step-and-names"),
    pytest.param({"retrain_schedule": "0-30/10 2,14 1-31 jan-mar 0-7/2"}, id="cron-all"),
    pytest.param({"monitor_schedule": "59 23 31 12 7"}, id="cron-maxima"),
    pytest.param({"retrain_schedule": "0 3 29 2 *"}, id="cron-leap-day"),
    pytest.param({"retrain_schedule": "0 3 31 2 1"}, id="cron-day-or-weekday"),
    pytest.param({"retrain_schedule": "0 3 31 2,3 *"}, id="cron-31-in-one-of-the-months"),
    pytest.param({"image_name": "localhost:5000/team/churn_model"}, id="image-port"),
    pytest.param({"github_owner": "ML-Team-2"}, id="owner-mixed-case"),
    pytest.param({"target_column": "_Target2"}, id="target-underscore"),
]


@pytest.mark.parametrize("overrides", VALID_VARIATIONS)
def test_validate_valid_variation_has_no_problems(overrides: dict) -> None:
    assert pre_gen.validate(render_answers(overrides)) == []


def invalid(key: str, value: str, fragment: str, case_id: str, **also: str):
    """Build one invalid case: the answer under test, its rule fragment, any context."""
    return pytest.param({**also, key: value}, key, fragment, id=case_id)


INVALID_ANSWERS = [
    invalid("project_name", "2nd Model", "slug '2nd-model'", "slug-leading-digit"),
    invalid("project_name", "***", "has no letter or digit", "slug-empty"),
    invalid("project_name", "m" * 101, "at most 100", "slug-too-long"),
    invalid(
        "project_name",
        "MLflow",
        "one of its own dependencies (uv.lock)",
        "project-is-a-dependency",
        _repo_dir=str(TEMPLATE_DIR),
    ),
    invalid("target_column", "tenure_months", "a feature of the built-in", "target-is-feature"),
    invalid("target_column", "event_date", "the time column of the", "target-is-time-column"),
    invalid("project_name", "Class", "Python keyword", "package-is-keyword"),
    invalid("project_name", "JSON", "standard-library", "package-shadows-stdlib"),
    invalid("description", "", "non-empty line", "description-empty"),
    invalid("author_name", "Team\nTwo", "one non-empty line", "author-two-lines"),
    invalid("python_version", "3.10", "choose one of 3.11, 3.12, 3.13", "python-3.10"),
    invalid("task", "clustering", "choose one of classification", "task-unknown"),
    invalid("data_remote", "gcs", "choose one of local, s3", "remote-unknown"),
    invalid("target_column", "churned flag", "letters, digits", "target-space"),
    invalid("target_column", "", "letters, digits", "target-empty"),
    invalid("target_column", "1st", "not starting with a digit", "target-digit"),
    invalid(
        "primary_metric",
        "rmse",
        "does not fit task='classification': choose one of roc_auc, accuracy, f1, log_loss, "
        "average_precision",
        "metric-rmse-classification",
    ),
    invalid(
        "primary_metric",
        "roc_auc",
        "does not fit task='regression': choose one of rmse, mae, r2",
        "metric-roc_auc-regression",
        task="regression",
    ),
    invalid("primary_metric", "auc", "does not fit", "metric-unknown"),
    invalid("promotion_threshold", "high", "is not a number", "threshold-word"),
    invalid("promotion_threshold", "", "is not a number", "threshold-empty"),
    invalid("promotion_threshold", "nan", "is not a number", "threshold-nan"),
    invalid("promotion_threshold", "1e-3", "plain decimal", "threshold-exponent"),
    invalid("promotion_threshold", "1.5", "between 0 and 1", "threshold-roc_auc-1.5"),
    invalid(
        "promotion_threshold",
        "-1",
        "range of rmse: use a value at least 0",
        "threshold-rmse-negative",
        task="regression",
    ),
    invalid(
        "promotion_threshold",
        "1.2",
        "range of r2: use a value at most 1",
        "threshold-r2-above-1",
        task="regression",
        primary_metric="r2",
    ),
    invalid("min_improvement", "-0.01", "0 or more", "min-improvement-negative"),
    invalid("min_improvement", "some", "plain decimal", "min-improvement-word"),
    invalid("retrain_schedule", "0 3 * *", "has 4 fields", "cron-4-fields"),
    invalid("retrain_schedule", "@weekly", "has 1 fields", "cron-macro"),
    invalid(
        "retrain_schedule",
        "60 3 * * 1",
        "field 1 (minute) '60' is outside 0-59",
        "cron-minute-60",
    ),
    invalid(
        "monitor_schedule",
        "0 25 * * *",
        "field 2 (hour) '25' is outside 0-23",
        "cron-hour-25",
    ),
    invalid(
        "monitor_schedule",
        "0 6 0 * *",
        "field 3 (day-of-month) '0' is outside",
        "cron-day-0",
    ),
    invalid(
        "monitor_schedule",
        "0 6 * 13 *",
        "field 4 (month) '13' is outside 1-12",
        "cron-month-13",
    ),
    invalid(
        "monitor_schedule",
        "0 6 * * 8",
        "field 5 (day-of-week) '8' is outside",
        "cron-weekday-8",
    ),
    invalid(
        "monitor_schedule",
        "0 6 * * FUN",
        "'FUN' is outside 0-7 or SUN-SAT",
        "cron-weekday-name",
    ),
    invalid("monitor_schedule", "*/0 6 * * *", "step '0'", "cron-step-0"),
    invalid(
        "monitor_schedule",
        "5/15 6 * * *",
        "steps from a single value",
        "cron-step-single",
    ),
    invalid("monitor_schedule", "0 18-6 * * *", "runs backwards", "cron-range-backwards"),
    invalid("monitor_schedule", "0,,30 6 * * *", "missing a number", "cron-empty-item"),
    invalid("retrain_schedule", "0 3 31 2 *", "never runs: no month in field 4 (2)", "cron-feb-31"),
    invalid("retrain_schedule", "0 3 30,31 FEB *", "has day 30,31", "cron-feb-30-31"),
    invalid("monitor_schedule", "0 6 31 4-6/2 *", "never runs", "cron-31-in-april-june"),
    invalid(
        "s3_bucket",
        "",
        "not valid (required with data_remote='s3')",
        "s3-without-bucket",
        data_remote="s3",
    ),
    invalid("s3_bucket", "My_Bucket", "3-63 lowercase", "s3-bucket-case", data_remote="s3"),
    # Given with the local remote, it is checked too: a later switch to S3 would carry it.
    invalid("s3_bucket", "My_Bucket!", "s3_bucket='My_Bucket!' is not valid: give", "s3-local"),
    invalid("s3_bucket", "ab", "3-63 lowercase", "s3-bucket-short", data_remote="s3"),
    invalid("s3_bucket", "ml..data", "single dots", "s3-bucket-dots", data_remote="s3"),
    invalid(
        "s3_bucket",
        "-data-",
        "starting and ending",
        "s3-bucket-hyphens",
        data_remote="s3",
    ),
    invalid("s3_bucket", "192.168.1.1", "neither an IP address", "s3-bucket-ip", data_remote="s3"),
    invalid("s3_bucket", "xn--abc", "nor starting with 'xn--'", "s3-bucket-xn", data_remote="s3"),
    invalid("s3_prefix", "a b#c", "use letters, digits, '.', '_' and '-'", "prefix-comment"),
    invalid("s3_prefix", "team//models", "joined by single '/'", "prefix-double-slash"),
    invalid("s3_prefix", "/models", "must not start or end with '/'", "prefix-slash"),
    invalid("s3_prefix", "models/", "must not start or end with '/'", "prefix-trailing"),
    invalid("image_name", "ghcr.io/ML-Team/model", "lowercase", "image-uppercase"),
    invalid("image_name", "churn-model", "registry/owner/name", "image-bare-name"),
    invalid("image_name", "ghcr.io/ml-team/churn:1.0", "without tag", "image-tag"),
    invalid("github_owner", "-ml-team", "GitHub login", "owner-leading-hyphen"),
    invalid("github_owner", "ml--team", "single inner hyphens", "owner-double-hyphen"),
    invalid("github_owner", "m" * 40, "1-39", "owner-too-long"),
    invalid("author_email", "ml-team.example.com", "one '@'", "email-no-at"),
    invalid("author_email", "ml@team@example.com", "one '@'", "email-two-at"),
    invalid("author_email", "ml team@example.com", "no spaces", "email-space"),
]


@pytest.mark.parametrize(("overrides", "key", "fragment"), INVALID_ANSWERS)
def test_validate_invalid_answer_names_key_value_and_rule(
    overrides: dict, key: str, fragment: str
) -> None:
    problems = pre_gen.validate(render_answers(overrides))
    named = messages_about(problems, key, overrides[key])
    assert named, f"no message names {key}={overrides[key]!r}; got {problems}"
    assert any(fragment in message for message in named), named


def test_validate_reports_every_problem_together() -> None:
    answers = render_answers(
        {
            "python_version": "3.9",
            "retrain_schedule": "0 3 * *",
            "monitor_schedule": "0 6 * * 9",
            "min_improvement": "-1",
            "data_remote": "s3",
        }
    )
    flagged = [message.split("=", 1)[0] for message in pre_gen.validate(answers)]
    assert flagged == [
        "python_version",
        "min_improvement",
        "retrain_schedule",
        "monitor_schedule",
        "s3_bucket",
    ]


@pytest.mark.parametrize(
    ("overrides", "key"),
    [({"project_name": ""}, "project_name"), ({"github_owner": "-bad-"}, "github_owner")],
)
def test_validate_names_the_refused_answer_not_the_image_name_derived_from_it(
    overrides: dict, key: str
) -> None:
    flagged = [message.split("=", 1)[0] for message in pre_gen.validate(render_answers(overrides))]
    assert flagged == [key]
    # an image name the user gave is still checked
    given = render_answers({**overrides, "image_name": "GHCR.io/Team"})
    flagged = [message.split("=", 1)[0] for message in pre_gen.validate(given)]
    assert sorted(flagged) == sorted([key, "image_name"])


def test_pre_gen_main_invalid_prints_errors_and_returns_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    answers = render_answers({"task": "regression", "primary_metric": "f1"})
    monkeypatch.setattr(pre_gen, "ANSWERS_JSON", json.dumps(answers))
    assert pre_gen.main() == 1
    err = capsys.readouterr().err
    assert "ERROR: primary_metric='f1' does not fit task='regression'" in err


def test_an_unknown_metric_is_named_once_not_as_its_empty_default_threshold_too() -> None:
    given = render_answers({"primary_metric": "precision_recall"})
    assert given["promotion_threshold"] == ""  # no default for a metric the template lacks
    [message] = pre_gen.validate(given)
    assert message.startswith("primary_metric='precision_recall' does not fit")
    assert pre_gen.validate({**given, "promotion_threshold": "high"})[1].startswith(
        "promotion_threshold='high' is not a number"
    )


def test_pre_gen_main_valid_prints_nothing_and_returns_0(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(pre_gen, "ANSWERS_JSON", json.dumps(render_answers()))
    assert pre_gen.main() == 0
    assert capsys.readouterr() == ("", "")


# --- pre_gen: real bakes that must be refused ---------------------------------------


@pytest.mark.parametrize(
    ("extra_context", "key"),
    [
        pytest.param({"project_name": "2nd Model"}, "project_name", id="bad-slug"),
        pytest.param({"monitor_schedule": "0 25 * * *"}, "monitor_schedule", id="cron"),
        pytest.param({"primary_metric": "rmse"}, "primary_metric", id="metric-task"),
        pytest.param({"promotion_threshold": "1.5"}, "promotion_threshold", id="range"),
        pytest.param({"data_remote": "s3"}, "s3_bucket", id="s3-without-bucket"),
        pytest.param({"project_name": "!!!"}, "project_name", id="no-letters"),
        pytest.param({"project_name": "pandas"}, "project_name", id="a-dependency"),
    ],
)
def test_bake_invalid_answer_fails_and_writes_nothing(
    extra_context: dict,
    key: str,
    tmp_path: Path,
    cookiecutter_config: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(FailedHookException):
        cookiecutter(
            str(TEMPLATE_DIR),
            no_input=True,
            extra_context=extra_context,
            output_dir=str(tmp_path),
            config_file=str(cookiecutter_config),
        )
    assert f"ERROR: {key}=" in capfd.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_bake_slash_in_project_name_becomes_one_folder(
    tmp_path: Path, cookiecutter_config: Path
) -> None:
    project = cookiecutter(
        str(TEMPLATE_DIR),
        no_input=True,
        extra_context={"project_name": "ml/churn"},
        output_dir=str(tmp_path),
        config_file=str(cookiecutter_config),
    )
    assert [p.name for p in tmp_path.iterdir()] == ["ml-churn"] == [Path(project).name]


# --- post_gen ----------------------------------------------------------------------


def git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    """Run a git command in repo, capturing its output."""
    command = ["git", "-C", str(repo), *args]
    return subprocess.run(command, capture_output=True, text=True, check=False)


@NEEDS_GIT
def test_init_git_creates_repository_on_main_without_commits(tmp_path: Path) -> None:
    assert post_gen.init_git(tmp_path) is True
    assert (tmp_path / ".git").is_dir()
    assert git(tmp_path, "symbolic-ref", "HEAD").stdout.strip() == "refs/heads/main"
    assert git(tmp_path, "rev-parse", "--verify", "-q", "HEAD").returncode != 0


def test_init_git_without_git_prints_note_and_skips(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-binaries-here"))
    assert post_gen.init_git(tmp_path) is False
    assert "git is not on PATH" in capsys.readouterr().out
    assert not (tmp_path / ".git").exists()


def test_print_next_steps_lists_commands_in_order(
    capsys: pytest.CaptureFixture[str],
) -> None:
    post_gen.print_next_steps(render_answers({"project_name": "Fraud Score"}))
    lines = [line.strip() for line in capsys.readouterr().out.splitlines()]
    commit = 'git add -A && git commit -m "Start from the template"'
    steps = ["cd fraud-score", "make setup", commit, "make pipeline", "make help"]
    assert [line for line in lines if line in steps] == steps


@NEEDS_GIT
def test_post_gen_main_initialises_git_in_working_directory(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    answers = render_answers()
    monkeypatch.setattr(post_gen, "ANSWERS_JSON", json.dumps(answers))
    recorded = {**answers, "_output_dir": "/home/me/bakes", "_repo_dir": "/home/me/template"}
    (tmp_path / ".cookiecutter.json").write_text(json.dumps(recorded))
    monkeypatch.chdir(tmp_path)
    assert post_gen.main() == 0
    assert (tmp_path / ".git").is_dir()
    assert "cd churn-model" in capsys.readouterr().out
    # the answers are kept for the team; where this machine baked from and into is not
    assert json.loads((tmp_path / ".cookiecutter.json").read_text()) == answers
