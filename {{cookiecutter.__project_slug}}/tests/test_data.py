"""The data step: schema checks name the column and the problem; hashing; the newest holdout."""

from __future__ import annotations

import unicodedata
import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from {{ cookiecutter.__package_name }} import batches
from {{ cookiecutter.__package_name }} import data as datalib
from {{ cookiecutter.__package_name }}.errors import PipelineError


@pytest.fixture
def schema(params: dict) -> datalib.Schema:
    """The sample schema for the repository's task."""
    return datalib.Schema.from_params(params["data"], params["model"]["task"])


@pytest.fixture
def frame(params: dict, schema: datalib.Schema) -> pd.DataFrame:
    """A sample frame straight from the source."""
    return datalib.load_source(params["data"], schema.task, None)


def test_validate_sample_gives_canonical_types(frame, schema):
    clean = datalib.validate(frame, schema)
    assert list(clean.columns) == schema.columns
    assert clean["monthly_charges"].dtype == np.float64
    assert clean["age"].isna().sum() > 0, "the sample is meant to have missing ages"
    assert clean["payment_method"].isna().sum() > 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop(columns=["region"]), "column 'region' is missing"),
        (
            lambda f: f.rename(columns={"region": "area"}),
            "missing: ['region']); the data holds undeclared columns ['area'] (one renamed?)",
        ),
        (lambda f: f.assign(coupon="x"), "column 'coupon' is not declared"),
        (
            lambda f: f.assign(age=f["age"].astype(object).where(f.index != 3, "old")),
            "column 'age' is declared numeric but holds ['old']",
        ),
        (
            lambda f: f.assign(tenure_months=np.where(f.index == 0, np.inf, f["tenure_months"])),
            "column 'tenure_months' holds infinite values",
        ),
        (lambda f: f.iloc[0:0], "the data source returned no rows"),
        (lambda f: f.assign(event_date="not a date"), "time column 'event_date'"),
    ],
    ids=[
        "missing-column",
        "renamed-column",
        "extra-column",
        "text-in-numeric",
        "infinity",
        "empty",
        "bad-dates",
    ],
)
def test_validate_bad_data_names_column_and_problem(frame, schema, change, message):
    with pytest.raises(PipelineError) as caught:
        datalib.validate(change(frame.copy()), schema)
    assert message in str(caught.value)


def test_validate_names_every_refused_feature_at_once(frame, schema):
    """Six columns declared numeric that hold text take one run to fix, not six."""
    text = frame.assign(
        age=frame["age"].astype(object).where(frame.index != 3, "old"),
        tenure_months=np.where(frame.index == 0, np.inf, frame["tenure_months"]),
    )
    with pytest.raises(PipelineError) as caught:
        datalib.validate(text, schema)
    said = str(caught.value)
    assert said.startswith("2 columns are refused:\n- "), said
    assert "column 'age' is declared numeric but holds ['old']" in said
    assert "column 'tenure_months' holds infinite values" in said


def test_semicolon_file_read_as_one_column_is_named_with_the_conversion(frame, schema, tmp_path):
    frame.to_csv(tmp_path / "export.csv", sep=";", decimal=",", index=False)
    with pytest.raises(PipelineError) as caught:
        datalib.validate(pd.read_csv(tmp_path / "export.csv"), schema)
    said = str(caught.value)
    assert "the source was read as the one column" in said and "sep=';', decimal=','" in said
    assert "adding thousands='.' where dots group thousands" in said
    # The same hint where make send-batch and make predict read a file to predict.
    with pytest.raises(PipelineError, match=r"lacks the declared features .*read as the one col"):
        batches.records(pd.read_csv(tmp_path / "export.csv"), schema.features)


