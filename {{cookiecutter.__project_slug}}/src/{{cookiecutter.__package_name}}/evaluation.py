"""Score the candidate and the champion on the same, newest holdout; write the reports."""

from __future__ import annotations

import json
import logging
import numbers
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from sklearn import metrics as skm

from . import data as datalib
from . import lineage, plots, registry
from .config import Backends
from .errors import PipelineError
from .metrics import (
    METRICS,
    delta_interval,
    difference,
    figure,
    figures,
    positive_class,
    readable,
    scope,
    score_all,
)
from .modelfile import Unloadable
from .monitoring.monitor import live_bias
from .training import classes_of, predict

matplotlib.use("Agg")
log = logging.getLogger(__name__)


def holdout(data_path, params: dict[str, Any]) -> tuple[pd.DataFrame, datalib.Schema]:
    """The newest rows of the current data (without a time column, rows chosen by a seeded hash
    of their content), which no candidate trained on."""
    _rest, rows, schema = _split(data_path, params)
    return rows, schema


def _split(data_path, params: dict[str, Any]):
    """The current data's training side and holdout, and its schema."""
    schema = datalib.Schema.from_params(params["data"], params["model"]["task"])
    if not Path(data_path).exists():
        raise PipelineError(f"{data_path} does not exist: run `make data` first")
    frame = datalib.validate(pd.read_parquet(data_path), schema)
    rest, rows = datalib.split(
        frame, schema, params["split"]["holdout_fraction"], params["split"]["seed"]
    )
    return rest, rows, schema


def baseline_metrics(
    trained_on: pd.Series, actual: pd.Series, schema: datalib.Schema, classes: list | None
) -> dict[str, float | None]:
    """The metrics of a model that ignores the features: for every holdout row it predicts the
    training side's mean (its median for mae, the constant with the least absolute error), or
    its class frequencies (and most frequent class). A candidate that does not beat it has
    learnt nothing the gate should deploy."""
    if schema.task == "regression":

        def constant(value: float) -> dict:
            return score_all(schema.task, actual, np.full(len(actual), value), None, None)

        return constant(trained_on.mean()) | {"mae": constant(trained_on.median())["mae"]}
    prior = trained_on.value_counts(normalize=True).reindex(classes, fill_value=0.0).to_numpy()
    return score_all(
        schema.task,
        actual,
        np.full(len(actual), classes[int(prior.argmax())]),
        np.tile(prior, (len(actual), 1)),
        classes,
        positive=positive_class(classes, schema.target_classes),
    )


class OtherSchema(PipelineError):
    """A registered version was trained on other features, other feature types, or other labels,
    than the data has."""


def score_version(
    name: str,
    number: str,
    rows: pd.DataFrame,
    schema: datalib.Schema,
    leave_out_unknown: bool = False,
) -> dict:
    """Load one registered version and score it on the rows: `rows` in the result are those
    scored. Rows of a class the version was not trained on (new in the data) are refused as
    OtherSchema, or with `leave_out_unknown` left out and counted by label (`left_out`)."""
    model = registry.load_model(name, number)  # modelfile.Unloadable: the gate refuses
    kinds = _trained_kinds(name, number)
    # The profile names the features of every version; feature_names_in_ only some models.
    trained_on = [str(n) for n in getattr(model, "feature_names_in_", kinds)]
    trained = {n: kinds.get(n, schema.features.get(n)) for n in trained_on}
    if problem := schema_change(number, trained, schema.features):
        raise OtherSchema(problem)
    x, y = datalib.features_and_target(rows, schema)
    classes = classes_of(model, schema.task)
    if classes is not None and _relabelled(classes, y.unique().tolist()):
        raise OtherSchema(
            f"version {number} was trained on the labels {classes}, and the data now holds "
            f"{sorted(map(str, y.unique()))[:5]}: the target's labels were renamed"
        )
    unknown = ~y.map(str).isin({str(c) for c in classes}) if classes is not None else None
    left_out = {}
    if unknown is not None and unknown.any():
        left_out = {str(k): int(v) for k, v in y[unknown].map(str).value_counts().items()}
        if not leave_out_unknown:
            raise OtherSchema(
                f"version {number} was not trained on the class(es) {sorted(left_out)[:5]}, "
                f"which {int(unknown.sum())} holdout rows hold"
            )
        log.warning(
            "left out of the scores: the holdout rows of classes version %s was not trained on "
            "(%s)",
            number,
            left_out,
        )
        rows, x, y = rows[~unknown], x[~unknown], y[~unknown]
    prediction, proba = predict(model, x, schema.task)
    undefined: dict[str, str] = {}
    return {
        "version": str(number),
        "rows": rows,
        "left_out": left_out,
        "metrics": score_all(
            schema.task,
            y,
            prediction,
            proba,
            classes,
            undefined,
            positive=positive_class(classes, schema.target_classes),
        ),
        "undefined": undefined,  # why a metric is None on these rows
        "prediction": prediction,
        "proba": proba,
        "classes": classes,
    }


