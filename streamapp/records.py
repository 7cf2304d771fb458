"""The message contracts: what arrives on the comment topic and what streamapp writes out.

Comments arrive as the seed's Hive-to-Kafka job writes them: a JSON object (serialize=0) or
the columns joined by a separator (serialize=1), with no key. `decode_comment` turns raw bytes
into a validated `Comment` or raises `RejectedRecord` with a stable reason code; nothing else
escapes it, so one bad record can never stop a batch.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any, ClassVar, Literal, NamedTuple

import orjson
from pydantic import BaseModel, ConfigDict, Field

DATA_TYPE = "COMMENT_LONG_TEXT"

# Column order of the seed's job (its `columns` list), used by delimited records.
COLUMNS = (
    "dataType",
    "baseSkuName",
    "reviewBody",
    "categoryFirstName",
    "categorySecondName",
    "categoryThirdName",
    "categoryFourthName",
    "categoryFifthName",
)
CATEGORY_FIELDS = COLUMNS[3:]

InputFormat = Literal["auto", "json", "delimited"]
# A result's `recovered`: the flaw a comment was decoded despite (a stable code, like Reason's).
Recovery = Literal["separator_in_review"]
SEPARATOR_IN_REVIEW: Recovery = "separator_in_review"



class Reason:
    """Stable dead-letter reason codes (clients match on these; never rename one)."""

    EMPTY_VALUE = "empty_value"
    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    BAD_COLUMN_COUNT = "bad_column_count"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    BLANK_TEXT = "blank_text"
    CONTROL_CHARACTERS = "control_characters"
    TOO_LARGE = "too_large"
    UNSUPPORTED_DATA_TYPE = "unsupported_data_type"
    MODEL_ERROR = "model_error"
    BAD_MODEL_OUTPUT = "bad_model_output"


class Incoming(NamedTuple):
    """One record as read from Kafka, whichever consumer read it (Faust's or the intake's).
    A named tuple: built for every record (twice with the model process), in half the time of
    a frozen dataclass; a batch of them transposes in C (streamapp.pipeline.batchwork)."""

    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None  # the record's Kafka timestamp

    @property
    def id(self) -> str:
        return comment_id(self.topic, self.partition, self.offset)


class RejectedRecord(Exception):
    """A record that cannot be predicted: `reason` is a stable code, the message is for people."""

    def __init__(self, reason: str, error: str) -> None:
        super().__init__(error)
        self.reason = reason
        self.error = error


class Comment(BaseModel):
    """One review attached to one SKU, as the seed's job exports it."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    dataType: str = DATA_TYPE
    baseSkuName: str = Field(min_length=1)
    reviewBody: str = Field(min_length=1)
    categoryFirstName: str = ""
    categorySecondName: str = ""
    categoryThirdName: str = ""
    categoryFourthName: str = ""
    categoryFifthName: str = ""
    # What the comment was decoded despite: a class attribute, None here and set by the
    # subclass that names the flaw (RecoveredComment). Not a field, so never in model_dump or
    # read from input; a private attribute cost ~1.4 µs per comment in pydantic's init.
    recovered: ClassVar[Recovery | None] = None

    def mark_recovered(self, recovery: Recovery | None) -> Comment:
        """This comment, marked as decoded despite `recovery` (itself when None)."""
        if recovery is None or recovery == self.recovered:
            return self
        return RECOVERED_COMMENTS[recovery].model_construct(self.model_fields_set, **vars(self))

    @property
    def categories(self) -> list[str]:
        """The category path, top level first, without the empty deeper levels."""
        path = [getattr(self, f) for f in CATEGORY_FIELDS]
        while path and not path[-1]:
            path.pop()
        return path

    @property
    def first_category(self) -> str:
        return self.categoryFirstName or "(none)"

    @property
    def category_path(self) -> str:
        return path_of(self.categories)


class RecoveredComment(Comment):
    """A comment decoded despite a review that holds the delimited form's separator (the one
    Recovery there is; a new one gets its own subclass)."""

    recovered: ClassVar[Recovery | None] = SEPARATOR_IN_REVIEW


# Each Recovery's comment class (typing.get_args(Recovery) names them all).
RECOVERED_COMMENTS: dict[Recovery, type[Comment]] = {SEPARATOR_IN_REVIEW: RecoveredComment}


def path_of(categories: list[str]) -> str:
    """A category path as the tables and results name it: "生鲜/水果/苹果"."""
    return "/".join(categories) or "(none)"


class ModelRef(BaseModel):
    name: str
    version: str


