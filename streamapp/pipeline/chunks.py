"""Fetch chunks: the comment topic reaches its Faust agent one event per partition per fetch.

Faust hands a stream one event per Kafka record: a Message, the conductor's callback, the
channel queue, the stream, the sensors and the ack, per record. Measured on this 2-core machine
(2026-12-02, a 20,000-comment backlog, no model): the ingest agent got about 2,000 comments a
second with the worker's core busy, in takes of ~15 events, while the same worker's batch path
handles several times that (BENCHMARKS.md). So on the comment topic (STREAMAPP_FETCH_CHUNKS,
on by default) the consumer (streamapp.pipeline.offsets.SafeOffsetConsumer)
turns the records one fetch returned for one partition into `ChunkMessage`s of up to
STREAMAPP_BATCH_SIZE records: one Faust event each, whose value is the records as
`Incoming`s. Everything else (the inference and stats topics, the changelogs) keeps
Faust's per-record path.

What stays as with one message per record:
* the agents read chunks with `take_events` and expand them (`incoming_records`);
* a chunk holds every one of its offsets: acked together, once all outputs of all its records
  are with the producer (SafeOffsetConsumer.ack), so a commit never passes a record of a chunk
  not finished; the lost-record mend sees each offset as held while the chunk is;
* the fetch loop's read offset moves to the chunk's last offset, so a chunk is delivered once,
  and the offsets inside a chunk are not an "offset jump" (SafeOffsetConsumer._add_gap);
* the stream buffer holds about as many records as before: the comment topic's channel holds
  `stream_buffer_maxsize / batch_size` chunks (`channel_maxsize`).

Faust's own per-event figures (its sensors, the web view's Faust events) count chunks on the
comment topic; streamapp's counters count records.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from faust.types import TP, ConsumerMessage, EventT

from streamapp.records import Incoming


class FetchChunk(tuple):  # type: ignore[type-arg]
    """Consecutive records of one partition from one fetch (aiokafka ConsumerRecords), on
    their way to becoming one ChunkMessage."""

    __slots__ = ()


class ChunkMessage(ConsumerMessage):
    """One Faust message carrying several records of one partition: `value` is the records
    as `Incoming`s, `offset` the last one's, `offsets` all of them."""

    __slots__ = ("offsets",)

    offsets: list[int]


def split_fetch(records: Sequence[Any], size: int) -> list[FetchChunk]:
    """One partition's fetched records (in offset order) as chunks of at most `size`."""
    return [FetchChunk(records[i:i + size]) for i in range(0, len(records), size)]


def chunk_message(tp: TP, chunk: FetchChunk, generation_id: int | None) -> ChunkMessage:
    last = chunk[-1]
    value = tuple(Incoming(r.value, r.topic, r.partition, r.offset, r.timestamp) for r in chunk)
    message = ChunkMessage(
        last.topic, last.partition, last.offset,
        last.timestamp / 1000.0 if last.timestamp is not None else None,  # type: ignore[arg-type]
        last.timestamp_type, None, None, value,  # type: ignore[arg-type]
        None, 0, sum(r.serialized_value_size for r in chunk), tp,
        generation_id=generation_id)
    message.offsets = [r.offset for r in chunk]
    return message


def message_offsets(message: Any) -> Sequence[int]:
    """The offsets a message stands for: a chunk's all, any other message's own."""
    return message.offsets if isinstance(message, ChunkMessage) else (message.offset,)


def incoming(event: EventT) -> Incoming:
    msg = event.message
    return Incoming(event.value, msg.topic, msg.partition, msg.offset,
                    int(msg.timestamp * 1000) if msg.timestamp else None)


def incoming_records(events: Sequence[EventT]) -> list[Incoming]:
    """The records a take of events carries: a chunk's records, or the event's own record."""
    records: list[Incoming] = []
    for event in events:
        if isinstance(event.message, ChunkMessage):
            records += event.value
        else:
            records.append(incoming(event))
    return records


def channel_maxsize(stream_buffer_maxsize: int, chunk_size: int) -> int:
    """Chunks the comment topic's channel may hold: about the records Faust's buffer would."""
    return max(2, stream_buffer_maxsize // chunk_size)