def schema_change(number: str, trained: dict[str, str], declared: dict[str, str]) -> str | None:
    """How the features (name: type) a version was trained on differ from those params.yaml
    declares, in a sentence, or None when they are the same."""
    lacking = sorted(set(trained) - set(declared))
    added = sorted(set(declared) - set(trained))
    if lacking or added:
        parts = [f"it needs {lacking}, which the data lacks"] if lacking else []
        parts += [f"it never saw {added}"] if added else []
        return (
            f"version {number} was trained on other features than params.yaml declares "
            f"({'; '.join(parts)})"
        )
    retyped = [n for n, kind in declared.items() if trained[n] != kind]
    if retyped:
        return (
            f"version {number} was trained on other feature types than params.yaml declares ("
            + ", ".join(f"{n}: {trained[n]}, now {declared[n]}" for n in retyped)
            + ")"
        )
    return None


def _trained_kinds(name: str, number: str) -> dict[str, str]:
    """Each feature's type (numeric, categorical) as the version's training profile records it."""
    client = MlflowClient()
    run_id = client.get_model_version(name, str(number)).run_id
    return {n: f["kind"] for n, f in registry.load_profile(client, run_id)["features"].items()}


def _relabelled(classes: list, labels: list) -> bool:
    """Whether the labels are another naming of the classes (0/1 became "no"/"yes"): no label in
    common, or numbers on one side and text on the other. A class new in the data is not."""
    common = {str(c) for c in classes} & {str(v) for v in labels}
    return not common or _numbers(classes) != _numbers(labels)


def _numbers(values: list) -> bool:
    """Whether every value is a number (booleans aside)."""
    return all(isinstance(v, numbers.Number) and not isinstance(v, bool) for v in values)


def compare(
    candidate: dict, champion: dict | None, gated: str, schema: datalib.Schema
) -> dict[str, dict[str, Any]]:
    """Per metric: both values, the delta, and whether the candidate is better; for the
    `gated` metric, the delta's paired bootstrap interval over the rows both scored
    (`delta_interval`), where both models know the same classes."""
    table = {}
    positive = positive_class(candidate["classes"], schema.target_classes)
    for metric, value in candidate["metrics"].items():
        row = {
            "candidate": value,
            "champion": None,
            "delta": None,
            "better": None,
            "higher_is_better": METRICS[metric].higher_is_better,
            "direction": METRICS[metric].direction,
            "scope": scope(metric, candidate["classes"], positive),
        }
        if champion and metric in champion["metrics"]:
            row["champion"] = champion["metrics"][metric]
            if value is not None and row["champion"] is not None:  # None: undefined here
                row["delta"] = value - row["champion"]
                row["better"] = METRICS[metric].better_by(value, row["champion"]) > 0
        table[metric] = row
    row = table.get(gated)
    if row and row["delta"] is not None and candidate["classes"] == champion["classes"]:
        classes = candidate["classes"]
        row["delta_interval"] = delta_interval(
            gated,
            schema.task,
            datalib.features_and_target(candidate["rows"], schema)[1],
            (candidate["prediction"], candidate["proba"]),
            (champion["prediction"], champion["proba"]),
            classes,
            positive,
        )
    return table


def metric_words(metric: str, row: dict) -> str:
    """A metric's name for a table, with what it averages over (f1, macro average ...)."""
    return f"{metric}, {row['scope']}" if row.get("scope") else metric


