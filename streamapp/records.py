"""The message contracts: what arrives on the comment topic and what streamapp writes out.

Comments arrive as the seed's Hive-to-Kafka job writes them: a JSON object (serialize=0) or
the columns joined by a separator (serialize=1), with no key. `decode_comment` turns raw bytes
into a validated `Comment` or raises `RejectedRecord` with a stable reason code; nothing else
escapes it, so one bad record can never stop a batch.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import re
from dataclasses import dataclass
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

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

# C0 and C1 control characters other than tab, newline and carriage return: never part of a
# review or a category name, a sign of a broken export.
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


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


@dataclass(frozen=True, slots=True)
class Incoming:
    """One record as read from Kafka, whichever consumer read it (Faust's or the intake's)."""

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
    # Not a field (no column, not in model_dump): set when decode_comment recovered a flaw.
    _recovered: Recovery | None = PrivateAttr(None)

    @property
    def recovered(self) -> Recovery | None:
        return self._recovered

    def mark_recovered(self, recovery: Recovery | None) -> Comment:
        self._recovered = recovery
        return self

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
    recovered: Recovery | None = Field(None, description=(
        "present only when the comment was decoded despite a flaw: separator_in_review = a "
        "delimited record's extra columns joined back into reviewBody (decode_comment)"))


def result_json(record_id: str, comment: Comment, categories: list[str], path: str, *,
                score: float, match: bool, model: dict[str, str],
                timing: dict[str, int | float | None]) -> bytes:
    """A `SkuMatchResult` as JSON, without building the pydantic model: the data path writes
    one per record. `categories` and `path` are `comment.categories` and `.category_path`
    (the caller has them already); `model` and `timing` are ModelRef's and Timing's fields in
    their order. Tests hold the bytes equal to `SkuMatchResult(...).model_dump_json()` (with
    `recovered` left out when it is None: the key is there only on recovered comments)."""
    result = {"id": record_id, "match": match, "score": score, "model": model,
              "baseSkuName": comment.baseSkuName, "categories": categories,
              "categoryPath": path, "timing": timing}
    if comment.recovered is not None:
        result["recovered"] = comment.recovered
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


def _not_an_object(parsed: object) -> RejectedRecord:
    kind = "null" if parsed is None else type(parsed).__name__
    return RejectedRecord(
        Reason.NOT_AN_OBJECT, f"the value is JSON {kind}, not an object with comment fields"
    )


def _parse_fields(text: str, input_format: InputFormat,
                  separator: str) -> tuple[dict[str, object], Recovery | None]:
    stripped = text.strip()
    looks_json = stripped[:1] in ("{", "[")
    if input_format == "json" or (input_format == "auto" and looks_json):
        try:
            parsed = orjson.loads(stripped)
        except orjson.JSONDecodeError as exc:
            raise RejectedRecord(Reason.INVALID_JSON, f"the value is not JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise _not_an_object(parsed)
        return parsed, None
    if input_format == "auto":
        # A bare JSON scalar (number, null, true, a quoted string) is not a delimited record.
        try:
            parsed = orjson.loads(stripped)
        except orjson.JSONDecodeError:
            pass
        else:
            raise _not_an_object(parsed)
    return split_delimited(text, separator)


def split_delimited(text: str, separator: str) -> tuple[dict[str, object], Recovery | None]:
    """A delimited record's columns, rejoining a review that holds the separator (the rule is
    `decode_comment`'s)."""
    columns = text.rstrip("\r\n").split(separator)
    extra = len(columns) - len(COLUMNS)
    if extra == 0:
        return dict(zip(COLUMNS, columns, strict=True)), None
    expected = (f"a delimited record needs {len(COLUMNS)} columns separated by {separator!r} "
                f"({', '.join(COLUMNS)}), got {len(columns)}")
    if extra < 0:
        raise RejectedRecord(Reason.BAD_COLUMN_COUNT, expected)
    categories = columns[-len(CATEGORY_FIELDS):]
    if columns[0] != DATA_TYPE:
        doubt = f"the first is not {DATA_TYPE}"
    elif any(not upper and lower for upper, lower in itertools.pairwise(categories)):
        doubt = f"the last five ({', '.join(map(repr, categories))}) are not a category path"
    else:
        review = separator.join(columns[2:-len(CATEGORY_FIELDS)])
        return dict(zip(COLUMNS, [*columns[:2], review, *categories], strict=True)), \
            SEPARATOR_IN_REVIEW
    raise RejectedRecord(
        Reason.BAD_COLUMN_COUNT,
        f"{expected}; the extra ones cannot all be reviewBody's, as {doubt}: the separator "
        f"stands in another column (a SKU or category name) or the export has other columns. "
        f"Send such records as JSON")


def _validation_reason(exc: ValidationError) -> RejectedRecord:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "value"
    kind = err["type"]
    if kind == "missing":
        return RejectedRecord(Reason.MISSING_FIELD, f"the field {field!r} is missing")
    if kind == "string_too_short":
        return RejectedRecord(Reason.BLANK_TEXT, f"the field {field!r} is empty")
    got = type(err.get("input")).__name__
    return RejectedRecord(Reason.WRONG_TYPE, f"the field {field!r} must be a string, got {got}")


