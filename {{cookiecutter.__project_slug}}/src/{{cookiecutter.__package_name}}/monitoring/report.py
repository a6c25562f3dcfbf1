"""The monitoring report: JSON for machines, Markdown for an issue, self-contained HTML to read."""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
from pathlib import Path

import numpy as np

from ..metrics import figure, readable, setting
from ..plots import plt, shown
from .drift import MISSING
from .monitor import UNSEEN

log = logging.getLogger(__name__)


KINDS = ("json", "md", "html")


def remove(out_dir: Path) -> None:
    """Delete an earlier run's reports, so a run that fails leaves none for a workflow to read."""
    for kind in KINDS:
        (out_dir / f"monitoring.{kind}").unlink(missing_ok=True)


def write(report: dict, out_dir: Path) -> dict[str, Path]:
    """Write monitoring.json, monitoring.md and monitoring.html, each to a temporary file that
    then replaces the last run's, so a reader never meets half a report; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    texts = {
        "json": json.dumps(strict(report), indent=2, default=str, allow_nan=False) + "\n",
        "md": markdown(report),
        "html": page(report),
    }
    paths = {kind: out_dir / f"monitoring.{kind}" for kind in KINDS}
    for kind, text in texts.items():
        partial = paths[kind].with_name(f".{paths[kind].name}.partial")
        partial.write_text(text)
        partial.replace(paths[kind])
    return paths


def strict(value, path: str = "report"):
    """The value with every NaN or infinity replaced by None (null): strict JSON parsers reject
    the bare NaN and Infinity that json.dumps writes by default. Each replacement is logged."""
    if isinstance(value, dict):
        return {key: strict(item, f"{path}.{key}") for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [strict(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, np.generic):
        value = value.item()  # numpy scalars: plain Python values json can write
    if isinstance(value, float) and not math.isfinite(value):
        log.warning(
            "%s is %s, not a finite number: written as null in monitoring.json", path, value
        )
        return None
    return value


def sections(report: dict) -> list[tuple[str, dict]]:
    """Every compared distribution: the features, the predictions, then the actual outcomes."""
    found = list(report["features"].items())
    others = [report.get("prediction"), report.get("actual")]
    return found + [(section["verdict"]["name"], section) for section in others if section]


def headline(report: dict) -> str:
    """One sentence: drift or not, and where."""
    if report["status"] != "checked":
        return f"No verdict for {report['model_name']}: {report['messages'][0]}"
    if report["drift"]:
        return (
            f"Drift detected in {report['model_name']} v{report['champion_version']}: "
            f"{', '.join(report['drifted'])}"
        )
    served = report["champion_version"] in report.get("records_by_version", {})
    return f"No drift in {report['model_name']} v{report['champion_version']}" + (
        "" if served else ", which served none of this window's records: is it deployed?"
    )


def table_rows(report: dict) -> list[list[str]]:
    """The summary table: one row per compared distribution, the drifted ones first."""
    rows = []
    for name, section in sections(report):
        v = section["verdict"]
        compared = [f"{v['psi']:.3f}", f"{v['test']} {v['statistic']:.3g}", f"{v['p_value']:.2g}"]
        if not v["current_count"]:  # every value missing: no distribution to compare
            compared = ["-", "no values", "-"]
        counts = [_missing(section), str(v["current_count"])]
        rows.append([name, section["kind"], drift_label(v), *compared, *counts])
    return sorted(rows, key=lambda row: RANK.get(row[2], 0))  # stable: file order within each


RANK = {"watch": 1, "ok": 2, "not judged": 3}  # the table's order by verdict: DRIFT (0) first


def _missing(section: dict) -> str:
    """The missing rate in training and in the window, or a dash for the predictions."""
    current = section.get("summary", {}).get("missing_rate")
    if current is None:
        return "-"
    return f"{section.get('reference_missing_rate', 0.0):.1%} → {current:.1%}"


# A drifted categorical feature whose window holds at least this share of categories training
# never saw says so: new spellings or codes, not a shift among known ones, may be the cause.
UNSEEN_NOTED = 0.01


def drift_label(verdict: dict) -> str:
    """ok, DRIFT, or DRIFT naming what drifted when it is not (only) the distribution, and the
    share of categories training never saw."""
    if verdict.get("not_judged"):
        return "not judged"
    if not verdict["drifted"]:
        return "watch" if verdict.get("watch") else "ok"
    reasons = list(verdict.get("reasons") or [])
    notes = [] if reasons in ([], ["distribution"]) else reasons
    if (unseen := verdict.get("unseen_share") or 0) >= UNSEEN_NOTED:
        note = f"{unseen:.0%} unseen in training"
        expected = verdict.get("unseen_expected") or 0  # a long tail's routine share
        notes.append(f"{note}, {expected:.0%} expected" if expected >= 0.005 else note)
    return f"DRIFT ({', '.join(notes)})" if notes else "DRIFT"


SOURCES = {"rollups": "the hourly rollups", "prediction_log": "the raw log rows"}
HEADER = ["distribution", "kind", "verdict", "PSI", "test statistic", "p-value"]
HEADER += ["missing, training → window", "values present"]


def markdown(report: dict) -> str:
    """The report as Markdown (for a GitHub issue or job summary)."""
    lines = [f"## {headline(report)}", "", window_line(report), ""]
    lines += [f"- {message}" for message in report["messages"]]
    if report["status"] == "checked":
        lines += ["", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        lines += ["| " + " | ".join(map(_cell, row)) + " |" for row in table_rows(report)]
        lines += ["", *service_lines(report)]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    """Text as one cell of a Markdown table: a feature name's "|" no longer starts another
    cell, nor does its "<" start HTML."""
    return html.escape(text, quote=False).replace("|", "\\|").replace("\n", " ")


def window_line(report: dict) -> str:
    """The window, its record count (by day, for a window of several) and where the
    statistics came from, a sentence."""
    window, by_day = report["window"], report.get("records_by_day") or {}
    days = ", ".join(f"{day} {count}" for day, count in by_day.items())
    return (
        f"Window {window['start']} to {window['end']}; {report.get('records', 0)} records"
        + (f" (by UTC day: {days})" if days else "")
        + f"; statistics from {SOURCES.get(report.get('source'), 'the prediction log')}."
    )


def service_lines(report: dict) -> list[str]:
    """The latency percentiles and live metrics of a checked window (the champion's, then other
    versions' that predicted in it), a sentence each."""
    others = report.get("live_metrics_of_other_versions") or {}
    return [
        f"Latency (ms): {_pairs(report.get('latency_ms'))}",
        f"Live metrics: {_pairs(report.get('live_metrics'), figure)}",
        *_quality(report.get("live_quality")),
        *_bias(report.get("live_bias")),
        *_actual_lines(report.get("actual")),
        *(
            f"Live metrics of v{version}: {_pairs(live, figure)}"
            for version, live in others.items()
        ),
    ]


def _quality(quality: dict | None) -> list[str]:
    """The live value of the gate's metric against promote.threshold, when outcomes allow one."""
    if not quality:
        return []
    low, high = quality["interval"]
    spread = "" if low is None else f", 95 % bootstrap interval {figure(low)} to {figure(high)}"
    state = "FAILING it" if quality["failing"] else "not failing it"
    return [
        f"Live {quality['metric']} against promote.threshold {setting(quality['threshold'])}: "
        f"{figure(quality['value'])} on {quality['outcomes']} outcomes{spread}: {state}"
    ]


def _bias(bias: dict | None) -> list[str]:
    """A regression's live mean error against its validation one, when outcomes allow it."""
    if not bias:
        return []
    state = "FAILING" if bias["failing"] else "not failing"
    moved = "" if bias["shift_in_sd"] is None else f" ({bias['shift_in_sd']:+.2f} SD)"
    return [
        f"Live mean error (prediction - actual) {readable(bias['mean_error'], True)} on "
        f"{bias['outcomes']} outcomes against {readable(bias['validation_mean_error'], True)} on "
        f"the validation rows: moved by {readable(bias['shift'], True)}{moved}, "
        f"p = {bias['p_value']:.2g}; monitor.bias {bias['threshold']} SD: {state}"
    ]


SHARES_SHOWN = 5  # classes whose actual share a report line names, those that moved most


def _actual_lines(section: dict | None) -> list[str]:
    """The outcomes' share of each class against training's, those that moved most first (a
    rare class's surge reads plainly though its PSI stays small); or the level of the actual
    values against training's (prices up 10 %)."""
    if not section:
        return []
    shares = section["distributions"]
    if section.get("of") == "values":
        said = []
        for name in ("mean", "median"):
            then, now = shares[name]
            change = f", {now / then - 1:+.1%}" if then else ""
            training = "" if then is None else f" (training {readable(then)}{change})"
            said.append(f"{name} {readable(now)}{training}")
        return [f"Actual outcomes: {', '.join(said)}"]
    moved = sorted(
        zip(shares["labels"], shares["reference"], shares["current"], strict=True),
        key=lambda item: -abs(item[2] - item[1]),
    )
    said = ", ".join(
        f"{label} {current:.1%} (training {reference:.1%})"
        for label, reference, current in moved[:SHARES_SHOWN]
    )
    if len(moved) > SHARES_SHOWN:  # the others moved less; the JSON report has every one
        said += f" (the {SHARES_SHOWN} that moved most; all {len(moved)} in monitoring.json)"
    return [f"Actual outcomes by class: {said}"]


def _pairs(figures: dict | None, write=readable) -> str:
    """`p50 9.1, p95 12.4`: named figures for a sentence (`write`: metrics.readable, or
    metrics.figure for scores, as the evaluation writes them); an undefined one (None) reads
    `undefined` (the messages say why)."""
    return ", ".join(
        f"{name} {write(value)}"
        if isinstance(value, float)
        else f"{name} {'undefined' if value is None else value}"
        for name, value in (figures or {}).items()
    )


# Characters of a category a plot's axis shows; the summary table names it whole. A longer label
# leaves no room for the bars (matplotlib then warns that it cannot lay the figure out).
PLOT_LABEL = 40


def plot_text(name: str, section: dict) -> tuple[list[str], str]:
    """A distribution plot's bar labels and title: a category shown alone that training never
    saw is marked, and a drifted missing rate is in the title (the bars count present values)."""
    shares = section["distributions"]
    labels = [shown(label, PLOT_LABEL) for label in shares["labels"]]
    if section["kind"] == "categorical":
        labels = [
            f"{label} (unseen)" if share == 0 and not label.startswith(UNSEEN) else label
            for label, share in zip(labels, shares["reference"], strict=True)
        ]
    title = shown(name, 80)
    if MISSING in section["verdict"].get("reasons", ()):
        title += f": missing {_missing(section)}"
    return labels, title


def _plot(name: str, section: dict) -> str:
    """Reference and current distributions side by side, as an inline PNG."""
    shares = section["distributions"]
    x = np.arange(len(shares["labels"]))
    labels, title = plot_text(name, section)
    figure, axis = plt.subplots(figsize=(7, 3.2))
    # The model's outputs are compared with its predictions on the validation rows.
    reference = "validation" if section.get("kind") == "prediction" else "training"
    axis.bar(x - 0.2, shares["reference"], 0.4, label=f"{reference} (reference)")
    axis.bar(x + 0.2, shares["current"], 0.4, label="this window")
    axis.set_xticks(x, labels, rotation=30, ha="right", fontsize=7)
    axis.set(title=title, ylabel="share of records")
    axis.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def page(report: dict) -> str:
    """A self-contained HTML page: headline, summary table, plots of the drifted distributions."""
    esc = html.escape
    rows = (
        "".join(
            {"ok": "<tr>", "not judged": "<tr>", "watch": "<tr class='watch'>"}.get(
                row[2], "<tr class='drift'>"
            )
            + "".join(f"<td>{esc(c)}</td>" for c in row)
            + "</tr>"
            for row in table_rows(report)
        )
        if report["status"] == "checked"
        else ""
    )
    plots = "".join(
        f'<h3>{esc(name)}</h3><img alt="{esc(name)}" src="data:image/png;base64,'
        f'{_plot(name, section)}">'
        for name, section in sections(report)
        if section["verdict"]["drifted"]
    )
    items = "".join(f"<li>{esc(m)}</li>" for m in report["messages"])
    messages = f"<ul>{items}</ul>" if items else ""
    checked = report["status"] == "checked"
    service = "".join(f"<p>{esc(line)}</p>" for line in service_lines(report) if checked)
    head = "".join(f"<th>{h}</th>" for h in HEADER)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(headline(report))}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:4px 8px}"
        "table{border-collapse:collapse}tr.drift{background:#fde2e1;font-weight:bold}tr.watch{background:#fff4d6}</style>"
        "</head><body>"
        f"<h1>{esc(headline(report))}</h1><p>{esc(window_line(report))}</p>"
        f"{messages}"
        f"<table><tr>{head}</tr>{rows}</table>{service}{plots}</body></html>\n"
    )
