"""Tests for the message contracts: decoding comments, rejection reasons, output models."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any, get_args

import orjson
import pytest
from pydantic import ValidationError

from streamapp.decoding import (
    decode_comment,
    decode_comments,
    encode_delimited,
    separator_in_review,
)
from streamapp.records import (
    COLUMNS,
    DATA_TYPE,
    RECOVERED_COMMENTS,
    Comment,
    DeadLetter,
    ModelRef,
    Reason,
    Recovery,
    RejectedRecord,
    SkuMatchResult,
    Timing,
    comment_id,
    original_value,
    result_json,
)

ROW: dict[str, str] = {
    "dataType": DATA_TYPE,
    "baseSkuName": "山东烟台红富士苹果 5斤装",
    "reviewBody": "苹果很甜，脆爽多汁，物流很快，好评！",
    "categoryFirstName": "生鲜",
    "categorySecondName": "水果",
    "categoryThirdName": "苹果",
    "categoryFourthName": "",
    "categoryFifthName": "",
}

_DROP = object()  # marks a field to leave out of the JSON object


def as_json(**changes: Any) -> bytes:
    """ROW as the seed's serialize=0 JSON object, with fields changed or dropped."""
    row: dict[str, Any] = dict(ROW)
    for name, value in changes.items():
        if value is _DROP:
            row.pop(name)
        else:
            row[name] = value
    return orjson.dumps(row)


def as_delimited(sep: str = ",", **changes: str) -> bytes:
    """ROW as the seed's serialize=1 delimited line, with fields changed."""
    row = {**ROW, **changes}
    return sep.join(row[c] for c in COLUMNS).encode()


def rejected(raw: bytes | None, **kwargs: Any) -> RejectedRecord:
    with pytest.raises(RejectedRecord) as info:
        decode_comment(raw, **kwargs)
    assert info.value.error, "a rejection must say why in words"
    assert str(info.value) == info.value.error
    return info.value


# --- valid records in both encodings ----------------------------------------------------


def test_json_object_decodes_every_field() -> None:
    comment = decode_comment(as_json())
    assert comment.model_dump() == ROW


@pytest.mark.parametrize("sep", [",", "\x01", "|", "\t", "|+|"])
def test_delimited_decodes_every_field_with_any_separator(sep: str) -> None:
    comment = decode_comment(as_delimited(sep), separator=sep)
    assert comment.model_dump() == ROW


@pytest.mark.parametrize("ending", ["\n", "\r\n"])
def test_delimited_line_ending_is_not_part_of_the_last_column(ending: str) -> None:
    raw = as_delimited(categoryFifthName="散装") + ending.encode()
    assert decode_comment(raw).categoryFifthName == "散装"


def test_json_ignores_extra_fields_and_defaults_missing_categories() -> None:
    raw = orjson.dumps({"baseSkuName": "海南香蕉 3斤", "reviewBody": "香蕉很新鲜", "label": 1})
    comment = decode_comment(raw)
    assert comment.dataType == DATA_TYPE
    assert comment.categories == []
    assert not hasattr(comment, "label")


def test_json_surrounded_by_whitespace_decodes() -> None:
    assert decode_comment(b" \n" + as_json() + b"\n ").model_dump() == ROW


@pytest.mark.parametrize(
    ("input_format", "raw", "reason"),
    [
        ("auto", as_json(), None),
        ("auto", as_delimited(), None),
        ("json", as_json(), None),
        ("json", as_delimited(), Reason.INVALID_JSON),
        ("delimited", as_delimited(), None),
        ("delimited", b'{"baseSkuName": "a", "reviewBody": "b"}', Reason.BAD_COLUMN_COUNT),
        # Eight JSON fields split into eight "columns": the first is not a dataType.
        ("delimited", as_json(), Reason.UNSUPPORTED_DATA_TYPE),
        ("delimited", b"42", Reason.BAD_COLUMN_COUNT),
    ],
)
def test_input_format(input_format: Any, raw: bytes, reason: str | None) -> None:
    if reason is None:
        assert decode_comment(raw, input_format=input_format).model_dump() == ROW
    else:
        assert rejected(raw, input_format=input_format).reason == reason


