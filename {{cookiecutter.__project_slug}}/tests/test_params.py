"""params.yaml checks: every refusal names the key and what it takes; the shipped file passes."""

from __future__ import annotations

import copy
import inspect
import logging
import math
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from conftest import load_script, sample_params
from sklearn.base import BaseEstimator
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.utils.multiclass import type_of_target

from {{ cookiecutter.__package_name }} import cli, config, training
from {{ cookiecutter.__package_name }} import data as datalib
from {{ cookiecutter.__package_name }}.config import (
    PARAMS,
    RESERVED_NAMES,
    load_params,
    params_problems,
    section,
)
from {{ cookiecutter.__package_name }}.errors import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    PipelineError,
)
from {{ cookiecutter.__package_name }}.model import build_model


def refusal(tmp_path: Path, params: dict) -> str:
    """Write `params` to a params.yaml, load it, and return the refusal's message."""
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(PipelineError) as caught:
        load_params(path)
    return str(caught.value)


def renamed(params: dict, dotted: str, new: str) -> dict:
    """A copy of `params` with the section or key `dotted` (e.g. data.target) renamed to `new`."""
    changed = copy.deepcopy(params)
    *parent, key = dotted.split(".")
    holder = changed[parent[0]] if parent else changed
    holder[new] = holder.pop(key)
    return changed


def with_value(params: dict, dotted: str, value) -> dict:
    """A copy of `params` with `dotted` (section.key) set to `value`."""
    changed = copy.deepcopy(params)
    name, key = dotted.split(".")
    changed[name][key] = value
    return changed


def test_shipped_params_pass(repo_params):
    assert params_problems(repo_params) == []
    assert set(repo_params) == set(PARAMS), "params.yaml ships every section"
    for name, rules in PARAMS.items():
        assert set(repo_params[name]) == set(rules), f"params.yaml ships every key of {name}"


def test_test_params_pass(repo_params):
    assert params_problems(sample_params(repo_params)) == []


@pytest.mark.parametrize(
    ("dotted", "typo", "expected"),
    [
        ("data.target", "targt", ["unknown key data.targt (did you mean target?)", "data takes:"]),
        ("data.features", "featurs", ["unknown key data.featurs", "missing key data.features"]),
        ("model.name", "nme", ["unknown key model.nme", "missing key model.name"]),
        ("monitor.psi", "pssi", ["unknown key monitor.pssi", "missing key monitor.psi"]),
        ("data.bounds", "bound", ["unknown key data.bound (did you mean bounds?)", "missing key"]),
        ("promote", "promte", ["unknown section promte (did you mean promote?)", "are: model,"]),
        ("monitor", "monitr", ["unknown section monitr", "missing section monitor (it"]),
        (
            "promote.min_improvement",
            "min_improvment",
            [
                "params.yaml: unknown key promote.min_improvment (did you mean min_improvement?); "
                "promote takes: metric, threshold, min_improvement"
            ],
        ),
    ],
)
def test_typo_names_the_key_and_the_allowed_ones(tmp_path, repo_params, dotted, typo, expected):
    message = refusal(tmp_path, renamed(repo_params, dotted, typo))
    for text in expected:
        assert text in message


def test_unknown_key_beside_a_known_one_is_refused(tmp_path, repo_params):
    params = with_value(repo_params, "promote.min_improvment", 5000)
    assert "unknown key promote.min_improvment" in refusal(tmp_path, params)


