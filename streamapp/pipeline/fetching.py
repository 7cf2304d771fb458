"""The consumer thread's fetches: a fetch wait and end offsets that hold on any
Kafka-protocol broker (the embedded one answers fetches by polling, and ListOffsets short of
the end), and fetches of only the partitions Faust reads."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import aiokafka
from aiokafka import TopicPartition
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, server_list
from faust.types import TP

from streamapp.settings import Settings


class FetchWaitConsumerThread(AIOKafkaConsumerThread):
    """Fetch wait and end offsets that hold on any Kafka-protocol broker; fetches of only
    the partitions Faust reads."""

    unread: frozenset[TopicPartition] = frozenset()  # assigned, not fetched (at the last fetch)

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

    async def on_start(self) -> None:
        await super().on_start()
        adapt_fetch_wait(self._consumer, self.app.settings)

    async def _fetch_records(self, consumer: aiokafka.AIOKafkaConsumer,
                             active_partitions: set[TP], timeout: float | None = None,
                             max_records: int | None = None) -> Any:
        if active_partitions is not None:  # None: a client-only app reads everything
            self._fetch_only_read(consumer, active_partitions)
        return await super()._fetch_records(consumer, active_partitions, timeout=timeout,
                                            max_records=max_records)

    def _fetch_only_read(self, consumer: aiokafka.AIOKafkaConsumer, active: set[TP]) -> None:
        """Pause, in aiokafka, the assigned partitions Faust does not read now.

        Faust stops reading a partition by leaving it out of the ones it asks aiokafka for
        (its table changelogs once recovered, a stream before its seek), but aiokafka goes
        on fetching what is assigned. A fetched record nobody takes holds back every next
        fetch from that broker for aiokafka's prefetch backoff (100 ms): each changelog
        write of the tables stalled the comments by up to 100 ms (BENCHMARKS.md, Probes).
        A stream whose buffer is full stays fetched, as before: its records are taken soon.
        """
        # Buffered first: the main thread moves a partition from buffered back to active;
        # copied in this order, one moving meanwhile is in both copies rather than neither.
        buffered = frozenset(self.consumer._buffered_partitions)
        self.unread = fetch_only(consumer, frozenset(active) | buffered)

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


def fetch_only(consumer: aiokafka.AIOKafkaConsumer,
               read: frozenset[TP] | frozenset[TopicPartition]) -> frozenset[TopicPartition]:
    """Pause the consumer's assigned partitions not in `read`, resume the others: the paused.

    Checked against aiokafka's own state, which a rebalance resets (every partition
    unpaused) even when the same partitions come back. The partitions paused are aiokafka's
    (its pause() takes no other kind); Faust's TP, a namedtuple of the same fields, matches
    them in `read`.
    """
    assigned = consumer.assignment()
    unread = frozenset(tp for tp in assigned if tp not in read)
    if unread != consumer.paused():
        consumer.pause(*unread)
        consumer.resume(*(assigned - unread))
    return unread


def unread_partitions(consumer: Any) -> frozenset[TopicPartition]:
    """The assigned partitions a worker's Faust consumer does not fetch now."""
    thread = getattr(consumer, "_thread", None)
    return thread.unread if isinstance(thread, FetchWaitConsumerThread) else frozenset()


QUIET_AFTER_S = 1.0  # a consumer's fetches come back empty this long: its topics are quiet


def adapt_fetch_wait(consumer: aiokafka.AIOKafkaConsumer, settings: Settings) -> None:
    """STREAMAPP_FETCH_WAIT_BUSY_MS, when set, for a started consumer."""
    if settings.fetch_wait_busy_ms is not None:
        follow_the_traffic(consumer, busy_ms=settings.fetch_wait_busy_ms,
                           quiet_ms=settings.fetch_wait_ms)


def follow_the_traffic(consumer: aiokafka.AIOKafkaConsumer, *, busy_ms: int, quiet_ms: int,
                       quiet_after_s: float = QUIET_AFTER_S) -> None:
    """A started consumer's fetches wait at most `busy_ms` while records flow and the reader
    keeps up, `quiet_ms` otherwise.

    Flowing: a fetch returned records within `quiet_after_s`. Keeping up: aiokafka holds no
    fetched record of a partition read (not paused) unread; when it does, the reader is
    behind, the next records are there already, and short waits would only repeat fetches
    of quiet partitions. aiokafka keeps one fetch in flight per broker and builds each with
    the fetcher's wait; it has no option for this, so the fetcher's planning and answers
    are wrapped.
    """
    fetcher = consumer._fetcher
    fetch, plan = fetcher._proc_fetch_request, fetcher._get_actions_per_node
    last_records = -math.inf

    async def fetch_noting_records(assignment: Any, node_id: int, request: Any) -> bool:
        nonlocal last_records
        got_records: bool = await fetch(assignment, node_id, request)
        if got_records:
            last_records = time.monotonic()
        return got_records

    def plan_with_wait(assignment: Any) -> Any:
        flowing = time.monotonic() - last_records < quiet_after_s
        paused = consumer.paused()
        behind = any(tp not in paused for tp in fetcher._records)
        fetcher._fetch_max_wait_ms = busy_ms if flowing and not behind else quiet_ms
        return plan(assignment)

    fetcher._proc_fetch_request = fetch_noting_records
    fetcher._get_actions_per_node = plan_with_wait


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