def decode_comment(
    raw: bytes | None,
    *,
    input_format: InputFormat = "auto",
    separator: str = ",",
    max_review_chars: int = 20_000,
) -> Comment:
    """Bytes from the comment topic to a valid Comment, or RejectedRecord saying why not.

    A delimited record (the job's serialize=1 joins the columns without quoting) with more
    columns than eight is read as a review that holds the separator, the one free-text column,
    when the first column is `COMMENT_LONG_TEXT` and the last five form a category path (no
    level after an empty one): the columns from the third to the sixth-last are joined back
    with the separator into reviewBody, and the comment is marked `recovered` =
    `separator_in_review`; any other count is `bad_column_count`. The limit: a SKU (or
    category) name that holds the separator cannot be told apart while the path still looks
    like one (its tail would start the review); `streamapp load` refuses to send those rows
    delimited. JSON has no such ambiguity.
    """
    if not raw:
        raise RejectedRecord(Reason.EMPTY_VALUE, "the record has no value")
    # The size limit comes first so a huge value costs no decoding. A character takes at most
    # 12 bytes on the wire (a JSON-escaped surrogate pair, "\\ud83c\\udf4e"), so this bound never
    # rejects a review within the limit; the exact check follows after parsing.
    if len(raw) > 12 * max_review_chars + 4096:
        raise RejectedRecord(
            Reason.TOO_LARGE,
            f"the value is {len(raw)} bytes, over the limit for reviews of "
            f"{max_review_chars} characters",
        )
    if raw[:1] == b"{" and input_format != "delimited":
        # The common case, parsed straight from the bytes: decoding to text first and orjson
        # encoding it back cost ~2.5 µs of this function's ~8.6 (a 470-byte comment). Whatever
        # orjson refuses takes the path below, which names the reason.
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
        else:
            if isinstance(parsed, dict):
                return validate_comment(parsed, max_review_chars=max_review_chars)
    try:
        text = raw.decode("utf-8-sig")  # -sig: a byte-order mark is dropped, not kept in the text
    except UnicodeDecodeError as exc:
        raise RejectedRecord(Reason.INVALID_UTF8, f"the value is not UTF-8 text: {exc}") from None
    if not text.strip():
        raise RejectedRecord(Reason.EMPTY_VALUE, "the value is blank")
    fields, recovered = _parse_fields(text, input_format, separator)
    return validate_comment(fields, max_review_chars=max_review_chars).mark_recovered(recovered)


def validate_comment(fields: dict[str, object], *, max_review_chars: int = 20_000) -> Comment:
    """Parsed comment fields to a valid Comment, or RejectedRecord saying why not.

    The loader checks its rows here before sending, so a row it accepts is one the worker
    predicts, with the same reason codes for the ones it rejects.
    """
    fields = dict(fields)
    # JSON null in a category means "no such level", as Hive exports write it.
    for name in CATEGORY_FIELDS:
        if fields.get(name) is None:
            fields.pop(name, None)
    try:
        comment = Comment.model_validate(fields)
    except ValidationError as exc:
        raise _validation_reason(exc) from None
    if comment.dataType not in (DATA_TYPE, ""):
        raise RejectedRecord(
            Reason.UNSUPPORTED_DATA_TYPE,
            f"dataType is {comment.dataType!r}; streamapp predicts {DATA_TYPE} records only",
        )
    for name in ("reviewBody", "baseSkuName"):
        if not getattr(comment, name).strip():
            raise RejectedRecord(Reason.BLANK_TEXT, f"the field {name!r} is blank")
    if _CONTROL_CHARS.search("".join(getattr(comment, name) for name in COLUMNS)):
        name = next(n for n in COLUMNS if _CONTROL_CHARS.search(getattr(comment, n)))
        raise RejectedRecord(
            Reason.CONTROL_CHARACTERS,
            f"the field {name!r} holds control characters (NUL or similar)",
        )
    if len(comment.reviewBody) > max_review_chars:
        raise RejectedRecord(
            Reason.TOO_LARGE,
            f"reviewBody has {len(comment.reviewBody)} characters, over the limit of "
            f"{max_review_chars} (STREAMAPP_MAX_REVIEW_CHARS)",
        )
    return comment


def encode_delimited(comment: dict[str, object], separator: str = ",") -> str:
    """The delimited form the seed's job writes with serialize=1."""
    row = {"dataType": DATA_TYPE, **comment}
    return separator.join(str(row.get(c) or "") for c in COLUMNS)


def separator_in_review(comment: dict[str, object], separator: str) -> bool:
    """Whether the comment's delimited form needs `decode_comment`'s rejoining of reviewBody;
    RejectedRecord when another column holds the separator, which no reader can place."""
    for name in COLUMNS:
        if name != "reviewBody" and separator in str(comment.get(name) or ""):
            raise RejectedRecord(
                Reason.BAD_COLUMN_COUNT,
                f"the column {name!r} holds the separator {separator!r}: a delimited record "
                f"cannot say where it ends (only a separator in reviewBody is read back); "
                f"send it as JSON")
    return separator in str(comment.get("reviewBody") or "")