def test_categorical_column_of_mostly_distinct_values_is_named(frame, schema, caplog):
    name = next(n for n, kind in schema.features.items() if kind == "categorical")
    datalib.validate(frame.assign(**{name: [f"note {i}" for i in range(len(frame))]}), schema)
    assert f"column '{name}' is declared categorical, but {len(frame)} of its" in caplog.text
    caplog.clear()
    datalib.validate(frame, schema)
    assert "declared categorical" not in caplog.text


def test_categories_spelled_apart_by_case_or_spaces_are_named(frame, schema, caplog):
    name = next(n for n, kind in schema.features.items() if kind == "categorical")
    first = str(frame[name].dropna().iloc[0])
    variants = [first.upper(), f"{first} ", f" {first.title()}"]
    spelled = frame[name].astype(object).copy()
    spelled.iloc[: len(variants)] = variants
    datalib.validate(frame.assign(**{name: spelled}), schema)
    said = next(r.getMessage() for r in caplog.records if "surrounding spaces" in r.getMessage())
    assert said.startswith(f"column '{name}' holds 4 categories that differ")
    assert all(repr(v) in said for v in variants)
    caplog.clear()
    datalib.validate(frame, schema)
    assert "surrounding spaces" not in caplog.text


def test_time_column_with_offsets_is_compared_in_utc_and_unzoned_dates_among_them_refused(
    frame, schema
):
    summer, winter = "2025-06-01T10:00:00+02:00", "2025-12-01T10:00:00+01:00"
    dated = frame.assign(event_date=np.resize([summer, winter], len(frame)))
    clean = datalib.validate(dated, schema)
    assert clean["event_date"].tolist()[:2] == ["2025-06-01T08:00:00", "2025-12-01T09:00:00"]
    # Summer time only so far: UTC too, so winter's first row leaves the older rows as they were.
    summer_only = datalib.validate(frame.assign(event_date=summer), schema)
    assert set(summer_only["event_date"]) == {"2025-06-01T08:00:00"}
    with pytest.raises(PipelineError) as caught:
        datalib.validate(
            frame.assign(event_date=np.resize([summer, "2025-06-02"], len(frame))), schema
        )
    assert str(caught.value) == (
        f"time column 'event_date' mixes dates with a UTC offset (e.g. '{summer}') and without "
        "one (e.g. '2025-06-02'): give every date an offset, or none"
    )


def test_a_date_read_month_first_is_refused_among_day_first_ones_and_named_among_others(
    frame, schema, caplog
):
    day_first = np.resize(["31/01/2025", "01/02/2025", "13/02/2025"], len(frame))
    with pytest.raises(PipelineError) as caught:
        datalib.validate(frame.assign(event_date=day_first), schema)
    rows = int((day_first == "01/02/2025").sum())
    assert str(caught.value).startswith(
        f"time column 'event_date': {rows} rows hold dates such as '01/02/2025', read month "
        "first (January 2), among day-first dates (e.g. '31/01/2025'): they would be dated wrong"
    )
    among_iso = np.resize(["2025-01-31", "2025-02-01", "01/02/2025"], len(frame))
    datalib.validate(frame.assign(event_date=among_iso), schema)
    assert (
        f"time column 'event_date': {int((among_iso == '01/02/2025').sum())} rows hold dates "
        "such as '01/02/2025', read month first (January 2), among dates in another form"
    ) in caplog.text
    caplog.clear()
    month_first = ["01/31/2025", "02/01/2025", "12/24/2025", "2025-02-01T00:00:00"]
    datalib.validate(frame.assign(event_date=np.resize(month_first[:3], len(frame))), schema)
    datalib.validate(frame.assign(event_date=np.resize(month_first[3:], len(frame))), schema)
    assert "read month first" not in caplog.text


def test_validate_missing_target_values_refused(frame, schema):
    broken = frame.copy()
    broken[schema.target] = broken[schema.target].astype(object).where(broken.index != 5, None)
    with pytest.raises(PipelineError) as caught:
        datalib.validate(broken, schema)
    assert str(caught.value).startswith(
        f"target column '{schema.target}' has 1 missing values (data rows [5], counted from 0): "
        "rows without a label cannot be trained or scored on"
    )


