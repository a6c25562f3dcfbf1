"""Request and response models derived from the bundle's training schema."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, create_model

from ..data import BOOLEAN_TEXT, category_label

Number = Annotated[float, Strict()]
SCALAR_LABELS = (
    "One of the categories listed, or the JSON value it was made from: true/false (also as "
    'text in any case) for "True"/"False", a whole number such as 3 or 3.0 for "3".'
)
Text = Annotated[str, Strict()]


def record_model(meta: dict[str, Any]) -> type[BaseModel]:
    """One record: every feature required (null allowed), typed, categories from training."""
    fields: dict[str, Any] = {}
    for name, kind in meta["features"].items():
        known = meta["categories"].get(name)
        description = None
        if kind == "numeric":
            annotation = Number | None
        elif known and any(_scalar_label(label) for label in known):
            # A column of true/false or whole numbers in the data: the JSON true or 3 a client
            # sends means the category training wrote as "True" or "3".
            annotation = Annotated[Literal[tuple(known)] | None, BeforeValidator(_as_label)]
            description = SCALAR_LABELS
        elif known:
            annotation = Literal[tuple(known)] | None
        else:
            annotation = Text | None
        example = meta["example"].get(name)
        fields[name] = (annotation, Field(..., examples=[example], description=description))
    config = ConfigDict(
        extra="forbid",
        strict=False,
        allow_inf_nan=False,
        json_schema_extra={"examples": [meta["example"]]},
    )
    return create_model("Record", __config__=config, **fields)


def _scalar_label(label: str) -> bool:
    """Whether training made this category's text from a boolean or a whole number."""
    return label in ("True", "False") or label.removeprefix("-").isdigit()


def _as_label(value: Any) -> Any:
    """A JSON boolean or whole number, or true/false as text in any case (as a CSV's are read
    for training), as the category text training gave it; anything else is left for validation
    to accept or refuse."""
    if isinstance(value, str) and value.lower() in BOOLEAN_TEXT:
        return category_label(BOOLEAN_TEXT[value.lower()])
    if isinstance(value, bool | int) or (isinstance(value, float) and value.is_integer()):
        return category_label(value)
    return value


def request_model(meta: dict[str, Any], max_records: int) -> type[BaseModel]:
    """The body of POST /predict: one to `max_records` records."""
    record = record_model(meta)
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


class PredictResponse(BaseModel):
    """What POST /predict answers."""

    request_id: str
    model_name: str
    model_version: str
    predictions: list[Prediction]
