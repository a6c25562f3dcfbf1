"""Request and response models derived from the bundle's training schema."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any, Literal, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    create_model,
)

from ..data import BOOLEAN_TEXT, bounds_text, category_label

Number = Annotated[float, Strict()]
BOOLEAN_VALUES = 'true or false (JSON, or text in any case: "True", "false")'
WHOLE_NUMBERS = (
    'a whole number such as 3 or 3.0 for "3" (or for "03", a code training wrote with leading '
    "zeros)"
)
SCALAR_VALUES = f"{BOOLEAN_VALUES}, {WHOLE_NUMBERS}"
SCALAR_LABELS = "One of the categories listed, or the JSON value it was made from: {}."
# A category no data has: the service's load-time probe of whether the model takes unseen ones.
UNSEEN_PROBE = "\x00unseen-category-probe"
LISTED = 20  # known categories an open column's description lists
# The longest text a column open to unseen categories takes, unless training has a longer one:
# each category is a key of the prediction log's rollups, which PostgreSQL's index caps.
MAX_TEXT = 200
BOOLEANS = ("False", "True")  # the labels training gives a true/false column (data.category_label)


def record_model(meta: dict[str, Any], open_categories: bool = False) -> type[BaseModel]:
    """One record: every feature required (null allowed), typed; categories from training, or
    with `open_categories` (a model that predicts unseen ones) any text."""
    fields: dict[str, Any] = {}  # titled as named: pydantic's own titles read "Customer'S Plan"
    for name, kind in meta["features"].items():
        example = meta["example"].get(name)
        if kind == "numeric":
            limits = meta.get("bounds", {}).get(name)
            lowest, highest = limits or (None, None)
            said = f"{bounds_text(lowest, highest)} (data.bounds in training)" if limits else None
            fields[name] = (
                Number | None,
                Field(..., title=name, examples=[example], ge=lowest, le=highest, description=said),
            )
            continue
        known = meta["categories"].get(name) or []
        # A column of true/false or whole numbers in the data: the JSON true or 3 a client
        # sends means the category training wrote as "True" or "3".
        scalar, truth = any(map(scalar_label, known)), _truth(known)
        notes = [SCALAR_LABELS.format(scalar_values(known))] if scalar else []
        if known and not open_categories:
            choices = Literal[tuple(known)]
        elif known and set(known) <= set(truth.values()):  # true/false, 0/1: no third value
            choices = Literal[tuple(truth.values())]
        else:
            longest = max([MAX_TEXT, *map(len, known)])
            choices = Annotated[
                str, Strict(), StringConstraints(max_length=longest), AfterValidator(_no_nul)
            ]
            if known:
                listed = ", ".join(known[:LISTED]) + (", ..." if len(known) > LISTED else "")
                notes.append(
                    f"Categories of the training data: {listed}; any other text is predicted "
                    "as a category the model has not seen."
                )
        # An empty text is missing, as in the CSV training read, unless it is a category.
        padded, listed = _zero_padded(known), get_origin(choices) is Literal
        convert = partial(
            _as_label,
            scalar=scalar,
            blank="" not in known,
            padded=padded,
            text=not listed,  # any text, not a list
            truth=truth,
        )
        annotation = Annotated[choices | None, BeforeValidator(convert)]
        description = " ".join(notes) or None
        json_values = _json_values(known, truth, padded, listed) if scalar else None
        fields[name] = (
            annotation,
            Field(
                ...,
                title=name,
                examples=[example],
                description=description,
                json_schema_extra=json_values,
            ),
        )
    config = ConfigDict(
        extra="forbid",
        strict=False,
        allow_inf_nan=False,
        json_schema_extra={"examples": [meta["example"]]},
    )
    return create_model("Record", __config__=config, **fields)


def _json_values(known: list[str], truth: dict, padded: dict, listed: bool):
    """For the JSON schema (/docs, a generated client) of a column made from true/false or
    whole numbers: the JSON values a client may send besides the labels (true and false where
    they name a label; the whole numbers of the labels, or any where any text goes)."""
    values: list[dict] = [{"type": "boolean"}] if truth else []
    numbers = {int(label) for label in known if label.removeprefix("-").isdigit()}
    numbers |= {int(code) for code in padded}
    if numbers or not listed:
        values.append({"type": "integer", **({"enum": sorted(numbers)} if listed else {})})

    def add(schema: dict) -> None:
        schema["anyOf"][-1:-1] = values  # before null

    return add


def scalar_values(labels: list[str]) -> str:
    """The JSON values a column made from true/false or whole numbers takes besides its labels:
    a true/false column only true and false, a column of whole numbers only those, unless true
    and false name two of its labels (a column of 0 and 1, or of both kinds)."""
    if true_false(labels):
        return BOOLEAN_VALUES
    return SCALAR_VALUES if _truth(labels) else WHOLE_NUMBERS


def true_false(labels: list[str]) -> bool:
    """Whether a column's labels are those training gives a true/false column."""
    return set(labels) <= set(BOOLEANS)