@pytest.mark.parametrize(
    ("dotted", "value", "rule"),
    [
        ("train.profile_bins", 0, "an integer >= 2"),
        ("train.profile_bins", 1, "an integer >= 2"),
        ("train.profile_bins", 2.5, "an integer >= 2"),
        ("train.profile_bins", "10", "an integer >= 2"),
        ("train.seed", -1, "an integer >= 0"),
        ("train.hyperparameters", [0.1, 200], "a mapping"),
        ("promote.min_improvement", -1.0, "a number >= 0"),
        ("monitor.psi", -1, "a number > 0"),
        ("monitor.psi", 0, "a number > 0"),
        ("monitor.psi", True, "a number > 0"),
        ("monitor.alpha", 2, "a number > 0 and < 1"),
        ("monitor.alpha", 0, "a number > 0 and < 1"),
        ("monitor.bias", 0, "a number > 0"),
        ("monitor.bias", "0.25", "a number > 0 (YAML reads '0.25' as text: write 0.25, without"),
        (
            "promote.min_improvement",
            "1e-7",
            "a number >= 0 (YAML reads '1e-7' as text: write 1.000000e-07, without quotes)",
        ),
        ("monitor.min_records", -5, "an integer >= 1"),
        ("monitor.min_records", 0, "an integer >= 1"),
        ("monitor.not_judged", "is_weekend", "a list of distinct feature names, or null"),
        ("monitor.window_days", 0, "a number > 0"),
        ("monitor.window_days", -1, "a number > 0"),
        ("monitor.window_days", math.inf, "a number > 0"),
        ("split.holdout_fraction", 0, "a number > 0 and < 1"),
        ("split.validation_fraction", 1, "a number > 0 and < 1"),
        ("split.seed", "forty-two", "an integer >= 0"),
        ("data.sample_rows", 0, "an integer >= 1"),
        ("data.target_classes", [False, True], "a list of distinct labels or null (quote"),
        ("data.target_classes", [0, 1, 1], "a list of distinct labels or null"),
        ("data.features", {}, "a mapping of column name (text without double quotes, none of"),
        ("data.target", None, "a non-empty string"),
        ("data.target_classes", "0,1", "a list of distinct labels or null"),
        ("model.task", "classifcation", "classification or regression"),
        ("model.name", "", "a non-empty string"),
        ("promote.threshold", "high", "a number"),
        ("data.bounds", [0, 1], "a mapping of numeric column name to [lowest, highest], null"),
        ("data.ignore", "customer_id", "a list of distinct column names, or null (columns"),
        ("data.ignore", ["id", "id"], "a list of distinct column names, or null"),
        ("data.ignore", ["id", ""], "a list of distinct column names, or null"),
    ],
)
def test_impossible_value_names_the_key_and_the_rule(tmp_path, repo_params, dotted, value, rule):
    message = refusal(tmp_path, with_value(repo_params, dotted, value))
    assert f"{dotted} is {value!r}: it must be {rule}" in message


@pytest.mark.parametrize(
    ("limits", "written", "why"),
    [
        ([1, 0], "[1, 0]", "its lowest is above its highest"),
        ([None, None], "[null, null]", "no limit on either side: leave the column out"),
        ([0], "[0]", "not two numbers or null"),
        ([0, 1, 2], "[0, 1, 2]", "not two numbers or null"),
        (["0", 1], '["0", 1]', "not two numbers or null"),
        ([0, math.inf], "[0, Infinity]", "not two numbers or null"),
        (5, "5", "not two numbers or null"),
        ([True, 1], "[true, 1]", "not two numbers or null"),
    ],
)
def test_a_bound_that_is_no_lowest_highest_pair_says_why(tmp_path, params, limits, written, why):
    first = next(n for n, kind in params["data"]["features"].items() if kind == "numeric")
    bounds = {**params["data"]["bounds"], first: limits}
    message = refusal(tmp_path, with_value(params, "data.bounds", bounds))
    said = f"data.bounds has {first}: {written} ({why}): it must be a mapping of numeric column"
    assert said in message


def test_ignore_names_no_column_data_uses(tmp_path, params):
    feature = next(iter(params["data"]["features"]))
    for name in (feature, params["data"]["target"], params["data"]["time_column"]):
        message = refusal(tmp_path, with_value(params, "data.ignore", ["customer_id", name]))
        assert f"data.ignore names '{name}', which data declares as a column it uses" in message
    assert params_problems(with_value(params, "data.ignore", ["customer_id"])) == []


def test_not_judged_names_only_features(tmp_path, params):
    feature = next(iter(params["data"]["features"]))
    message = refusal(tmp_path, with_value(params, "monitor.not_judged", [feature, "weekday"]))
    assert "monitor.not_judged names 'weekday', which is no feature in data.features" in message
    assert params_problems(with_value(params, "monitor.not_judged", [feature])) == []