def per_class(candidate: dict, champion: dict | None, schema: datalib.Schema) -> list[dict]:
    """A classifier's precision and recall of each class on the holdout, for both models, the
    rarest class first (a weak rare class hides in a macro average); [] for a regression."""
    if schema.task != "classification":
        return []
    # Compared as text, as the reports name classes: 1 and 1.0 or "1" are one class.
    actual = datalib.features_and_target(candidate["rows"], schema)[1].astype(str).to_numpy()
    classes = [str(c) for c in candidate["classes"]]

    def scores(model: dict | None) -> list[list[float | None]] | None:
        if model is None or [str(c) for c in model["classes"]] != classes:
            return None
        predicted = np.asarray(model["prediction"]).astype(str)
        precision, recall, _f, _n = skm.precision_recall_fscore_support(
            actual, predicted, labels=classes, zero_division=np.nan
        )
        return [[_number(p), _number(r)] for p, r in zip(precision, recall, strict=True)]

    mine, theirs = scores(candidate), scores(champion)
    rows = [
        {
            "class": label,
            "rows": int((actual == label).sum()),
            "candidate": mine[k],
            "champion": theirs[k] if theirs else None,
        }
        for k, label in enumerate(classes)
    ]
    return sorted(rows, key=lambda row: row["rows"])


def _number(value: float) -> float | None:
    """A score, or None where it is undefined (precision of a class never predicted)."""
    return None if np.isnan(value) else float(value)


def holdout_bias(client, registered, candidate: dict, thresholds: dict) -> str | None:
    """A regression candidate's mean error on the holdout against its validation rows', judged
    as monitoring judges the live one (monitor.live_bias): the holdout is the newest rows, so
    values that moved (prices up) show here before a promoted version meets them live. None
    when it did not move, or for a classifier."""
    metrics = candidate["metrics"]
    if metrics.get("mean_error") is None:
        return None
    error = registry.load_profile(client, registered.run_id)["prediction"].get("error")
    holdout = {"records_scored": len(candidate["rows"]), **metrics}
    section, _note = live_bias(holdout, error, thresholds) if error else (None, None)
    if not (section and section["failing"]):
        return None
    way = "high" if section["shift"] > 0 else "low"
    said = (
        f"the candidate's mean error (prediction - actual) on the holdout is "
        f"{readable(section['mean_error'], True)}, against "
        f"{readable(section['validation_mean_error'], True)} on its validation rows "
        f"(p = {section['p_value']:.2g}): it predicts the newest rows too {way}, whose values "
        "moved in a way the features do not explain and which its older training rows do not "
        "hold. Promoted, it shows the same bias live (`make monitor`: live mean_error); a "
        "smaller split.holdout_fraction trains on more of the newest rows"
    )
    log.warning("%s", said)
    return said


def noise_words(comparison: dict) -> list[str]:
    """A sentence on the paired bootstrap interval of a delta, when there is one: whether the
    holdout can tell the two models apart on that metric."""
    for metric, row in comparison.items():
        if interval := row.get("delta_interval"):
            low, high = interval
            verdict = (
                ": it holds 0, so this holdout cannot tell the two models apart on it"
                if low <= 0 <= high
                else ""
            )
            return [
                f"The {metric} delta's 95 % paired bootstrap interval over the holdout rows: "
                f"{difference(low, signed=True)} to {difference(high, signed=True)}{verdict}."
            ]
    return []


