"""The fan-out hop in batches (streamapp.pipeline.fanout): one inference message per partition
per ingest batch, read back comment by comment beside the model, counted exactly as one
message per comment was. Real broker and worker processes, the real model."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from typing import Any

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner

from streamapp.broker import EmbeddedBroker
from streamapp.decoding import encode_delimited
from streamapp.edges.clients import follow, open_producer, send_all
from streamapp.framing import pack, unpack
from streamapp.pipeline.batchwork import FANNED_OUT_MARK, Rejected, decode_fanned_out
from streamapp.pipeline.fanout import fanned_out_messages
from streamapp.pipeline.ledger import source_of
from streamapp.records import Incoming, Reason, comment_id
from streamapp.settings import Settings
from tests.conftest import StartWorker, collect_outputs, demo_rows, send, wait_until
from tests.test_pipeline import BROKEN, DLQ, RESULTS, category_totals

INFERENCE = "streamapp-inference"
PARTITIONS = 4  # STREAMAPP_PARTITIONS' default: the inference topic's


def payload(record_id: str, row: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"id": record_id, "ts": 1_700_000_000_000, "comment": row, **extra}


def fanned_out(value: bytes, partition: int = 1, offset: int = 7) -> list[tuple[str, int | None,
                                                                             str | None]]:
    """The comments of an inference message: id, timestamp, and what it was decoded despite,
    or the reason it was rejected."""
    record = Incoming(value, INFERENCE, partition, offset, None)
    return [(c.record_id, c.source_ts, c.why.reason) if isinstance(c, Rejected)
            else (c[0], c[1], c[2].recovered) for c, _ in decode_fanned_out(Settings(), [record])]


def test_a_batch_of_comments_as_read_goes_across_and_is_decoded_on_the_other_side() -> None:
    rows = demo_rows(2, seed=40)
    records = [Incoming(orjson.dumps(rows[0]), "comments", 2, 11, 1_700_000_000_000),
               Incoming(b"{broken", "comments", 2, 12, 1_700_000_000_001),
               Incoming(None, "comments", 0, 3, None),
               Incoming(b"\xff\xfe", "comments", 1, 4, 5),
               Incoming(encode_delimited({**rows[1], "reviewBody": "a, b"}).encode(),
                        "comments", 2, 13, 6)]
    [message] = fanned_out_messages(records, 10_000)
    assert fanned_out(message) == [
        ("comments:2:11", 1_700_000_000_000, None),
        ("comments:2:12", 1_700_000_000_001, Reason.INVALID_JSON),
        ("comments:0:3", None, Reason.EMPTY_VALUE),
        ("comments:1:4", 5, Reason.INVALID_UTF8),
        ("comments:2:13", 6, "separator_in_review")]
    read_back = decode_fanned_out(Settings(), [Incoming(message, INFERENCE, 0, 0, 0)])
    [rejected] = [c for c, _ in read_back
                  if isinstance(c, Rejected) and c.record_id == "comments:1:4"]
    assert rejected.value == b"\xff\xfe"  # the original bytes, for the dead letter
    # Cut to the producer's limit, in order; a record larger than the limit alone.
    big = Incoming(b"x" * 5000, "comments", 2, 14, 7)
    cut = list(fanned_out_messages([*records, big, *records], 500))
    assert len(cut) > 3 and all(len(m) <= 500 for m in cut if len(fanned_out(m)) > 1)
    assert [c[0] for m in cut for c in fanned_out(m)] == [
        r.id for r in [*records, big, *records]]


def test_a_batch_message_reads_back_as_its_comments_in_their_lanes() -> None:
    rows = demo_rows(3, seed=41)
    ids = ["comments:0:12", "comments:2:5", "comments:0:13"]
    value = orjson.dumps([payload(ids[0], rows[0]), payload(ids[1], rows[1]),
                          payload(ids[2], rows[2], recovered="separator_in_review")])
    assert fanned_out(value) == [(ids[0], 1_700_000_000_000, None),
                                 (ids[1], 1_700_000_000_000, None),
                                 (ids[2], 1_700_000_000_000, "separator_in_review")]
    # Each comment is counted in the lane and at the offset it had as a message of its own.
    message = Incoming(value, INFERENCE, 1, 7, None)
    assert [source_of(message, i) for i in ids] == [
        (f"{INFERENCE}:1>comments:0", 12), (f"{INFERENCE}:1>comments:2", 5),
        (f"{INFERENCE}:1>comments:0", 13)]
    # A worker before batches wrote one payload object per message: still one comment.
    assert fanned_out(orjson.dumps(payload(ids[0], rows[0]))) == [
        (ids[0], 1_700_000_000_000, None)]


@pytest.mark.parametrize("value", [
    b"{not json", b"", b"42", b"[]", b"[1, 2]", b'{"id": "x"}',
    orjson.dumps([{"id": 5, "comment": demo_rows(1, seed=42)[0]}]),
    orjson.dumps([{"id": "comments:0:1", "ts": "late", "comment": demo_rows(1, seed=42)[0]}]),
    orjson.dumps([{"id": "comments:0:1", "comment": {"reviewBody": 3}}]),
    orjson.dumps([{"id": "comments:0:1", "recovered": "magic",
                   "comment": demo_rows(1, seed=42)[0]}]),
    # This version's mark on what is not its message.
    FANNED_OUT_MARK, FANNED_OUT_MARK + b"\x00\x00\x00\x09[1, 2, 3]",
    pack({"id": ["comments:0:1"], "ts": [None]}, [b"{}", b"{}"], prefix=FANNED_OUT_MARK),
    pack({"id": [3], "ts": [None]}, [b"{}"], prefix=FANNED_OUT_MARK),
    pack({"id": [], "ts": []}, [], prefix=FANNED_OUT_MARK),
    pack({"id": ["comments:0:1"], "ts": [None]}, [b"{}"], prefix=FANNED_OUT_MARK) + b"more",
])
def test_anything_else_on_the_inference_topic_is_rejected_whole(value: bytes) -> None:
    assert fanned_out(value) == [(f"{INFERENCE}:1:7", None, "invalid_json")]


@pytest.mark.parametrize("values", [[], [b"a", b"", b"bc" * 100], [b"a", None, b"c"], [None]])
def test_a_frame_reads_back_its_values(values: list[bytes | None]) -> None:
    assert unpack(pack({"id": "x"}, values)) == ({"id": "x"}, values)
    assert unpack(b"mark" + pack({}, values, prefix=b""), 4) == ({}, values)


@pytest.mark.parametrize("lengths", [[1, 5], [1, 0], [2, -2, 2], [1.0, 1], [True, 1], [1, "1"],
                                     [-1, 3]])
def test_a_frame_whose_lengths_do_not_add_up_is_refused(lengths: list[Any]) -> None:
    head = orjson.dumps({"lengths": lengths})
    with pytest.raises(ValueError):
        unpack(len(head).to_bytes(4, "big") + head + b"ab")


async def read_topic(broker: str, topic: str) -> list[Any]:
    return [record async for record in follow(broker, [topic], idle_timeout=3.0)]


@pytest.mark.integration
@pytest.mark.parametrize("intake", ["agent", "batch"])
def test_many_comments_in_batches_each_get_one_output_and_count_once(
        broker: EmbeddedBroker, start_worker: StartWorker, intake: str) -> None:
    # Small model batches, a long wait: the inference side takes messages of many comments
    # and has to split them into model batches of at most 16.
    # Fetch chunks on: with Faust's per-record events the ingest agent's takes hold as many
    # comments as arrived within its 5 ms wait, which on a slow machine was ~2 a message.
    worker = start_worker(intake=intake, batch_size="16", batch_wait_ms="200",
                          fetch_chunks="true", ready_topic=INFERENCE)
    rows = demo_rows(1500, seed=43)
    values = [orjson.dumps(r) for r in rows]
    for i, (raw, _) in enumerate(BROKEN):  # broken ones among them
        values.insert(100 * i + 50, raw)
    ids = send(broker, values)
    reason_of = {ids[values.index(raw)]: reason for raw, reason in BROKEN}

    outputs = collect_outputs(broker.url, [RESULTS, DLQ], set(ids), timeout=180)

    assert set(outputs) == set(ids), f"missing: {sorted(set(ids) - set(outputs))[:10]}"
    sizes = []
    for record_id, produced in outputs.items():
        assert len(produced) == 1, f"{record_id} has {len(produced)} outputs: {produced}"
        [(topic, value)] = produced
        if record_id in reason_of:
            assert (topic, value["reason"]) == (DLQ, reason_of[record_id])
        else:
            assert topic == RESULTS and value["id"] == record_id, value
            sizes.append(value["timing"]["batch_size"])
    assert max(sizes) == 16, "the model batches are at most batch_size, and filled"
    expected = Counter(str(r["categoryFirstName"]) for r in rows)
    wait_until(lambda: category_totals([worker]) == expected, 30, "table counts")
    wait_until(lambda: worker.stats()["dead_letters"] == Counter(r for _, r in BROKEN), 30,
               "dead-letter counts")
    assert worker.stats()["agents"]["records"] == len(rows)

    # Far fewer messages than comments, each on the partition its comments' ids are keyed
    # to, and every lane (inference partition > comment partition) in offset order.
    messages = asyncio.run(read_topic(broker.url, INFERENCE))
    assert len(messages) < len(rows) / 3
    keyed = DefaultPartitioner()
    lanes: dict[str, list[int]] = defaultdict(list)
    for message in messages:
        for record_id, _, _ in fanned_out(message.value, message.partition, message.offset):
            partitions = list(range(PARTITIONS))
            assert keyed(record_id.encode(), partitions, partitions) == message.partition
            lane, offset = source_of(Incoming(message.value, INFERENCE, message.partition,
                                              message.offset, None), record_id)
            lanes[lane].append(offset)
    assert sum(map(len, lanes.values())) == len(values)  # the broken ones cross too
    assert all(offsets == sorted(offsets) for offsets in lanes.values())


@pytest.mark.integration
def test_foreign_and_old_messages_on_the_inference_topic(
        broker: EmbeddedBroker, start_worker: StartWorker) -> None:
    worker = start_worker()
    rows = demo_rows(3, seed=44)
    # Before an upgrade: one payload object per comment, keyed by its id.
    old = [(f"comments:0:{900 + n}", orjson.dumps(payload(f"comments:0:{900 + n}", row)))
           for n, row in enumerate(rows)]
    foreign = [b"{not json", b'{"hello": "world"}', b"[1, 2, 3]", b"[]"]

    async def produce() -> list[str]:
        async with open_producer(broker.url) as producer:
            for key, value in old:
                await send_all(producer, INFERENCE, [value], key=key.encode())
            sent = await send_all(producer, INFERENCE, foreign)
        return [comment_id(m.topic, m.partition, m.offset) for m in sent]

    foreign_ids = asyncio.run(produce())
    old_ids = [key for key, _ in old]
    outputs = collect_outputs(broker.url, [RESULTS, DLQ], {*old_ids, *foreign_ids})

    for record_id, row in zip(old_ids, rows, strict=True):
        [(topic, value)] = outputs[record_id]
        assert topic == RESULTS and value["baseSkuName"] == row["baseSkuName"]
        assert value["timing"]["source_ts"] == 1_700_000_000_000
    for record_id, raw in zip(foreign_ids, foreign, strict=True):
        [(topic, value)] = outputs[record_id]
        assert (topic, value["reason"], value["value"]) == (DLQ, "invalid_json", raw.decode())
    expected = Counter(str(r["categoryFirstName"]) for r in rows)
    wait_until(lambda: category_totals([worker]) == expected, 30, "table counts")
    wait_until(lambda: worker.stats()["dead_letters"] == {"invalid_json": len(foreign)}, 30,
               "dead-letter counts")
    assert worker.proc is not None and worker.proc.poll() is None
    assert "Traceback" not in worker.log_path.read_text(errors="replace")


@pytest.mark.integration
def test_the_key_partitioner_outlives_a_metadata_refresh_without_its_topic(
        broker: EmbeddedBroker) -> None:
    """A worker's first ingest batch once failed (`TypeError: 'NoneType' object is not
    iterable`): the producer's metadata, refreshed as the worker created its output topics,
    held the inference topic no more when the batch asked for its partitions."""
    from aiokafka import AIOKafkaProducer

    from streamapp.application import create_app
    from streamapp.edges.clients import create_topic
    from streamapp.pipeline.batches import key_partitioner
    from streamapp.settings import Settings

    async def run() -> tuple[list[int], list[int]]:
        await create_topic(broker.url, INFERENCE, PARTITIONS)
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        try:
            app = create_app(Settings(store="memory"))
            app.transactional_producer = producer  # the producer the data path takes
            partition_of = await key_partitioner(app, INFERENCE)
            producer._metadata._partitions.pop(INFERENCE)  # a refresh without the topic
            keys = [f"comments:0:{offset}".encode() for offset in range(200)]
            partitions = list(range(PARTITIONS))
            expected = [DefaultPartitioner()(key, partitions, partitions) for key in keys]
            return [partition_of(key) for key in keys], expected
        finally:
            await producer.stop()

    got, expected = asyncio.run(run())
    assert got == expected and set(got) == set(range(PARTITIONS))


def test_the_key_partitioner_is_kafkas_default_partitioner() -> None:
    """murmur2 in C lands every key where aiokafka's (pure-Python) default partitioner does."""
    from streamapp.pipeline.batches import kafka_partition

    keys = [f"comments:{p}:{offset}".encode() for p in range(3) for offset in range(3000)]
    keys += ["生鲜/水果/苹果".encode(), b"", b"\xff" * 7, b"x" * 1001]
    for count in (1, 3, 4, 8, 13):
        partitions = list(range(count))
        assert [kafka_partition(key, partitions) for key in keys] == [
            DefaultPartitioner()(key, partitions, partitions) for key in keys]


def test_a_message_is_within_the_limit_whatever_the_topic_names_and_numbers() -> None:
    """The cut counts each comment's id, timestamp and length with its value: long topic
    names and the largest numbers still fit."""
    topic = "t" * 249  # Kafka's longest topic name
    records = [Incoming(b"v" * (n % 50), topic, 2**31 - 1, 2**63 - 1 - n, 2**63 - 1)
               for n in range(200)]
    for limit in (600, 1000, 5000):
        cut = list(fanned_out_messages(records, limit))
        assert all(len(m) <= limit for m in cut), limit
        assert [c[0] for m in cut for c in fanned_out(m)] == [r.id for r in records]


def test_the_worker_counts_a_messages_comments_from_its_header() -> None:
    """How the batch path cuts inference records into model batches of batch_size comments."""
    from streamapp.pipeline.batchwork import comments_in

    records = [Incoming(b"{}", "comments", 0, n, None) for n in range(7)]
    [message] = fanned_out_messages(records, 10_000)
    assert comments_in(message) == 7
    # At most a model batch of comments a message, in order.
    cut = list(fanned_out_messages(records, 10_000, most=3))
    assert [comments_in(m) for m in cut] == [3, 3, 1]
    assert [c[0] for m in cut for c in fanned_out(m)] == [r.id for r in records]
    old = orjson.dumps([payload("comments:0:1", demo_rows(1, seed=45)[0])] * 3)
    assert [comments_in(v) for v in (old, b"", None, FANNED_OUT_MARK + b"garbage")] == [1] * 4