# --- every kind of rejection ------------------------------------------------------------

REJECTIONS: list[tuple[str, bytes | None, str]] = [
    ("truncated JSON", b'{"baseSkuName": "broken export", "reviewBody": ', Reason.INVALID_JSON),
    ("JSON with bare words", b"{baseSkuName: x}", Reason.INVALID_JSON),
    ("JSON trailing garbage", as_json() + b"}", Reason.INVALID_JSON),
    ("array that is not JSON", b"[1, 2", Reason.INVALID_JSON),
    ("latin-1 bytes", "Café crème".encode("latin-1"), Reason.INVALID_UTF8),
    ("cut multi-byte char", b'{"reviewBody": "' + "苹".encode()[:2] + b'"}', Reason.INVALID_UTF8),
    ("lone 0xff", b"\xff", Reason.INVALID_UTF8),
    ("JSON array", b'[{"baseSkuName": "a", "reviewBody": "b"}]', Reason.NOT_AN_OBJECT),
    ("empty JSON array", b"[]", Reason.NOT_AN_OBJECT),
    ("JSON number", b"42", Reason.NOT_AN_OBJECT),
    ("JSON float", b"-1.5e3", Reason.NOT_AN_OBJECT),
    ("JSON null", b"null", Reason.NOT_AN_OBJECT),
    ("JSON true", b"true", Reason.NOT_AN_OBJECT),
    ("JSON quoted string", b'"just a review"', Reason.NOT_AN_OBJECT),
    ("empty bytes", b"", Reason.EMPTY_VALUE),
    ("no value (tombstone)", None, Reason.EMPTY_VALUE),
    ("whitespace only", b" \t\r\n  ", Reason.EMPTY_VALUE),
    ("BOM and whitespace only", "\ufeff \n".encode(), Reason.EMPTY_VALUE),
    ("missing reviewBody", as_json(reviewBody=_DROP), Reason.MISSING_FIELD),
    ("missing baseSkuName", as_json(baseSkuName=_DROP), Reason.MISSING_FIELD),
    ("empty JSON object", b"{}", Reason.MISSING_FIELD),
    ("empty reviewBody", as_json(reviewBody=""), Reason.BLANK_TEXT),
    ("spaces reviewBody", as_json(reviewBody="   "), Reason.BLANK_TEXT),
    ("tab/newline reviewBody", as_json(reviewBody="\t\r\n"), Reason.BLANK_TEXT),
    ("ideographic space reviewBody", as_json(reviewBody="\u3000\u3000"), Reason.BLANK_TEXT),
    ("empty baseSkuName", as_json(baseSkuName=""), Reason.BLANK_TEXT),
    ("spaces baseSkuName", as_json(baseSkuName="  "), Reason.BLANK_TEXT),
    ("delimited empty review", as_delimited(reviewBody=""), Reason.BLANK_TEXT),
    ("delimited blank review", as_delimited(reviewBody="  "), Reason.BLANK_TEXT),
    ("delimited empty SKU name", as_delimited(baseSkuName=""), Reason.BLANK_TEXT),
    ("NUL review", as_json(reviewBody="\x00"), Reason.CONTROL_CHARACTERS),
    ("NUL inside review", as_json(reviewBody="很好\x00吃"), Reason.CONTROL_CHARACTERS),
    ("BEL review", as_json(reviewBody="ding\x07"), Reason.CONTROL_CHARACTERS),
    ("ANSI escape review", as_json(reviewBody="\x1b[31mred"), Reason.CONTROL_CHARACTERS),
    ("vertical tab review", as_json(reviewBody="a\x0bb"), Reason.CONTROL_CHARACTERS),
    ("form feed review", as_json(reviewBody="a\x0cb"), Reason.CONTROL_CHARACTERS),
    ("DEL review", as_json(reviewBody="a\x7fb"), Reason.CONTROL_CHARACTERS),
    ("unit separator review", as_json(reviewBody="a\x1fb"), Reason.CONTROL_CHARACTERS),
    ("NUL SKU name", as_json(baseSkuName="苹果\x00"), Reason.CONTROL_CHARACTERS),
    ("delimited NUL review", as_delimited(reviewBody="a\x00b"), Reason.CONTROL_CHARACTERS),
    ("delimited 7 columns", b",".join(as_delimited().split(b",")[:7]), Reason.BAD_COLUMN_COUNT),
    # An extra column after a three-level path leaves a gap in the last five: not a review's.
    ("delimited 9 columns", as_delimited() + b",extra", Reason.BAD_COLUMN_COUNT),
    ("delimited one column", b"just some words", Reason.BAD_COLUMN_COUNT),
    ("other dataType", as_json(dataType="COMMENT_SHORT_TEXT"), Reason.UNSUPPORTED_DATA_TYPE),
    ("lowercase dataType", as_json(dataType=DATA_TYPE.lower()), Reason.UNSUPPORTED_DATA_TYPE),
    ("delimited other dataType", as_delimited(dataType="ORDER"), Reason.UNSUPPORTED_DATA_TYPE),
]


