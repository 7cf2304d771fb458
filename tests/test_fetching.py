"""The consumers' fetches (streamapp.pipeline.fetching), on a real broker: a fetch wait that
follows the traffic, and fetches of only the partitions read."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from streamapp.broker import EmbeddedBroker
from streamapp.edges.clients import create_topic, open_producer, send_all
from streamapp.pipeline.fetching import fetch_only, follow_the_traffic

TOPIC = "fetched"
FIRST, SECOND = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)


async def _consumer(broker: EmbeddedBroker, fetch_wait_ms: int) -> AIOKafkaConsumer:
    await create_topic(broker.url, TOPIC, 2)
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                fetch_max_wait_ms=fetch_wait_ms)
    await consumer.start()
    consumer.assign([FIRST, SECOND])
    return consumer


async def _send(broker: EmbeddedBroker, partition: int, count: int) -> None:
    async with open_producer(broker.url) as producer:
        await send_all(producer, TOPIC, [b"x"] * count, partition=partition)


async def _read_until(consumer: AIOKafkaConsumer, done: Callable[[dict[int, int]], bool],
                      timeout: float = 20.0) -> dict[int, int]:
    """Records read per partition, until `done` says so."""
    counts = {0: 0, 1: 0}
    async with asyncio.timeout(timeout):
        while not done(counts):
            for tp, records in (await consumer.getmany(timeout_ms=200)).items():
                counts[tp.partition] += len(records)
    return counts


def test_a_paused_partition_is_not_fetched_until_it_is_read_again(broker: EmbeddedBroker
                                                                  ) -> None:
    async def run() -> None:
        consumer = await _consumer(broker, fetch_wait_ms=50)
        try:
            assert fetch_only(consumer, frozenset({FIRST})) == {SECOND}
            assert consumer.paused() == {SECOND}
            await _send(broker, 1, 3)
            await _send(broker, 0, 3)
            assert await _read_until(consumer, lambda n: n[0] == 3) == {0: 3, 1: 0}
            await asyncio.sleep(0.3)  # fetches go on for the first partition meanwhile
            # Not merely held back from getmany: never fetched, so it holds up no fetch.
            assert SECOND not in consumer._fetcher._records
            assert fetch_only(consumer, frozenset({FIRST, SECOND})) == frozenset()
            assert consumer.paused() == set()
            assert await _read_until(consumer, lambda n: n[1] == 3) == {0: 0, 1: 3}
            # A new assignment starts every partition unpaused, the same ones included:
            # checked against aiokafka's own state, the pause is made again.
            fetch_only(consumer, frozenset({FIRST}))
            consumer.assign([FIRST, SECOND])
            assert consumer.paused() == set()
            assert fetch_only(consumer, frozenset({FIRST})) == {SECOND}
            assert consumer.paused() == {SECOND}
        finally:
            await consumer.stop()

    asyncio.run(run())


def test_the_fetch_wait_is_short_while_records_flow_and_long_once_they_stop(
        broker: EmbeddedBroker) -> None:
    async def run() -> None:
        consumer = await _consumer(broker, fetch_wait_ms=40)
        fetcher = consumer._fetcher
        try:
            follow_the_traffic(consumer, busy_ms=7, quiet_ms=40, quiet_after_s=2.0)
            await asyncio.sleep(0.3)  # a few empty answers: still quiet
            assert fetcher._fetch_max_wait_ms == 40
            await _send(broker, 0, 5)
            await _read_until(consumer, lambda n: n[0] == 5)
            await asyncio.sleep(0.05)  # the fetcher plans its next fetch
            assert fetcher._fetch_max_wait_ms == 7  # the next fetch after records
            await asyncio.sleep(0.5)  # empty answers within the quiet time: still busy
            assert fetcher._fetch_max_wait_ms == 7
            await asyncio.sleep(2.5)  # nothing for longer than the quiet time
            assert fetcher._fetch_max_wait_ms == 40
            # Records fetched and left unread (a reader behind): the next are there already.
            await _send(broker, 1, 5)
            async with asyncio.timeout(20):
                while SECOND not in fetcher._records:
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            assert fetcher._fetch_max_wait_ms == 40
            await _read_until(consumer, lambda n: n[1] == 5)
            await asyncio.sleep(0.05)
            assert fetcher._fetch_max_wait_ms == 7
        finally:
            await consumer.stop()

    asyncio.run(run())
