"""What one Kafka hop costs on the embedded broker, without Faust or a model.

    python -m bench.hop [FETCH_WAIT_MS ...]   (default: 5 20 50 500)

A plain aiokafka producer sends 200-byte records at a steady rate (what is due about every
millisecond, linger 0) to a topic of four partitions; a plain consumer with the given fetch
wait reads them. Per fetch wait: percentiles of each record's timestamp to `getmany`
returning it, and the share that came more than `LATE_MS` late. Each wait has its own broker
and topic; the waits alternate over `--rounds`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streamapp.broker import EmbeddedBroker, free_port
from streamapp.edges.clients import connection, create_topic, started

VALUE = b"x" * 200
LATE_MS = 10.0


async def hop_latencies(broker: str, topic: str, fetch_wait_ms: int, rate: float,
                        seconds: float, partitions: int = 4) -> list[float]:
    """Each record's milliseconds from its timestamp to the consumer's `getmany`."""
    await create_topic(broker, topic, partitions)
    consumer = AIOKafkaConsumer(topic, fetch_max_wait_ms=fetch_wait_ms,
                                auto_offset_reset="earliest", **connection(broker))
    producer = AIOKafkaProducer(linger_ms=0, **connection(broker))
    total = int(rate * seconds)
    latencies: list[float] = []

    async def read() -> None:
        while len(latencies) < total:
            batches = await consumer.getmany(timeout_ms=1000)
            now_ms = time.time() * 1000
            latencies.extend(now_ms - record.timestamp
                             for records in batches.values() for record in records)

    async with started(consumer), started(producer):
        await asyncio.sleep(1.0)  # the consumer holds its partitions and waits in a fetch
        reader = asyncio.create_task(read())
        began, sent = time.monotonic(), 0
        while sent < total:
            due = min(total, int((time.monotonic() - began) * rate) + 1)
            for n in range(sent, due):
                await producer.send(topic, VALUE, key=str(n).encode())
            sent = due
            await asyncio.sleep(0.001)
        await asyncio.wait_for(reader, seconds + 30)
    return latencies


async def compare(waits: list[int], rounds: int, rate: float, seconds: float) -> None:
    for round_ in range(rounds):
        for wait in waits:
            with EmbeddedBroker(free_port()) as broker:
                values = await hop_latencies(broker.url, f"hop-{wait}", wait, rate, seconds)
            q = statistics.quantiles(values, n=100, method="inclusive")
            late = sum(value > LATE_MS for value in values) / len(values)
            print(f"round {round_ + 1}, fetch wait {wait:>4} ms: p50 {q[49]:.1f}  "
                  f"p90 {q[89]:.1f}  p99 {q[98]:.1f}  max {max(values):.1f} ms, "
                  f"{late:.0%} over {LATE_MS:g} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("waits", nargs="*", type=int, default=[5, 20, 50, 500])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rate", type=float, default=765.0, help="records a second")
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()
    asyncio.run(compare(args.waits, args.rounds, args.rate, args.seconds))


if __name__ == "__main__":
    main()
