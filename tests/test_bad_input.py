"""Whatever arrives, the stream goes on: every bad record is dead-lettered with its reason and
its original bytes, every valid neighbour in the same batch is predicted, and a record that
makes the model fail is dead-lettered alone. A real broker, a real worker, the real model."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re

import orjson
import pytest

from streamapp.broker import EmbeddedBroker
from streamapp.edges.clients import open_producer, send_all
from streamapp.records import COLUMNS, DeadLetter, SkuMatchResult, comment_id
from tests.conftest import StartWorker, collect_outputs, demo_rows

pytestmark = pytest.mark.integration

RESULTS, DLQ = "sku-matches", "comments-dlq"
VALID = demo_rows(1, seed=31)[0]


def variant(**changes: object) -> bytes:
    return orjson.dumps({**VALID, **changes})


def without(field: str) -> bytes:
    return orjson.dumps({k: v for k, v in VALID.items() if k != field})


def delimited(columns: int, **changes: str) -> bytes:
    values = [str({**VALID, **changes}.get(c, "")) for c in COLUMNS]
    values = (values + ["extra"] * columns)[:columns]
    return ",".join(values).encode()


# (value, the reason it is dead-lettered for, or None: valid and predicted)
CORPUS: list[tuple[bytes, str | None]] = [
    (b'{"baseSkuName": "cola", "reviewBody": ', "invalid_json"),
    (b"\xff\xfe not utf-8 \xc3\x28", "invalid_utf8"),
    (b"[1, 2, 3]", "not_an_object"),
    (b"42", "not_an_object"),
    (b"null", "not_an_object"),
    (b"", "empty_value"),
    (without("reviewBody"), "missing_field"),
    (without("baseSkuName"), "missing_field"),
    (variant(reviewBody=12345), "wrong_type"),
    (variant(reviewBody=None), "wrong_type"),
    (variant(baseSkuName=["a", "b"]), "wrong_type"),
    (variant(reviewBody={"text": "好吃"}), "wrong_type"),
    (variant(reviewBody="   \t\n  "), "blank_text"),
    (variant(baseSkuName=""), "blank_text"),
    (variant(reviewBody="好吃\x00的苹果"), "control_characters"),
    (variant(reviewBody="好吃\x07的苹果"), "control_characters"),
    (delimited(5), "bad_column_count"),
    # Extra columns after a three-level path: the last five are no path, nothing to rejoin.
    (delimited(11, categoryFourthName="", categoryFifthName=""), "bad_column_count"),
    (variant(reviewBody="很好吃。" * 800_000), "too_large"),  # ~9.6 MB of UTF-8
    (b"\xef\xbb\xbf" + variant(), None),  # a UTF-8 byte-order mark: dropped
    (variant(reviewBody="🍎🍎 苹果超甜，𠀋𪚥𡈽 生僻字也认识 👍"), None),  # emoji, rare CJK
    (delimited(8), None),
    (delimited(8, reviewBody="甜,脆,下次还买"), None),  # the separator in the review: rejoined
    (variant(reviewBody="坏掉的数据 ☠ 让模型崩溃"), "model_error"),
    (variant(reviewBody="☠"), "model_error"),
]


def test_bad_records_are_dead_lettered_and_their_neighbours_predicted(
    broker: EmbeddedBroker, start_worker: StartWorker
) -> None:
    worker = start_worker(handler="tests.handlers.failing:PoisonedSkuMatch",
                          batch_wait_ms="200", max_review_chars="100000")
    valid = [orjson.dumps(r) for r in demo_rows(60, seed=32)]
    # Bad records interleaved with valid ones, all on one partition, so they share batches.
    values: list[bytes] = []
    expected: list[str | None] = []
    for i, (raw, reason) in enumerate(CORPUS):
        values += [raw, *valid[2 * i:2 * i + 2]]
        expected += [reason, None, None]

    async def produce() -> list[str]:
        async with open_producer(broker.url, max_request_size=16 * 2**20) as producer:
            sent = await send_all(producer, "comments", values, partition=0)
        return [comment_id(m.topic, m.partition, m.offset) for m in sent]

    ids = asyncio.run(produce())
    outputs = collect_outputs(broker.url, [RESULTS, DLQ], set(ids), timeout=120)

    assert set(outputs) == set(ids), f"missing: {sorted(set(ids) - set(outputs))}"
    for record_id, raw, reason in zip(ids, values, expected, strict=True):
        [(topic, value)] = outputs[record_id]
        if reason is None:
            assert topic == RESULTS, (raw[:80], value)
            result = SkuMatchResult.model_validate(value)
            assert (result.recovered is None) == ("甜,".encode() not in raw), raw[:80]
            continue
        assert topic == DLQ, (raw[:80], value)
        letter = DeadLetter.model_validate(value)
        assert letter.reason == reason, (raw[:80], letter)
        assert letter.error and letter.id == record_id
        if reason == "model_error":
            assert "device-side assert" in letter.error
            continue  # its value is the validated comment, for a replay
        original = (base64.b64decode(letter.value or "") if letter.value_base64
                    else (letter.value or "").encode())
        assert letter.value_bytes == len(raw)
        assert letter.value_sha256 == hashlib.sha256(raw).hexdigest()
        if letter.value_truncated:  # too large for a message: the first bytes, and the hash
            assert reason == "too_large" and raw.startswith(original)
            assert 200_000 < len(original) <= 256 * 1024
        else:
            assert original == raw, f"{reason}: the dead letter must carry the original bytes"
    batch_sizes = {v[0][1]["timing"]["batch_size"] for v in outputs.values()
                   if v[0][0] == RESULTS}
    assert max(batch_sizes) > 3, "bad and valid records should have shared batches"
    # The worker never restarted: one process, no agent crash, no supervisor restart.
    assert worker.proc is not None and worker.proc.poll() is None
    log = worker.log_path.read_text(errors="replace")
    assert not re.search(r"Restarting dead|Crashed reason|Traceback", log), log[-2000:]
