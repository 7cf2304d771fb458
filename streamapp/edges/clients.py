"""Plain aiokafka clients for the edges of the pipeline: feeding comments, reading results.

Used by `make run`, the tests and the benchmarks, so that all of them talk to Kafka the way an
outside producer or consumer would.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord, RecordMetadata, TopicPartition

from streamapp.records import InputFormat


def connection(broker: str) -> dict[str, Any]:
    """aiokafka's connection arguments: the bootstrap servers, plus the TLS/SASL settings of
    the environment (STREAMAPP_SECURITY_PROTOCOL, ...), the same the worker uses."""
    from streamapp.security import aiokafka_security, bootstrap_servers
    from streamapp.settings import Settings

    return {"bootstrap_servers": bootstrap_servers(broker),
            **aiokafka_security(Settings.from_env())}


@contextlib.asynccontextmanager
async def open_producer(broker: str, *, max_batch_size: int = 256 * 1024,
                        max_request_size: int = 1024 * 1024) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(**connection(broker), linger_ms=5,
                                max_batch_size=max_batch_size,
                                max_request_size=max_request_size)
    async with started(producer):
        yield producer


@contextlib.asynccontextmanager
async def started(client: Any) -> AsyncIterator[None]:
    """An aiokafka producer, consumer or admin client, started, and stopped at the end; a
    failed start closes it too (else it is left half-open, and reported "Unclosed")."""
    stop = getattr(client, "stop", None) or client.close
    try:
        await client.start()
    except BaseException:
        await stop()
        raise
    try:
        yield
    finally:
        await stop()


async def create_topic(broker: str, topic: str, partitions: int) -> None:
    """`topic` with `partitions` (a topic created on first use gets the broker's default)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(**connection(broker))
    async with started(admin):
        await admin.create_topics([NewTopic(topic, partitions, 1)])


async def send_all(producer: AIOKafkaProducer, topic: str, values: Iterable[bytes],
                   key: bytes | None = None,
                   partition: int | None = None) -> list[RecordMetadata]:
    """Send values (without keys by default, as the seed's job does) and wait for the acks.

    The metadata says where each value landed: its comment id is topic:partition:offset.
    """
    futures = [await producer.send(topic, value=value, key=key, partition=partition)
               for value in values]
    return list(await asyncio.gather(*futures))


async def produce(broker: str, topic: str, values: Iterable[bytes],
                  key: bytes | None = None) -> list[RecordMetadata]:
    """One-shot: connect, send every value, wait for the acks."""
    async with open_producer(broker) as producer:
        return await send_all(producer, topic, values, key)


async def follow(
    broker: str, topics: list[str], *, from_beginning: bool = True,
    idle_timeout: float | None = None, stop: Callable[[], bool] | None = None,
    isolation_level: str = "read_uncommitted",
) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """Yield records of `topics` as they arrive (no consumer group, nothing committed).

    Stops after `idle_timeout` seconds without a record, or when `stop()` (asked at least five
    times a second) says so. `isolation_level="read_committed"` reads as a downstream consumer
    of an exactly-once pipeline does: records of aborted transactions are skipped.
    """
    consumer = AIOKafkaConsumer(
        *topics, **connection(broker), group_id=None,
        enable_auto_commit=False, isolation_level=isolation_level,
        auto_offset_reset="earliest" if from_beginning else "latest",
        fetch_max_wait_ms=100,
    )
    async with started(consumer):
        last = time.monotonic()
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    yield record
            if batch:
                last = time.monotonic()
            elif idle_timeout is not None and time.monotonic() - last > idle_timeout:
                return
            if stop is not None and stop():
                return



async def follow_until_complete(
    broker: str, topics: list[str], expected_keys: set[str], *, timeout: float,
    settle: float = 2.0, isolation_level: str = "read_uncommitted",
) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """Records of `topics` until every expected key has been seen (then `settle` more
    seconds, to catch late duplicates) or `timeout` passes: how a test or the reliability
    harness reads the outputs of the comments it sent (at `isolation_level`, see `follow`)."""
    keys: set[str] = set()
    deadline = time.monotonic() + timeout
    done_at: list[float] = []

    def finished() -> bool:
        now = time.monotonic()
        if not done_at and expected_keys <= keys:
            done_at.append(now)
        return now > deadline or bool(done_at and now - done_at[0] > settle)

    async for record in follow(broker, topics, stop=finished, isolation_level=isolation_level):
        keys.add(record.key.decode() if record.key else "")
        yield record

async def send_batched(producer: AIOKafkaProducer, topic: str,
                       values: Sequence[bytes]) -> list[asyncio.Future[RecordMetadata]]:
    """Send keyless values in whole batches, spread round-robin over the topic's partitions.

    For bulk loads: building batches ourselves skips aiokafka's per-message bookkeeping (about
    ten times the throughput of `send`). Returns the batches' ack futures; await them to know
    the values are stored.
    """
    partitions = sorted(await producer.partitions_for(topic))
    futures: list[asyncio.Future[RecordMetadata]] = []
    first = random.randrange(len(partitions))  # calls with few batches still spread evenly
    i = 0
    while i < len(values):
        batch = producer.create_batch()
        start = i
        while i < len(values) and batch.append(key=None, value=values[i], timestamp=None):
            i += 1
        if i == start:
            raise ValueError(f"a value of {len(values[i])} bytes does not fit in a batch")
        batch.close()
        partition = partitions[(first + len(futures)) % len(partitions)]
        futures.append(await producer.send_batch(batch, topic, partition=partition))
    return futures


def comment_value(*, sku: str | None = None, review: str | None = None,
                  categories: Sequence[str] = (), text: str | None = None,
                  output_format: str = "json", separator: str = ",",
                  input_format: InputFormat = "auto", check: bool = True,
                  max_review_chars: int = 20_000) -> bytes:
    """One comment's bytes, from fields (`sku`, `review`, `categories`) or from `text` (JSON or
    delimited, as it would sit on the topic). Checked with the worker's own decoder and its
    settings (`input_format`, `separator`) unless `check` is off (to send a broken record on
    purpose); raises RejectedRecord."""
    from streamapp.decoding import decode_comment, encode_delimited, separator_in_review
    from streamapp.records import CATEGORY_FIELDS, DATA_TYPE

    if text is None:
        if len(categories) > len(CATEGORY_FIELDS):
            raise ValueError(f"at most {len(CATEGORY_FIELDS)} category levels")
        record: dict[str, object] = {"dataType": DATA_TYPE, "baseSkuName": sku or "",
                                     "reviewBody": review or ""}
        record.update(itertools.zip_longest(CATEGORY_FIELDS, categories, fillvalue=""))
        if output_format == "json":
            raw = orjson.dumps(record)
        else:
            if check:  # the worker would misplace a SKU or category name holding it
                separator_in_review(record, separator)
            raw = encode_delimited(record, separator).encode()
    else:
        raw = text.strip().encode()
    if check:
        decode_comment(raw, input_format=input_format, separator=separator,
                       max_review_chars=max_review_chars)
    return raw


def wanted(value: dict[str, Any], *, category: str | None = None,
           match: bool | None = None) -> bool:
    """Filters of `streamapp tail`. A category matches any level of the path, or a path prefix
    (`生鲜/水果`); dead letters have neither a category nor a match, so a filter drops them."""
    if category is not None:
        path = value.get("categories")
        if not isinstance(path, list):
            return False
        if "/" in category:
            prefix = category.strip("/").split("/")
            if path[:len(prefix)] != prefix:
                return False
        elif category not in path:
            return False
    return match is None or value.get("match") is match


def format_output(value: dict[str, Any], *, color: bool = False) -> str:
    """One result or dead letter as a line for a terminal."""
    def paint(text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if color else text

    if "reason" in value:
        return (paint("DEAD LETTER", "31") + f" {value['reason']}: {str(value['error'])[:80]} "
                f"[{value['id']}]")
    mark = paint("MATCH   ", "32") if value["match"] else paint("no match", "33")
    return (f"{mark} {value['score']:.2f}  {value['baseSkuName'][:28]:<28} "
            f"{value['categoryPath'][:32]:<32} [{value['id']}]")


async def _assign_new(consumer: AIOKafkaConsumer, admin: AIOKafkaAdminClient,
                      topics: Sequence[str], known: dict[TopicPartition, int], *,
                      at_end: bool) -> None:
    """Add the partitions of `topics` not in `known` yet, at their current end (`at_end`) or at
    0 (a partition that appeared after the comment was sent: everything on it is new).

    Topics are looked up with the admin client: the consumer's own metadata does not learn of
    topics created later, and describing a missing topic would create it.
    """
    existing = set(await admin.list_topics())
    present = [t for t in topics if t in existing]
    if not present:
        return
    fresh = [TopicPartition(d["topic"], p["partition"])
             for d in await admin.describe_topics(present) for p in d["partitions"]]
    fresh = [tp for tp in fresh if tp not in known]
    if not fresh:
        return
    # Reassigning forgets the positions: keep those of the partitions already read.
    positions = {tp: await consumer.position(tp) for tp in known}
    known.update(await consumer.end_offsets(fresh) if at_end else dict.fromkeys(fresh, 0))
    consumer.assign(list(known))
    for tp, offset in {**known, **positions}.items():
        consumer.seek(tp, offset)


async def ask(broker: str, comments_topic: str, value: bytes, output_topics: Sequence[str],
              timeout: float) -> tuple[str, ConsumerRecord[bytes, bytes] | None]:
    """Send one comment and wait for the record keyed by its id on `output_topics`.

    The output topics' ends are noted before sending, so only what comes after is read.
    Returns (comment id, the output record or None after `timeout` seconds).
    """
    consumer = AIOKafkaConsumer(**connection(broker), group_id=None,
                                enable_auto_commit=False, fetch_max_wait_ms=100)
    admin = AIOKafkaAdminClient(**connection(broker))
    async with started(consumer), started(admin):
        positions: dict[TopicPartition, int] = {}
        await _assign_new(consumer, admin, output_topics, positions, at_end=True)
        [metadata] = await produce(broker, comments_topic, [value])
        record_id = f"{metadata.topic}:{metadata.partition}:{metadata.offset}"
        key = record_id.encode()
        deadline = time.monotonic() + timeout
        next_refresh = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            if positions:
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    for record in records:
                        if record.key == key:
                            return record_id, record
            else:
                await asyncio.sleep(0.2)
            if time.monotonic() > next_refresh:  # a worker may create the topics meanwhile
                await _assign_new(consumer, admin, output_topics, positions, at_end=False)
                next_refresh = time.monotonic() + 1.0
        return record_id, None