def test_bounds_name_only_numeric_features_or_a_regression_target(tmp_path, params):
    categorical = next(n for n, kind in params["data"]["features"].items() if kind != "numeric")
    for name in (categorical, "not_a_column"):
        message = refusal(tmp_path, with_value(params, "data.bounds", {name: [0, None]}))
        assert f"data.bounds names '{name}', which is no numeric feature" in message
    target = with_value(params, "data.bounds", {params["data"]["target"]: [0, None]})
    if params["model"]["task"] == "regression":
        assert params_problems(target) == []
    else:
        assert "which is no numeric feature: bound only" in refusal(tmp_path, target)


def test_a_key_given_twice_is_refused_naming_it_and_its_line(tmp_path, repo_params):
    """Plain YAML keeps the last of two equal keys: a feature declared twice would silently
    change type."""
    text = yaml.safe_dump(repo_params, sort_keys=False)
    first = next(iter(repo_params["data"]["features"]))
    declared = f"    {first}: {repo_params['data']['features'][first]}\n"
    assert declared in text
    path = tmp_path / "params.yaml"
    path.write_text(text.replace(declared, declared + f"    {first}: categorical\n"))
    with pytest.raises(PipelineError) as caught:
        load_params(path)
    said = str(caught.value)
    assert said.startswith(f"{path} is not valid YAML") and f"key '{first}' is given twice" in said
    assert "line " in said


def test_target_or_time_column_declared_as_a_feature_is_refused(tmp_path, repo_params):
    params = sample_params(repo_params)  # a time column, whatever the repo declares
    target, time_column = params["data"]["target"], params["data"]["time_column"]
    params["data"]["features"] |= {target: "numeric", time_column: "categorical"}
    message = refusal(tmp_path, params)
    assert f"data.target '{target}' is also declared in data.features" in message
    assert f"data.time_column '{time_column}' is also declared in data.features" in message


def test_time_column_that_is_the_target_is_refused(tmp_path, repo_params):
    params = sample_params(repo_params)
    params["data"]["time_column"] = params["data"]["target"]
    message = refusal(tmp_path, params)
    assert f"data.time_column is the target '{params['data']['target']}'" in message


@pytest.mark.parametrize(
    ("metric", "threshold", "expected"),
    [
        ("rmse", 0.5, "promote.metric: metric 'rmse' does not fit task 'classification'"),
        ("roc_auc", 1.5, "promote.threshold: 1.5 is outside the range of roc_auc, [0.0, 1.0]"),
        ("roc_auc", -1, "promote.threshold: -1 is outside the range of roc_auc"),
    ],
)
def test_metric_of_the_other_task_or_an_unreachable_threshold_is_refused(
    tmp_path, repo_params, metric, threshold, expected
):
    params = copy.deepcopy(repo_params)
    params["model"]["task"] = "classification"
    params["promote"] |= {"metric": metric, "threshold": threshold}
    assert expected in refusal(tmp_path, params)


@pytest.mark.parametrize(
    ("name", "kind"),
    [("f_9", "numerc"), ('size "XL"', "numeric"), ("model output", "categorical")],
)
def test_a_bad_feature_is_named_not_the_whole_mapping(tmp_path, repo_params, name, kind):
    params = copy.deepcopy(repo_params)
    params["data"]["features"] |= {name: kind}
    message = refusal(tmp_path, params)
    assert f"data.features has {name}: {kind!r}: it must be a mapping of column name" in message
    assert "without double quotes, none of ('model output', '_prediction'" in message
    assert "tenure_months" not in message


def test_the_reserved_names_are_the_ones_monitoring_gives_its_own_columns():
    from {{ cookiecutter.__package_name }}.monitoring import monitor, rollups

    own = {monitor.OUTPUT, rollups.PREDICTION, rollups.PREDICTION_VALUE, rollups.PROBABILITY}
    assert own | {rollups.LATENCY} == set(RESERVED_NAMES)


def test_section_that_is_not_a_mapping_is_refused(tmp_path, repo_params):
    params = copy.deepcopy(repo_params)
    params["monitor"] = 5
    assert "section monitor must be a mapping" in refusal(tmp_path, params)


def test_every_problem_is_listed_at_once(tmp_path, repo_params):
    params = with_value(repo_params, "monitor.psi", -1)
    params["train"]["profile_bins"] = 0
    message = refusal(tmp_path, params)
    assert "2 problems" in message
    assert "monitor.psi is -1" in message and "train.profile_bins is 0" in message