def test_columns_in_data_ignore_are_dropped_and_others_undeclared_named(frame, schema):
    with_ids = frame.assign(customer_id=[f"C-{i}" for i in range(len(frame))], note="x")
    ignoring = replace(schema, ignore=("customer_id", "absent_from_the_source"))
    with pytest.raises(PipelineError) as caught:
        datalib.validate(with_ids, ignoring)
    assert str(caught.value).startswith(
        "column 'note' is not declared in params.yaml data.features: declare it, list it in "
        "data.ignore (an id), or drop it from the source (undeclared: ['note'])"
    )
    clean = datalib.validate(with_ids.drop(columns="note"), ignoring)
    assert "customer_id" not in clean.columns
    assert datalib.content_hash(clean) == datalib.content_hash(datalib.validate(frame, schema))


def test_values_outside_data_bounds_are_refused_naming_every_column_and_rows(frame, schema):
    assert schema.bounds, "the sample's params bound its numeric features"
    (low_name, (lowest, _)), (high_name, _) = [
        (name, limits) for name, limits in schema.bounds.items() if limits[0] is not None
    ][:2]
    broken = frame.copy()
    broken.loc[[3, 9], low_name] = lowest - 5
    broken.loc[4, high_name] = np.nan  # missing passes
    datalib.validate(broken.assign(**{low_name: frame[low_name]}), schema)
    with pytest.raises(PipelineError) as caught:
        datalib.validate(broken.assign(**{high_name: -1.0}), schema)
    said = str(caught.value)
    assert f"column '{low_name}' has 2 values that are not at least {lowest:g} " in said
    assert "(data rows [3, 9], counted from 0)" in said and f"such as {lowest - 5:g}; " in said
    assert f"column '{high_name}' has {len(frame)} values that are not" in said
    assert said.endswith(": fix the source, or widen data.bounds")
    unbounded = replace(schema, bounds={})
    assert len(datalib.validate(broken.assign(**{high_name: -1.0}), unbounded)) == len(frame)


def test_validate_names_the_rows_of_missing_dates(frame, schema):
    dated = frame.assign(event_date=frame["event_date"].where(~frame.index.isin([2, 7])))
    with pytest.raises(PipelineError) as caught:
        datalib.validate(dated, schema)
    assert str(caught.value) == (
        "time column 'event_date' has 2 missing or unparseable dates (data rows [2, 7], "
        "counted from 0)"
    )
    with pytest.raises(PipelineError, match=r"dates \(data rows \[0\], .*, e\.g\. \['soon'\]$"):
        datalib.validate(
            frame.assign(event_date=frame["event_date"].where(frame.index > 0, "soon")), schema
        )


def test_a_feature_with_no_values_is_refused_and_one_with_a_single_value_named(
    frame, schema, caplog
):
    with pytest.raises(PipelineError) as caught:
        datalib.validate(frame.assign(age=np.nan), schema)
    assert str(caught.value).startswith(
        f"column 'age' has no values in any of its {len(frame)} rows: the model cannot learn"
    )
    datalib.validate(frame.assign(region="north"), schema)
    assert "column 'region' holds 'north' in every row: the model learns nothing" in caplog.text
    datalib.validate(frame.assign(age=41.0), schema)  # numpy's number, written as a number
    assert "column 'age' holds 41.0 in every row" in caplog.text
    caplog.clear()
    datalib.validate(frame.assign(region=frame["region"].where(frame.index > 0)), schema)
    assert "in every row" not in caplog.text


def test_validate_counts_rows_repeated_in_every_column(frame, schema, caplog):
    datalib.validate(frame, schema)
    assert "repeat another row" not in caplog.text
    datalib.validate(pd.concat([frame, frame.iloc[:3]]), schema)
    assert f"3 of the {len(frame) + 3} rows repeat another row in every column" in caplog.text