@pytest.mark.parametrize(
    ("raw", "reason"), [(raw, reason) for _, raw, reason in REJECTIONS],
    ids=[name for name, _, _ in REJECTIONS],
)
def test_rejection_reason(raw: bytes | None, reason: str) -> None:
    assert rejected(raw).reason == reason


@pytest.mark.parametrize(
    ("raw", "reason"),
    [(b"42", Reason.NOT_AN_OBJECT), (b"null", Reason.NOT_AN_OBJECT),
     (b'"text"', Reason.NOT_AN_OBJECT), (b"[]", Reason.NOT_AN_OBJECT),
     (b"not json", Reason.INVALID_JSON), (b"", Reason.EMPTY_VALUE)],
)
def test_rejection_reason_with_json_format(raw: bytes, reason: str) -> None:
    assert rejected(raw, input_format="json").reason == reason


@pytest.mark.parametrize("field", ["reviewBody", "baseSkuName"])
def test_missing_field_names_the_field(field: str) -> None:
    error = rejected(as_json(**{field: _DROP}))
    assert error.reason == Reason.MISSING_FIELD
    assert field in error.error


@pytest.mark.parametrize(
    "field", ["reviewBody", "baseSkuName", "dataType", "categoryFirstName", "categoryFifthName"]
)
@pytest.mark.parametrize("value", [42, 1.5, True, ["a"], {"a": "b"}])
def test_wrong_type(field: str, value: object) -> None:
    error = rejected(as_json(**{field: value}))
    assert error.reason == Reason.WRONG_TYPE
    assert field in error.error


@pytest.mark.parametrize("field", ["reviewBody", "baseSkuName", "dataType"])
def test_null_text_field_is_wrong_type(field: str) -> None:
    error = rejected(as_json(**{field: None}))
    assert error.reason == Reason.WRONG_TYPE
    assert field in error.error


def test_null_category_is_an_empty_level() -> None:
    raw = as_json(categorySecondName=None, categoryThirdName=None, categoryFifthName=None)
    comment = decode_comment(raw)
    assert comment.categorySecondName == ""
    assert comment.categoryThirdName == ""
    assert comment.categories == ["生鲜"]


@pytest.mark.parametrize("review", ["第一行\n第二行", "列1\t列2", "windows\r\nline", "末尾\n"])
def test_tab_and_newline_are_allowed_in_a_review(review: str) -> None:
    assert decode_comment(as_json(reviewBody=review)).reviewBody == review


# --- byte-order mark --------------------------------------------------------------------


def test_bom_is_stripped_from_json() -> None:
    comment = decode_comment("\ufeff".encode() + as_json())
    assert comment.model_dump() == ROW


def test_bom_is_stripped_from_delimited() -> None:
    # With the BOM kept, dataType would read "\ufeffCOMMENT_LONG_TEXT" and be rejected.
    comment = decode_comment("\ufeff".encode() + as_delimited())
    assert comment.dataType == DATA_TYPE
    assert comment.model_dump() == ROW


