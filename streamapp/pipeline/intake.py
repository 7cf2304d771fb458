"""The batch intake (STREAMAPP_INTAKE=batch): records straight from Kafka to the model in batches.

Faust hands a stream one event at a time: on this machine its per-event path (fetch, conductor,
channel queue, stream, sensors, ack) caps a worker that does nothing at about 11,000 records/s,
while a GPU running BERT-base wants tens of thousands. This intake reads the same topic with an
aiokafka consumer of its own (group `<app_id>-intake`), takes whatever one `getmany` returns (at
most STREAMAPP_BATCH_SIZE records, waiting at most STREAMAPP_BATCH_WAIT_MS) as one batch, and
hands it to the same `BatchPipeline` the Faust agent uses: the model, the outputs, the stats
topic, the tables and the web view are the same in both modes.

At-least-once, as in the agent: a batch's offsets become committable only once all its outputs
are with the producer; a commit first flushes the producer, then commits per partition up to the
first batch not done yet. Before partitions are taken away (rebalance, shutdown) the batches in
flight finish and are committed, so the next owner starts right after them.

Exactly-once (STREAMAPP_GUARANTEE=exactly_once, streamapp.pipeline.transactions; the
transactional producer is started with the worker, streamapp.pipeline.startup): one batch at a
time, each in its own transaction with its offsets; STREAMAPP_PIPELINE_DEPTH does not apply
(with two transactions open at once the second could not commit its offsets before the first).
STREAMAPP_INSTANCE_ID makes the consumer a static member (KIP-345).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import ConsumerStoppedError, KafkaError
from faust.types import TopicT
from mode import Service

from streamapp.pipeline.batches import Turn, exit_without_commit, infer_batch
from streamapp.pipeline.fetching import adapt_fetch_wait
from streamapp.records import Incoming

if TYPE_CHECKING:
    from streamapp.application import StreamApp
    from streamapp.pipeline.batches import BatchPipeline

log = logging.getLogger(__name__)

COMMIT_INTERVAL_S = 1.0  # as the Faust consumer's (broker_commit_interval)


class _Span:
    """The offsets of one batch on one partition: committable up to `end` once `done`."""

    __slots__ = ("done", "end")

    def __init__(self, end: int) -> None:
        self.end = end
        self.done = False


class OffsetTracker:
    """Per partition, the batches in flight in the order they were read.

    A partition may be committed up to the end of its longest run of finished batches from
    the oldest: a batch that finishes early (batches run concurrently) waits for the ones
    before it, so a commit never passes a record whose outputs are not with the producer.
    """

    def __init__(self) -> None:
        self._spans: dict[TopicPartition, deque[_Span]] = {}
        self._ready: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}

    def track(self, records: Sequence[Incoming]) -> list[_Span]:
        """Register one batch (records of one partition in offset order); its spans."""
        ends: dict[TopicPartition, int] = {}
        for record in records:
            ends[TopicPartition(record.topic, record.partition)] = record.offset + 1
        spans = []
        for tp, end in ends.items():
            span = _Span(end)
            self._spans.setdefault(tp, deque()).append(span)
            spans.append(span)
        return spans

    @staticmethod
    def done(spans: Sequence[_Span]) -> None:
        for span in spans:
            span.done = True

    def to_commit(self, assigned: set[TopicPartition]) -> dict[TopicPartition, int]:
        """Offsets to commit now: finished runs beyond the last commit, on `assigned` only."""
        for tp, spans in self._spans.items():
            while spans and spans[0].done:
                self._ready[tp] = spans.popleft().end
        return {tp: end for tp, end in self._ready.items()
                if tp in assigned and end > self._committed.get(tp, -1)}

    def committed(self, offsets: dict[TopicPartition, int]) -> None:
        self._committed.update(offsets)

    def last_committed(self, tp: TopicPartition) -> int | None:
        return self._committed.get(tp)

    def forget(self, partitions: set[TopicPartition]) -> None:
        """Partitions taken away: a batch of theirs finishing later commits nothing."""
        for tp in partitions:
            self._spans.pop(tp, None)
            self._ready.pop(tp, None)
            self._committed.pop(tp, None)


class _OnRebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, intake: BatchIntake) -> None:
        self.intake = intake

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.intake.hand_back(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.intake.revoking = False
        log.info("intake assigned %s", sorted(f"{tp.topic}:{tp.partition}" for tp in assigned))


class BatchIntake(Service):
    """An aiokafka consumer feeding `pipeline` one fetched batch at a time."""

    def __init__(self, app: StreamApp, topic: TopicT, pipeline: BatchPipeline,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.app = app
        self.topic = topic
        self.pipeline = pipeline
        self.tracker = OffsetTracker()
        self.consumer: AIOKafkaConsumer | None = None
        self._commit_lock = asyncio.Lock()  # exactly_once: held for each batch's transaction
        self.exactly_once = app.settings.guarantee == "exactly_once"
        self.revoking = False  # between a revocation and the next assignment

    @property
    def group_id(self) -> str:
        return f"{self.app.settings.app_id}-intake"

    def assignment(self) -> set[TopicPartition]:
        return set(self.consumer.assignment()) if self.consumer is not None else set()

    def _new_consumer(self) -> AIOKafkaConsumer:
        from streamapp.security import aiokafka_security, bootstrap_servers

        settings = self.app.settings
        session_ms = int(settings.session_timeout_s * 1000)
        return AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers(settings.broker), group_id=self.group_id,
            client_id=f"{settings.app_id}-intake", enable_auto_commit=False,
            auto_offset_reset="earliest", fetch_max_wait_ms=settings.fetch_wait_ms,
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=int(settings.heartbeat_interval_s * 1000),
            group_instance_id=settings.instance_id,
            isolation_level="read_committed" if self.exactly_once else "read_uncommitted",
            **aiokafka_security(settings))

    async def on_start(self) -> None:
        await self.topic.maybe_declare()  # Faust declares the topics of its agents only
        self.consumer = self._new_consumer()
        self.consumer.subscribe([self.topic.get_topic_name()], listener=_OnRebalance(self))
        await self.consumer.start()
        adapt_fetch_wait(self.consumer, self.app.settings)

    async def on_stop(self) -> None:
        if self.consumer is None:
            return
        try:
            await self.hand_back(self.assignment())
        finally:
            # Leaves the group (the partitions move at once), unless a static member: then
            # they wait for this instance to come back within the session timeout.
            await self.consumer.stop()
            if self.app.transactional_producer is not None:
                await self.app.transactional_producer.stop()

    @Service.task
    async def _fetch_batches(self) -> None:
        assert self.consumer is not None
        settings = self.app.settings
        try:
            while not self.should_stop:
                fetched = await self.consumer.getmany(timeout_ms=max(settings.batch_wait_ms, 1),
                                                      max_records=settings.batch_size)
                records = [Incoming(r.value, r.topic, r.partition, r.offset, r.timestamp)
                           for batch in fetched.values() for r in batch]
                if records and not self.should_stop and self.exactly_once:
                    await self._transact(records)
                elif records and not self.should_stop:
                    spans = self.tracker.track(records)
                    await self.pipeline.submit(records,
                                               functools.partial(self.tracker.done, spans))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if isinstance(exc, ConsumerStoppedError) and self.should_stop:
                return  # stopped under the fetch at shutdown
            exit_without_commit(exc)

    async def _transact(self, records: list[Incoming]) -> None:
        """One batch, its outputs and its offsets in one transaction (raises on failure: the
        caller exits without commit, the transaction is aborted, the batch read again)."""
        producer = self.app.transactional_producer
        async with self._commit_lock:
            # Records fetched before a revocation belong to the next owner now: it reads them
            # from the committed offsets (aiokafka's TxnOffsetCommit carries no generation to
            # fence this worker's offsets with, so they must not be written at all).
            assigned = self.assignment()
            records = [r for r in records if not self.revoking
                       and TopicPartition(r.topic, r.partition) in assigned]
            if not records:
                return
            offsets = {TopicPartition(r.topic, r.partition): r.offset + 1 for r in records}
            await producer.begin_transaction()
            # One transaction, one batch (the model takes it in batches of batch_size).
            await infer_batch(self.app, self.pipeline.kind, records, Turn(None))
            await producer.send_offsets_to_transaction(offsets, self.group_id)
            await producer.commit_transaction()
            self.tracker.committed(offsets)

    @Service.timer(COMMIT_INTERVAL_S)
    async def _commit_periodically(self) -> None:
        await self.commit()

    async def commit(self) -> None:
        """Flush the producer, then commit what is safe to commit (never raises KafkaError:
        a commit that fails is retried by the next one; at worst records are replayed)."""
        if self.consumer is None or self.exactly_once:  # committed in each transaction
            return
        async with self._commit_lock:
            offsets = self.tracker.to_commit(self.assignment())
            if not offsets:
                return
            await self.app.producer.flush()
            try:
                await self.consumer.commit(offsets)
            except KafkaError as exc:
                log.warning("intake commit failed, retried at the next one: %r", exc)
                return
            self.tracker.committed(offsets)

    async def offsets(self) -> list[tuple[str, int, int | None, int | None, int | None, int]]:
        """Per partition held: topic, partition, ListOffsets end, the last fetch's high
        watermark, committed offset, and the committed offset else the position (the web
        view's lag, streamapp.web.views)."""
        consumer = self.consumer
        tps = sorted(self.assignment())
        if consumer is None or not tps:
            return []
        listed = await consumer.end_offsets(tps)
        rows = []
        for tp in tps:
            committed = self.tracker.last_committed(tp)
            if committed is None:
                committed = await consumer.committed(tp)
            position = committed if committed is not None else await consumer.position(tp)
            rows.append((tp.topic, tp.partition, listed.get(tp), consumer.highwater(tp),
                         committed, position))
        return rows

    async def hand_back(self, partitions: set[TopicPartition]) -> None:
        """Before `partitions` go (rebalance, shutdown): finish the batches in flight, commit."""
        if self.exactly_once:
            self.revoking = True
            async with self._commit_lock:  # the transaction under way commits first
                self.tracker.forget(partitions)
            return
        await self.pipeline.drain()
        await self.commit()
        self.tracker.forget(partitions)
