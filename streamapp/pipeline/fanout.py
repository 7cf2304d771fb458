"""The fan-out hop's messages: the ingest agent writes a batch of comments, as read, to the
inference topic; the inference agent (or the batch intake) reads them back as comments in the
model process (streamapp.pipeline.batchwork.decode_fanned_out), which decodes, validates and
dead-letters them as the direct path does.

One message per inference partition per ingest batch, not one per comment: each Kafka message
costs Faust's per-event path on both sides of the hop, which capped the default configuration
at about a tenth of a plain aiokafka loop (issue #14). A message is `FANNED_OUT_MARK`, then
the comments' ids, timestamps and values (streamapp.framing): the ingest agent neither
decodes nor encodes a comment, the event loop's work per comment is its partition. Each
comment goes to the partition a message keyed by its id would land in (Kafka's default
partitioner), as when each was a message of its own: the ledger's lanes (streamapp.pipeline.
ledger) stay what they were, and a comment partition's comments reach each inference
partition in offset order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from streamapp.decoding import check_size
from streamapp.framing import pack
from streamapp.pipeline.batches import key_partitioner, send_counts, send_letters
from streamapp.pipeline.batchwork import FANNED_OUT_MARK, BatchWork
from streamapp.pipeline.ledger import source_of
from streamapp.pipeline.outbox import aiokafka_producer
from streamapp.records import Incoming, Reason, RejectedRecord

if TYPE_CHECKING:
    from streamapp.application import StreamApp


async def ingest_batch(app: StreamApp, records: Sequence[Incoming]) -> None:
    """A batch of comments to the inference topic, one message per partition (more when one
    would be larger than the producer may send); a value too large to cross, a dead letter
    here, counted in one stats message."""
    topic = app.inference_topic.get_topic_name()
    partition_of = await key_partitioner(app, topic)
    limit = app.conf.producer_max_request_size // 2  # headroom for the batch's framing
    oversized = BatchWork()
    by_partition: dict[int, list[Incoming]] = {}
    for record in records:
        try:
            _check_crossing(record, app.settings.max_review_chars, limit)
        except RejectedRecord as why:
            oversized.reject(app.settings, record.id, why.reason, why.error, record.value,
                             record.timestamp_ms, source_of(record, record.id))
            continue
        by_partition.setdefault(partition_of(record.id.encode()), []).append(record)
    producer = aiokafka_producer(app)
    for partition, held in by_partition.items():
        for value in fanned_out_messages(held, limit, app.settings.batch_size):
            await producer.send(topic, value, partition=partition)
    if oversized.letters:
        await send_letters(app, oversized)
        await send_counts(app, oversized.tally.entries())


def _check_crossing(record: Incoming, max_review_chars: int, limit: int) -> None:
    """RejectedRecord for a value the hop cannot or need not carry: too large for any review
    (decoding's own first check), or for a message of the inference topic."""
    if record.value:
        check_size(record.value, max_review_chars)
        if _PER_MESSAGE_BYTES + _share(record) > limit:
            raise RejectedRecord(
                Reason.TOO_LARGE, f"the value is {len(record.value)} bytes, more than a "
                f"message of the inference topic may carry ({limit} bytes, half the "
                "producer's max_request_size)")


# A message's bytes besides its values (the mark, the header's keys), and a comment's besides
# its value and topic name (its id's partition and offset, timestamp, length), at most.
_PER_MESSAGE_BYTES = 64
_PER_COMMENT_BYTES = 80


def _share(record: Incoming) -> int:
    return len(record.value or b"") + len(record.topic) + _PER_COMMENT_BYTES


def fanned_out_messages(records: Sequence[Incoming], limit: int,
                        most: int = 4096) -> Iterator[bytes]:
    """The records in order, as messages of at most `most` comments and `limit` bytes each (a
    record larger than that alone: the ingest agent dead-letters those). `most` is the model
    batch: with fetch chunks an ingest take holds up to batch_size chunks of up to batch_size
    comments, and a message is one batch for the model process (without the cap, a BERT-base
    backlog got 20 comments through in its first 20 s; 448 with it)."""
    start, size = 0, _PER_MESSAGE_BYTES
    for i, record in enumerate(records):
        share = _share(record)
        if i > start and (size + share > limit or i - start >= most):
            yield _message(records[start:i])
            start, size = i, _PER_MESSAGE_BYTES
        size += share
    if start < len(records):
        yield _message(records[start:])


def _message(records: Sequence[Incoming]) -> bytes:
    return pack({"id": [r.id for r in records], "ts": [r.timestamp_ms for r in records]},
                [r.value for r in records], prefix=FANNED_OUT_MARK)
