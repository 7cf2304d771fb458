"""The fan-out hop's messages: the ingest agent writes a batch of valid comments to the
inference topic, the inference agent (or the batch intake) reads them back as comments
(streamapp.pipeline.batchwork.decode_fanned_out, beside the model).

One message per inference partition per ingest batch, not one per comment: each Kafka message
costs Faust's per-event path on both sides of the hop, which capped the default configuration
at about a tenth of a plain aiokafka loop (issue #14). A message is a JSON array of the
per-comment payloads `{"id", "ts", "comment", "recovered"?}`. Each comment goes to the
partition a message keyed by its id would land in (Kafka's default partitioner), as when each
was a message of its own: the ledger's lanes (streamapp.pipeline.ledger) stay what they were,
and a comment partition's comments reach each inference partition in offset order.

A single payload object, what workers before wrote, is read as one comment: a rolling upgrade
finds both forms on the topic. Anything else there is a foreign producer's: one dead letter.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from streamapp.pipeline.batches import key_partitioner, send_counts, send_dead_letter
from streamapp.pipeline.batchwork import decode_source
from streamapp.pipeline.ledger import source_of
from streamapp.pipeline.outbox import aiokafka_producer
from streamapp.pipeline.stats import BatchTally
from streamapp.records import Incoming, RejectedRecord

if TYPE_CHECKING:
    from streamapp.application import StreamApp

async def ingest_batch(app: StreamApp, records: Sequence[Incoming]) -> None:
    """Decode and validate a batch of comments: the valid ones to the inference topic, one
    message per partition; the others dead letters, their counts in one stats message."""
    topic = app.inference_topic.get_topic_name()
    partition_of = await key_partitioner(app, topic)
    tally = BatchTally()
    by_partition: dict[int, list[bytes]] = {}
    for record in records:
        try:
            record_id, source_ts, comment = decode_source(app.settings, record)
        except RejectedRecord as rejected:
            await send_dead_letter(app, record.id, rejected.reason, rejected.error,
                                   record.value, record.timestamp_ms,
                                   source_of(record, record.id), tally)
            continue
        # vars(): the validated fields as they are (model_dump() copies them, far slower).
        payload: dict[str, Any] = {"id": record_id, "ts": source_ts, "comment": vars(comment)}
        if comment.recovered is not None:
            payload["recovered"] = comment.recovered
        by_partition.setdefault(partition_of(record_id.encode()), []).append(
            orjson.dumps(payload))
    producer = aiokafka_producer(app)
    limit = app.conf.producer_max_request_size // 2  # headroom for the batch's framing
    for partition, payloads in by_partition.items():
        for value in json_arrays(payloads, limit):
            await producer.send(topic, value, partition=partition)
    entries = tally.entries()
    if entries:
        await send_counts(app, entries)


def json_arrays(items: Sequence[bytes], limit: int) -> Iterator[bytes]:
    """JSON arrays of the encoded `items` in order, each at most `limit` bytes (an item
    larger than that alone), so that no message grows past what the producer may send."""
    start, size = 0, 2
    for i, item in enumerate(items):
        if i > start and size + len(item) + 1 > limit:
            yield b"[" + b",".join(items[start:i]) + b"]"
            start, size = i, 2
        size += len(item) + 1
    if start < len(items):
        yield b"[" + b",".join(items[start:]) + b"]"