def _no_nul(text: str) -> str:
    """Refuse a NUL character, which PostgreSQL cannot store in text."""
    if "\x00" in text:
        raise ValueError("text holding a NUL character (\\u0000) is not taken")
    return text


def scalar_label(label: str) -> bool:
    """Whether training made this category's text from a boolean or a whole number."""
    return label in BOOLEANS or label.removeprefix("-").isdigit()


def _zero_padded(known: list[str]) -> dict[str, str]:
    """The codes training wrote with leading zeros ("02134"), by the text of the whole number
    a JSON client sends for one (2134: a JSON number cannot keep the zeros). A number that is a
    category itself, or that more than one code reads as, maps to none."""
    found: dict[str, list[str]] = {}
    for label in known:
        if len(label) > 1 and label.startswith("0") and label.isdigit():
            found.setdefault(str(int(label)), []).append(label)
    labels = set(known)
    return {n: codes[0] for n, codes in found.items() if len(codes) == 1 and n not in labels}


def _truth(known: list[str]) -> dict[bool, str]:
    """The categories JSON false and true name: a true/false column's own, or for a column of
    only 0 and 1 (a flag, as SQLite stores booleans) "0" and "1"; none for other columns."""
    if set(BOOLEANS) & set(known):
        return dict(zip((False, True), BOOLEANS, strict=True))
    return {False: "0", True: "1"} if known and set(known) <= {"0", "1"} else {}


def _as_label(
    value: Any,
    scalar: bool,
    blank: bool,
    padded: dict[str, str],
    text: bool = False,
    truth: dict[bool, str] | None = None,
) -> Any:
    """An empty text as missing (`blank`); for a `scalar` column, a JSON boolean or true/false
    as text in any case (as a CSV's are read for training) as the category `truth` names
    (refused when it names none), a whole number as the category text training gave it (as its
    `padded` code); a fraction refused when the column takes any `text` (whose refusal would not
    say that whole numbers go); anything else is left for validation to accept or refuse (a
    listed column's refusal lists what goes)."""
    if blank and value == "":
        return None
    if not scalar:
        return value
    if isinstance(value, str) and value.lower() in BOOLEAN_TEXT:
        value = BOOLEAN_TEXT[value.lower()]
    if isinstance(value, bool):
        if value not in (truth or {}):
            raise ValueError(
                f"{str(value).lower()} is not a category of this column, made from whole "
                "numbers: send one such as 3, or a category's text"
            )
        return truth[value]
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        label = category_label(value)
        return padded.get(label, label)
    if text and isinstance(value, float):  # not "should be a valid string": 101 is taken
        raise ValueError(
            f"{value} is not a whole number: this column's categories were made from whole "
            "numbers (or true/false); send one such as 3 or 3.0, or a category's text"
        )
    return value


def request_model(
    meta: dict[str, Any], max_records: int, open_categories: bool = False
) -> type[BaseModel]:
    """The body of POST /predict: one to `max_records` records (see record_model)."""
    record = record_model(meta, open_categories)
    example = {"records": [meta["example"]]}
    config = ConfigDict(extra="forbid", json_schema_extra={"examples": [example]})
    records = Field(
        ...,
        min_length=1,
        max_length=max_records,
        description=f"1 to {max_records} records, each with every feature",
    )
    return create_model("PredictRequest", __config__=config, records=(list[record], records))


class Prediction(BaseModel):
    """One record's prediction, with class probabilities for classification."""

    prediction: Any
    probabilities: dict[str, float] | None = None


class FieldError(BaseModel):
    """One invalid value of a refused request: where it is, what is wrong, the error type."""

    loc: list[str | int]
    msg: str
    type: str


class ErrorResponse(BaseModel):
    """What every error status answers: what went wrong (a sentence, or for invalid input one
    entry per invalid value) and the request id, also sent as the X-Request-ID header."""

    detail: str | list[FieldError]
    request_id: str


class Ready(BaseModel):
    """GET /ready when the service takes predictions: the model it serves."""

    status: Literal["ready"]
    model_name: str
    model_version: str


class NotReady(BaseModel):
    """GET /ready before the model is loaded, when loading failed, or once shutdown started."""

    status: Literal["not ready"]
    reason: str


class Version(BaseModel):
    """GET /version: the model served and its lineage (null where the registry had none)."""

    model_name: str
    model_version: str
    task: Literal["classification", "regression"]
    data_hash: str | None
    git_commit: str | None
    trained_at: str | None
    promoted_at: str | None
    rolled_back_at: str | None
    rollback_reason: str | None
    run_id: str | None


# The header every answer of /predict and /version carries (OpenAPI `headers`).
REQUEST_ID_HEADER = {
    "X-Request-ID": {
        "description": "the answer's request id, as in its body",
        "schema": {"type": "string"},
    }
}


class PredictResponse(BaseModel):
    """What POST /predict answers."""

    request_id: str
    model_name: str
    model_version: str
    predictions: list[Prediction]
