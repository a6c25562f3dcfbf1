"""Load the data source, check it against the declared schema, hash it and split it."""

from __future__ import annotations

import calendar
import hashlib
import logging
import math
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import PipelineError, driver_said
from .sample import make_sample

log = logging.getLogger(__name__)

FEATURE_TYPES = ("numeric", "categorical")


@dataclass(frozen=True)
class Schema:
    """The columns a dataset must have: features with their types, the target, the time column."""

    features: dict[str, str]
    target: str
    task: str
    target_classes: tuple | None = None
    time_column: str | None = None
    # Numeric column -> (lowest, highest) it may hold, None on a side without a limit.
    bounds: dict[str, tuple] = field(default_factory=dict)
    ignore: tuple = ()  # columns of the source that are no feature (an id): dropped when read

    @classmethod
    def from_params(cls, data: dict[str, Any], task: str) -> Schema:
        """Build the schema from the `data:` section, refusing unknown feature types."""
        features = data.get("features") or {}
        if not features:
            raise PipelineError("params.yaml data.features is empty: declare each feature's type")
        for name, kind in features.items():
            if kind not in FEATURE_TYPES:
                raise PipelineError(
                    f"params.yaml data.features.{name} is '{kind}': use one of {FEATURE_TYPES}"
                )
        if task not in ("classification", "regression"):
            raise PipelineError(
                f"params.yaml model.task is '{task}': use classification or regression"
            )
        classes = data.get("target_classes")
        return cls(
            dict(features),
            data["target"],
            task,
            tuple(classes) if classes else None,
            data.get("time_column"),
            {name: tuple(limits) for name, limits in (data.get("bounds") or {}).items()},
            tuple(data.get("ignore") or ()),
        )

    @property
    def columns(self) -> list[str]:
        """Every column the source must have, in a fixed order."""
        extra = [self.time_column] if self.time_column else []
        return [*extra, *self.features, self.target]

    def of_kind(self, kind: str) -> list[str]:
        """The features of one type."""
        return [name for name, k in self.features.items() if k == kind]


def load_source(data: dict[str, Any], task: str, database_url: str | None) -> pd.DataFrame:
    """Read the configured source: the sample generator, a CSV or Parquet file or URL, or SQL."""
    source = str(data.get("source") or "").strip()
    if source == "sample":
        return make_sample(
            int(data.get("sample_rows", 6000)),
            int(data.get("sample_seed", 7)),
            task,
            data["target"],
        )
    if source == "sql":
        return _read_sql(data.get("query"), database_url)
    if _suffix(source) not in FILE_SUFFIXES:
        raise PipelineError(
            f"params.yaml data.source '{source}' is not supported: "
            "use 'sample', 'sql', or a path or URL ending in .csv or .parquet"
        )
    return read_file(source, data.get("features") or {}, "data source")


FILE_SUFFIXES = (".csv", ".parquet", ".pq")


def _suffix(source: str) -> str:
    """A path's or URL's file suffix, lowered, without a URL's query."""
    return Path(source.split("?")[0]).suffix.lower()


def read_file(source: str, features: dict[str, str], what: str) -> pd.DataFrame:
    """A CSV (read as read_csv does) or Parquet file or URL; `what` names it in messages."""
    suffix = _suffix(source)
    if suffix not in FILE_SUFFIXES:
        raise PipelineError(f"{what} '{source}' is no path or URL ending in .csv or .parquet")
    try:
        if suffix == ".csv":
            return read_csv(source, features)
        return pd.read_parquet(source)
    except FileNotFoundError as err:
        local = "" if "://" in source else f" in {Path.cwd()}"
        local += LOCAL_FILES if local and what == "data source" else ""
        raise PipelineError(f"{what} '{source}' does not exist{local}") from err
    except UnicodeDecodeError as err:
        raise PipelineError(
            f"{what} '{source}' is not UTF-8 text ({err.reason}, byte {err.object[err.start]:#x} "
            f"at {err.start}): save it as UTF-8, e.g. from Latin-1 with pandas: "
            "read_csv(path, encoding='latin-1').to_csv(new_path, index=False)"
        ) from err
    except (OSError, ValueError) as err:
        hint = S3_SOURCE if source.startswith("s3://") else ""
        raise PipelineError(f"{what} '{source}' could not be read: {err}{hint}") from err