class Timing(BaseModel):
    """Where a comment's time went, in milliseconds (source_ts is the Kafka record timestamp)."""

    source_ts: int | None = Field(description="comment's Kafka timestamp, ms since epoch")
    queued_ms: float = Field(description="from the comment's timestamp to its batch starting")
    compute_ms: float = Field(description="tokenize + model for the whole batch")
    batch_started_at: int = Field(0, description="ms since epoch when the batch started "
                                                 "(read its model version)")
    batch_size: int
    predicted_at: int = Field(description="ms since epoch when the score was known")


class SkuMatchResult(BaseModel):
    """One prediction on the results topic, keyed by the comment id."""

    id: str = Field(description="topic:partition:offset the comment was read from")
    match: bool
    score: float = Field(ge=0.0, le=1.0)
    model: ModelRef
    baseSkuName: str
    categories: list[str]
    categoryPath: str
    timing: Timing
    recovered: Recovery | None = Field(None, exclude_if=lambda value: value is None, description=(
        "present only when the comment was decoded despite a flaw: separator_in_review = a "
        "delimited record's extra columns joined back into reviewBody (decode_comment)"))
    outputs: dict[str, Any] | None = Field(
        None, exclude_if=lambda value: value is None,
        description="a PMML model's output fields by name (its probabilities, predicted value "
                    "...), as the seed's use_json_result; absent for other models")


def result_json(record_id: str, comment: Comment, categories: list[str], path: str, *,
                score: float, match: bool, model: dict[str, str],
                timing: dict[str, int | float | None],
                outputs: dict[str, Any] | None = None) -> bytes:
    """A `SkuMatchResult` as JSON, without building the pydantic model: the data path writes
    one per record. `categories` and `path` are `comment.categories` and `.category_path`
    (the caller has them already); `model` and `timing` are ModelRef's and Timing's fields in
    their order. Tests hold the bytes equal to `SkuMatchResult(...).model_dump_json()` (with
    `recovered` and `outputs` left out when None: each key is there only when it applies)."""
    result: dict[str, Any] = {
        "id": record_id, "match": match, "score": score, "model": model,
        "baseSkuName": comment.baseSkuName, "categories": categories,
        "categoryPath": path, "timing": timing}
    if comment.recovered is not None:
        result["recovered"] = comment.recovered
    if outputs is not None:
        result["outputs"] = outputs
    return orjson.dumps(result)


class DeadLetter(BaseModel):
    """A record streamapp could not predict, with why, and the original bytes."""

    id: str
    reason: str
    error: str
    value: str | None = Field(description="the original value as text (None when empty)")
    value_base64: bool = Field(False, description="value is base64: the bytes were not UTF-8")
    value_bytes: int = Field(0, description="size of the original value in bytes")
    value_truncated: bool = Field(
        False, description="value holds only the first bytes: the original is larger than a "
                           "message may be; it stays in the comment topic at `id`")
    value_sha256: str | None = Field(None, description="sha256 of the whole original value")
    source_ts: int | None = None
    failed_at: int


def comment_id(topic: str, partition: int, offset: int) -> str:
    return f"{topic}:{partition}:{offset}"


def original_value(raw: bytes | None) -> tuple[str | None, bool]:
    """The raw value for a dead letter: text when it is UTF-8, else base64."""
    if raw is None:
        return None, False
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), True


def _utf8_prefix(data: bytes) -> str | None:
    """`data` as text when it is UTF-8 cut anywhere: a cut through a character leaves up to
    three bytes of it at the end."""
    for cut in range(4):
        try:
            return data[: len(data) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return None


def dead_letter(record_id: str, reason: str, error: str, raw: bytes | None, *,
                source_ts: int | None, failed_at: int,
                max_value_bytes: int = 256 * 1024) -> DeadLetter:
    """A dead letter carrying the original bytes, or their first `max_value_bytes` when the
    original is too large to fit in a message (with its size and sha256 to match it)."""
    size = len(raw) if raw is not None else 0
    truncated = raw is not None and size > max_value_bytes
    if raw is not None and truncated:
        kept = raw[:max_value_bytes]
        text = _utf8_prefix(kept)
        value, is_base64 = (text, False) if text is not None else original_value(kept)
    else:
        value, is_base64 = original_value(raw)
    return DeadLetter(
        id=record_id, reason=reason, error=error, value=value, value_base64=is_base64,
        value_bytes=size, value_truncated=truncated,
        value_sha256=hashlib.sha256(raw).hexdigest() if raw is not None else None,
        source_ts=source_ts, failed_at=failed_at)
