"""The sample generator: deterministic, and its drifted batch really drifts."""

from __future__ import annotations

import pandas as pd
import yaml
from conftest import load_script

from {{ cookiecutter.__package_name }}.errors import EXIT_ERROR
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


def test_make_sample_refuses_when_params_declare_other_features(params, tmp_path, monkeypatch):
    script = load_script("make_sample")  # params: the demo's schema, whatever the repo declares
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert script.main(["--out", "sample.csv", "--rows", "50"]) == 0
    params["data"]["features"]["distance_km"] = "numeric"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert script.main(["--out", "other.csv", "--rows", "50"]) == EXIT_ERROR
    assert not (tmp_path / "other.csv").exists()