# A relative path is the repository's; the data folders are not in git.
LOCAL_FILES = (
    " (data/raw/ is git-ignored, so another clone or a runner lacks its files: keep a shared "
    "source on s3:// or https://, or in a database, data.source: sql)"
)
S3_SOURCE = (
    ": check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_ENDPOINT_URL (where the bucket is "
    'not on AWS), e.g. with make check-env NEEDS="AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY"'
)


# How a CSV spells booleans (True, true, TRUE, ...), lowered.
BOOLEAN_TEXT = {"true": True, "false": False}


# pandas' read_csv spellings of a missing value: missing in any column but a categorical one.
NA_TEXT = (
    *("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN"),
    *("<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"),
)


def read_csv(source: str, features: dict[str, str]) -> pd.DataFrame:
    """A CSV file; a categorical column of codes with leading zeros ("02134") is kept as text.

    In a categorical column only an empty field is missing, as in a request to the service:
    "N/A" or "NA" is a category as written (said in a warning), where pandas would make it
    missing. Any other column is read as pandas reads it, so a column of numbers is still
    numbers (and "3.0", an integer column with gaps as pandas writes it, still the category
    "3"), and a column of true/false in any case is booleans, whichever spelling the export used.
    """
    categorical = [name for name, kind in features.items() if kind == "categorical"]
    header = pd.read_csv(source, nrows=0).columns
    missing = {c: [""] if c in categorical else list(NA_TEXT) for c in header}
    frame = pd.read_csv(
        source, dtype=dict.fromkeys(categorical, str), keep_default_na=False, na_values=missing
    )
    for name in categorical:
        if name in frame.columns:
            _warn_if_spelt_missing(frame[name], name)
            text = frame[name].dropna()
            numbers = pd.to_numeric(text, errors="coerce")
            if numbers.notna().all() and not text.str.match(r"[-+]?0\d").any():
                frame[name] = pd.to_numeric(frame[name])
            elif (flags := text.str.lower().isin(BOOLEAN_TEXT)).all():
                frame[name] = frame[name].str.lower().map(BOOLEAN_TEXT)
            elif flags.mean() >= 0.5:
                _warn_if_nearly_booleans(text[~flags], name)
    numeric = [n for n, kind in features.items() if kind == "numeric" and n in frame.columns]
    if suspects := [name for name in numeric if _thousands_like(frame[name])]:
        _warn_if_dots_group_thousands(pd.read_csv(source, usecols=suspects, dtype=str))
    return frame


def _thousands_like(values: pd.Series) -> bool:
    """Whether numbers read as pandas reads them could be whole numbers with a dot grouping
    thousands ("19.543" for 19543, beside "950"): whole ones and ones of at most three
    decimals, all under 1000. The text, read again, decides (_warn_if_dots_group_thousands)."""
    if not pd.api.types.is_float_dtype(values):
        return False
    present = values.dropna()
    whole = present == present.round()
    thousandths = present * 1000
    return bool(
        whole.any()
        and (~whole).any()
        and present.abs().max() < 1000
        and np.allclose(thousandths, thousandths.round(), rtol=0, atol=1e-6)
    )


