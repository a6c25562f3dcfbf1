"""Every documented make target, run in baked repos inside their own environments."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import git, linked_copy, make, project_env, registry_state, run_make
from services import free_port, http_status, running_process, wait_until

pytestmark = pytest.mark.lifecycle
LIFECYCLE_CONFIGS = ["baseline", "task=regression"]
each_lifecycle = pytest.mark.parametrize("config_id", LIFECYCLE_CONFIGS)
DESIGN_TARGETS = [
    "help",
    "setup",
    "data",
    "train",
    "evaluate",
    "promote",
    "pipeline",
    "rollback",
    "test",
    "lint",
]


def clone(project: Path, destination: Path) -> Path:
    """A copy of a baked repo sharing its environment, without its registry and reports."""
    return linked_copy(project, destination, "mlflow.db", "mlartifacts", "reports")


@each_lifecycle
def test_make_help_is_default_and_lists_every_target(set_up, config_id):
    output = make(set_up(config_id)).stdout
    listed = re.findall(r"^\s+(?:\x1b\[\d+m)?([a-z-]+)", output, re.MULTILINE)
    assert set(DESIGN_TARGETS) <= set(listed), f"help lists {listed}"


@each_lifecycle
def test_make_lint_passes(set_up, config_id):
    make(set_up(config_id), "lint")


def test_make_format_fixes_and_formats_what_make_lint_refuses(set_up, tmp_path):
    project = clone(set_up("baseline"), tmp_path / "repo")
    messy = project / "scripts" / "messy.py"
    messy.write_text("import os\nimport sys\nvalues=[1,2 ,3]\nprint( sys.argv,values )\n")
    refused = run_make(project, "lint")
    assert refused.returncode != 0 and "F401" in refused.stdout, refused.stdout
    make(project, "format")
    assert messy.read_text() == "import sys\n\nvalues = [1, 2, 3]\nprint(sys.argv, values)\n"
    make(project, "lint")


def test_make_clean_removes_reports_and_caches_and_keeps_data_and_registry(set_up, tmp_path):
    project = clone(set_up("baseline"), tmp_path / "repo")
    kept = [project / "mlflow.db", project / "data" / "dataset.parquet", project / "params.yaml"]
    removed = [project / "reports" / "evaluation.json", project / ".pytest_cache" / "x"]
    for path in kept[:2] + removed:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    make(project, "clean")
    assert [path.exists() for path in kept] == [True] * 3
    assert not (project / "reports").exists() and not (project / ".pytest_cache").exists()


def test_make_training_changed_reads_the_last_commit_and_counts_a_first_push_as_changed(
    set_up, tmp_path
):
    """What ci.yml asks before training a pull request's candidate."""
    project = clone(set_up("baseline"), tmp_path / "repo")
    shutil.rmtree(project / ".git")
    git(project, "init", "--quiet", "-b", "main")

    def commit(path: str, text: str) -> str:
        (project / path).write_text((project / path).read_text() + text)
        git(project, "add", "--all")
        git(project, "commit", "--quiet", "-m", f"change {path}")
        return run_make(project, "--silent", "training-changed").stdout.strip()

    # The first push has no parent commit to compare with: its training counts as changed.
    assert commit("README.md", "\n") == "training=true"
    first = run_make(project, "--silent", "training-changed")
    assert "no commit HEAD^1 to compare with: counting training as changed" in first.stderr
    assert commit("README.md", "\nA note.\n") == "training=false"
    assert commit("params.yaml", "\n# a comment is a change\n") == "training=true"
    model = next(project.glob("src/*/model.py")).relative_to(project)
    assert commit(str(model), "\n") == "training=true"
    assert commit("scripts/monitor.py", "\n") == "training=false"