def test_a_csv_in_another_encoding_is_named_with_the_conversion(frame, params, tmp_path):
    path = tmp_path / "latin.csv"
    frame.assign(region="région").to_csv(path, index=False, encoding="latin-1")
    with pytest.raises(PipelineError) as caught:
        datalib.read_file(str(path), {"region": "categorical"}, "data.source")
    said = str(caught.value)
    assert said.startswith(f"data.source '{path}' is not UTF-8 text (invalid continuation byte")
    assert "read_csv(path, encoding='latin-1')" in said


def test_a_column_named_alike_says_how_the_names_differ(frame, schema):
    with pytest.raises(PipelineError, match=r"the header names 'region' more than once") as said:
        datalib.validate(frame.assign(**{"region.1": frame["region"]}), schema)
    assert "reads the repeat as 'region.1'): keep one" in str(said.value)
    composed, decomposed = "Größe", unicodedata.normalize("NFD", "Größe")
    assert composed != decomposed
    hint = datalib._name_hint([decomposed], [decomposed], [composed])
    assert f"is params.yaml's '{composed}' in another Unicode form" in hint


def test_validate_undeclared_label_or_text_target_refused(frame, schema):
    broken = frame.copy()
    broken[schema.target] = broken[schema.target].astype(object).where(broken.index != 5, "maybe")
    expected = "holds ['maybe']" if schema.task == "classification" else "declared numeric"
    with pytest.raises(PipelineError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        datalib.validate(broken, schema)


def test_whole_float_labels_are_the_declared_integer_classes(frame, schema):
    if schema.task != "classification":
        pytest.skip("labels are a classification matter")
    floats = frame.assign(**{schema.target: frame[schema.target].astype(float)})  # 0.0 and 1.0
    clean = datalib.validate(floats, schema)
    assert set(clean[schema.target]) == set(schema.target_classes)


def test_label_with_a_double_quote_is_refused(frame, schema):
    if schema.task != "classification":
        pytest.skip("labels are a classification matter")
    quoted = frame.assign(**{schema.target: np.where(frame.index % 2 == 0, 'said "yes"', "no")})
    with pytest.raises(PipelineError, match=r"""labels with a double quote, \['said "yes"'\]"""):
        datalib.validate(quoted, replace(schema, target_classes=None))


def test_declared_label_absent_from_the_data_is_named(frame, schema, caplog):
    if schema.task != "classification":
        pytest.skip("labels are a classification matter")
    declared = replace(schema, target_classes=(*schema.target_classes, "churned"))
    datalib.validate(frame, declared)
    [said] = [r.getMessage() for r in caplog.records if "absent from target" in r.getMessage()]
    assert said.startswith("data.target_classes ['churned'] are absent from target column")


def test_content_hash_stable_across_formats_and_sensitive_to_one_value(frame, schema, tmp_path):
    clean = datalib.validate(frame, schema)
    clean.to_csv(tmp_path / "d.csv", index=False)
    reread = datalib.validate(pd.read_csv(tmp_path / "d.csv"), schema)
    assert datalib.content_hash(reread) == datalib.content_hash(clean)
    changed = clean.copy()
    changed.loc[0, "monthly_charges"] += 1
    assert datalib.content_hash(changed) != datalib.content_hash(clean)


def test_split_holdout_is_the_newest_rows(frame, schema):
    clean = datalib.validate(frame, schema)
    rest, holdout = datalib.split(clean, schema, 0.2, seed=1)
    time = schema.time_column
    # The sample has several rows a day: the day at the cut goes wholly to the holdout.
    first_day = (clean[time] == holdout[time].min()).sum()
    assert len(holdout) + len(rest) == 1500 and 300 <= len(holdout) < 300 + first_day
    assert holdout[time].min() > rest[time].max()


def test_split_keeps_the_rows_of_one_time_on_one_side(schema):
    time = schema.time_column

    def sides(times: list[str], fraction: float) -> tuple[list, list]:
        frame = pd.DataFrame({time: [f"2026-03-{day:02d}T00:00:00" for day in times]})
        rest, holdout = datalib.split(frame, schema, fraction, seed=1)
        return sorted({t[8:10] for t in rest[time]}), sorted({t[8:10] for t in holdout[time]})

    assert sides([1, 2, 2, 2, 3], 0.4) == (["01"], ["02", "03"])  # the 2nd goes to the holdout
    assert sides([1, 1, 1, 1, 2, 2], 0.5) == (["01"], ["02"])  # the 1st would leave no training
    assert sides([1, 2, 3, 4], 0.25) == (["01", "02", "03"], ["04"])
    with pytest.raises(PipelineError, match=f"the 4 rows share one time in '{time}'"):
        datalib.split(pd.DataFrame({time: ["2026-03-01T00:00:00"] * 4}), schema, 0.25, seed=1)


def test_split_without_time_column_keeps_each_row_on_its_side_as_the_data_grows(frame, schema):
    clean = datalib.validate(frame, schema).drop(columns=[schema.time_column])
    unordered = datalib.Schema(schema.features, schema.target, schema.task)
    first, grown = clean.iloc[:1000], clean  # the source later holds 500 more rows
    _rest, holdout = datalib.split(first, unordered, 0.2, seed=1)
    rest_grown, holdout_grown = datalib.split(grown, unordered, 0.2, seed=1)
    assert set(holdout.index) <= set(holdout_grown.index), "a held-out row stays held out"
    assert not set(first.index) - set(holdout.index) & set(holdout_grown.index)
    assert 0.15 < len(holdout_grown) / len(grown) < 0.25
    _train, valid = datalib.split(rest_grown, unordered, 0.2, seed=1, purpose="validation")
    assert 0.15 < len(valid) / len(rest_grown) < 0.25, "independent of the holdout's hash"
    other_seed = datalib.split(grown, unordered, 0.2, seed=2)[1]
    assert set(other_seed.index) != set(holdout_grown.index)


def test_load_source_reads_csv_and_parquet_and_refuses_other_suffixes(frame, params, tmp_path):
    task = params["model"]["task"]
    for suffix, write in ((".csv", frame.to_csv), (".parquet", frame.to_parquet)):
        write(tmp_path / f"d{suffix}", index=False)
        loaded = datalib.load_source(
            {**params["data"], "source": str(tmp_path / f"d{suffix}")}, task, None
        )
        assert len(loaded) == len(frame)
    with pytest.raises(PipelineError, match="use 'sample', 'sql'"):
        datalib.load_source({**params["data"], "source": "d.xlsx"}, task, None)
    # A teammate's clone lacks the git-ignored file another clone read: say where it was
    # looked for, and what a shared source is.
    with pytest.raises(PipelineError) as missing:
        datalib.load_source({**params["data"], "source": "data/raw/gone.csv"}, task, None)
    said = str(missing.value)
    assert said.startswith("data source 'data/raw/gone.csv' does not exist in /"), said
    assert "data/raw/ is git-ignored" in said and "s3://" in said, said


def test_csv_keeps_leading_zeros_of_categorical_codes_and_reads_other_columns_as_numbers(
    tmp_path,
):
    path = tmp_path / "codes.csv"
    path.write_text(
        "zip,grade,flag,paid,size\n02134,3,True,true,1.5\n10001,,False,FALSE,2\n00501,4.0,,,\n"
    )
    features = {n: "categorical" for n in ("zip", "grade", "flag", "paid")}
    loaded = datalib.load_source({"source": str(path), "features": features}, "", None)
    assert loaded["zip"].tolist() == ["02134", "10001", "00501"]
    clean = datalib.feature_frame(loaded.to_dict("records"), features)
    assert clean["zip"].tolist() == ["02134", "10001", "00501"]
    assert clean["grade"].tolist()[0::2] == ["3", "4"], "whole numbers: the categories as before"
    assert clean["flag"].tolist()[:2] == ["True", "False"]
    # Any spelling of true/false is the booleans the service takes as JSON true and false.
    assert clean["paid"].tolist()[:2] == ["True", "False"]
    assert loaded["size"].tolist()[:2] == [1.5, 2.0]


def test_csv_categorical_keeps_na_spellings_as_text_as_the_service_does(tmp_path, caplog):
    path = tmp_path / "na.csv"
    path.write_text("city,size\nN/A,NA\nParis,\n,2\nNone,null\n")
    features = {"city": "categorical", "size": "numeric"}
    loaded = datalib.load_source({"source": str(path), "features": features}, "", None)
    clean = datalib.feature_frame(loaded.to_dict("records"), features)
    # A request's "N/A" is the category "N/A": the training rows must say the same.
    assert clean["city"].tolist()[:2] == ["N/A", "Paris"] and clean["city"].tolist()[3] == "None"
    assert clean["city"].isna().tolist() == [False, False, True, False], "empty is missing"
    assert clean["size"].isna().tolist() == [True, True, False, True], "numbers: NA, null missing"
    assert "column 'city' holds ['N/A', 'None'] in 2 rows" in caplog.text


def test_csv_true_false_column_with_a_stray_value_stays_text_and_says_so(tmp_path, caplog):
    path = tmp_path / "roaming.csv"
    path.write_text("roaming,plan\ntrue,a\nfalse,b\nmaybe,c\nTRUE,d\n,e\n")
    features = {"roaming": "categorical", "plan": "categorical"}
    loaded = datalib.load_source({"source": str(path), "features": features}, "", None)
    assert loaded["roaming"].tolist()[:4] == ["true", "false", "maybe", "TRUE"]
    said = "column 'roaming' holds true/false but also ['maybe'] in 1 rows"
    assert said in caplog.text and "'plan'" not in caplog.text, caplog.text


@pytest.mark.parametrize(
    "dates",
    [pd.to_datetime(["2024-01-01 00:08", "2024-01-02 09:30"]), ["2024-01-01", "2024-01-02"]],
)
def test_dates_declared_numeric_are_named_with_what_to_do(frame, schema, dates):
    name = next(n for n, kind in schema.features.items() if kind == "numeric")
    with pytest.raises(PipelineError) as caught:
        datalib.validate(frame.head(2).assign(**{name: dates}), schema)
    said = str(caught.value)
    assert f"'{name}' is declared numeric but holds dates or times (such as '2024-01-01" in said
    assert "move it from data.features to data.time_column" in said


def test_csv_numbers_with_dots_grouping_thousands_are_named(tmp_path, caplog):
    """An export writing 19543 as "19.543" beside "950": pandas reads 19.543, a silent wrong
    number the data step names; real decimals of three places, or none whole, are no alarm."""
    path = tmp_path / "points.csv"
    path.write_text("points,weight,price\n950,1.250,9.99\n19.543,0.75,12\n3.001,2.5,7.5\n")
    features = {"points": "numeric", "weight": "numeric", "price": "numeric"}
    loaded = datalib.load_source({"source": str(path), "features": features}, "", None)
    assert loaded["points"].tolist() == [950, 19.543, 3.001]  # read as pandas reads it
    said = "column 'points' holds numbers such as '19.543' beside whole numbers such as '950'"
    assert said in caplog.text and "(19.543 meaning 19543)" in caplog.text
    assert "'weight'" not in caplog.text and "'price'" not in caplog.text, caplog.text


@pytest.mark.parametrize(
    "flags",
    [
        pd.array([True, False, None] * 2, dtype="boolean"),  # a Parquet boolean
        pd.Series([True, None, False] * 2, dtype=object),  # a database's BOOLEAN with NULLs
    ],
)
def test_validate_refuses_true_false_in_a_numeric_column(frame, schema, flags):
    name = next(n for n, kind in schema.features.items() if kind == "numeric")
    frame = frame.head(len(flags)).assign(**{name: flags})
    with pytest.raises(PipelineError, match=rf"'{name}' is declared numeric but holds true/false"):
        datalib.validate(frame, schema)


def test_validate_refuses_a_category_holding_a_nul(frame, schema):
    """The service refuses a NUL (PostgreSQL cannot store it): training must not learn one."""
    name = next(n for n, kind in schema.features.items() if kind == "categorical")
    text = frame[name].astype(object).copy()
    text.iloc[[3, 8]] = "a;b\x00;c"
    with pytest.raises(PipelineError, match=rf"'{name}' has 2 values holding a NUL .*\[3, 8\]"):
        datalib.validate(frame.assign(**{name: text}), schema)


def test_validate_refuses_a_true_false_regression_target(frame, schema):
    frame = frame.head(4).assign(**{schema.target: [True, False, True, False]})
    regression = replace(schema, task="regression", target_classes=None)
    with pytest.raises(PipelineError, match="holds true/false values, a classification target"):
        datalib.validate(frame, regression)


def test_validate_refuses_a_column_named_twice(frame, schema):
    name = next(iter(schema.features))
    doubled = pd.concat([frame, frame[[name]]], axis=1)  # as a query selecting it twice gives
    with pytest.raises(PipelineError, match=rf"column '{name}' appears more than once"):
        datalib.validate(doubled, schema)


def test_validate_wide_frame_without_fragmentation_warnings(frame, schema):
    wide = {f"x{i:03d}": "numeric" for i in range(150)}
    extra = pd.DataFrame(np.ones((len(frame), 150)), columns=list(wide))
    schema = replace(schema, features={**schema.features, **wide})
    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.PerformanceWarning)
        clean = datalib.validate(pd.concat([frame, extra], axis=1), schema)
    assert list(clean.columns) == schema.columns


