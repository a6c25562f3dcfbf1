"""A file of records to predict (`make send-batch`, `make predict`): its feature columns as
records, and the table --out writes of what each row got."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import data as datalib
from .errors import PipelineError

# How the messages number rows: as the `row` column of --out, and as pandas does.
ROW_NUMBERS = "file rows count from 0, the header not counted (as --out's row column)"
OUT_COLUMNS = ["row", "request_id", "record_index", "prediction"]
PROBABILITY_PREFIX = "probability_"  # then a class: a classifier's columns after OUT_COLUMNS


def records(frame: pd.DataFrame, features: dict[str, str]) -> tuple[list, dict[int, str]]:
    """The feature columns as JSON-ready records, missing values as None, and why some file rows
    cannot be sent: a numeric cell holding text (such rows are None in the list, and are left out
    as the service's refusals are). A numeric column of text only is refused here, naming it,
    rather than by the service for every record."""
    missing = [name for name in features if name not in frame.columns]
    if missing:
        hint = datalib.separator_hint([str(c) for c in frame.columns])
        raise PipelineError(f"the file lacks the declared features {missing}{hint}")
    selected = frame[list(features)].astype(object)
    unreadable: dict[int, str] = {}
    for name in (n for n, kind in features.items() if kind == "numeric"):
        numbers = pd.to_numeric(selected[name], errors="coerce")
        bad = selected[name].notna() & numbers.isna()
        if bad.any() and bad.sum() == selected[name].notna().sum():
            row = int(bad.to_numpy().argmax())
            raise PipelineError(
                f"column '{name}' is declared numeric, but none of its values is a number (file "
                f"row {row} holds {selected[name].iloc[row]!r}; {ROW_NUMBERS}): send numbers"
            )
        for row in map(int, np.flatnonzero(bad.to_numpy())):
            said = f"{name} {selected[name].iloc[row]!r} is not a number"
            unreadable[row] = f"{unreadable[row]}, {said}" if row in unreadable else said
        selected[name] = numbers.astype(object)
    rows = selected.where(selected.notna(), None).to_dict("records")
    return [None if i in unreadable else row for i, row in enumerate(rows)], unreadable


def spans(rows: list[int]) -> str:
    """File row numbers as runs, such as 3, 7-9."""
    spans: list[list[int]] = []
    for row in rows:
        if spans and row == spans[-1][1] + 1:
            spans[-1][1] = row
        else:
            spans.append([row, row])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def answers(rows: list[int], request_id: str, predictions: list[dict]) -> list[dict]:
    """What each file row of one request got: its request id and record index (what `make
    outcomes` joins the actual values on), its prediction and a classifier's probabilities."""
    return [
        {
            "row": row,
            "request_id": request_id,
            "record_index": index,
            "prediction": one["prediction"],
            **{
                f"{PROBABILITY_PREFIX}{label}": probability
                for label, probability in (one.get("probabilities") or {}).items()
            },
        }
        for index, (row, one) in enumerate(zip(rows, predictions, strict=True))
    ]


def write_answers(path: Path, answered: list[dict], frame: pd.DataFrame, ids: list[str]) -> None:
    """Write the answers as a CSV: `row`, the file's `ids` columns (data.ignore's, such as a
    claim id, to join on), the rest of OUT_COLUMNS, then the probability columns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(answered)
    probabilities = [c for c in table.columns if str(c).startswith(PROBABILITY_PREFIX)]
    table = table.reindex(columns=[*OUT_COLUMNS, *probabilities])
    carried = [c for c in ids if c in frame.columns and c not in table.columns]
    rows = table["row"].to_numpy(dtype=int)
    for position, column in enumerate(carried, start=1):
        table.insert(position, column, frame[column].to_numpy()[rows])
    table.to_csv(path, index=False)