def test_a_single_section_read_checks_the_whole_file(tmp_path, repo_params, monkeypatch):
    # Scripts that read one section (bundle, send-batch) still refuse a broken file.
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(renamed(repo_params, "monitor", "monitr")))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PipelineError, match="unknown section monitr"):
        section("model")


def test_make_train_and_evaluate_check_the_file_before_dvc_may_skip_them(
    tmp_path, repo_params, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(repo_params))
    assert config.main() == 0
    params = with_value(repo_params, "promote.metric", "no_such_metric")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert config.main() == EXIT_ERROR


# --- scripts/monitor.py --days -----------------------------------------------------------------


def monitor_script():
    """scripts/monitor.py, imported."""
    return load_script("monitor")


def test_a_week_s_window_names_the_days_that_drift_on_their_own():
    """A week dilutes one bad night the daily run flagged: the report names it (and its exit
    code stays the window's)."""
    report = {"messages": [], "drift": False, "exit_code": 0}
    monitor_script().note_drifted_days(report, {})
    assert report == {"messages": [], "drift": False, "exit_code": 0, "drifted_days": {}}
    nights = {"2026-11-23": ["claim_amount", "model output"], "2026-11-25": ["shop"]}
    monitor_script().note_drifted_days(report, nights)
    assert report["drifted_days"] == nights and report["exit_code"] == 0
    assert report["messages"] == [
        "days of this window that drift on their own (2026-11-23: claim_amount, model output; "
        "2026-11-25: shop): the whole window dilutes them; `make monitor END=<the next day> "
        "DAYS=1` shows one"
    ]


def test_monitor_logs_each_message_of_its_window_once_then_the_headline(caplog):
    """monitor() logs nothing itself: the days it stores for daily_stats would repeat the
    window's warnings (a live bias, outcomes left out)."""
    caplog.set_level(logging.INFO)
    checked = {"status": "checked", "messages": ["live mean_error 4.1 ...", "watch: region"]}
    checked |= {"drift": False, "model_name": "m", "champion_version": "1"}
    monitor_script().log_findings({**checked, "records_by_version": {"1": 500}})
    # The script's own lines: a first import of matplotlib logs its font cache being built.
    said = [r.getMessage() for r in caplog.records if r.name == "monitor"]
    assert said == ["live mean_error 4.1 ...", "watch: region", "No drift in m v1"]
    caplog.clear()
    empty = {"status": "empty", "messages": ["no records in the window", "spool waiting"]}
    monitor_script().log_findings({**empty, "model_name": "m"})
    said = [r.getMessage() for r in caplog.records if r.name == "monitor"]
    assert said == ["spool waiting", "No verdict for m: no records in the window"]


@pytest.mark.parametrize("days", ["0", "-1", "nan", "inf", "a week"])
def test_monitor_refuses_days_that_are_not_positive(days, capsys):
    with pytest.raises(SystemExit) as caught:
        monitor_script().main(["--days", days])
    assert caught.value.code == 2  # argparse's usage error
    assert f"--days: {days!r}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("end", "said"),
    [
        ("garbage", "--end 'garbage' is not an ISO date"),
        ("0001-01-01", "starts before year 1"),
        ("9999-01-01", "--end '9999-01-01' is in the future: a window ends by the end of this"),
    ],
)
def test_monitor_refuses_an_end_that_is_no_date_as_a_bad_argument(end, said, capsys):
    with pytest.raises(SystemExit) as caught:
        monitor_script().main(["--end", end])
    assert caught.value.code == 2
    assert said in capsys.readouterr().err