def own_data_and_model(project: Path) -> dict[Path, str]:
    """Make the README's "two places you change" a user's own: other columns (a true/false one
    among them, an id to ignore, bounds) in a CSV under data/raw/, declared in params.yaml, and
    another estimator in build_model() with its own hyperparameters; the original files."""
    paths = [project / "params.yaml", *project.glob("src/*/model.py")]
    originals = {path: path.read_text() for path in paths}
    params = yaml.safe_load(originals[paths[0]])
    classification = params["model"]["task"] == "classification"
    rows = [
        {
            "order_id": f"order-{i:05d}",  # no feature: data.ignore drops it
            "distance_km": round(0.5 + (i * 37 % 100) / 10, 1),
            "items": 1 + i % 6,
            "city": ["Lisbon", "Porto", "Braga"][i % 3],
            "is_raining": ["true", "FALSE", "False"][i % 3],
            "late": ["no", "yes"][i * 7 % 10 > 6] if classification else 10 + i % 40,
        }
        for i in range(300)
    ]
    (project / "data/raw").mkdir(parents=True, exist_ok=True)
    with (project / "data/raw/deliveries.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    params["data"].update(
        source="data/raw/deliveries.csv",
        features={
            "distance_km": "numeric",
            "items": "numeric",
            "city": "categorical",
            "is_raining": "categorical",
        },
        target="late",
        target_classes=["no", "yes"] if classification else None,
        time_column=None,
        bounds={"distance_km": [0, None], "items": [1, 20]},  # the sample's named its features
        ignore=["order_id"],
    )
    params["train"]["hyperparameters"] = {"n_estimators": 60, "min_samples_leaf": 3}
    paths[0].write_text(yaml.safe_dump(params, sort_keys=False))
    shipped = """    estimator = (
        HistGradientBoostingClassifier
        if task == "classification"
        else HistGradientBoostingRegressor
    )"""
    forest = """    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    estimator = RandomForestClassifier if task == "classification" else RandomForestRegressor"""
    model = originals[paths[1]]
    trusted = 'TreePredictor",  # HistGradientBoosting\n'
    assert shipped in model and trusted in model, "model.py changed: update this"
    model = model.replace(shipped, forest)
    tree = f'{trusted}    "sklearn.tree._tree.Tree",\n'  # a type skops must trust
    paths[1].write_text(model.replace(trusted, tree))
    return originals


@each_lifecycle
def test_make_test_passes_in_the_repos_own_environment(set_up, config_id):
    """The README says the tests keep passing after you switch to your own data and model: the
    regression repo runs them so, the baseline one as baked."""
    project = set_up(config_id)
    originals = own_data_and_model(project) if config_id == "task=regression" else {}
    try:
        output = make(project, "test").stdout
    finally:
        for path, text in originals.items():
            path.write_text(text)
        if originals:
            shutil.rmtree(project / "data/raw")
    summary = re.findall(r"^=+ (.*) in [\d.]+s.* =+$", output, re.MULTILINE)
    assert summary and re.search(r"\d+ passed", summary[-1]), output[-2000:]
    assert "failed" not in summary[-1] and "error" not in summary[-1], summary[-1]


@each_lifecycle
def test_make_pipeline_registers_and_promotes_first_model(set_up, config_id):
    project = set_up(config_id)
    make(project, "pipeline")
    promotion = json.loads((project / "reports/promotion.json").read_text())
    assert promotion["decision"] == "promoted", promotion["reason"]
    state = registry_state(project)
    assert state["champion"] == "1"
    tags = state["versions"]["1"]
    assert (
        tags["data.content_hash"]
        == json.loads((project / "reports/data.json").read_text())["content_hash"]
    )
    assert tags["gate.decision"] == "promoted" and tags["previous_champion"] == "none"
    evaluation = (project / "reports/evaluation.md").read_text()
    assert "candidate v1" in evaluation and "champion none yet" in evaluation
    assert sorted(p.name for p in (project / "reports").glob("*.png")), "plots were written"
    assert float(tags["gate.holdout.rows"]) > 0, "the scores decided on are in the registry"
    history = make(project, "history").stdout
    assert f"  v1 became champion (was none) by the gate: {promotion['reason']}" in history