def _warn_if_dots_group_thousands(text: pd.DataFrame) -> None:
    """Say when a numeric column holds numbers such as "19.543" (a dot, then exactly three
    digits) beside whole numbers such as "950": an export grouping thousands with dots, which
    pandas reads as decimals, a silent wrong number."""
    for name, column in text.items():
        written = column.dropna().str.strip()
        dotted = written[written.str.contains(".", regex=False)]
        whole = written[written.str.fullmatch(r"[-+]?\d+")]
        if len(dotted) and len(whole) and dotted.str.fullmatch(r"[-+]?\d{1,3}\.\d{3}").all():
            log.warning(
                "column '%s' holds numbers such as %r beside whole numbers such as %r: where the "
                "dot groups thousands (%s meaning %s), it is read as a decimal point; write the "
                "numbers without separators (pandas: read_csv(path, thousands='.'))",
                name,
                dotted.iloc[0],
                whole.iloc[0],
                dotted.iloc[0],
                dotted.iloc[0].replace(".", ""),
            )


def _warn_if_nearly_booleans(others: pd.Series, name: str) -> None:
    """Say when a categorical column of mostly true/false holds other text: one stray value
    keeps the whole column text ("true", "false", and it), where it would be booleans."""
    log.warning(
        "column '%s' holds true/false but also %s in %d rows: the whole column is read as text "
        'categories, so the service takes "true" and "false" as text, not JSON true/false; '
        "if those are mistakes, fix them or leave the cells empty in the CSV",
        name,
        sorted(others.unique())[:3],
        len(others),
    )


def _warn_if_spelt_missing(column: pd.Series, name: str) -> None:
    """Say when a categorical column holds text pandas would read as missing, such as "N/A"."""
    spelt = column[column.isin(NA_TEXT)]
    if len(spelt):
        log.warning(
            "column '%s' holds %s in %d rows: read as categories, as the service reads them in "
            "a request; if they mean missing, leave those cells empty in the CSV",
            name,
            sorted(spelt.unique())[:3],
            len(spelt),
        )


def _read_sql(query: str | None, database_url: str | None) -> pd.DataFrame:
    """Run the configured query against SOURCE_DATABASE_URL."""
    import sqlalchemy

    if not query:
        raise PipelineError("params.yaml data.source is 'sql' but data.query is empty")
    from .config import database_url as parsed_url

    if not database_url:
        raise PipelineError(
            "a SQL query runs against SOURCE_DATABASE_URL: set it to the database's URL"
        )
    url = parsed_url(database_url, "SOURCE_DATABASE_URL", shipped_only=False)
    engine = sqlalchemy.create_engine(url)
    try:
        connection = engine.connect()
    except sqlalchemy.exc.SQLAlchemyError as err:
        raise PipelineError(
            f"the source database {engine.url.render_as_string(hide_password=True)} refused or "
            f"did not answer ({driver_said(err)}): check SOURCE_DATABASE_URL and that the "
            "database is up"
        ) from err
    with connection:
        try:
            return pd.read_sql(sqlalchemy.text(query), connection)
        except (sqlalchemy.exc.SQLAlchemyError, pd.errors.DatabaseError) as err:
            raise PipelineError(
                f"the SQL query failed ({driver_said(err)}): fix the query, and check that its "
                "tables and columns exist in the database SOURCE_DATABASE_URL names"
            ) from err


# A categorical column with more distinct values than this, and than half its rows, is free text.
MOSTLY_DISTINCT = 100


