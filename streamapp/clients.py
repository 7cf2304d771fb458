"""Plain aiokafka clients for the edges of the pipeline: feeding comments, reading results.

Used by `make run`, the tests and the benchmarks, so that all of them talk to Kafka the way an
outside producer or consumer would.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord, RecordMetadata


def bootstrap_servers(broker: str) -> str:
    """`kafka://h1:9092,h2:9092` (STREAMAPP_BROKER's form) to aiokafka's `h1:9092,h2:9092`."""
    hosts = [h.strip().split("://", 1)[-1] for h in broker.split(",") if h.strip()]
    return ",".join(hosts)


@contextlib.asynccontextmanager
async def open_producer(broker: str) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(broker), linger_ms=5,
                                max_batch_size=256 * 1024)
    try:
        await producer.start()
    except BaseException:
        await producer.stop()  # a failed start leaves a half-open client behind
        raise
    try:
        yield producer
    finally:
        await producer.stop()


async def send_all(producer: AIOKafkaProducer, topic: str, values: Iterable[bytes],
                   key: bytes | None = None) -> list[RecordMetadata]:
    """Send values (without keys by default, as the seed's job does) and wait for the acks.

    The metadata says where each value landed: its comment id is topic:partition:offset.
    """
    futures = [await producer.send(topic, value=value, key=key) for value in values]
    return list(await asyncio.gather(*futures))


async def produce(broker: str, topic: str, values: Iterable[bytes],
                  key: bytes | None = None) -> list[RecordMetadata]:
    """One-shot: connect, send every value, wait for the acks."""
    async with open_producer(broker) as producer:
        return await send_all(producer, topic, values, key)


async def follow(
    broker: str, topics: list[str], *, from_beginning: bool = True,
    idle_timeout: float | None = None, stop: Callable[[], bool] | None = None,
) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """Yield records of `topics` as they arrive (no consumer group, nothing committed).

    Stops after `idle_timeout` seconds without a record, or when `stop()` (asked at least five
    times a second) says so.
    """
    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap_servers(broker), group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        fetch_max_wait_ms=100,
    )
    await consumer.start()
    try:
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
    finally:
        await consumer.stop()


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
