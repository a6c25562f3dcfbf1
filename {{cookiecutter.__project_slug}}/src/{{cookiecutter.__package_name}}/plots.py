"""PNG plots of an evaluation: ROC, precision-recall (binary) and confusion matrix, or
predicted-vs-actual and residuals."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import font_manager
from matplotlib.ft2font import FT2Font
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    PrecisionRecallDisplay,
    roc_auc_score,
    roc_curve,
)

from .metrics import positive_class, readable

# Labels are data (classes, categories, feature names): a "$" is a dollar sign, never the start
# of matplotlib's mathtext, which stops the plot on text such as "$\frac$".
matplotlib.rcParams["text.parse_math"] = False


def shown(label, limit: int | None = None) -> str:
    """A label as a plot can draw it: each character the font has no glyph for (CJK, emoji)
    or that is no printable text (a line break) as its escape, so that two such labels stay
    apart and matplotlib warns of no missing glyph; cut to `limit` characters."""
    text = "".join(
        c if c.isprintable() and _drawable(c) else c.encode("unicode_escape").decode()
        for c in str(label)
    )
    if limit is None or len(text) <= limit:
        return text
    return f"{text[: limit - 1]}\N{HORIZONTAL ELLIPSIS}"


@cache
def _font() -> FT2Font:
    """The font plots are drawn in."""
    return FT2Font(font_manager.findfont(font_manager.FontProperties()))


@cache
def _drawable(character: str) -> bool:
    """Whether the plots' font has a glyph for the character."""
    return _font().get_char_index(ord(character)) != 0


def evaluation_plots(
    schema, y_true, candidate: dict, champion: dict | None, out_dir: Path
) -> list[str]:
    """Draw the task's plots for both models and return their paths."""
    models = [("candidate", candidate)] + ([("champion", champion)] if champion else [])
    if schema.task == "classification":
        # A holdout of one class has no curve: its metrics are undefined, and say why.
        curves = [_roc(y_true, models, out_dir / "roc.png")] if roc_curves(y_true, models) else []
        if curves and all(len(result["classes"]) == 2 for _label, result in models):
            pr = out_dir / "precision_recall.png"
            curves.append(_precision_recall(y_true, models, schema.target_classes, pr))
        confusion = out_dir / "confusion_matrix.png"
        return [*curves, _confusion(y_true, models, schema.target_classes, confusion)]
    return [
        _predicted_vs_actual(y_true, models, out_dir / "predicted_vs_actual.png"),
        _residuals(y_true, models, out_dir / "residuals.png"),
    ]


def _save(figure, path: Path) -> str:
    """Write and close a figure."""
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return str(path)


