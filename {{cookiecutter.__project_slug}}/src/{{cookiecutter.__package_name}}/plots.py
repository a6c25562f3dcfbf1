"""PNG plots of an evaluation: ROC and confusion matrix, or predicted-vs-actual and residuals."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay


def evaluation_plots(
    schema, y_true, candidate: dict, champion: dict | None, out_dir: Path
) -> list[str]:
    """Draw the task's plots for both models and return their paths."""
    models = [("candidate", candidate)] + ([("champion", champion)] if champion else [])
    if schema.task == "classification":
        return [
            _roc(y_true, models, out_dir / "roc.png"),
            _confusion(y_true, models, out_dir / "confusion_matrix.png"),
        ]
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


def _roc(y_true, models, path: Path) -> str:
    """ROC curves of both models (one-vs-rest on the last class when there are several)."""
    figure, axis = plt.subplots(figsize=(5, 4.5))
    for label, result in models:
        positive = result["classes"][-1]
        RocCurveDisplay.from_predictions(
            np.asarray(y_true) == positive,
            result["proba"][:, -1],
            name=f"{label} v{result['version']}",
            ax=axis,
        )
    axis.set_title("ROC on the holdout")
    return _save(figure, path)


def _confusion(y_true, models, path: Path) -> str:
    """Confusion matrices side by side."""
    figure, axes = plt.subplots(1, len(models), figsize=(4.5 * len(models), 4), squeeze=False)
    for axis, (label, result) in zip(axes[0], models, strict=True):
        ConfusionMatrixDisplay.from_predictions(
            y_true, result["prediction"], ax=axis, colorbar=False
        )
        axis.set_title(f"{label} v{result['version']}")
    return _save(figure, path)


def _predicted_vs_actual(y_true, models, path: Path) -> str:
    """Predicted against actual values, with the identity line."""
    figure, axis = plt.subplots(figsize=(5, 4.5))
    actual = np.asarray(y_true, dtype=float)
    for label, result in models:
        axis.scatter(
            actual, result["prediction"], s=6, alpha=0.5, label=f"{label} v{result['version']}"
        )
    low, high = float(actual.min()), float(actual.max())
    axis.plot([low, high], [low, high], color="black", linewidth=1)
    axis.set(xlabel="actual", ylabel="predicted", title="Predicted vs actual on the holdout")
    axis.legend()
    return _save(figure, path)


def _residuals(y_true, models, path: Path) -> str:
    """Histograms of residuals (actual minus predicted)."""
    figure, axis = plt.subplots(figsize=(5, 4.5))
    actual = np.asarray(y_true, dtype=float)
    for label, result in models:
        axis.hist(
            actual - result["prediction"], bins=40, alpha=0.5, label=f"{label} v{result['version']}"
        )
    axis.set(xlabel="residual", ylabel="rows", title="Residuals on the holdout")
    axis.legend()
    return _save(figure, path)
