"""What the GitHub workflows post and check, from real reports of a real registry and log.

scripts/github_bodies.py (the PR comment, the drift issue, the job summaries and outputs),
scripts/check_env.py (a job's first step) and scripts/retrain_age.py (the overdue alert).
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from conftest import (
    REPO,
    fewer_rounds,
    load_script,
    predict_as_served,
    sample_params,
    use_embedded_backends,
)
from mlflow import MlflowClient

from {{ cookiecutter.__package_name }} import data as datalib
from {{ cookiecutter.__package_name }} import evaluation, promotion, registry, training
from {{ cookiecutter.__package_name }}.metrics import difference
from {{ cookiecutter.__package_name }}.monitoring.monitor import monitor
from {{ cookiecutter.__package_name }}.monitoring.tables import metadata, prediction_log
from {{ cookiecutter.__package_name }}.promotion import Gate
from {{ cookiecutter.__package_name }}.sample import make_sample

END = datetime(2026, 7, 1, tzinfo=UTC)
THRESHOLDS = {"psi": 0.2, "alpha": 0.01, "min_records": 200, "bias": 0.25}
RUN_URL = "https://github.com/acme/model/actions/runs/42"
ARTIFACT_URL = "https://github.com/acme/model/actions/runs/42/artifacts/7"


bodies = load_script("github_bodies")
check_env = load_script("check_env")
retrain_age = load_script("retrain_age")


def log_predictions(engine, champion: dict, frame) -> None:
    """Predict the rows with the champion and write them to the prediction log."""
    features = frame[list(champion["profile"]["features"])]
    records = features.astype(object).where(features.notna(), None).to_dict("records")
    model, profile, task = champion["model"], champion["profile"], champion["task"]
    prediction, proba = predict_as_served(model, records, profile, task)
    rows = []
    for i, record in enumerate(records):
        probabilities = None
        if proba is not None:
            probabilities = {
                str(c): float(p) for c, p in zip(champion["classes"], proba[i], strict=True)
            }
        rows.append(
            {
                "request_id": uuid.uuid4().hex,
                "record_index": 0,
                "logged_at": END - timedelta(hours=6),
                "model_name": champion["name"],
                "model_version": champion["version"],
                "features": record,
                "prediction": str(prediction[i]),
                "prediction_value": float(prediction[i]),
                "probabilities": probabilities,
                "latency_ms": 2.0,
            }
        )
    with engine.begin() as conn:
        conn.execute(prediction_log.insert(), rows)


def monitoring_report(folder: Path, champion: dict, drift: bool) -> dict:
    """One real monitoring pass over a day of logged predictions, drifted or not."""
    engine = sa.create_engine(f"sqlite:///{folder / f'monitoring-{drift}.db'}")
    metadata.create_all(engine)
    target = champion["target"]
    log_predictions(engine, champion, make_sample(1500, 21, champion["task"], target, drift=drift))
    return monitor(engine, champion, END - timedelta(days=1), END, THRESHOLDS)


def champion_of(client, params: dict) -> dict:
    """The champion as monitoring sees it: version, task, classes, profile and the model."""
    name = params["model"]["name"]
    current = registry.champion(client, name)
    return {
        "name": name,
        "version": str(current.version),
        "task": current.tags["task"],
        "classes": json.loads(current.tags["classes"]),
        "profile": registry.load_profile(client, current.run_id),
        "model": registry.load_model(name, current.version),
        "target": params["data"]["target"],
    }


def train_and_evaluate(params, backends, data: Path, out: Path) -> dict:
    """Register a candidate and score it against the current champion."""
    trained = training.train(data, params, backends)
    return evaluation.evaluate(data, trained, params, backends, out)


@pytest.fixture(scope="module")
def reports(repo_params, tmp_path_factory) -> dict:
    """Every report the workflows turn into Markdown, from one registry with three versions.

    v1 promoted; v2 (fewer rounds and rows) evaluated against v1, then rejected by a strict
    gate; v3 promoted; rolled back to v1, and a refused rollback to v3; monitoring of the
    champion on clean and on drifted traffic.
    """
    folder = tmp_path_factory.mktemp("github-bodies")
    params = sample_params(repo_params)
    task = params["model"]["task"]
    with pytest.MonkeyPatch.context() as patch:
        backends = use_embedded_backends(patch, folder)
        schema = datalib.Schema.from_params(params["data"], task)
        frame = datalib.validate(datalib.load_source(params["data"], task, None), schema)
        data = folder / "data.parquet"
        frame.to_parquet(data, index=False)
        gate = Gate.from_params(params["promote"], task)
        strict = Gate(gate.metric, gate.threshold, min_improvement=1.0)

        first = train_and_evaluate(params, backends, data, folder / "r1")
        found = {"first": promotion.promote(first, gate, backends, lambda: first)}
        other = copy.deepcopy(params)
        # Another model whatever the estimator: fewer rounds, and fewer rows to learn from.
        other["train"]["hyperparameters"] = fewer_rounds(params["train"]["hyperparameters"], 5)
        other["split"]["validation_fraction"] = 0.5
        found["evaluation"] = train_and_evaluate(other, backends, data, folder / "reports")
        found["rejected"] = promotion.promote(found["evaluation"], strict, backends, None)
        third = train_and_evaluate(params, backends, data, folder / "r3")
        found["promoted"] = promotion.promote(third, gate, backends, lambda: third)
        found["rolled_back"] = promotion.rollback(data, params, gate, backends, None, "bad", False)
        unreachable = Gate(gate.metric, 0.999 if gate.metric.higher_is_better else 1e-9, 0.0)
        found["refused"] = promotion.rollback(data, params, unreachable, backends, "3", "x", False)
        client = MlflowClient()
        champion = champion_of(client, params)
        found["versions"] = client.search_model_versions(f"name = '{params['model']['name']}'")
    found["clean"] = monitoring_report(folder, champion, drift=False)
    found["drifted"] = monitoring_report(folder, champion, drift=True)
    quiet = sa.create_engine(f"sqlite:///{folder / 'monitoring-quiet.db'}")  # nothing logged
    metadata.create_all(quiet)
    found["quiet"] = monitor(quiet, champion, END - timedelta(days=1), END, THRESHOLDS)
    return {**found, "gate": gate, "folder": folder, "params": params}


def test_pr_comment_has_marker_table_deltas_gate_preview_and_plot_links(reports):
    evaluation_report, gate = reports["evaluation"], reports["gate"]
    links = bodies.Links(RUN_URL, ARTIFACT_URL)
    text = bodies.pr_comment(evaluation_report, gate, links)
    assert text.startswith(bodies.PR_MARKER + "\n")
    assert "| candidate v2 | champion v1 | delta |" in text
    row = evaluation_report["comparison"][gate.metric.name]
    assert row["delta"] != 0, "v2 was trained with fewer rounds and rows"
    assert f"| {difference(row['delta'], signed=True)} |" in text
    assert f"**{gate.metric.name}** (gate)" in text
    assert "Gate preview: would" in text and "No alias moved" in text
    repeat = {**evaluation_report, "repeats": "it repeats version 1 (...), which was rolled back"}
    assert "**Gate preview: would not promote**: it repeats version 1" in bodies.pr_comment(
        repeat, gate, links
    )
    for plot in evaluation_report["plots"]:
        assert f"`{Path(plot).name}`" in text
    assert f"]({ARTIFACT_URL})" in text and f"]({RUN_URL})" in text
    assert "data:image" not in text, "GitHub strips inline images: plots are linked"


def test_pr_comment_marker_is_the_one_ci_looks_for():
    workflow = (REPO / ".github" / "workflows" / "ci.yml").read_text()
    assert f'MARKER: "{bodies.PR_MARKER}"' in workflow


def test_promotion_summary_promoted_names_version_reason_and_deploy(reports):
    promoted = reports["promoted"]
    text = bodies.promotion_summary(promoted, None, bodies.Links(RUN_URL))
    assert text.startswith(f"## Retraining of {promoted['model_name']}: version 3 promoted\n")
    assert promoted["reason"] in text and "deploy job builds and ships it" in text
    assert f"[workflow run]({RUN_URL})" in text


def test_promotion_summary_rejected_has_reason_table_and_no_deploy(reports):
    rejected, evaluation_report = reports["rejected"], reports["evaluation"]
    text = bodies.promotion_summary(rejected, evaluation_report, bodies.Links())
    minimum = ("is below the minimum 1", "(minimum improvement 1)")  # better by less, or worse
    assert "version 2 rejected" in text and rejected["reason"].endswith(minimum)
    assert f"Gate ({reports['gate'].metric.name}): {rejected['reason']}" in text
    assert "| candidate v2 | champion v1 |" in text
    assert "deploy" not in text
    # An evaluation of another version since (a branch's make evaluate): its table is not shown.
    promoted = bodies.promotion_summary(reports["promoted"], evaluation_report, bodies.Links())
    assert "| candidate v2 |" not in promoted, promoted
    assert "(reports/evaluation.json scores version 2, not this one.)" in promoted


def test_promotion_summary_without_report_says_no_decision():
    text = bodies.promotion_summary(None, None, bodies.Links(RUN_URL))
    assert text.startswith("## Retraining: no decision") and RUN_URL in text


def test_drift_issue_names_drifted_feature_and_links_html_report(reports):
    drifted = reports["drifted"]
    assert drifted["drift"] is True, drifted["messages"]
    text = bodies.drift_issue(drifted, bodies.Links(RUN_URL, ARTIFACT_URL))
    assert text.startswith(bodies.DRIFT_MARKER + "\n## Drift detected in test-model v1")
    assert "| monthly_charges | numeric | DRIFT |" in text
    assert "retraining was dispatched" in text
    assert f"[the HTML report with plots]({ARTIFACT_URL})" in text
    assert "data:image" not in text
    latency = next(line for line in text.splitlines() if line.startswith("Latency (ms): "))
    assert re.fullmatch(r"Latency \(ms\): p50 [\d.]+, p95 [\d.]+, p99 [\d.]+", latency), latency
    assert "{'" not in text, "a Python dict leaked into the body"


def test_monitoring_summary_clean_traffic_says_no_drift(reports):
    clean = reports["clean"]
    assert clean["drift"] is False, clean.get("drifted")
    text = bodies.monitoring_summary(clean, bodies.Links(RUN_URL))
    assert text.startswith("## No drift in test-model v1") and "nothing else to do" in text


def test_monitoring_summary_without_a_report_or_a_verdict_says_so(reports):
    """A monitor that failed (the database away) wrote no report; one with too few records
    wrote one without a verdict: neither summary ends in "No drift"."""
    failed = bodies.monitoring_summary(None, bodies.Links(RUN_URL))
    assert failed.startswith("## Monitoring: no result") and RUN_URL in failed
    quiet = bodies.monitoring_summary(reports["quiet"], bodies.Links(RUN_URL))
    assert "No verdict: this run fails" in quiet and "No drift" not in quiet


def test_rollback_summary_moved_and_refused(reports):
    moved = bodies.rollback_summary(reports["rolled_back"], bodies.Links())
    assert moved.startswith("## Rollback of test-model: champion is version 1 (was 3)")
    assert "Reason: bad" in moved
    worse = {**reports["rolled_back"], "worse_than_champion": True, "champion_value_today": 0.5}
    assert "Worse today than version 3, which it replaced: 0.5000." in bodies.rollback_summary(
        worse, bodies.Links()
    )
    assert "Worse today" not in moved, "v1 and v3 were trained on the same rows"
    marked_up = {**reports["rolled_back"], "reason": "<!-- hides the rest"}
    said = bodies.rollback_summary(marked_up, bodies.Links())
    assert "Reason: &lt;!-- hides the rest" in said, "a reason is text, not HTML"
    refused = bodies.rollback_summary(reports["refused"], bodies.Links())
    assert refused.startswith("## Rollback of test-model to version 3 refused")
    assert f"{reports['refused']['value_today']:.4f}" in refused


def test_outputs_give_decision_version_drift_flag_and_whether_there_was_a_verdict(reports):
    assert bodies.outputs("promote", reports["promoted"]) == "decision=promoted\nversion=3\n"
    assert bodies.outputs("promote", reports["rejected"]) == "decision=rejected\nversion=2\n"
    assert bodies.outputs("monitor", reports["drifted"]) == "drift=true\nchecked=true\n"
    assert bodies.outputs("monitor", reports["clean"]) == "drift=false\nchecked=true\n"
    assert bodies.outputs("monitor", reports["quiet"]) == "drift=false\nchecked=false\n"


def test_make_passes_workflow_values_as_text_never_as_make_or_shell_code(tmp_path):
    """The links and the age limit a workflow sets reach the scripts as arguments: make does not
    expand them (a $(shell ...) in an environment value) nor the shell run them."""
    env = {
        **os.environ,
        "ARTIFACT_URL": f"$(shell touch {tmp_path}/by-make)",
        "RUN_URL": f"$$(touch {tmp_path}/by-the-shell)",
        "MAX_RETRAIN_AGE_DAYS": f"1; touch {tmp_path}/by-the-shell-too #",
    }
    planned = subprocess.run(
        ["make", "-n", "pr-comment"], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    assert '${ARTIFACT_URL:+--artifact-url "$ARTIFACT_URL"}' in planned.stdout
    refused = subprocess.run(
        ["make", "retrain-age"], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    assert refused.returncode == 2 and "--max-days" in refused.stderr, refused.stderr
    assert list(tmp_path.iterdir()) == []


def test_main_reads_the_reports_folder_and_writes_the_comment(reports, tmp_path):
    out = tmp_path / "comment.md"
    argv = [
        "pr-comment",
        "--reports",
        str(reports["folder"] / "reports"),
        "--out",
        str(out),
        "--params",
        str(REPO / "params.yaml"),
        "--artifact-url",
        ARTIFACT_URL,
    ]
    assert bodies.main(argv) == 0
    assert out.read_text().startswith(bodies.PR_MARKER)
    with pytest.raises(SystemExit) as refused:  # a bad argument: argparse's exit 2
        bodies.main(["outputs", "--step", "rollback", "--reports", str(tmp_path)])
    assert refused.value.code == 2
    assert bodies.main(["drift-issue", "--reports", str(tmp_path)]) == 1, "no monitoring.json"


def test_check_env_names_every_missing_or_empty_variable(capsys, caplog):
    env = {
        "MLFLOW_TRACKING_URI": "postgresql://db",
        "AWS_ACCESS_KEY_ID": " ",
        "GITHUB_ACTIONS": "true",
    }
    names = ["MLFLOW_TRACKING_URI", "AWS_ACCESS_KEY_ID", "MONITORING_DATABASE_URL"]
    assert check_env.missing(names, env) == ["AWS_ACCESS_KEY_ID", "MONITORING_DATABASE_URL"]
    assert check_env.main(names, env) == 1
    annotations = capsys.readouterr().out.splitlines()
    assert [line.split("::")[2].split(" ")[0] for line in annotations] == [
        "AWS_ACCESS_KEY_ID",
        "MONITORING_DATABASE_URL",
    ]
    assert "AWS_ROLE_ARN" in caplog.text, "the S3 key's message offers the OIDC role"
    assert check_env.main(["MLFLOW_TRACKING_URI"], env) == 0
    # An MLflow server keeps the model files: no artifact root to set.
    needs = ["MLFLOW_TRACKING_URI", "MODEL_ARTIFACT_ROOT"]
    assert check_env.missing(needs, {"MLFLOW_TRACKING_URI": "https://mlflow.example.com"}) == []
    database = {"MLFLOW_TRACKING_URI": "postgresql+psycopg://u:p@db/mlflow"}
    assert check_env.missing(needs, database) == ["MODEL_ARTIFACT_ROOT"]


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("postgres://u:pw@db/mlflow", "starts with postgres://"),
        ("postgresql://u:p@ss:w#rd@db:5432/mlflow", "does not parse as a URL: percent-encode"),
        ("postgresql://u:p@ss@127.0.0.1/db", "does not parse as a URL: percent-encode"),
        ("mysql://u:pw@db/log", "names a 'mysql' database: this project ships the drivers of"),
    ],
)
def test_check_env_refuses_database_urls_that_cannot_work(url, said, caplog, capsys):
    env = {"MONITORING_DATABASE_URL": url, "GITHUB_ACTIONS": "true"}
    assert check_env.main(["MONITORING_DATABASE_URL"], env) == 1
    assert f"MONITORING_DATABASE_URL {said}" in caplog.text
    assert capsys.readouterr().out.startswith("::error title=Configuration::MONITORING_DATABASE")
    fine = {"MONITORING_DATABASE_URL": "postgresql://u:p%40ss%3Aw%23rd@db:5432/log"}
    assert check_env.main(["MONITORING_DATABASE_URL"], fine) == 0


def test_check_env_takes_mlflow_server_and_file_uris():
    for uri in ("https://mlflow.example.com", "file:///srv/mlruns", "sqlite:///mlflow.db"):
        assert check_env.url_problem("MLFLOW_TRACKING_URI", uri) is None


def test_check_env_without_names_says_how_to_name_them(capsys):
    with pytest.raises(SystemExit) as usage:
        check_env.main([], {})
    assert usage.value.code == 2 and 'NEEDS="MLFLOW_TRACKING_URI' in capsys.readouterr().err


def test_retrain_age_counts_only_versions_the_gate_decided(reports):
    version, trained_at = retrain_age.last_retraining(reports["versions"])
    assert version == "3"
    undecided = SimpleNamespace(version="9", tags={"trained_at": "2099-01-01T00:00:00+00:00"})
    assert retrain_age.last_retraining([*reports["versions"], undecided])[0] == "3"
    assert retrain_age.last_retraining([undecided]) is None
    # Decided on before gate.decided_at was kept: counted from its training.
    older = SimpleNamespace(
        version="8", tags={"gate.decision": "rejected", "trained_at": "2099-01-01T00:00:00+00:00"}
    )
    assert retrain_age.last_retraining([*reports["versions"], older])[0] == "8"
    fresh = retrain_age.verdict("m", (version, trained_at), trained_at + timedelta(days=2), 15)
    assert fresh["stale"] is False and fresh["age_days"] == 2.0
    stale = retrain_age.verdict("m", (version, trained_at), trained_at + timedelta(days=16), 15)
    assert stale["stale"] is True and "Enable workflow" in stale["message"]
    assert retrain_age.verdict("m", None, trained_at, 15)["stale"] is True