def test_load_source_sql_reads_a_query(frame, params, tmp_path):
    import sqlalchemy

    url = f"sqlite:///{tmp_path / 'source.db'}"
    frame.to_sql("customers", sqlalchemy.create_engine(url), index=False)
    query = {**params["data"], "source": "sql", "query": "select * from customers"}
    loaded = datalib.load_source(query, params["model"]["task"], url)
    assert len(loaded) == len(frame)
    with pytest.raises(PipelineError, match="runs against SOURCE_DATABASE_URL: set it"):
        datalib.load_source(query, params["model"]["task"], None)


@pytest.mark.parametrize(
    ("sql", "said"),
    [
        ("selct * from customers", 'OperationalError: near "selct": syntax error'),
        ("select * from clients", "OperationalError: no such table: clients"),
    ],
)
def test_load_source_sql_names_a_failed_query_in_one_line(frame, params, tmp_path, sql, said):
    import sqlalchemy

    url = f"sqlite:///{tmp_path / 'source.db'}"
    frame.to_sql("customers", sqlalchemy.create_engine(url), index=False)
    query = {**params["data"], "source": "sql", "query": sql}
    with pytest.raises(PipelineError) as failed:
        datalib.load_source(query, params["model"]["task"], url)
    message = str(failed.value)
    assert message.startswith(f"the SQL query failed ({said}): fix the query"), message
    assert "\n" not in message


def test_load_source_sql_names_the_database_that_does_not_answer(params, tmp_path):
    url = f"sqlite:///{tmp_path / 'no-such-folder' / 'source.db'}"
    query = {**params["data"], "source": "sql", "query": "select 1"}
    with pytest.raises(PipelineError) as failed:
        datalib.load_source(query, params["model"]["task"], url)
    message = str(failed.value)
    assert "refused or did not answer (OperationalError: unable to open database file)" in message
    assert "check SOURCE_DATABASE_URL" in message and "\n" not in message
