"""Fetch chunks (streamapp.pipeline.chunks): the comment topic's records of one fetch reach
the agent as one Faust event per partition, acked and committed record by record as before.

Off by default for now (README, "Fetch chunks"); these check the consumer's bookkeeping one
step at a time.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord
from faust.types import TP

from streamapp.application import STREAM_BUFFER_MAXSIZE, create_app
from streamapp.pipeline.chunks import ChunkMessage, incoming_records
from streamapp.pipeline.offsets import SafeOffsetConsumer
from streamapp.records import Incoming
from streamapp.settings import Settings

COMMENTS = TP("comments", 2)
STATS = TP("streamapp-stats", 0)


def _record(tp: TP, offset: int) -> ConsumerRecord[bytes, bytes]:
    value = f"comment {offset}".encode()
    return ConsumerRecord(tp.topic, tp.partition, offset, 1_700_000_000_000 + offset, 0,
                          None, value, None, 0, len(value), ())


def _consumer(**settings: Any) -> SafeOffsetConsumer:
    consumer = create_app(Settings(store="memory", **{"fetch_chunks": True, **settings})).consumer
    assert isinstance(consumer, SafeOffsetConsumer)
    # As in a worker, whose agents read these topics (acks count for them only).
    consumer.app.topics._acking_topics.update({COMMENTS.topic, STATS.topic})
    return consumer


def _deliver(consumer: SafeOffsetConsumer, fetched: dict[TP, list[Any]],
             monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """What Faust's getmany yields for one fetch, through the consumer's own chunking."""
    parent = type(consumer).__mro__[1]

    async def wait_next_records(self: Any, timeout: float) -> tuple[Any, Any]:
        return dict(fetched), set(fetched)

    monkeypatch.setattr(parent, "_wait_next_records", wait_next_records)
    monkeypatch.setattr(consumer, "highwater", lambda tp: 0)
    consumer.flow_active = True

    async def run() -> list[Any]:
        return [message async for _, message in consumer.getmany(timeout=0.1)]

    return asyncio.run(run())


def _ack(consumer: SafeOffsetConsumer, message: Any) -> bool:
    consumer.track_message(message)
    return consumer.ack(message)


def test_a_fetch_of_the_comment_topic_becomes_chunks_and_other_topics_stay_per_record(
        monkeypatch: pytest.MonkeyPatch) -> None:
    consumer = _consumer(batch_size=4)
    fetched = {COMMENTS: [_record(COMMENTS, o) for o in range(10, 20)],
               STATS: [_record(STATS, o) for o in range(3)]}
    messages = _deliver(consumer, fetched, monkeypatch)
    chunks = [m for m in messages if isinstance(m, ChunkMessage)]
    assert [m.offsets for m in chunks] == [[10, 11, 12, 13], [14, 15, 16, 17], [18, 19]]
    assert [m.offset for m in chunks] == [13, 17, 19]  # the fetch loop reads past them
    assert chunks[0].value == tuple(
        Incoming(f"comment {o}".encode(), "comments", 2, o, 1_700_000_000_000 + o)
        for o in range(10, 14))
    assert chunks[0].timestamp == (1_700_000_000_000 + 13) / 1000
    assert [m.offset for m in messages if not isinstance(m, ChunkMessage)] == [0, 1, 2]


def test_chunks_are_off_when_asked_and_when_no_faust_agent_reads_the_comments(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(fetch_chunks=True, fanout=False, intake="batch").chunked_comments is False
    assert Settings().chunked_comments is True  # on by default
    assert Settings(fetch_chunks=False).chunked_comments is False
    assert Settings(fetch_chunks=True, intake="batch").chunked_comments is True  # ingest reads
    consumer = _consumer(fetch_chunks=False)
    messages = _deliver(consumer, {COMMENTS: [_record(COMMENTS, o) for o in range(3)]},
                        monkeypatch)
    assert [type(m) is ChunkMessage for m in messages] == [False] * 3


def test_a_chunk_holds_the_commit_until_it_is_acked_then_commits_all_its_offsets(
        monkeypatch: pytest.MonkeyPatch) -> None:
    consumer = _consumer(batch_size=4)
    consumer._committed_offset[COMMENTS] = 10
    first, second, third = _deliver(
        consumer, {COMMENTS: [_record(COMMENTS, o) for o in range(10, 20)]}, monkeypatch)
    for message in (first, second, third):
        consumer.track_message(message)
    assert consumer.ack(second) and consumer.ack(third)
    assert consumer._new_offset(COMMENTS) is None  # 10..13 not processed yet
    assert consumer.lost_record(COMMENTS) is None  # held by the stream: not lost
    assert consumer.ack(first)
    assert not consumer.ack(first)  # once
    assert consumer._new_offset(COMMENTS) == 20
    assert consumer._n_acked == 10


def test_a_chunk_acks_only_offsets_not_acked_and_not_committed_already(
        monkeypatch: pytest.MonkeyPatch) -> None:
    consumer = _consumer(batch_size=8)
    consumer._committed_offset[COMMENTS] = 12  # a replayed fetch from before the commit
    [chunk] = _deliver(consumer, {COMMENTS: [_record(COMMENTS, o) for o in range(10, 16)]},
                       monkeypatch)
    consumer._acked[COMMENTS].append(13)
    consumer._acked_index[COMMENTS].add(13)
    assert _ack(consumer, chunk)
    assert sorted(consumer._acked[COMMENTS]) == [12, 13, 14, 15]
    assert consumer._new_offset(COMMENTS) == 16


def test_records_the_fetch_loop_has_read_already_are_left_out_of_a_chunk(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Faust's fetch loop drops a record below its read offset (delivers from it on)."""
    consumer = _consumer(batch_size=64)
    consumer._read_offset[COMMENTS] = 14
    [chunk] = _deliver(consumer, {COMMENTS: [_record(COMMENTS, o) for o in range(10, 18)]},
                       monkeypatch)
    assert chunk.offsets == [14, 15, 16, 17]