@each_lifecycle
def test_make_pipeline_unchanged_reruns_nothing(set_up, config_id):
    project = set_up(config_id)
    output = make(project, "pipeline").stdout
    assert "Stage 'train' didn't change, skipping" in output
    assert "Stage 'evaluate' didn't change, skipping" in output
    assert list(registry_state(project)["versions"]) == ["1"]
    assert json.loads((project / "reports/promotion.json").read_text())["decision"] == "unchanged"

    # A training run that fails (here a misspelt hyperparameter build_model() refuses) and is
    # then undone leaves nothing to re-run: the next pipeline registers no copy of version 1.
    params = project / "params.yaml"
    good = params.read_text()
    broken = yaml.safe_load(good)
    broken["train"]["hyperparameters"] = {**broken["train"]["hyperparameters"], "max_iters": 3}
    params.write_text(yaml.safe_dump(broken))
    failed = run_make(project, "train")
    assert failed.returncode == 2 and "max_iters" in failed.stderr, failed.stderr[-2000:]
    params.write_text(good)
    assert "Stage 'train' didn't change, skipping" in make(project, "pipeline").stdout
    assert list(registry_state(project)["versions"]) == ["1"]


def test_make_version_data_writes_a_versions_rows_that_no_commit_names(set_up, tmp_path):
    """The README's way from a version to its rows: a version trained on data no commit's
    dvc.lock names (as a scheduled retrain's), after later data, with DVC's cache gone (another
    clone): `make version-data` gets them from the remote by the version's data.dvc_md5."""
    project = clone(set_up("baseline"), tmp_path / "repo")
    readme = (project / "README.md").read_text()
    command = re.search(r"\nmake (version-data VERSION=3 OUT=rows.parquet) ", readme)
    assert command, "the README shows make version-data"

    def new_data(rows: int) -> str:
        params = yaml.safe_load((project / "params.yaml").read_text())
        params["data"]["sample_rows"] = rows
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        make(project, "data")
        return yaml.safe_load((project / "dvc.lock").read_text())["stages"]["data"]["outs"][0]

    first = new_data(900)
    make(project, "train")  # version 1 of this clone's own registry, on those rows
    assert new_data(1200)["md5"] != first["md5"]
    shutil.rmtree(project / ".dvc" / "cache")
    make(project, *command.group(1).replace("VERSION=3", "VERSION=1").split())
    written = hashlib.md5((project / "rows.parquet").read_bytes(), usedforsecurity=False)
    assert written.hexdigest() == first["md5"]


@each_lifecycle
def test_make_rollback_without_previous_champion_fails_clearly(set_up, config_id):
    result = run_make(set_up(config_id), "rollback")
    assert result.returncode != 0
    assert "has no previous champion: pass VERSION=<n>" in result.stderr


@each_lifecycle
def test_make_predict_logs_a_file_at_a_past_time_that_make_monitor_reads(set_up, config_id):
    """A backfill: rows predicted in-process as the service would, logged at AT, where a
    monitoring window of that day finds every one (and today's window none of them)."""
    project = set_up(config_id)
    make(project, "sample")
    # A log of its own: the project's is the serving test's, which counts every record in it.
    env = {**project_env(project), "MONITORING_DATABASE_URL": "sqlite:///build/backfill.db"}
    sent = ["FILE=data/batches/sample.csv", "AT=2020-01-06T12:00", "OUT=build/backfill.csv"]
    predicted = run_make(project, "predict", *sent, env=env)
    assert predicted.returncode == 0, predicted.stderr
    sample = read_csv(project / "data/batches/sample.csv")
    answered = read_csv(project / "build/backfill.csv")
    assert [int(row["row"]) for row in answered] == list(range(len(sample)))
    assert f"{len(sample)} of {len(sample)} rows predicted by " in predicted.stderr
    assert "logged at 2020-01-06T12:00:00 UTC" in predicted.stderr
    for window, records in ((["END=2020-01-07", "DAYS=1"], len(sample)), ([], 0)):
        result = run_make(project, "monitor", *window, env=env)
        report = json.loads((project / "reports/monitoring.json").read_text())
        assert result.returncode in (0, 2) and report["records"] == records, result.stderr
    future = run_make(project, "predict", "FILE=data/batches/sample.csv", "AT=2999-01-01")
    assert future.returncode == 2 and "'2999-01-01' is in the future" in future.stderr