def test_monitor_that_fails_leaves_no_earlier_report(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no params.yaml here: the run fails at once
    out = tmp_path / "reports"
    out.mkdir()
    for kind in ("json", "md", "html"):
        (out / f"monitoring.{kind}").write_text("yesterday's drift")
    script, seen = monitor_script(), []

    def params():  # while the run works, the last reports are still there to read
        seen.append(sorted(path.name for path in out.iterdir()))
        return load_params()

    monkeypatch.setattr(script, "load_params", params)
    assert script.main(["--out-dir", str(out)]) == EXIT_ERROR
    assert seen == [["monitoring.html", "monitoring.json", "monitoring.md"]]
    assert not list(out.iterdir()), "a workflow would have read yesterday's verdict"


def test_monitor_takes_a_fraction_of_a_day():
    assert monitor_script().positive_days("0.5") == 0.5


def test_monitor_end_is_utc_unless_it_gives_an_offset():
    window = monitor_script().window
    utc = datetime(2026, 11, 26, 11, 0, tzinfo=UTC)
    assert window("2026-11-26T11:00", 1)[1] == utc
    assert window("2026-11-26T13:00+02:00", 1)[1] == utc
    assert window("2026-11-26T11:00Z", 0.5) == (utc - timedelta(hours=12), utc)


def test_monitor_refuses_days_reaching_before_year_one_as_a_bad_argument(capsys):
    with pytest.raises(SystemExit) as caught:
        monitor_script().main(["--days", "1e9"])
    assert caught.value.code == 2 and "starts before year 1" in capsys.readouterr().err


@pytest.mark.parametrize(("end", "days"), [("0001-01-01", 1), (None, 1e8), ("2026-11-26", 1e10)])
def test_monitor_window_before_year_one_is_refused_with_the_fix(end, days):
    with pytest.raises(PipelineError, match=r"starts before year 1: give fewer --days"):
        monitor_script().window(end, days)


# --- service settings and script arguments ---------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "rule"),
    [
        ("SERVE_MAX_RECORDS", "abc", "a whole number of at least 1"),
        ("SERVE_MAX_RECORDS", "2.5", "a whole number of at least 1"),
        ("SERVE_MAX_RECORDS", "9" * 23, "a whole number of at least 1 and at most 2147483647"),
        ("SERVE_PREDICT_TIMEOUT_SECONDS", "1e300", "and at most 2147483647"),
        ("SERVE_MAX_BODY_BYTES", "-5", "a whole number of at least 1024"),
        ("SERVE_PREDICT_TIMEOUT_SECONDS", "0", "a number of at least 0.001"),
        ("SERVE_READ_TIMEOUT_SECONDS", "nan", "a number of at least 0.001"),
        ("SERVE_READ_TIMEOUT_SECONDS", "inf", "a number of at least 0.001"),
        ("SERVE_FAST_PATH", "maybe", "must be one of 1/0, true/false, on/off"),
    ],
)
def test_serve_settings_name_the_variable_and_what_is_allowed(name, value, rule):
    with pytest.raises(PipelineError) as caught:
        config.ServeSettings.from_env({name: value})
    assert str(caught.value).startswith(f"{name}={value!r}")
    assert rule in str(caught.value)


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        ("SERVE_MAX_RECORDS", "abc", "SERVE_MAX_RECORDS='abc' is not allowed"),
        ("MONITORING_DATABASE_URL", "postgres://u:p@h/db", "starts with postgres://"),
        ("MONITORING_DATABASE_URL", "mysql://u:p@h/db", "names a 'mysql' database"),
    ],
)
def test_serve_refuses_a_bad_setting_before_starting_any_worker(
    monkeypatch, capsys, name, value, said
):
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as caught:
        load_script("serve").main(["--port", "1"])
    assert caught.value.code == 2  # argparse's usage error, no traceback
    assert said in capsys.readouterr().err


@pytest.mark.parametrize("url", ["notaurl", "127.0.0.1:8000", "ftp://127.0.0.1", "http://"])
def test_send_batch_refuses_what_is_not_an_http_url(url, capsys):
    with pytest.raises(SystemExit) as caught:
        load_script("send_batch").main(["--file", "rows.csv", "--url", url])
    assert caught.value.code == 2
    assert f"--url {url!r} is not an http(s) URL" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--rows", "0"], "--rows: '0' is not a whole number of at least 1"),
        (["--rows", "-5"], "--rows: '-5' is not a whole number of at least 1"),
        (["--end-date", "tomorrow"], "--end-date: 'tomorrow' is not a date such as 2026-06-30"),
    ],
)
def test_make_sample_refuses_a_bad_row_count_or_date(argv, said, capsys):
    with pytest.raises(SystemExit) as caught:
        load_script("make_sample").main(["--out", "sample.csv", *argv])
    assert caught.value.code == 2 and said in capsys.readouterr().err