def evaluate(
    data_path, train_report: dict, params: dict, backends: Backends, out_dir: Path
) -> dict:
    """Score candidate and champion, write evaluation.json, evaluation.md and the plots."""
    client = registry.connect(backends)
    name, number = train_report["model_name"], train_report["version"]
    registered = registry.version(client, name, number, train_report.get("run_id"))
    rest, rows, schema = _split(data_path, params)
    candidate = score_version(name, number, rows, schema, leave_out_unknown=True)
    rows = candidate["rows"]  # without the rows of a class too new to be in its training rows
    target = schema.target
    baseline = baseline_metrics(rest[target], rows[target], schema, candidate["classes"])
    current = registry.champion(client, name)
    champion, summary = None, None
    if current:
        summary = {"version": str(current.version), "metrics": None}
        try:
            champion = score_version(name, str(current.version), rows, schema)
            summary["metrics"] = champion["metrics"]
        except OtherSchema as err:  # it cannot score today's data: nothing to compare against
            summary["unscored"] = f"champion {err}"
            log.warning("%s: the gate judges the candidate by the threshold alone", err)
        except Unloadable as err:  # a renamed class, an untrusted type: refused until it loads
            summary.update(unscored=f"champion {err}", unloadable=True)
            log.warning("%s: the gate promotes no candidate it cannot compare with it", err)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = plots.evaluation_plots(schema, rows[schema.target], candidate, champion, out_dir)
    report = {
        "model_name": name,
        "task": schema.task,
        "holdout": {
            "rows": len(rows),
            "data_hash": datalib.content_hash(rows),
            "data_md5": lineage.file_md5(data_path),  # the file it came from, as dvc.lock says
            "newest_by": schema.time_column,  # None: chosen by a seeded hash of each row
            "dates": _dates(rest, rows, schema.time_column),
            "left_out": candidate["left_out"],  # rows per class the candidate never learnt
            "class_counts": class_counts(rows[target]) if schema.task == "classification" else None,
        },
        "candidate": {
            "version": candidate["version"],
            "run_id": registered.run_id,
            "metrics": candidate["metrics"],
            "undefined": candidate["undefined"],
        },
        "champion": summary,
        "baseline": {"metrics": baseline},
        "comparison": compare(candidate, champion, params["promote"]["metric"], schema),
        "per_class": per_class(candidate, champion, schema),
        "bias": holdout_bias(client, registered, candidate, params["monitor"]),
        # Why the gate will refuse it whatever its metrics (a repeat of the champion's training
        # or of a rolled-back one), or None.
        "repeats": lineage.repeated_training(client, name, registered, current),
        "plots": images,
    }
    (out_dir / "evaluation.json").write_text(json.dumps(report, indent=2, allow_nan=False))
    (out_dir / "evaluation.md").write_text(markdown(report))
    against = "no champion"
    if current:
        against = f"champion v{current.version}" + (
            "" if champion else " (not compared: see above)"
        )
    log.info("evaluated candidate v%s against %s", number, against)
    return report


def comparison_word(row: dict) -> str:
    """better, worse or equal, from the candidate's side; empty without a champion (the same
    word in evaluation.md, the job summary and the PR comment)."""
    if row["better"] is None:
        return ""
    if row["delta"] == 0:
        return "equal"
    return "better" if row["better"] else "worse"


def holdout_words(holdout: dict) -> str:
    """How the holdout was chosen, in words: by time, or by a hash of each row (no time
    column); with its rows per class, the rarest first (420 positives judge a fraud model)."""
    if holdout.get("newest_by"):
        words = f"the newest {holdout['rows']} rows by {holdout['newest_by']}"
    else:
        words = f"{holdout['rows']} rows chosen by a seeded hash of each row (no data.time_column)"
    counts = sorted((holdout.get("class_counts") or {}).items(), key=lambda item: item[1])
    if counts:
        shown = [f"{n} of class '{label}'" for label, n in counts[:SHOWN_CLASSES]]
        more = len(counts) - SHOWN_CLASSES
        rest = f" and {more} more class{'es' * (more > 1)}" if more > 0 else ""
        words += f" ({', '.join(shown)}{rest})"
    if dates := holdout.get("dates"):
        (first, last), (before, until) = dates["holdout"], dates["before"]
        words += f", dated {first} to {last} (the rows before them: {before} to {until})"
    return words


def _dates(rest: pd.DataFrame, rows: pd.DataFrame, time_column: str | None) -> dict | None:
    """The first and last time of the holdout and of the rows before it (by data.time_column,
    ISO text after data.validate), as dates when they fall at midnight; None without one."""
    if not time_column:
        return None

    def span(times: pd.Series) -> list[str]:
        ends = [times.min(), times.max()]
        if all(end.endswith("T00:00:00") for end in ends):
            return [end[:10] for end in ends]
        return [end.replace("T", " ") for end in ends]

    return {"holdout": span(rows[time_column]), "before": span(rest[time_column])}


SHOWN_CLASSES = 5  # classes whose holdout rows the reports count, the rarest


