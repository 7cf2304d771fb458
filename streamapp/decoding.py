"""The comment topic's bytes to a valid `Comment`: JSON (serialize=0) or delimited
(serialize=1, with the rule for a review that holds the separator). `decode_comment` returns
a `Comment` or raises `RejectedRecord` with a stable reason code; nothing else escapes it,
so one bad record can never stop a batch."""

from __future__ import annotations

import itertools
import re
import typing
from collections.abc import Sequence

import orjson
from pydantic import TypeAdapter, ValidationError

from streamapp.records import (
    CATEGORY_FIELDS,
    COLUMNS,
    DATA_TYPE,
    SEPARATOR_IN_REVIEW,
    Comment,
    InputFormat,
    Reason,
    Recovery,
    RejectedRecord,
)

# C0 and C1 control characters other than tab, newline and carriage return: never part of a
# review or a category name, a sign of a broken export.
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# A batch's comments validated in one call (decode_comments).
_COMMENTS = TypeAdapter(list[Comment])


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
    check_size(raw, max_review_chars)
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


def size_limit(max_review_chars: int) -> int:
    """The most bytes a value holding a review within the limit can take (check_size)."""
    return 12 * max_review_chars + 4096


def check_size(raw: bytes, max_review_chars: int) -> None:
    """RejectedRecord for a value too large to hold a review within the limit, before any
    decoding, so a huge value costs none (the fan-out's ingest agent checks it too). A
    character takes at most 12 bytes on the wire (a JSON-escaped surrogate pair,
    "\\ud83c\\udf4e"), so this bound never rejects a review within the limit; the exact
    check follows after parsing."""
    if len(raw) > size_limit(max_review_chars):
        raise RejectedRecord(
            Reason.TOO_LARGE,
            f"the value is {len(raw)} bytes, over the limit for reviews of "
            f"{max_review_chars} characters",
        )


def decode_comments(
    values: Sequence[bytes | None],
    *,
    input_format: InputFormat = "auto",
    separator: str = ",",
    max_review_chars: int = 20_000,
) -> list[Comment | RejectedRecord]:
    """`decode_comment` for each value, in order, with the same outcome for each (a Comment,
    or the RejectedRecord it would raise), in about 0.6 of its time per comment (timeit,
    512 shared comments: 5.8 against 3.3 to 3.6 µs).

    A JSON object (the common case) is parsed on its own, as `decode_comment` does, and the
    batch's objects are validated by one pydantic call instead of one each, with one search
    for control characters over all of their fields. An object that fails that validation
    (a JSON null category among them, which `validate_comment` drops first), and any value
    not a JSON object, takes `decode_comment` itself, which names the reason."""
    decoded: list[Comment | RejectedRecord | None] = [None] * len(values)
    objects: list[dict[str, object]] = []
    positions: list[int] = []  # where each of `objects` came from
    limit = size_limit(max_review_chars)
    for at, raw in enumerate(values):
        if raw and raw[:1] == b"{" and len(raw) <= limit and input_format != "delimited":
            try:
                parsed = orjson.loads(raw)
            except orjson.JSONDecodeError:
                pass
            else:
                if type(parsed) is dict:
                    objects.append(parsed)
                    positions.append(at)
                    continue
        decoded[at] = _decode_one(raw, input_format, separator, max_review_chars)
    for at, comment in zip(positions, _validate_all(objects, max_review_chars), strict=True):
        decoded[at] = comment
    return typing.cast(list[Comment | RejectedRecord], decoded)


def _decode_one(raw: bytes | None, input_format: InputFormat, separator: str,
                max_review_chars: int) -> Comment | RejectedRecord:
    try:
        return decode_comment(raw, input_format=input_format, separator=separator,
                              max_review_chars=max_review_chars)
    except RejectedRecord as why:
        return why


def _validate_all(objects: list[dict[str, object]],
                  max_review_chars: int) -> list[Comment | RejectedRecord]:
    """`validate_comment` for each object, with one pydantic call for those that pass it."""
    try:
        comments: list[Comment | RejectedRecord] = list(_COMMENTS.validate_python(objects))
    except ValidationError as exc:
        # The ones that failed (rare) get their reasons one by one; the rest, one call again.
        failed = {error["loc"][0] for error in exc.errors()}
        passed = [o for at, o in enumerate(objects) if at not in failed]
        rest = iter(_validate_all(passed, max_review_chars) if passed else ())
        return [_validate_one(o, max_review_chars) if at in failed else next(rest)
                for at, o in enumerate(objects)]
    # Control characters are rare: one search over every field of the batch, then each
    # comment's own check only when it found one.
    clean = not _CONTROL_CHARS.search("".join(itertools.chain.from_iterable(
        vars(comment).values() for comment in comments)))
    for at, comment in enumerate(comments):
        try:
            check_comment(typing.cast(Comment, comment), max_review_chars,
                          control_chars_checked=clean)
        except RejectedRecord as why:
            comments[at] = why
    return comments


def _validate_one(fields: dict[str, object], max_review_chars: int) -> Comment | RejectedRecord:
    try:
        return validate_comment(fields, max_review_chars=max_review_chars)
    except RejectedRecord as why:
        return why


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
    check_comment(comment, max_review_chars)
    return comment


def check_comment(comment: Comment, max_review_chars: int, *,
                  control_chars_checked: bool = False) -> None:
    """RejectedRecord for a Comment that the model validated but streamapp cannot predict:
    another dataType, a blank text, control characters (unless the caller has searched the
    fields already), a review over the limit."""
    if comment.dataType not in (DATA_TYPE, ""):
        raise RejectedRecord(
            Reason.UNSUPPORTED_DATA_TYPE,
            f"dataType is {comment.dataType!r}; streamapp predicts {DATA_TYPE} records only",
        )
    for name in ("reviewBody", "baseSkuName"):
        if not getattr(comment, name).strip():
            raise RejectedRecord(Reason.BLANK_TEXT, f"the field {name!r} is blank")
    if not control_chars_checked and _CONTROL_CHARS.search("".join(vars(comment).values())):
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