def test_bom_with_json_format() -> None:
    assert decode_comment("\ufeff".encode() + as_json(), input_format="json").model_dump() == ROW


# --- size limits ------------------------------------------------------------------------


@pytest.mark.parametrize("char", ["a", "苹", "😀"])
def test_review_at_the_limit_passes_and_one_more_char_is_too_large(char: str) -> None:
    assert decode_comment(as_json(reviewBody=char * 50), max_review_chars=50).reviewBody
    error = rejected(as_json(reviewBody=char * 51), max_review_chars=50)
    assert error.reason == Reason.TOO_LARGE
    assert "51" in error.error


def test_review_over_the_default_limit_is_too_large() -> None:
    assert decode_comment(as_json(reviewBody="好" * 20_000)).reviewBody
    assert rejected(as_json(reviewBody="好" * 20_001)).reason == Reason.TOO_LARGE


def test_delimited_review_over_the_limit_is_too_large() -> None:
    assert rejected(as_delimited(reviewBody="x" * 11), max_review_chars=10).reason == (
        Reason.TOO_LARGE
    )


def test_review_of_four_byte_chars_at_the_limit_passes_the_byte_precheck() -> None:
    # 2000 emoji = 8000 bytes, more than 4096 of slack: the byte bound must scale with chars.
    raw = as_json(reviewBody="😀" * 2000)
    assert len(raw) > 8000
    assert decode_comment(raw, max_review_chars=2000).reviewBody == "😀" * 2000


def test_review_within_the_limit_written_with_json_unicode_escapes_is_accepted() -> None:
    # The stdlib's json.dumps (ensure_ascii=True by default, like many exporters) writes each
    # CJK character as a 6-byte \uXXXX escape; the review is still within the default limit.
    review = "好" * 20_000
    raw = json.dumps({**ROW, "reviewBody": review}).encode()
    assert decode_comment(raw).reviewBody == review


@pytest.mark.parametrize(
    "raw",
    [
        b'{"baseSkuName": "a", "reviewBody": "' + b"x" * 3_000_000 + b'"}',
        b"\xff" * 3_000_000,  # invalid UTF-8: the size is checked before any decoding
        b"[" * 3_000_000,  # invalid JSON
        b"\x00" * 3_000_000,
    ],
    ids=["huge review", "huge invalid utf8", "huge invalid json", "huge NUL"],
)
def test_multi_megabyte_value_is_too_large(raw: bytes) -> None:
    assert rejected(raw).reason == Reason.TOO_LARGE


def test_size_is_checked_before_decoding_with_a_small_limit() -> None:
    # Over 12 bytes (a JSON-escaped surrogate pair) per allowed character plus slack, and
    # not UTF-8 either.
    raw = b"\xff" * (12 * 10 + 4096 + 1)
    assert rejected(raw, max_review_chars=10).reason == Reason.TOO_LARGE
    assert rejected(b"\xff" * 100, max_review_chars=10).reason == Reason.INVALID_UTF8


# --- unusual but valid text -------------------------------------------------------------

UNUSUAL_TEXT = [
    "太好吃了😀👍🏻🇨🇳",
    "一家人👨‍👩‍👧都爱吃",  # ZWJ sequence
    "𠀀𪚥𰻞𱍐 生僻字",  # CJK extensions B and G, outside the BMP
    "龘靐齉爩 繁體字",
    "「好评」——物超所值！～",
    "e\u0301 combining accent",
]


@pytest.mark.parametrize("text", UNUSUAL_TEXT)
def test_emoji_and_rare_cjk_are_valid_in_json(text: str) -> None:
    comment = decode_comment(as_json(reviewBody=text, baseSkuName=text, categoryFirstName=text))
    assert comment.reviewBody == text
    assert comment.baseSkuName == text
    assert comment.categoryFirstName == text


