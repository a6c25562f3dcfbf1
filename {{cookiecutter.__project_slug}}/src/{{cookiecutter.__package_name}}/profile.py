"""The training profile: reference distributions that monitoring compares live traffic with."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def numeric_profile(values: pd.Series, bins: int) -> dict[str, Any]:
    """Quantile bin edges, the share of rows in each bin, missing rate and moments.

    The outer bins are open-ended, so any live value falls in some bin.
    """
    present = values.dropna().astype(float)
    inner = (
        np.unique(np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1])) if len(present) else []
    )
    counts = np.bincount(np.searchsorted(inner, present, side="right"), minlength=len(inner) + 1)
    return {
        "count": len(values),
        "missing_rate": float(values.isna().mean()),
        "mean": float(present.mean()) if len(present) else None,
        "std": float(present.std(ddof=0)) if len(present) else None,
        "quantiles": {
            f"p{q:02d}": float(np.quantile(present, q / 100)) for q in (5, 25, 50, 75, 95)
        }
        if len(present)
        else {},
        "bin_edges": [float(e) for e in inner],
        "bin_fractions": [float(c) for c in counts / max(len(present), 1)],
    }


def categorical_profile(values: pd.Series) -> dict[str, Any]:
    """Category frequencies among present values, the missing rate, and `unseen_expected`: the
    share of new values from the same distribution expected in categories these rows lack.

    That share is the Good-Turing estimate, the share of present values whose category occurs
    once: 0 for a few frequent categories, some per cent for a long tail (postal codes, merchant
    ids), where new traffic brings categories training never saw without anything drifting.
    """
    counts = values.dropna().astype(str).value_counts().sort_index()
    present = int(counts.sum())
    return {
        "count": len(values),
        "missing_rate": float(values.isna().mean()),
        "frequencies": {str(k): float(v / present) for k, v in counts.items()},
        "unseen_expected": float((counts == 1).sum() / present) if present else 0.0,
    }


def prediction_profile(
    task: str,
    prediction: np.ndarray,
    proba: np.ndarray | None,
    classes: list | None,
    bins: int,
    positive: Any = None,
) -> dict[str, Any]:
    """The distribution of the model's own outputs on the training data; for a binary
    classifier, also of its probability of the `positive` class (default: the second)."""
    if task == "regression":
        return {"kind": "numeric", **numeric_profile(pd.Series(prediction), bins)}
    profile = {"kind": "categorical", **categorical_profile(pd.Series(prediction).astype(str))}
    if proba is not None and classes is not None and len(classes) == 2:
        column = classes.index(positive) if positive in classes else 1
        profile["positive_class"] = str(classes[column])
        profile["positive_proba"] = numeric_profile(pd.Series(proba[:, column]), bins)
    return profile


def target_profile(task: str, target: pd.Series, bins: int) -> dict[str, Any]:
    """The training rows' labels (frequencies) or values (bins), which monitoring compares the
    outcomes' actual ones with."""
    if task == "regression":
        return {"kind": "numeric", **numeric_profile(target, bins)}
    return {"kind": "categorical", **categorical_profile(target.astype(str))}


def training_profile(
    features: pd.DataFrame,
    kinds: dict[str, str],
    bins: int,
    prediction: dict[str, Any],
    target: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Profile every feature by its declared kind, plus the prediction distribution and the
    target's (target_profile)."""
    return {
        "rows": len(features),
        "features": {
            name: {
                "kind": kind,
                **(
                    numeric_profile(features[name], bins)
                    if kind == "numeric"
                    else categorical_profile(features[name])
                ),
            }
            for name, kind in kinds.items()
        },
        "prediction": prediction,
        "target": target,
    }