@each_lifecycle
def test_readme_notebook_code_predicts_what_make_predict_does(set_up, config_id):
    """The README's way to score a version in a notebook, run as written (after `make
    sample`), gives the predictions `make predict` gives for the same file."""
    project = set_up(config_id)
    make(project, "sample")
    version = json.loads((project / "build/model/bundle.json").read_text())["version"]
    text = (project / "README.md").read_text()
    code = re.search(r"```python\n(from .*?load_model.*?)```", text, re.DOTALL).group(1)
    assert ", 1)  # a version number" in code
    code = code.replace(", 1)  # a version number", f", {version})")  # the one make predict serves
    shown = code + "print(json.dumps([str(p) for p in predictions]))\n"
    scored = subprocess.run(
        [str(project / ".venv/bin/python"), "-c", "import json\n" + shown],
        cwd=project,
        env=project_env(project),
        capture_output=True,
        text=True,
    )
    assert scored.returncode == 0, scored.stderr
    notebook = json.loads(scored.stdout.strip().splitlines()[-1])
    # Not logged: the prediction log of this project is the monitoring tests' (their counts).
    unlogged = {**project_env(project), "PREDICTION_LOG": "0"}
    make(project, "predict", "FILE=data/batches/sample.csv", "OUT=build/notebook.csv", env=unlogged)
    served = [row["prediction"] for row in read_csv(project / "build/notebook.csv")]
    assert notebook == served


@each_lifecycle
def test_make_data_bad_source_stops_with_column_named(set_up, config_id, tmp_path):
    project = clone(set_up(config_id), tmp_path / "repo")
    make(project, "data", "sample")
    dataset = project / "data/dataset.parquet"
    last_good = dataset.read_bytes()
    batch = project / "data/batches/sample.csv"
    batch.write_text(
        "\n".join(
            ",".join(cell for i, cell in enumerate(line.split(",")) if i != 3)
            for line in batch.read_text().splitlines()
        )
    )
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["data"]["source"] = str(batch)
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    result = run_make(project, "data")
    assert result.returncode != 0
    assert "column 'support_calls' is missing from the data" in result.stderr
    # DVC keeps the stage's outputs (persist): the last good dataset survives the failed step.
    assert dataset.read_bytes() == last_good


def read_csv(path: Path) -> list[dict]:
    """A CSV file's rows as dicts of text."""
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