def test_a_path_a_step_cannot_use_is_one_line_not_a_traceback(tmp_path, caplog):
    (tmp_path / "a-file").write_text("")

    def writes_under_a_file() -> int:
        (tmp_path / "a-file" / "report.json").write_text("{}")
        return 0

    def reads_what_a_library_names_only_in_its_message() -> int:
        raise FileNotFoundError("missing.parquet")

    assert cli.run(writes_under_a_file) == EXIT_ERROR
    assert f"cannot use {tmp_path / 'a-file' / 'report.json'}: Not a directory" in caplog.text
    assert cli.run(reads_what_a_library_names_only_in_its_message) == EXIT_ERROR
    assert "cannot use missing.parquet (FileNotFoundError)" in caplog.text

    def interrupted() -> int:
        raise KeyboardInterrupt

    assert cli.run(interrupted) == EXIT_INTERRUPTED
    assert "interrupted (Ctrl-C): run the step again" in caplog.text

    def resets() -> int:  # no path involved: a bug or a backend, not this
        raise ConnectionResetError

    with pytest.raises(ConnectionResetError):
        cli.run(resets)


def test_sigterm_unwinds_a_step_so_its_mlflow_run_ends_failed_not_running(workdir, caplog):
    """A cancelled workflow job sends SIGTERM: the step's clean-up runs as on Ctrl-C."""
    import mlflow

    started = {}

    def trains() -> int:
        with mlflow.start_run() as active:
            started["run"] = active.info.run_id
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)  # the handler raises before this ends
        return 0

    before = signal.getsignal(signal.SIGTERM)
    assert cli.run(trains) == EXIT_TERMINATED
    assert "stopped by SIGTERM: run the step again" in caplog.text
    assert mlflow.get_run(started["run"]).info.status == "FAILED"
    assert signal.getsignal(signal.SIGTERM) is before  # a step's handler only while it runs