def roc_curves(y_true, models) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, is the class, score) per curve: the positive (last) class of a binary model, or
    each class of the holdout against the rest."""
    actual, curves = np.asarray(y_true), []
    for label, result in models:
        classes = list(result["classes"])
        binary = len(classes) == 2
        for column, positive in enumerate(classes):
            is_class = actual == positive
            if (binary and column == 0) or is_class.all() or not is_class.any():
                continue  # a class absent from the holdout, or all of it, has no curve
            name = f"{label} v{result['version']}" + ("" if binary else f", {positive} vs rest")
            curves.append((name, is_class, result["proba"][:, column]))
    return curves


def _roc(y_true, models, path: Path) -> str:
    """ROC curves of both models (roc_curves)."""
    curves = roc_curves(y_true, models)
    beside = len(curves) > 2  # one per class and model: the legend beside the plot, not over it
    longest = max(len(shown(name)) for name, _, _ in curves)
    figure, axis = plt.subplots(figsize=(5 + 0.07 * longest if beside else 5, 4.5))
    # One colour per class (per model when binary), solid for the candidate, dashed for the
    # champion.
    colours, dashes = {}, {}
    axis.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="no skill")
    for name, is_class, score in curves:
        model, _, of_class = name.partition(", ")
        false_positive, true_positive, _ = roc_curve(is_class, score)
        axis.plot(
            false_positive,
            true_positive,
            color=colours.setdefault(of_class or model, f"C{len(colours)}"),
            linestyle=dashes.setdefault(model, ["-", "--"][len(dashes) % 2]),
            label=f"{shown(name)} (AUC = {roc_auc_score(is_class, score):.2f})",
        )
    title = "ROC on the holdout" + (", one-vs-rest" if "vs rest" in curves[0][0] else "")
    axis.set(title=title, xlabel="false positive rate", ylabel="true positive rate")
    if beside:
        axis.legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize="small", frameon=False)
    else:
        axis.legend(loc="lower right")
    return _save(figure, path)


def _precision_recall(y_true, models, target_classes: list | None, path: Path) -> str:
    """Precision against recall of the positive class (the last of target_classes), both
    models, with the line of a model without skill: what a rare positive (fraud) is judged by,
    which ROC flatters when negatives are many."""
    figure, axis = plt.subplots(figsize=(5, 4.5))
    actual = np.asarray(y_true)
    for label, result in models:
        classes = list(result["classes"])
        positive = positive_class(classes, target_classes)
        PrecisionRecallDisplay.from_predictions(
            actual == positive,
            result["proba"][:, classes.index(positive)],
            name=shown(f"{label} v{result['version']}"),
            ax=axis,
        )
    share = float(np.mean(actual == positive))
    axis.axhline(share, color="grey", linestyle=":", label=f"no skill (share {share:.2%})")
    # The axes' own labels would name the positive label of `actual == positive`: True.
    axis.set(
        title=shown(f"Precision-recall of class {positive} on the holdout", 60),
        xlabel="recall",
        ylabel="precision",
    )
    axis.legend(loc="best")
    return _save(figure, path)


def _confusion(y_true, models, target_classes: list | None, path: Path) -> str:
    """Confusion matrices side by side, classes in the order of params.yaml's target_classes."""
    rank = {str(c): i for i, c in enumerate(target_classes or [])}
    figure, axes = plt.subplots(1, len(models), figsize=(4.5 * len(models), 4), squeeze=False)
    for axis, (label, result) in zip(axes[0], models, strict=True):
        classes = sorted(result["classes"], key=lambda c: rank.get(str(c), len(rank)))
        ConfusionMatrixDisplay.from_predictions(
            y_true,
            result["prediction"],
            labels=classes,
            display_labels=[shown(c, 20) for c in classes],
            ax=axis,
            colorbar=False,
            values_format=",d",  # counts in full (29,500), not 3e+04
        )
        axis.set_title(f"{label} v{result['version']}")
    return _save(figure, path)


COLOURS = {"candidate": "C0", "champion": "C1"}  # each model in the same colour in every plot


def _predicted_vs_actual(y_true, models, path: Path) -> str:
    """Predicted against actual values, with the identity line."""
    figure, axis = plt.subplots(figsize=(5, 4.5))
    actual = np.asarray(y_true, dtype=float)
    # The candidate drawn last, on top: the champion's points would hide it where they overlap.
    for label, result in reversed(models):
        axis.scatter(
            actual,
            result["prediction"],
            s=6,
            alpha=0.4,
            color=COLOURS[label],
            label=f"{label} v{result['version']}",
        )
    low, high = float(actual.min()), float(actual.max())
    axis.plot([low, high], [low, high], color="black", linewidth=1)
    axis.set(xlabel="actual", ylabel="predicted", title="Predicted vs actual on the holdout")
    axis.legend()
    return _save(figure, path)


def _residuals(y_true, models, path: Path) -> str:
    """Histograms of the errors, prediction - actual (the sign of mean_error: right of 0
    predicts too high), over their central 98 % so that a few outliers do not hide a bias."""
    figure, axis = plt.subplots(figsize=(5, 4.5))
    actual = np.asarray(y_true, dtype=float)
    errors = {label: np.asarray(r["prediction"], dtype=float) - actual for label, r in models}
    low, high = np.quantile(np.concatenate(list(errors.values())), [0.01, 0.99])
    for label, result in models:
        axis.hist(
            errors[label],
            bins=40,
            range=(low, high) if high > low else None,
            alpha=0.5,
            color=COLOURS[label],
            label=f"{label} v{result['version']} (mean {readable(errors[label].mean(), True)})",
        )
    axis.axvline(0, color="black", linewidth=1)
    axis.set(xlabel="error (prediction - actual)", ylabel="rows")
    axis.set_title("Errors on the holdout (central 98 %)")
    axis.legend()
    return _save(figure, path)
