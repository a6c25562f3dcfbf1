"""YOUR MODEL. Replace build_model() with the estimator from your notebook.

It must return an unfitted scikit-learn estimator or Pipeline that takes the raw feature
columns of params.yaml (numeric as float, categorical as text, both with missing values)
and, for classification, has predict_proba.
"""

from __future__ import annotations

from typing import Any

from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

# Types the model file may contain beyond skops' safe defaults. Loading refuses any other
# type, so a tampered artifact cannot run code. Add a type here only after reviewing it.
# Keep the types of every estimator whose versions may still be compared with, rolled back to
# or served, also after build_model() changed.
TRUSTED_TYPES = [
    "numpy.dtype",  # held by many models (HistGradientBoosting's, LightGBM's)
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",  # HistGradientBoosting
]

# Packages the model needs at prediction time, pinned to the installed versions when logged.
# Add the library of your estimator here (e.g. "xgboost") if it is not scikit-learn.
REQUIREMENTS = ["scikit-learn", "skops", "pandas", "numpy", "scipy"]

# A category seen in fewer training rows than this shares one column with the other rare ones
# (and with categories training never saw), and a feature gets at most this many columns: a
# column of ids or free text would otherwise add a column per row and slow the fit a
# hundredfold for little to learn.
MIN_CATEGORY_ROWS = 10
MAX_CATEGORY_COLUMNS = 100


def build_model(
    task: str,
    numeric: list[str],
    categorical: list[str],
    hyperparameters: dict[str, Any],
    seed: int,
):
    """Return an unfitted pipeline: impute and one-hot encode (rare categories grouped), then
    gradient boosting."""
    preprocess = ColumnTransformer(
        [
            ("numeric", SimpleImputer(strategy="median"), numeric),
            (
                "categorical",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="constant", fill_value="missing")),
                        (
                            "encode",
                            OneHotEncoder(
                                handle_unknown="infrequent_if_exist",
                                min_frequency=MIN_CATEGORY_ROWS,
                                max_categories=MAX_CATEGORY_COLUMNS,
                                sparse_output=False,
                            ),
                        ),
                    ]
                ),
                categorical,
            ),
        ]
    )
    estimator = (
        HistGradientBoostingClassifier
        if task == "classification"
        else HistGradientBoostingRegressor
    )
    return Pipeline(
        [("preprocess", preprocess), ("model", estimator(random_state=seed, **hyperparameters))]
    )