@each_lifecycle
def test_make_serve_logs_traffic_that_make_monitor_finds_drifted(set_up, config_id, tmp_path):
    project = set_up(config_id)
    port = free_port()
    command = ["make", "serve", "HOST=127.0.0.1", f"PORT={port}"]
    log = tmp_path / "serve.log"
    # make serve serves the champion it exported, wherever MODEL_BUNDLE_DIR points.
    env = {**project_env(project), "MODEL_BUNDLE_DIR": str(tmp_path / "no-bundle-here")}
    with running_process(command, log, env=env, cwd=project) as server:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_status(f"{base}/ready", server) == 200, 120, "make serve /ready")
        meta = json.loads((project / "build/model/bundle.json").read_text())
        body = json.dumps({"records": [meta["example"]]}).encode()
        request = urllib.request.Request(
            f"{base}/predict", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.loads(response.read())
        assert answer["model_version"] == meta["version"] == registry_state(project)["champion"]
        make(project, "drifted-sample")
        sent = ["FILE=data/batches/drifted.csv", f"URL={base}", "OUT=build/predictions.csv"]
        make(project, "send-batch", *sent)
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    assert "Finished server process" in log.read_text(), "uvicorn shut down gracefully"
    # The file send-batch saved, with an actual column added, is an outcomes file.
    answered = read_csv(project / "build/predictions.csv")
    drifted = read_csv(project / "data/batches/drifted.csv")
    assert [int(row["row"]) for row in answered] == list(range(len(drifted)))
    model = yaml.safe_load((project / "params.yaml").read_text())
    probabilities = [column for column in answered[0] if column.startswith("probability_")]
    if model["model"]["task"] == "classification":
        assert len(probabilities) >= 2, list(answered[0])
        for answer in answered:
            assert sum(float(answer[p]) for p in probabilities) == pytest.approx(1, abs=1e-6)
    else:
        assert not probabilities, list(answered[0])
    with (project / "build/outcomes.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, [*answered[0], "actual"])
        writer.writeheader()
        for answer, record in zip(answered, drifted, strict=True):
            writer.writerow({**answer, "actual": record[model["data"]["target"]]})
    loaded = run_make(project, "outcomes", "FILE=build/outcomes.csv")
    assert loaded.returncode == 0 and f"{len(drifted)} match a logged prediction" in loaded.stderr
    assert f"loaded {len(drifted)} outcomes into sqlite:///" in loaded.stderr, "names the database"
    (project / "build/no-outcomes.csv").write_text("request_id,record_index,actual\n")
    nothing = run_make(project, "outcomes", "FILE=build/no-outcomes.csv")
    assert nothing.returncode == 0 and "holds no outcome rows" in nothing.stderr, nothing.stderr
    result = run_make(project, "monitor")
    report = json.loads((project / "reports/monitoring.json").read_text())
    assert report["records"] == 1001, "every predicted record reached the prediction log"
    assert report["live_metrics"]["records_scored"] == len(drifted)
    assert report["live_quality"]["outcomes"] == len(drifted), "judged against promote.threshold"
    assert (result.returncode, report["exit_code"], report["drift"]) == (2, 3, True)
    assert "monthly_charges" in report["drifted"] and "contract" in report["drifted"]
    assert (project / "reports/monitoring.html").read_text().count("data:image/png") >= 2

    # make load-test serves the bundle with a log of its own: the monitored log is left alone.
    def logged(database: Path) -> int:
        with sqlite3.connect(database) as db:
            return db.execute("select count(*) from prediction_log").fetchone()[0]

    before = logged(project / "monitoring.db")
    loaded = run_make(project, "load-test", "USERS=2", "DURATION=3s")
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert re.search(r"load-test: \d+ req/s, p50 [\d.]+ ms, p99 [\d.]+ ms, 0 failed", loaded.stdout)
    assert logged(project / "build/load-test/monitoring.db") > 10
    assert logged(project / "monitoring.db") == before
    # Bad settings stop it at once; a run in which nothing answered measured nothing: it fails.
    refused = run_make(project, "load-test", "USERS=0")
    assert refused.returncode != 0 and "'0' is not a whole number of at least 1" in refused.stderr
    nothing = run_make(project, "load-test", f"URL=http://127.0.0.1:{free_port()}", "DURATION=2s")
    assert nothing.returncode != 0 and "load-test: " in nothing.stdout, nothing.stdout[-2000:]

    def daily_stats() -> list[tuple]:
        with sqlite3.connect(project / "monitoring.db") as db:
            return db.execute("select * from daily_stats order by 1, 2, 3, 4").fetchall()

    stored = daily_stats()  # per UTC day: today's (and yesterday's, when the traffic spans it)
    counts = [row[4] for row in stored if row[2:4] == ("_service", "records")]
    assert sum(counts) == 1001 and "daily_stats: " in result.stderr, stored[:3]
    two_days = run_make(project, "monitor", "DAYS=2")
    assert two_days.returncode == 2, two_days.stderr[-3000:]
    assert daily_stats() == stored, "a day's statistics do not depend on the window"