@pytest.mark.parametrize("text", UNUSUAL_TEXT)
def test_emoji_and_rare_cjk_are_valid_in_delimited(text: str) -> None:
    comment = decode_comment(as_delimited(reviewBody=text, baseSkuName=text))
    assert comment.reviewBody == text
    assert comment.baseSkuName == text


# --- Comment properties -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("levels", "categories", "path", "first"),
    [
        (["生鲜", "水果", "苹果", "", ""], ["生鲜", "水果", "苹果"], "生鲜/水果/苹果", "生鲜"),
        (["a", "b", "c", "d", "e"], ["a", "b", "c", "d", "e"], "a/b/c/d/e", "a"),
        (["a", "", "c", "", ""], ["a", "", "c"], "a//c", "a"),
        (["", "", "", "", ""], [], "(none)", "(none)"),
        (["", "b", "", "", ""], ["", "b"], "/b", "(none)"),
    ],
)
def test_comment_category_properties(
    levels: list[str], categories: list[str], path: str, first: str
) -> None:
    comment = Comment(
        baseSkuName="s", reviewBody="r", **dict(zip(COLUMNS[3:], levels, strict=True))
    )
    assert comment.categories == categories
    assert comment.category_path == path
    assert comment.first_category == first


def test_comment_is_frozen_and_strict() -> None:
    comment = decode_comment(as_json())
    with pytest.raises(ValidationError):
        comment.reviewBody = "changed"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        Comment(baseSkuName="s", reviewBody=5)  # type: ignore[arg-type]


# --- encode_delimited round trip --------------------------------------------------------


@pytest.mark.parametrize("sep", [",", "\x01", "\t", "||"])
@pytest.mark.parametrize(
    "row",
    [
        ROW,
        {**ROW, "categoryFourthName": "红富士", "categoryFifthName": "5斤"},
        {**ROW, "reviewBody": "😀𰻞 多行\n评论"},
        {"dataType": DATA_TYPE, "baseSkuName": "海南香蕉", "reviewBody": "新鲜"},
        {**ROW, "categorySecondName": None, "label": 1},
    ],
    ids=["full", "five-levels", "emoji-newline", "no-categories", "none-and-extra"],
)
def test_encode_delimited_round_trip(row: dict[str, object], sep: str) -> None:
    text = encode_delimited(row, sep)
    assert text.count(sep) == len(COLUMNS) - 1
    comment = decode_comment(text.encode(), separator=sep)
    for name in COLUMNS:
        assert getattr(comment, name) == (row.get(name) or ""), name


def test_encode_delimited_column_order() -> None:
    row = {name: f"v{i}" for i, name in enumerate(COLUMNS)}
    assert encode_delimited(row, "|") == "v0|v1|v2|v3|v4|v5|v6|v7"


# --- original_value ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, (None, False)),
        (b"", ("", False)),
        (b'{"a": 1}', ('{"a": 1}', False)),
        ("苹果😀".encode(), ("苹果😀", False)),
    ],
)
def test_original_value_text(raw: bytes | None, expected: tuple[str | None, bool]) -> None:
    assert original_value(raw) == expected


@pytest.mark.parametrize("raw", [b"\xff\xfe\x00", "Café".encode("latin-1"), "苹".encode()[:2]])
def test_original_value_base64_for_non_utf8(raw: bytes) -> None:
    value, is_base64 = original_value(raw)
    assert is_base64 is True
    assert value is not None
    assert base64.b64decode(value) == raw


# --- output models ----------------------------------------------------------------------


def _result(**changes: Any) -> dict[str, Any]:
    sample: dict[str, Any] = {
        "id": comment_id("comments", 3, 1042),
        "match": True,
        "score": 0.93,
        "model": {"name": "demo", "version": "abc123"},
        "baseSkuName": ROW["baseSkuName"],
        "categories": ["生鲜", "水果", "苹果"],
        "categoryPath": "生鲜/水果/苹果",
        "timing": {"source_ts": 1_700_000_000_000, "queued_ms": 12.5, "compute_ms": 3.25,
                   "batch_size": 16, "predicted_at": 1_700_000_000_020},
    }
    sample.update(changes)
    return sample