def validate(frame: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """Return the frame with canonical types, or raise naming every feature column refused
    (the time column and target are checked once the features pass)."""
    if frame.empty:
        raise PipelineError("the data source returned no rows")
    frame = frame.drop(columns=[c for c in schema.ignore if c in frame.columns])
    _check_columns(frame, schema)
    # Columns collected first and joined once: a frame grown a column at a time fragments (and
    # pandas warns for each column past a hundred).
    clean = {}
    if schema.time_column:
        clean[schema.time_column] = _as_dates(frame[schema.time_column], schema.time_column)
    refused = []  # every feature's problem at once: six mistyped columns need not take six runs
    for name, kind in schema.features.items():
        try:
            clean[name] = _feature(frame[name], name, kind)
        except PipelineError as err:
            refused.append(str(err))
    if len(refused) > 1:
        raise PipelineError(f"{len(refused)} columns are refused:\n- " + "\n- ".join(refused))
    if refused:
        raise PipelineError(refused[0])
    clean[schema.target] = _as_target(frame[schema.target], schema)
    _refuse_out_of_bounds(clean, schema.bounds)
    valid = pd.DataFrame(clean, index=frame.index).reset_index(drop=True)
    copies = int(valid.duplicated().sum())
    if copies:
        log.warning(
            "%d of the %d rows repeat another row in every column: copies of one row on both "
            "sides of the split flatter the holdout metrics; if the export repeated them, drop "
            "them in the source",
            copies,
            len(valid),
        )
    return valid


def _refuse_out_of_bounds(columns: dict[str, pd.Series], bounds: dict[str, tuple]) -> None:
    """Refuse values outside params.yaml data.bounds (a negative area, a rate above 1), every
    such column at once; missing values pass."""
    refused = []
    for name, limits in bounds.items():
        values = columns[name]
        if (outside := outside_bounds(values, limits)).any():
            found = _counted(outside, f"values that are not {bounds_text(*limits)}")
            examples = ", ".join(f"{v:g}" for v in values[outside].unique()[:3])
            refused.append(f"column '{name}' has {found}, such as {examples}")
    if refused:
        raise PipelineError("; ".join(refused) + ": fix the source, or widen data.bounds")


def outside_bounds(values: pd.Series, limits: tuple) -> pd.Series:
    """Which numbers are below the lowest or above the highest of `limits` (either None: no
    limit on that side); missing values are not outside."""
    lowest, highest = limits
    outside = pd.Series(False, index=values.index)
    if lowest is not None:
        outside |= values < lowest
    if highest is not None:
        outside |= values > highest
    return outside


def bounds_text(lowest: float | None, highest: float | None) -> str:
    """A column's bounds in words: "0 to 1", "at least 0", "at most 100"."""
    if lowest is None:
        return f"at most {highest:g}"
    return f"at least {lowest:g}" if highest is None else f"{lowest:g} to {highest:g}"


def _feature(column: pd.Series, name: str, kind: str) -> pd.Series:
    """One feature column in its canonical type, checked (warnings logged)."""
    clean = _CONVERT[kind](column, name)
    _check_informative(clean, name)
    if kind == "categorical":
        _refuse_nul(clean, name)
        _warn_if_mostly_distinct(clean, name)
        _warn_of_spelling_variants(clean, name)
    return clean


def _check_informative(column: pd.Series, name: str) -> None:
    """Refuse a feature with no values at all; say when it holds one value in every row."""
    if column.isna().all():
        raise PipelineError(
            f"column '{name}' has no values in any of its {len(column)} rows: the model cannot "
            "learn from it; leave it out of params.yaml data.features, or fix the source"
        )
    if column.notna().all() and column.nunique() == 1:
        log.warning(
            "column '%s' holds %r in every row: the model learns nothing from it; leave it out "
            "of params.yaml data.features unless other values are to come",
            name,
            plain(column.iloc[0]),
        )


def _refuse_nul(column: pd.Series, name: str) -> None:
    """Refuse text holding a NUL character: PostgreSQL cannot store it, so the service refuses
    it in a request and training would learn a category no request can send."""
    flags = column.str.contains("\x00", regex=False, na=False)
    if flags.any():
        found = _counted(flags, "values holding a NUL character (\\x00)")
        raise PipelineError(f"column '{name}' has {found}: remove it from the text in the source")


def _warn_if_mostly_distinct(column: pd.Series, name: str) -> None:
    """Say when a categorical column looks like free text or an id: most values distinct."""
    present = column.dropna()
    distinct = present.nunique()
    if distinct > MOSTLY_DISTINCT and distinct > len(present) / 2:
        log.warning(
            "column '%s' is declared categorical, but %d of its %d values are distinct: free "
            "text or an id? The model learns little from it (the default model groups rare "
            "categories into one column), the service meets nearly every new value as an unseen "
            "category, and its /docs shows some of the training values (the example record "
            "and a list); leave it out or derive categories from it",
            name,
            distinct,
            len(present),
        )


def _warn_of_spelling_variants(column: pd.Series, name: str) -> None:
    """Say when categories differ only in case or surrounding spaces ("Shoes", "shoes "): each
    is a category of its own to the model, so one spelled another way is predicted as unseen."""
    labels = pd.Series(column.dropna().unique()).astype(str)
    keys = labels.str.strip().str.casefold()
    variants = labels[keys.duplicated(keep=False)]
    if variants.empty:
        return
    groups = variants.groupby(keys[variants.index], sort=False).agg(list)
    log.warning(
        "column '%s' holds %d categories that differ from another only in case or surrounding "
        "spaces (e.g. %s): each is a category of its own to the model, the service and the "
        "monitor, so a record spelled another way is predicted as a category training never "
        "saw; write each one way in the source",
        name,
        len(variants),
        "; ".join(" / ".join(map(repr, group[:4])) for group in groups.iloc[:3]),
    )


def _check_columns(frame: pd.DataFrame, schema: Schema) -> None:
    """Refuse missing and undeclared columns."""
    missing = [c for c in schema.columns if c not in frame.columns]
    if missing:
        read = [str(c) for c in frame.columns]
        hint = separator_hint(read)
        undeclared = [c for c in read if c not in schema.columns]
        if undeclared and not hint:
            hint = f"; the data holds undeclared columns {undeclared[:10]} (one renamed?)"
            hint += _name_hint(undeclared, read, schema.columns)
        raise PipelineError(
            f"column '{missing[0]}' is missing from the data "
            f"(declared in params.yaml data; missing: {missing}){hint}"
        )
    extra = [str(c) for c in frame.columns if c not in schema.columns]
    if extra:
        raise PipelineError(
            f"column '{extra[0]}' is not declared in params.yaml data.features: declare it, "
            f"list it in data.ignore (an id), or drop it from the source (undeclared: {extra})"
            f"{_name_hint(extra, [str(c) for c in frame.columns], schema.columns)}"
        )
    twice = list(dict.fromkeys(str(c) for c in frame.columns[frame.columns.duplicated()]))
    if twice:
        raise PipelineError(
            f"column '{twice[0]}' appears more than once in the data (named twice: {twice}): "
            "keep one, or give the others names of their own (AS in a query)"
        )


def separator_hint(columns: list[str]) -> str:
    """Why a CSV lacks its columns when it was read as one column holding a separator: it is
    not comma-separated. Empty otherwise."""
    if len(columns) != 1 or not any(separator in columns[0] for separator in ";\t|"):
        return ""
    return (
        f"; the source was read as the one column {columns[0][:80]!r}: it must be "
        "comma-separated (a ';' file with decimal commas converts with pandas: "
        "read_csv(path, sep=';', decimal=',').to_csv(new_path, index=False), adding "
        "thousands='.' where dots group thousands (1.234,5), which also makes a date "
        "such as 01.02.2024 a number unless dtype={'its column': str} keeps it text)"
    )


def _name_hint(undeclared: list[str], read: list[str], declared) -> str:
    """Why an undeclared column may be a declared one: the same name in another Unicode form
    (looking alike), or a CSV header naming a column twice (pandas reads the repeat as name.1)."""
    forms = {unicodedata.normalize("NFC", name): name for name in declared}
    for column in undeclared:
        alike = forms.get(unicodedata.normalize("NFC", column))
        if alike is not None:
            return (
                f"; '{column}' in the data is params.yaml's '{alike}' in another Unicode form "
                "(composed or decomposed accents): write the name the same way in both (NFC)"
            )
        base, dot, digits = column.rpartition(".")
        if dot and digits.isdigit() and base in read:
            return (
                f"; the header names '{base}' more than once (pandas reads the repeat as "
                f"'{column}'): keep one"
            )
    return ""


def _bad_values(original: pd.Series, converted: pd.Series) -> list:
    """Values present in `original` that did not survive the conversion."""
    return original[original.notna() & converted.isna()].unique()[:3].tolist()


def _as_numeric(column: pd.Series, name: str) -> pd.Series:
    """Convert to float, refusing text, true/false and infinities."""
    if _holds_booleans(column):
        raise PipelineError(
            f"column '{name}' is declared numeric but holds true/false values: declare it "
            "categorical (the service then takes JSON true and false), or turn it into 0/1 in "
            "the source"
        )
    values = pd.to_numeric(column.astype(object).where(column.notna(), None), errors="coerce")
    bad = _bad_values(column, values)
    if bad and _dates(bad):
        raise PipelineError(
            f"column '{name}' is declared numeric but holds dates or times (such as "
            f"'{bad[0]}'): there is no date type for features; move it from data.features to "
            "data.time_column (the holdout is then the newest rows) or data.ignore, and derive "
            "what the model needs from it in the source (hour, day of week, days since signup)"
        )
    if bad:
        raise PipelineError(
            f"column '{name}' is declared numeric but holds {bad}: write plain numbers in the "
            "source (a dot for decimals; no currency symbols, units, % signs or thousands "
            "separators), or declare the column categorical"
        )
    values = values.astype("float64")
    if np.isinf(values).any():
        raise PipelineError(f"column '{name}' holds infinite values")
    return values


def _dates(values: list) -> bool:
    """Whether values that are no numbers are dates or times (a datetime, or text of one)."""
    try:
        pd.to_datetime(pd.Series(values).astype(str), format="ISO8601")
    except (ValueError, TypeError):
        return False
    return True


def _holds_booleans(column: pd.Series) -> bool:
    """Whether a column holds true/false values (a boolean dtype, or Python booleans in an
    object column, as a database's boolean column with NULLs reads)."""
    if pd.api.types.is_bool_dtype(column):
        return True
    return column.dtype == object and column.dropna().map(type).isin([bool, np.bool_]).any()


def _as_categorical(column: pd.Series, name: str) -> pd.Series:
    """Convert to text labels, keeping missing values missing."""
    if pd.api.types.is_float_dtype(column) and not column.dropna().apply(float.is_integer).all():
        raise PipelineError(f"column '{name}' is declared categorical but holds fractional numbers")
    labels = column.astype(object).where(column.notna(), None).map(category_label)
    # Always the text dtype, missing as NaN: an all-missing column would otherwise stay object
    # with None, which scikit-learn's imputers do not see as missing.
    return labels.astype("str")


def plain(value):
    """A cell's value as Python writes it, for a message: -1, not np.int64(-1)."""
    return value.item() if isinstance(value, np.generic) else value


def category_label(value):
    """A category as text: 3.0 (a category read as a number) becomes "3", True "True"; None stays
    None. Training labels a column's values this way, and the service a request's."""
    if value is None:
        return None
    return str(int(value)) if isinstance(value, float) else str(value)


_CONVERT = {"numeric": _as_numeric, "categorical": _as_categorical}


def feature_frame(records: list[dict], features: dict[str, str]) -> pd.DataFrame:
    """Records (e.g. from a request) with the canonical types training gives the model."""
    frame = pd.DataFrame.from_records(records, columns=list(features))
    return pd.DataFrame({name: _CONVERT[k](frame[name], name) for name, k in features.items()})


def _as_dates(column: pd.Series, name: str) -> pd.Series:
    """Convert the time column to ISO dates, refusing gaps and unparseable values; dates with
    UTC offsets (one, or summer and winter time) become UTC."""
    try:
        dates = pd.to_datetime(column, errors="coerce", format="mixed")
    except ValueError:  # pandas refuses to mix offsets, or zoned and unzoned dates
        dates = _in_utc(column, name)
    if dates.isna().any():
        bad = _bad_values(column, dates)
        raise PipelineError(
            f"time column '{name}' has {_counted(dates.isna(), 'missing or unparseable dates')}"
            f"{f', e.g. {bad}' if bad else ''}"
        )
    _check_day_or_month_first(column, name)
    if dates.dt.tz is not None:  # one offset for all: UTC as well, so a second one changes none
        dates = dates.dt.tz_convert("UTC")
    return dates.dt.strftime("%Y-%m-%dT%H:%M:%S")


def _counted(flags: pd.Series, what: str) -> str:
    """How many rows are flagged, and the first few: "2 `what` (data rows [2, 7], counted from
    0)"."""
    rows = np.flatnonzero(flags)
    return f"{len(rows)} {what} (data rows {rows[:5].tolist()}, counted from 0)"


def _check_day_or_month_first(column: pd.Series, name: str) -> None:
    """Refuse or name dates such as 01/02/2025 that may be read the wrong way round: pandas
    reads each date by itself, month first unless the first number is above 12. Among day-first
    dates (13/02/2025) they are surely misread, and refused; among dates in another form (ISO)
    they may be, and are named."""
    text = pd.Series(column.dropna().astype(str).unique())
    fields = text.str.extract(r"^\s*(\d{1,2})[/.-](\d{1,2})[/.-]\d{2,4}\b").dropna().astype(int)
    ambiguous = fields[(fields[0] <= 12) & (fields[1] <= 12) & (fields[0] != fields[1])]
    day_first = fields[fields[0] > 12]
    if ambiguous.empty or (day_first.empty and len(fields) == len(text)):
        return  # month-first throughout, as pandas reads them, or no such dates
    rows = int(column.astype(str).isin(set(text[ambiguous.index])).sum())
    month, day = ambiguous.iloc[0]
    such = (
        f"{rows} rows hold dates such as {text[ambiguous.index[0]]!r}, read month first "
        f"({calendar.month_name[month]} {day})"
    )
    if not day_first.empty:
        raise PipelineError(
            f"time column '{name}': {such}, among day-first dates (e.g. "
            f"{text[day_first.index[0]]!r}): they would be dated wrong, and rows would cross "
            "the newest-first holdout split. Write dates as YYYY-MM-DD in the source (day-first "
            "text converts with pandas: pd.to_datetime(column, dayfirst=True))"
        )
    log.warning(
        "time column '%s': %s, among dates in another form: write dates as YYYY-MM-DD to be "
        "sure of them",
        name,
        such,
    )


def _in_utc(column: pd.Series, name: str) -> pd.Series:
    """Dates that all carry a UTC offset, in UTC; refuse a column mixing them with dates that
    carry none, whose moment is unknown."""
    text = column.dropna().astype(str).str.strip()
    # An offset follows a time of day: "2025-06-02" ends in "-02", no offset.
    zoned = text.str.contains(r"\d:\d\d(?::\d\d(?:\.\d*)?)?\s*(?:Z|[+-]\d\d(?::?\d\d)?)$")
    if not zoned.all():
        raise PipelineError(
            f"time column '{name}' mixes dates with a UTC offset (e.g. {text[zoned].iloc[0]!r}) "
            f"and without one (e.g. {text[~zoned].iloc[0]!r}): give every date an offset, or none"
        )
    return pd.to_datetime(column, errors="coerce", format="mixed", utc=True)


def _as_regression_target(column: pd.Series, name: str) -> pd.Series:
    """Numbers, refusing true/false (a classification target)."""
    if _holds_booleans(column):
        raise PipelineError(
            f"target column '{name}' holds true/false values, a classification target, but "
            "this repository was baked for regression: turn them into numbers in the source, "
            "or bake the template with task=classification"
        )
    return _as_numeric(column, name)


def _as_target(column: pd.Series, schema: Schema) -> pd.Series:
    """Check the target: no gaps; declared labels (classification) or finite numbers."""
    name = schema.target
    if column.isna().any():
        raise PipelineError(
            f"target column '{name}' has {_counted(column.isna(), 'missing values')}: rows "
            "without a label cannot be trained or scored on; leave them out of the source (its "
            "query, or the file)"
        )
    if schema.task == "regression":
        return _as_regression_target(column, name)
    if schema.target_classes:
        allowed = {label_text(c) for c in schema.target_classes}
        bad = sorted({label_text(v) for v in column.unique()} - allowed)
        if bad:
            raise PipelineError(
                f"target column '{name}' holds {bad[:5]}, allowed labels are "
                f"{list(schema.target_classes)}: fix the labels in the source, or list every "
                "class in params.yaml data.target_classes"
            )
        by_text = {label_text(c): c for c in schema.target_classes}
        column = column.map(lambda v: by_text[label_text(v)])
        absent = [c for c in schema.target_classes if c not in set(column.unique())]
        if absent:
            log.warning(
                "data.target_classes %s are absent from target column '%s': the model "
                "cannot predict them; remove them from params.yaml unless rows of them are "
                "coming (is one misspelt?)",
                absent,
                name,
            )
    quoted = sorted(text for text in map(label_text, column.unique()) if '"' in text)
    if quoted:
        raise PipelineError(
            f"target column '{name}' has labels with a double quote, {quoted[:5]}: monitoring's "
            "SQL reads probabilities by label through a JSON path, which cannot hold one; "
            "rename these labels"
        )
    if column.nunique() < 2:
        raise PipelineError(f"target column '{name}' has a single class: nothing to learn")
    return column


def label_text(value) -> str:
    """A label as text, a whole float as the integer it is (1.0 is the class 1): as training
    compares the target with target_classes, and outcomes are stored beside predictions."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def content_hash(frame: pd.DataFrame) -> str:
    """A sha256 of the rows and columns, independent of the file format they came in."""
    digest = hashlib.sha256("|".join(f"{c}:{t}" for c, t in frame.dtypes.items()).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def split(
    frame: pd.DataFrame, schema: Schema, fraction: float, seed: int, purpose: str = "holdout"
):
    """Split off the newest `fraction` of rows (by time column; the rows of the time at the cut
    all go to the newer side, so a few more), or else about `fraction` of them chosen by a
    seeded hash of each row's content.

    By hash, a row keeps its side as the data grows (a source that accumulates rows), so a
    champion trained on earlier data is never scored on rows it trained on. `purpose` salts the
    hash, so the validation split of the remaining rows is independent of the holdout's.
    """
    if not 0 < fraction < 1:
        raise PipelineError(f"split fraction {fraction} must lie strictly between 0 and 1")
    too_few = PipelineError(f"{len(frame)} rows are too few to split off {fraction:.0%}")
    if schema.time_column:
        size = max(1, math.ceil(len(frame) * fraction))
        if size >= len(frame):
            raise too_few
        ordered = frame.sort_values(schema.time_column, kind="stable")
        cut = _time_cut(ordered[schema.time_column].to_numpy(), len(frame) - size)
        if cut is None:
            raise PipelineError(
                f"the {len(frame)} rows share one time in '{schema.time_column}': none is newer "
                "to split off; the rows of one time stay on one side"
            )
        return ordered.iloc[:cut], ordered.iloc[cut:]
    key = hashlib.sha256(f"{purpose}:{seed}".encode()).hexdigest()[:16]
    hashes = pd.util.hash_pandas_object(frame, index=False, hash_key=key).to_numpy()
    chosen = hashes % HASH_BUCKETS < fraction * HASH_BUCKETS
    if chosen.all() or not chosen.any():
        raise too_few
    return frame[~chosen], frame[chosen]


HASH_BUCKETS = 1_000_000


def _time_cut(times, cut: int) -> int | None:
    """Where to cut sorted `times` near `cut` so that no time has rows on both sides: the
    newer side takes all the rows of the time at the cut, or the older side does when it would
    otherwise keep none; None when every row has that one time."""
    first = int(np.searchsorted(times, times[cut], side="left"))
    if first > 0:
        return first
    last = int(np.searchsorted(times, times[cut], side="right"))
    return last if last < len(times) else None


def features_and_target(frame: pd.DataFrame, schema: Schema):
    """The model's input columns and its target."""
    return frame[list(schema.features)], frame[schema.target]
