"""Markdown for GitHub from the reports the steps wrote: the pull-request comment, the drift
issue, the job summaries, and the key=value outputs a workflow branches on.

Each body is a pure function of report dicts and the links the workflow passes in; the
workflows only post what this writes. GitHub drops images given as data URIs, so plots are
linked through the run's artifact instead of inlined.
"""

from __future__ import annotations

import argparse
import html
import sys
from dataclasses import dataclass
from pathlib import Path

from {{ cookiecutter.__package_name }}.cli import read_json, run
from {{ cookiecutter.__package_name }}.config import load_params
from {{ cookiecutter.__package_name }}.evaluation import (
    comparison_word,
    holdout_words,
    metric_words,
    noise_words,
)
from {{ cookiecutter.__package_name }}.metrics import difference, figure, setting
from {{ cookiecutter.__package_name }}.monitoring import report as monitoring_report
from {{ cookiecutter.__package_name }}.promotion import Gate, decide

# Hidden first lines that let the workflows find their own comment or issue and update it.
PR_MARKER = "<!-- candidate-evaluation -->"
DRIFT_MARKER = "<!-- drift-report -->"


@dataclass(frozen=True)
class Links:
    """Where a reader finds more: the workflow run and the uploaded reports."""

    run_url: str | None = None
    artifact_url: str | None = None

    def line(self, what: str = "the reports and plots") -> str:
        """One line of links, or an empty string without any."""
        found = [f"[{what}]({self.artifact_url})"] if self.artifact_url else []
        found += [f"[workflow run]({self.run_url})"] if self.run_url else []
        return " · ".join(found)


def metric_table(evaluation: dict, gate_metric: str | None = None) -> list[str]:
    """Candidate, champion and delta per metric, the gate's metric in bold, and whether the
    holdout tells the two apart on it (evaluation.noise_words)."""
    champion = evaluation.get("champion")
    head = f"champion v{champion['version']}" if champion else "champion (none yet)"
    lines = [
        f"| metric | candidate v{evaluation['candidate']['version']} | {head} | delta | |",
        "|---|---:|---:|---:|---|",
    ]
    for metric, row in evaluation["comparison"].items():
        words = metric_words(metric, row)
        name = f"**{words}** (gate)" if metric == gate_metric else words
        values = [figure(row["candidate"]), figure(row["champion"])]
        lines.append(
            f"| {name}, {row['direction']} | {' | '.join(values)} "
            f"| {difference(row['delta'], signed=True)} | {comparison_word(row)} |"
        )
    noise = noise_words(evaluation["comparison"])
    return [*lines, "", *noise] if noise else lines


def plot_names(evaluation: dict) -> str:
    """The plots' file names, for the sentence that links them."""
    return ", ".join(f"`{Path(p).name}`" for p in evaluation.get("plots", [])) or "none"


def gate_preview(evaluation: dict, gate: Gate) -> str:
    """What the gate would decide on these numbers, in the gate's own words: never to promote a
    repeat of the champion's training or of a rolled-back one (evaluation's `repeats`)."""
    repeat = evaluation.get("repeats")
    accepted, reason = (False, repeat) if repeat else decide(evaluation, gate)
    return f"**Gate preview: {'would promote' if accepted else 'would not promote'}**: {reason}."


def pr_comment(evaluation: dict, gate: Gate | None, links: Links) -> str:
    """The sticky pull-request comment: the candidate of this branch against the champion."""
    holdout = evaluation["holdout"]
    lines = [
        PR_MARKER,
        f"## Candidate from this pull request: {evaluation['model_name']}",
        "",
        f"Trained on the current data and scored with the champion on the same holdout, "
        f"{holdout_words(holdout)}; its rows' hash `{holdout['data_hash'][:12]}`.",
        "",
        *metric_table(evaluation, gate.metric.name if gate else None),
        "",
    ]
    if evaluation.get("bias"):
        lines += [f"Bias: {evaluation['bias']}.", ""]
    if gate:
        lines += [gate_preview(evaluation, gate), ""]
    lines += [
        "No alias moved: a pull request never promotes. After the merge, the retrain workflow "
        "trains again on that day's data and the gate decides.",
        "",
        f"Plots ({plot_names(evaluation)}): {links.line() or 'in reports/ of the CI run'}",
    ]
    return "\n".join(lines) + "\n"


def promotion_summary(promotion: dict | None, evaluation: dict | None, links: Links) -> str:
    """The retrain job's summary: the gate's decision, its reason and the metrics."""
    if promotion is None:
        return (
            "## Retraining: no decision\n\nThe run stopped before the promotion gate decided: "
            f"see the failed step's log. {links.line('reports')}\n"
        )
    version = promotion["candidate"]["version"]
    lines = [
        f"## Retraining of {promotion['model_name']}: version {version} {promotion['decision']}",
        "",
        f"Gate ({promotion['gate']['metric']}): {promotion['reason']}.",
        "",
    ]
    scored = evaluation and str(evaluation["candidate"]["version"])
    if scored == str(version):
        lines += [*metric_table(evaluation, promotion["gate"]["metric"]), ""]
    elif scored:  # another run's, such as a branch's `make evaluate` since
        lines += [f"(reports/evaluation.json scores version {scored}, not this one.)", ""]
    if promotion["decision"] == "promoted":
        lines += [f"Version {version} is the champion: the deploy job builds and ships it.", ""]
    lines.append(links.line())
    return "\n".join(lines).rstrip() + "\n"


