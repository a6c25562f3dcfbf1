"""The sample generator: deterministic, and its drifted batch really drifts."""

from __future__ import annotations

import pandas as pd

from {{ cookiecutter.__package_name }}.sample import make_sample


def test_make_sample_same_seed_same_rows(params):
    task, target = params["model"]["task"], params["data"]["target"]
    pd.testing.assert_frame_equal(
        make_sample(500, 3, task, target), make_sample(500, 3, task, target)
    )


def test_make_sample_drift_shifts_charges_and_contracts(params):
    task, target = params["model"]["task"], params["data"]["target"]
    base, drifted = (
        make_sample(4000, 3, task, target),
        make_sample(4000, 4, task, target, drift=True),
    )
    assert drifted["monthly_charges"].mean() - base["monthly_charges"].mean() > 25
    base_share = (base["contract"] == "month-to-month").mean()
    drifted_share = (drifted["contract"] == "month-to-month").mean()
    assert drifted_share - base_share > 0.15
    assert list(drifted.columns) == list(base.columns)