def test_scripts_log_in_utc_whatever_the_machine_s_time_zone():
    code = "import logging; from {{ cookiecutter.__package_name }} import cli; "
    code += "cli.run(lambda: logging.getLogger('step').info('hello') or 0)"
    before = datetime.now(UTC)
    said = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "TZ": "Asia/Kolkata"},  # UTC+05:30
        capture_output=True,
        text=True,
        timeout=60,
    ).stderr
    stamp = datetime.strptime(said[:19], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    assert " UTC INFO step: hello" in said and abs(stamp - before) < timedelta(minutes=5), said


def test_retrain_age_refuses_a_limit_that_is_no_positive_number(capsys):
    with pytest.raises(SystemExit) as caught:
        load_script("retrain_age").main(["--max-days", "-3"])
    assert caught.value.code == 2
    assert "--max-days: '-3' must be a number of days above 0" in capsys.readouterr().err


def test_outcomes_and_batch_files_are_named_as_such_when_unusable(tmp_path):
    read = datalib.read_file
    with pytest.raises(PipelineError, match=r"^the outcomes file \(FILE=\) '.*' is no path or"):
        read(str(tmp_path), {}, "the outcomes file (FILE=)")
    with pytest.raises(PipelineError, match=r"^the batch file \(FILE=\) 'gone.csv' does not exist"):
        read("gone.csv", {}, "the batch file (FILE=)")


@pytest.mark.parametrize("argv", [[], ["--file", ""]], ids=["none", "empty"])
def test_load_outcomes_without_a_source_names_the_make_variables(argv, capsys):
    with pytest.raises(SystemExit) as caught:
        load_script("load_outcomes").main(argv)
    assert caught.value.code == 2
    assert "name the outcomes: FILE=outcomes.csv" in capsys.readouterr().err


# --- train.hyperparameters -------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_frame(repo_params) -> tuple:
    """The test params, their schema and the validated sample rows."""
    params = sample_params(repo_params)
    schema = datalib.Schema.from_params(params["data"], params["model"]["task"])
    frame = datalib.validate(datalib.load_source(params["data"], schema.task, None), schema)
    return params, schema, frame


@pytest.mark.parametrize(
    ("hyperparameters", "named"),
    [({"learning_rat": 0.1}, "learning_rat"), ({"learning_rate": -0.05}, "learning_rate")],
    ids=["unknown-name", "invalid-value"],
)
def test_train_refuses_bad_hyperparameters(sample_frame, hyperparameters, named):
    params, schema, frame = sample_frame
    params = copy.deepcopy(params)
    params["train"]["hyperparameters"] = hyperparameters
    with pytest.raises(PipelineError, match=r"train\.hyperparameters") as caught:
        training.fit(frame, schema, params)
    assert named in str(caught.value)


def test_an_unknown_hyperparameter_gets_the_closest_name_and_every_one_taken(sample_frame):
    params, schema, frame = sample_frame
    kinds = schema.of_kind("numeric"), schema.of_kind("categorical")
    plain = build_model(schema.task, *kinds, {}, params["train"]["seed"])
    estimator = plain[-1] if hasattr(plain, "steps") else plain
    taken = sorted(estimator.get_params(deep=False))
    if inspect.getfullargspec(type(estimator).__init__).varkw:
        pytest.skip("the estimator takes any keyword: the next tests cover its check")
    name = max(taken, key=len)  # the longest: its misspelling is close to it alone
    params = copy.deepcopy(params)
    params["train"]["hyperparameters"] = {name[:-1]: 1}
    with pytest.raises(PipelineError) as caught:
        training.fit(frame, schema, params)
    assert str(caught.value) == (
        f"params.yaml train.hyperparameters.{name[:-1]} (did you mean {name}?) is not a "
        f"parameter of {type(estimator).__name__}, which takes: {', '.join(taken)}"
    )
    # One build_model() sets itself is among those taken, but not a hyperparameter's to set.
    params["train"]["hyperparameters"] = {"random_state": 3}
    with pytest.raises(PipelineError, match=r"random_state is set by build_model\(\) itself"):
        training.fit(frame, schema, params)


class KeywordsEstimator(BaseEstimator):
    """An estimator that, as LightGBM's and XGBoost's do, takes keywords it does not declare
    (predicting the majority class, or the mean)."""

    def __init__(self, depth: int = 3, **kwargs) -> None:
        self.depth = depth
        self.other = kwargs

    def get_params(self, deep: bool = True) -> dict:
        return {"depth": self.depth, **self.other}

    def fit(self, x, y):
        if self.depth < 1:
            raise RuntimeError(f"Check failed: (depth) >= 1, got {self.depth}")
        continuous = type_of_target(y) == "continuous"
        self.model_ = (DummyRegressor() if continuous else DummyClassifier()).fit(x, y)
        if not continuous:
            self.classes_ = self.model_.classes_
        return self

    def predict(self, x):
        return self.model_.predict(x)

    def predict_proba(self, x):
        return self.model_.predict_proba(x)


@pytest.mark.parametrize(
    ("hyperparameters", "said"),
    [
        ({"detph": 2}, "detph is not among the parameters KeywordsEstimator declares"),
        ({"depth": 0}, "train.hyperparameters: Check failed: (depth) >= 1"),
    ],
    ids=["misspelt-keyword", "library-check"],
)
def test_train_checks_hyperparameters_of_an_estimator_taking_any_keyword(
    sample_frame, monkeypatch, hyperparameters, said
):
    params, schema, frame = sample_frame
    params = copy.deepcopy(params)
    params["train"]["hyperparameters"] = hyperparameters
    monkeypatch.setattr(
        training,
        "build_model",
        lambda task, numeric, categorical, chosen, seed: Pipeline(
            [
                ("prepare", SimpleImputer(strategy="most_frequent")),
                ("model", KeywordsEstimator(**chosen)),
            ]
        ),
    )
    with pytest.raises(PipelineError, match=re.escape(said)):
        training.fit(frame, schema, params)
    params["train"]["hyperparameters"] = {"depth": 2}
    assert training.fit(frame, schema, params)[0].named_steps["model"].depth == 2


def test_train_data_errors_are_not_blamed_on_hyperparameters(sample_frame):
    params, schema, frame = sample_frame
    broken = frame.assign(**{schema.target: float("nan")})  # past validate(): a genuine bug
    with pytest.raises(ValueError, match="NaN"):  # sklearn's own error, not a PipelineError
        training.fit(broken, schema, params)
