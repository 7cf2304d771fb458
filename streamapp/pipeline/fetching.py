"""The consumer thread's fetches: a fetch wait and end offsets that hold on any
Kafka-protocol broker (the embedded one answers fetches by polling, and ListOffsets short of
the end)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import aiokafka
from aiokafka import TopicPartition
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, server_list
from faust.types import TP


class FetchWaitConsumerThread(AIOKafkaConsumerThread):
    """Fetch wait and end offsets that hold on any Kafka-protocol broker."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Faust hard-codes fetch_max_wait_ms=1500. A broker that answers fetches by polling
        # (the embedded one) then delivers each record ~750 ms late, per hop; a real Kafka
        # answers as soon as data arrives, so there a shorter wait only costs requests on an
        # idle topic. Read by aiokafka when it starts its fetcher, which has not happened yet.
        consumer._fetch_max_wait_ms = self.app.settings.fetch_wait_ms
        if self.app.settings.guarantee == "exactly_once":
            # The stats topic is then written in transactions: tables count committed ones only.
            consumer._isolation_level = "read_committed"
        self._bootstrap = server_list(transport.url, transport.default_port)
        return consumer

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        """End offsets, checked against the high watermark of a fetch.

        Table recovery reads changelogs up to these offsets, and refuses to start when a
        store's persisted offset is beyond them. The embedded broker answers ListOffsets with
        the last batch's base offset + 1, short of the end by up to one producer batch: a
        worker restarted after kill -9 then stopped with ConsistencyError (persisted 299 >
        264), and a recovery stopped short would have left tables behind. A fetch from just
        before the reported end returns the true high watermark on any broker.
        """
        reported = await super()._highwaters(partitions)
        return await fetched_end_offsets(self._bootstrap, reported)


async def fetched_end_offsets(bootstrap: list[str] | str,
                              reported: Mapping[TP, int]) -> dict[TP, int]:
    """`reported` end offsets raised to the high watermark a fetch answers with."""
    ends = dict(reported)
    probe = {tp: offset for tp, offset in ends.items() if offset > 0}
    if not probe:
        return ends
    consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                         enable_auto_commit=False, fetch_max_wait_ms=50)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(tp.topic, tp.partition) for tp in probe])
        for tp, offset in probe.items():
            consumer.seek(TopicPartition(tp.topic, tp.partition), offset - 1)
        pending = set(probe)
        deadline = time.monotonic() + 5.0
        while pending and time.monotonic() < deadline:
            await consumer.getmany(timeout_ms=200, max_records=1)
            for tp in list(pending):
                watermark = consumer.highwater(TopicPartition(tp.topic, tp.partition))
                if watermark is not None:
                    ends[tp] = max(ends[tp], watermark)
                    pending.discard(tp)
    finally:
        await consumer.stop()
    return ends