def monitoring_summary(monitoring: dict | None, links: Links) -> str:
    """The monitor job's summary: the report's Markdown and what follows from it."""
    if monitoring is None:
        return (
            "## Monitoring: no result\n\nThe monitor stopped before a verdict: see the failed "
            f"step's log. {links.line('reports')}\n"
        )
    follow = (
        "Drift: the monitor workflow opens or updates the drift issue and dispatches a retrain."
        if monitoring["drift"]
        else "No drift: nothing else to do."
    )
    if monitoring["status"] != "checked":
        follow = "No verdict: this run fails, so that a silent service is not read as no drift."
    body = monitoring_report.markdown(monitoring)
    return f"{body}\n{follow}\n\n{links.line('the HTML report with plots')}\n"


def drift_issue(monitoring: dict, links: Links) -> str:
    """The drift issue: the report, what was done about it and where the plots are."""
    return "\n".join(
        [
            DRIFT_MARKER,
            monitoring_report.markdown(monitoring),
            "### What happens now",
            "",
            "- A retraining was dispatched (the retrain workflow): its candidate replaces the "
            "champion only if it passes the promotion gate.",
            "- If the shift is an upstream data error rather than a real change, fix the source; "
            "close this issue once the monitor reports no drift.",
            "",
            f"Last updated by the monitoring window ending {monitoring['window']['end']}. "
            f"{links.line('the HTML report with plots')}",
            "",
        ]
    )


def rollback_summary(rollback: dict | None, links: Links) -> str:
    """The rollback job's summary: what moved, or why the check refused."""
    if rollback is None:
        return f"## Rollback: no result\n\nSee the failed step's log. {links.line('reports')}\n"
    name, target = rollback["model_name"], rollback["to_version"]
    score = (
        f"{rollback['metric']} today {figure(rollback['value_today'])} against the threshold "
        f"{setting(rollback['threshold'])}{' (forced)' if rollback['forced'] else ''}"
    )
    head = (
        f"## Rollback of {name}: champion is version {target} (was {rollback['from_version']})"
        if rollback["moved"]
        else f"## Rollback of {name} to version {target} refused"
    )
    refusal = rollback.get("refusal") if not rollback["moved"] else None
    refused = f" Refused: {refusal}." if refusal else ""
    if rollback["moved"] and rollback.get("worse_than_champion"):
        refused = (
            f" Worse today than version {rollback['from_version']}, which it replaced: "
            f"{figure(rollback['champion_value_today'])}."
        )
    reason = html.escape(rollback["reason"], quote=False)  # text, not HTML the summary renders
    return f"{head}\n\n{score}.{refused} Reason: {reason}\n\n{links.line()}\n"


def outputs(step: str, report: dict) -> str:
    """key=value lines for $GITHUB_OUTPUT: the decision and version, or the drift flag and
    whether there was a verdict at all (enough records in the window)."""
    if step == "promote":
        return f"decision={report['decision']}\nversion={report['candidate']['version']}\n"
    checked = report["status"] == "checked"
    return f"drift={'true' if report['drift'] else 'false'}\nchecked={str(checked).lower()}\n"


# What each step writes, and the command that writes it.
WRITTEN_BY = {
    "evaluate": ("evaluation.json", "make evaluate"),
    "promote": ("promotion.json", "make promote"),
    "monitor": ("monitoring.json", "make monitor"),
    "rollback": ("rollback.json", "make rollback"),
}


def report_of(reports: Path, step: str, required: bool = True) -> dict | None:
    """The JSON report of a step; None for an optional one a failed run did not write."""
    name, command = WRITTEN_BY[step]
    if not required and not (reports / name).is_file():
        return None
    return read_json(reports / name, command)


def summary(step: str, reports: Path, links: Links) -> str:
    """The job summary of one step, from the reports it wrote."""
    if step == "promote":
        evaluation = report_of(reports, "evaluate", required=False)
        return promotion_summary(report_of(reports, "promote", False), evaluation, links)
    if step == "monitor":
        return monitoring_summary(report_of(reports, "monitor", required=False), links)
    return rollback_summary(report_of(reports, "rollback", required=False), links)


def parser() -> argparse.ArgumentParser:
    """The command line: one sub-command per body."""
    cli = argparse.ArgumentParser(description=__doc__)
    cli.add_argument("body", choices=["pr-comment", "drift-issue", "summary", "outputs"])
    steps = ["promote", "monitor", "rollback"]
    cli.add_argument("--step", choices=steps, default="promote", help="whose summary or outputs")
    cli.add_argument("--reports", type=Path, default=Path("reports"), help="the steps' reports")
    cli.add_argument("--params", type=Path, default=Path("params.yaml"))
    cli.add_argument("--run-url", default=None, help="link to the workflow run")
    cli.add_argument("--artifact-url", default=None, help="link to the uploaded reports")
    cli.add_argument("--out", type=Path, default=None, help="file to write (default: stdout)")
    return cli


def render(args: argparse.Namespace) -> str:
    """The body the arguments ask for."""
    links = Links(args.run_url or None, args.artifact_url or None)
    if args.body == "pr-comment":
        evaluation = report_of(args.reports, "evaluate")
        gate = Gate.from_params(load_params(args.params)["promote"], evaluation["task"])
        return pr_comment(evaluation, gate, links)
    if args.body == "drift-issue":
        return drift_issue(report_of(args.reports, "monitor"), links)
    if args.body == "outputs":
        return outputs(args.step, report_of(args.reports, args.step))
    return summary(args.step, args.reports, links)


def main(argv: list[str] | None = None) -> int:
    """Write the body to --out, or to stdout."""
    cli = parser()
    args = cli.parse_args(argv)
    if args.body == "outputs" and args.step == "rollback":
        cli.error("outputs exist for --step promote and --step monitor only")

    def step() -> int:
        text = render(args)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text)
        else:
            sys.stdout.write(text)
        return 0

    return run(step)


if __name__ == "__main__":
    raise SystemExit(main())