def test_the_offsets_inside_a_chunk_are_no_jump_but_a_jump_before_it_still_is(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Faust's fetch loop checks a message's offset against the last one read: a chunk of
    20..29 after 19 looks like a jump 20 -> 29; after 15 the jump 16 -> 20 is real."""
    consumer = _consumer(batch_size=64)
    consumer._committed_offset[COMMENTS] = 10
    [chunk] = _deliver(consumer, {COMMENTS: [_record(COMMENTS, o) for o in range(20, 30)]},
                       monkeypatch)
    with caplog.at_level(logging.WARNING, "streamapp.pipeline.offsets"):
        asyncio.run(consumer._add_gap(COMMENTS, 20, chunk.offset))
        assert "offset jump" not in caplog.text
        [chunk] = _deliver(consumer, {COMMENTS: [_record(COMMENTS, o) for o in range(40, 45)]},
                           monkeypatch)
        asyncio.run(consumer._add_gap(COMMENTS, 31, chunk.offset))
    assert "read offset 30, next record 40" in caplog.text
    assert not consumer._gap[COMMENTS]  # not counted as processed


def test_a_partition_being_read_again_after_a_lost_record_is_not_chunked(
        monkeypatch: pytest.MonkeyPatch) -> None:
    consumer = _consumer(batch_size=64)
    consumer._refetching[COMMENTS] = ({11}, 13)  # 11 was processed: not delivered twice
    messages = _deliver(consumer, {COMMENTS: [_record(COMMENTS, o) for o in range(10, 14)]},
                        monkeypatch)
    assert [(type(m) is ChunkMessage, m.offset) for m in messages] == [
        (False, 10), (False, 12), (False, 13)]


def test_a_take_of_chunks_and_single_events_is_their_records_in_order(
        monkeypatch: pytest.MonkeyPatch) -> None:
    consumer = _consumer(batch_size=2)
    chunks = _deliver(consumer, {COMMENTS: [_record(COMMENTS, o) for o in range(5)]},
                      monkeypatch)

    class Event:
        def __init__(self, message: Any) -> None:
            self.message, self.value = message, message.value

    single = _deliver(_consumer(fetch_chunks=False),
                      {COMMENTS: [_record(COMMENTS, 5)]}, monkeypatch)
    records = incoming_records([Event(m) for m in [*chunks, *single]])
    assert [r.offset for r in records] == [0, 1, 2, 3, 4, 5]
    assert records[5] == Incoming(b"comment 5", "comments", 2, 5, 1_700_000_000_005)


def test_the_comment_topic_buffers_about_as_many_records_as_faust_would() -> None:
    app = create_app(Settings(store="memory", batch_size=64, fetch_chunks=True))
    assert app.comments_topic.maxsize == STREAM_BUFFER_MAXSIZE // 64
    assert app.conf.stream_buffer_maxsize == STREAM_BUFFER_MAXSIZE
    assert create_app(Settings(store="memory", fetch_chunks=False)).comments_topic.maxsize \
        is None