def class_counts(labels: pd.Series) -> dict[str, int]:
    """Rows per class, by the class's text."""
    return {str(k): int(v) for k, v in labels.astype(str).value_counts().sort_index().items()}


def markdown(report: dict) -> str:
    """A table of both models on the holdout, with the deltas, and the plots."""
    champion = report["champion"]
    head = f"v{champion['version']}" if champion else "none yet"
    lines = [
        f"## Evaluation of {report['model_name']} v{report['candidate']['version']}",
        "",
        f"Holdout: {holdout_words(report['holdout'])}; "
        f"its rows' hash `{report['holdout']['data_hash'][:12]}`.",
        "",
        f"| metric | candidate v{report['candidate']['version']} | champion {head} | delta | |",
        "|---|---:|---:|---:|---|",
    ]
    if champion and champion.get("unscored"):
        lines[2:2] = [f"Not compared: the {champion['unscored']}.", ""]
    if left_out := report["holdout"].get("left_out"):
        rows = ", ".join(f"{n} of class '{label}'" for label, n in left_out.items())
        lines[2:2] = [
            f"Left out of every score: the holdout's rows of classes the candidate was not "
            f"trained on ({rows}): none are old enough to be among its training rows yet.",
            "",
        ]
    for metric, row in report["comparison"].items():
        values = [figure(row["candidate"]), figure(row["champion"])]
        lines.append(
            f"| {metric_words(metric, row)} ({row['direction']}) | {' | '.join(values)} "
            f"| {difference(row['delta'], signed=True)} | {comparison_word(row)} |"
        )
    lines += _notes(report) + per_class_lines(report.get("per_class"))
    if undefined := report["candidate"].get("undefined"):
        lines += [
            "",
            *(f"{m} is undefined on this holdout: {why}." for m, why in undefined.items()),
        ]
    if report.get("repeats"):
        lines += ["", f"Whatever its metrics, the gate will not promote it: {report['repeats']}."]
    lines += ["", *[f"![{Path(p).stem}]({Path(p).name})" for p in report["plots"]], ""]
    return "\n".join(lines)


SHOWN_PER_CLASS = 20  # classes of the per-class table, the rarest


def per_class_lines(rows: list[dict] | None) -> list[str]:
    """The per-class table of evaluation.md, or nothing (a regression)."""
    if not rows:
        return []
    compared = any(row["champion"] for row in rows)
    models = ["candidate", *(["champion"] if compared else [])]
    heads = [f"{model} {part}" for model in models for part in ("precision", "recall")]
    lines = [
        "",
        "Per class on the holdout, the rarest first, of the class each model predicts, its "
        "likeliest (for two classes, a probability above 0.5; precision: of the rows a model "
        "gave this class, the share that had it; recall: of the rows that had it, the share it "
        "found):",
        "",
        f"| class | rows | {' | '.join(heads)} |",
        "|---|---:|" + "---:|" * len(heads),
    ]
    for row in rows[:SHOWN_PER_CLASS]:
        scores = [value for model in models for value in (row[model] or [None, None])]
        lines.append(f"| {row['class']} | {row['rows']:,} | {' | '.join(map(_share, scores))} |")
    if len(rows) > SHOWN_PER_CLASS:
        more = len(rows) - SHOWN_PER_CLASS
        lines += ["", f"{more} more class{'es' * (more > 1)} in evaluation.json."]
    return lines


def _share(value: float | None) -> str:
    """A precision or recall as a percentage, or a dash where undefined."""
    return "-" if value is None else f"{value:.1%}"


def _notes(report: dict) -> list[str]:
    """The sentences under the table: the delta's noise, a regression's bias on the holdout,
    the baseline's scores."""
    lines = []
    if noise := noise_words(report["comparison"]):
        lines += ["", *noise]
    if report.get("bias"):
        lines += ["", f"Bias: {report['bias']}."]
    if baseline := (report.get("baseline") or {}).get("metrics"):
        lines += [
            "",
            "Baseline, a model that ignores the features (the training rows' "
            + ("mean, median for mae" if report["task"] == "regression" else "class frequencies")
            + "): "
            + figures(baseline)
            + ". The gate promotes only a candidate that beats it.",
        ]
    return lines
