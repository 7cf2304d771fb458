"""A micro-batch's results, handed to the producer as whole record batches.

aiokafka's `send()` costs a future, a partitioner call and an accumulator lookup per message:
21% of the worker's time in a py-spy profile without a model (about 12,000 records/s).
Filling the producer's record batches here and handing each to `send_batch` pays that once per
batch (up to `producer_max_batch_size` bytes). The producer is Faust's own, so the flush Faust
(and the batch intake) runs before committing offsets covers these messages as well; under
STREAMAPP_GUARANTEE=exactly_once it is the batch's transactional producer.

Results are partitioned by the CRC-32 of their key: one key always lands on one partition (a
replayed result beside the first, for compaction), computed in C. Kafka's default, murmur2, is
pure Python in aiokafka and took another 10% of the worker's time in that profile.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamapp.application import StreamApp


def aiokafka_producer(app: StreamApp) -> Any:
    """The producer of the data path's outputs: under STREAMAPP_GUARANTEE=exactly_once the
    batch intake's transactional one (streamapp.pipeline.transactions), else the aiokafka
    producer inside Faust's producer service (started with the app)."""
    if app.transactional_producer is not None:
        return app.transactional_producer
    return app.producer._ensure_producer()


class Outbox:
    """Keyed messages for one topic, grouped per partition into producer batches."""

    def __init__(self, app: StreamApp, topic: str) -> None:
        self.app = app
        self.topic = topic
        self._producer = aiokafka_producer(app)
        self._partitions: list[int] = []
        self._open: dict[int, Any] = {}  # partition -> aiokafka BatchBuilder being filled
        self._full: list[tuple[int, Any]] = []
        self._oversized: list[tuple[int, bytes, bytes]] = []

    async def __aenter__(self) -> Outbox:
        self._partitions = sorted(await self._producer.partitions_for(self.topic))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if exc_info[0] is None:
            await self.send()

    def add(self, key: bytes, value: bytes) -> None:
        partition = self._partitions[zlib.crc32(key) % len(self._partitions)]
        builder = self._open.get(partition)
        if builder is not None:
            if builder.append(key=key, value=value, timestamp=None) is not None:
                return
            self._full.append((partition, builder))  # full: the message goes into a new one
        builder = self._producer.create_batch()
        if builder.append(key=key, value=value, timestamp=None) is None:
            self._open.pop(partition, None)
            self._oversized.append((partition, key, value))  # larger than a batch: on its own
        else:
            self._open[partition] = builder

    async def send(self) -> None:
        """Hand every batch to the producer (delivery is awaited by the flush before commit)."""
        for partition, builder in [*self._full, *self._open.items()]:
            await self._producer.send_batch(builder, self.topic, partition=partition)
        for partition, key, value in self._oversized:
            await self._producer.send(self.topic, value, key=key, partition=partition)
        self._full.clear()
        self._open.clear()
        self._oversized.clear()