def test_comment_id() -> None:
    assert comment_id("comments", 3, 1042) == "comments:3:1042"


def test_sku_match_result_validates_and_round_trips() -> None:
    result = SkuMatchResult.model_validate(_result())
    assert result.id == "comments:3:1042"
    assert result.model.name == "demo"
    assert result.timing.batch_size == 16
    assert SkuMatchResult.model_validate_json(result.model_dump_json()) == result


@pytest.mark.parametrize(
    "changes",
    [{"score": 1.5}, {"score": -0.1}, {"model": {"name": "demo"}}, {"timing": {}},
     {"categories": "生鲜"}],
)
def test_sku_match_result_rejects_bad_samples(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        SkuMatchResult.model_validate(_result(**changes))


def test_dead_letter_validates_and_round_trips() -> None:
    value, is_base64 = original_value(b"\xff\xfe")
    letter = DeadLetter(id="comments:0:7", reason=Reason.INVALID_UTF8, error="not UTF-8",
                        value=value, value_base64=is_base64, source_ts=None,
                        failed_at=1_700_000_000_000)
    assert DeadLetter.model_validate_json(letter.model_dump_json()) == letter
    minimal = DeadLetter.model_validate(
        {"id": "c:0:1", "reason": Reason.EMPTY_VALUE, "error": "no value", "value": None,
         "failed_at": 1}
    )
    assert minimal.value_base64 is False
    assert minimal.source_ts is None
    with pytest.raises(ValidationError):
        DeadLetter.model_validate({"id": "c:0:1", "reason": "x", "error": "y", "value": None})


def test_reason_codes_are_stable() -> None:
    codes = {v for k, v in vars(Reason).items() if k.isupper()}
    assert codes == {
        "empty_value", "invalid_utf8", "invalid_json", "not_an_object", "bad_column_count",
        "missing_field", "wrong_type", "blank_text", "control_characters", "too_large",
        "unsupported_data_type", "model_error", "bad_model_output",
    }


def test_an_empty_data_type_column_means_the_default() -> None:
    comment = decode_comment(as_delimited(dataType=""))
    assert comment.dataType == ""
    assert comment.reviewBody


def test_a_dead_letter_carries_the_original_or_its_first_bytes_with_size_and_hash() -> None:
    from streamapp.records import dead_letter

    small = dead_letter("c:0:1", "invalid_json", "x", b"{bad", source_ts=None, failed_at=1)
    assert (small.value, small.value_truncated, small.value_bytes) == ("{bad", False, 4)
    text = "苹果".encode() * 1000  # 6000 bytes; 3 bytes a character
    cut = dead_letter("c:0:2", "too_large", "x", text, source_ts=None, failed_at=1,
                      max_value_bytes=1001)  # cuts through a character
    assert cut.value_truncated and not cut.value_base64
    assert cut.value == "苹果" * 166 + "苹" and cut.value_bytes == 6000
    assert cut.value_sha256 == hashlib.sha256(text).hexdigest()
    binary = dead_letter("c:0:3", "invalid_utf8", "x", b"\xff" * 5000, source_ts=None,
                         failed_at=1, max_value_bytes=1024)
    assert binary.value_base64 and base64.b64decode(binary.value or "") == b"\xff" * 1024
    empty = dead_letter("c:0:4", "empty_value", "x", None, source_ts=None, failed_at=1)
    assert (empty.value, empty.value_bytes, empty.value_sha256) == (None, 0, None)


@pytest.mark.parametrize("row", [ROW, {**ROW, "categoryThirdName": "", "categoryFourthName": ""},
                                 {"baseSkuName": "可乐", "reviewBody": "好喝"}])
@pytest.mark.parametrize("source_ts", [1764393600123, None])
@pytest.mark.parametrize("outputs", [None, {"match": 1, "probability(1)": 0.8125}])
def test_result_json_is_the_result_models_own_json(row: dict[str, str], source_ts: int | None,
                                                   outputs: dict[str, Any] | None) -> None:
    comment = Comment.model_validate(row)
    timing = {"source_ts": source_ts, "queued_ms": 12.345 if source_ts else 0.0,
              "compute_ms": 3.5, "batch_started_at": 1764393600200, "batch_size": 17,
              "predicted_at": 1764393600250}
    fast = result_json("comments:1:42", comment, comment.categories, comment.category_path,
                       score=0.8125, match=True,
                       model={"name": "demo", "version": "3"}, timing=timing, outputs=outputs)
    built = SkuMatchResult(
        id="comments:1:42", match=True, score=0.8125, model=ModelRef(name="demo", version="3"),
        baseSkuName=comment.baseSkuName, categories=comment.categories,
        categoryPath=comment.category_path, timing=Timing(**timing), outputs=outputs)
    assert fast == built.model_dump_json().encode()
    assert (b'"outputs"' in fast) == (outputs is not None)  # absent for models without
    assert SkuMatchResult.model_validate_json(fast) == built


def test_decoding_from_bytes_and_from_text_agree() -> None:
    """The JSON fast path (bytes straight to orjson) and the text path give the same comment,
    and a value the fast path refuses still gets the text path's reason."""
    value = orjson.dumps(ROW)
    assert decode_comment(value) == decode_comment(b" " + value)  # leading space: text path
    assert decode_comment(b"\xef\xbb\xbf" + value) == decode_comment(value)  # BOM: text path
    with pytest.raises(RejectedRecord) as broken:
        decode_comment(b'{"baseSkuName": "\xff"}')
    assert broken.value.reason == Reason.INVALID_UTF8


def _outcome(raw: bytes | None, **options: Any) -> object:
    try:
        comment = decode_comment(raw, **options)
    except RejectedRecord as why:
        return why.reason, why.error
    return type(comment), comment.model_dump(), comment.model_fields_set


@pytest.mark.parametrize("options", [{}, {"input_format": "json"},
                                     {"input_format": "delimited", "separator": "|"},
                                     {"max_review_chars": 12}])
def test_a_batch_decodes_as_its_comments_one_by_one(options: dict[str, Any]) -> None:
    """decode_comments (the model process's, one pydantic call per batch) gives each value
    what decode_comment gives it alone, whatever the bad values around it."""
    good = [as_json(reviewBody=f"第{i}条评论，苹果很甜") for i in range(6)]
    odd = [as_json(categoryThirdName=None), as_json(categoryFirstName="生\x85鲜"),
           as_json(reviewBody="a\tb\nc"), b'{"a": 1}, {"b": 2}', b"{}"]
    values = [*good[:3], *(raw for _, raw, _ in REJECTIONS), *odd, *good[3:], None]
    for shuffled in (values, values[::-1], good + odd[:1], good[:1], []):
        decoded = decode_comments(shuffled, **options)
        assert [(why.reason, why.error) if isinstance(why, RejectedRecord)
                else (type(why), why.model_dump(), why.model_fields_set) for why in decoded
                ] == [_outcome(raw, **options) for raw in shuffled]


# --- a review that holds the separator (serialize=1 does not quote) -----------------------


@pytest.mark.parametrize("sep", [",", "|", "|+|"])
@pytest.mark.parametrize("review", ["甜,脆", "甜,脆,多汁,好评!", ",开头就是逗号", "结尾是逗号,",
                                    "苹果,,很甜"])
@pytest.mark.parametrize("path", [3, 5, 0])
def test_a_review_holding_the_separator_is_rejoined_and_marked(sep: str, review: str,
                                                               path: int) -> None:
    review = review.replace(",", sep)
    categories = {name: (f"类{i}" if i < path else "") for i, name in
                  enumerate(COLUMNS[3:])}
    comment = decode_comment(as_delimited(sep, reviewBody=review, **categories), separator=sep)
    assert comment.model_dump() == {**ROW, "reviewBody": review, **categories}
    assert comment.recovered == "separator_in_review"
    assert decode_comment(as_delimited(sep), separator=sep).recovered is None
    assert decode_comment(as_json(reviewBody=review)).recovered is None


@pytest.mark.parametrize(
    ("why", "raw", "words"),
    [
        ("no dataType to anchor on", as_delimited(dataType="", reviewBody="甜,脆"),
         "the first is not COMMENT_LONG_TEXT"),
        ("another dataType", as_delimited(dataType="ORDER", reviewBody="甜,脆"),
         "the first is not COMMENT_LONG_TEXT"),
        # A column after a three-level path: the last five are not a path.
        ("extra column", as_delimited() + b",x", "not a category path"),
        ("a gap in the path", as_delimited(reviewBody="甜,脆", categorySecondName=""),
         "not a category path"),
    ],
)
def test_extra_columns_that_cannot_be_the_reviews_are_dead_lettered(why: str, raw: bytes,
                                                                    words: str) -> None:
    error = rejected(raw)
    assert error.reason == Reason.BAD_COLUMN_COUNT, why
    assert words in error.error and "got 9" in error.error and "JSON" in error.error


def test_the_limit_a_sku_or_category_name_holding_the_separator_is_misread() -> None:
    """What the rule cannot see (README): a SKU name's tail is taken for the review's start, a
    category's head for its end. The loader refuses to send such rows delimited."""
    comment = decode_comment(as_delimited(baseSkuName="苹果,5斤装"))
    assert (comment.baseSkuName, comment.recovered) == ("苹果", "separator_in_review")
    assert comment.reviewBody == "5斤装," + ROW["reviewBody"]
    comment = decode_comment(as_delimited(categorySecondName="水果,鲜果"))
    assert comment.reviewBody == ROW["reviewBody"] + ",生鲜"
    assert comment.categories == ["水果", "鲜果", "苹果"]
    with pytest.raises(RejectedRecord) as refused:
        separator_in_review({**ROW, "baseSkuName": "苹果,5斤装"}, ",")
    assert refused.value.reason == Reason.BAD_COLUMN_COUNT
    assert "'baseSkuName' holds the separator" in refused.value.error
    assert separator_in_review({**ROW, "reviewBody": "甜,脆"}, ",") is True
    assert separator_in_review(ROW, ",") is False


def test_a_recovered_result_says_so_in_its_json() -> None:
    comment = decode_comment(as_delimited(reviewBody="甜,脆"))
    timing = {"source_ts": None, "queued_ms": 0.0, "compute_ms": 1.0, "batch_started_at": 1,
              "batch_size": 1, "predicted_at": 2}
    fast = result_json("comments:0:1", comment, comment.categories, comment.category_path,
                       score=0.5, match=True, model={"name": "m", "version": "1"},
                       timing=timing)
    built = SkuMatchResult(
        id="comments:0:1", match=True, score=0.5, model=ModelRef(name="m", version="1"),
        baseSkuName=comment.baseSkuName, categories=comment.categories,
        categoryPath=comment.category_path, timing=Timing(**timing),
        recovered="separator_in_review")
    assert fast == built.model_dump_json().encode()
    assert orjson.loads(fast)["recovered"] == "separator_in_review"
    with pytest.raises(ValidationError):
        SkuMatchResult.model_validate({**orjson.loads(fast), "recovered": "guessed"})


def test_each_recovery_has_a_comment_class_that_names_it_and_keeps_the_fields() -> None:
    assert set(RECOVERED_COMMENTS) == set(get_args(Recovery))
    plain = Comment.model_validate(ROW)
    assert plain.recovered is None and plain.mark_recovered(None) is plain
    for recovery, cls in RECOVERED_COMMENTS.items():
        marked = plain.mark_recovered(recovery)
        assert (type(marked), marked.recovered) == (cls, recovery)
        assert marked.model_dump() == plain.model_dump() and marked != plain
        assert marked.mark_recovered(recovery) is marked
        # Not a field: an input key of that name is ignored, never read as a recovery.
        assert Comment.model_validate({**ROW, "recovered": recovery}).recovered is None
