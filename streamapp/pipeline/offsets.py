"""Offset bookkeeping that never commits past a record this worker has not processed.

Faust (0.15.3) turns an apparent jump in a partition's offsets into a "gap" and counts the
missing offsets as acked (`Consumer._add_gap`, then `_new_offset` merges the gap into the acked
list), so the next commit runs past them. Meant for compacted topics and transaction markers,
it also fires on jumps that are bookkeeping artefacts, measured on every kill -9 + restart:

* after an assignment, `Recovery._resume_streams` resumes the stream partitions *before*
  `perform_seek()` while the flow is already active (table recovery resumed it), so the fetcher
  delivers records at the committed position while `perform_seek` awaits the committed offset of
  one partition after another;
* `perform_seek` then overwrites `_read_offset[tp]` (the last offset read) with the committed
  offset (the next offset to read), so the next record looks like a jump, e.g.
  `comments:0` committed 442, records 442..463 delivered during the seek, next 464:
  gap 443 -> 464 recorded, i.e. 22 offsets counted as acked before they were processed.

From then on the commit no longer waits for those records: whatever drops them before they
are processed (a rebalance clearing the stream buffers, another crash, a cancelled delivery)
loses them for good. `_new_offset` has the matching off-by-one: it lets a commit start one
offset past the committed one (`min(acked) - committed > 1`), skipping the record at the
committed offset when it was never acked.

This application's input topics (`comments`, the internal inference and stats topics) are
neither compacted nor written transactionally (but for the stats topic under
STREAMAPP_GUARANTEE=exactly_once: SafeOffsetConsumer), so a real gap cannot occur on them; a jump is
logged and ignored, and a commit only ever advances over offsets acked one after another from
the committed one. The price, should a real gap ever appear (a transactional upstream
producer's control records), is a commit that stops advancing there: records are replayed
after a restart, never lost. The environment variable `FAUST_OFFSET_GAPS=faust` restores
Faust's handling, for comparison runs only.

A record can also go missing inside a running worker: around an assignment Faust drops records
it has already fetched (a `getmany` cut short by a generation change or a stopped flow, a
delivery cancelled by a suspended flow, a stream skipping a record of another generation) and
counts on the seek to the committed offset to fetch them again; a drop that comes after that
seek is never fetched again. Measured in `make reliability` (backpressure: a second worker
joins under a 50,000-comment backlog; seed 1, twice): the messages at exactly the committed
offsets of two inference partitions never reached the agent, the commit stayed there for good
(above), and 39 to 6,469 comments had no result until the next restart. So a commit that waits
for a record no stream holds, queues or is still to fetch (`lost_record`) is mended after
LOST_RECORD_GRACE_S: the partition is sought back to it, and of what follows only what this
worker has not processed and does not hold is delivered again. A partition's last records
leave no later ack behind: seen in tests/test_model_process.py (a restarted worker, one
inference message per partition to replay at the committed offset, fetched and never
delivered, the partition silent for good), so there the consumer's position past the
committed offset, with nothing acked after it, shows the loss.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

from faust.exceptions import ConsumerNotStarted
from faust.transport.consumer import ensure_TPset
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.types import TP, Message
from faust.types.tuples import ack_lock
from mode.utils.futures import notify

from streamapp.pipeline.chunks import (
    ChunkMessage,
    FetchChunk,
    chunk_message,
    message_offsets,
    split_fetch,
)
from streamapp.pipeline.fetching import FetchWaitConsumerThread
from streamapp.pipeline.holes import DeliveryOrder

log = logging.getLogger(__name__)

# Faust's own gap handling, for measuring what this module prevents.
FAUST_GAPS = os.environ.get("FAUST_OFFSET_GAPS", "") == "faust"

# How long the commit may wait for a record nobody holds before it is fetched again: longer
# than a record takes from the fetch to a stream (a full stream buffer holds it in the fetch
# loop, which then has not read past it, so that case never counts).
LOST_RECORD_GRACE_S = 10.0

# The commit before a revocation may not hold the rebalance up for long: past this, the next
# owner replays what it would have covered, as Faust alone does.
REVOKE_COMMIT_TIMEOUT_S = 5.0


class SafeOffsetConsumer(AIOKafkaConsumer):
    """Faust's aiokafka consumer, committing only offsets processed in an unbroken run.

    Under STREAMAPP_GUARANTEE=exactly_once the stats topic is written in transactions, so real
    gaps appear in it (a commit marker after each batch, aborted batches); this consumer then
    reads `read_committed` and tells the two kinds apart by what was delivered: a gap that
    starts past the highest offset ever handed to a stream is real (those offsets will never
    come) and counts as processed, as in Faust; one that starts at or below it is the seek's
    artefact above (its records were delivered and are acked when processed).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._real_gaps = self.app.settings.guarantee == "exactly_once"
        self._delivered: dict[TP, int] = {}  # highest offset handed to a stream, per partition
        # Per partition: the lost offset, when it was first seen (monotonic), and the fetch
        # round then (_fetch_rounds).
        self._lost_since: dict[TP, tuple[int, float, int]] = {}
        # Fetches returned so far: the fetch loop asks for the next fetch only once it has
        # handed over every record of the last one (a full stream buffer holds it there), so
        # a record is only lost once a later fetch has begun.
        self._fetch_rounds = 0
        # Per partition sought back to a lost record: offsets above it that were processed or
        # are held, not to be delivered again, and the read offset the replay ends at.
        self._refetching: dict[TP, tuple[set[int], int]] = {}
        self._resume_after_seek: set[TP] = set()  # stream partitions waiting for their seek
        self._seek_due_generation: int | None = None  # assigned, not yet sought to committed
        self.fetched_again: collections.Counter[str] = collections.Counter()  # per topic
        # Fetch chunks (streamapp.pipeline.chunks): topics, size, each partition's first.
        settings = self.app.settings
        self._chunked_topics = {settings.comments_topic} if settings.chunked_comments else set()
        self._chunk_size = settings.batch_size
        self._chunk_first: dict[TP, int] = {}
        self._order = None if FAUST_GAPS or self._real_gaps else DeliveryOrder()  # holes.py

    def track_message(self, message: Any) -> None:
        super().track_message(message)
        if self._real_gaps and message.offset > self._delivered.get(message.tp, -1):
            self._delivered[message.tp] = message.offset

    def lost_record(self, tp: TP) -> int | None:
        """The committed offset of `tp` when its record is lost: the commit waits for it
        (later offsets are acked), the fetch loop has read past it, and no stream holds it
        (tracked, not acked) and no channel queues it. None otherwise."""
        committed = self._committed_offset.get(tp)
        acked = self._acked.get(tp)
        read = self._read_offset.get(tp)
        if committed is None or not acked or min(acked) <= committed or read is None \
                or read <= committed or (tp in self._gap and self._gap[tp].overlaps(committed)):
            return None
        return None if committed in self._held(tp) else committed

    async def lost_tail(self, tp: TP) -> tuple[int, int] | None:
        """A partition's last records, lost: nothing is acked since the commit (so no later
        ack shows the loss, as lost_record needs), the consumer's position is past the
        committed offset (or, with none committed, past the log's start), and no one holds
        the record there. (That offset, the position), or None; asks the consumer thread only
        when the last fetch saw records beyond the commit."""
        if self._acked.get(tp) or tp in self._refetching:
            return None
        committed = self._committed_offset.get(tp)
        try:
            highwater = self.highwater(tp)
            if highwater is None or (committed is not None and highwater <= committed):
                return None
            position = await self.position(tp)
            if committed is None:
                committed = (await self.earliest_offsets(tp)).get(tp)
        except Exception:  # not started, or stopping: nothing to mend now
            return None
        if position is None or committed is None or position <= committed \
                or (tp in self._gap and self._gap[tp].overlaps(committed)) \
                or committed in self._held(tp):
            return None
        return committed, position

    async def next_to_read(self, topic: str, partition: int) -> int:
        """Where this generation reads a partition from: committed, or the log's start."""
        tp = TP(topic, partition)
        committed = self._committed_offset.get(tp)
        if committed is not None:
            return committed
        return (await self.earliest_offsets(tp)).get(tp) or 0

    def _held(self, tp: TP) -> set[int]:
        """Offsets of `tp` delivered and not yet acked: held by a stream, or in a channel's
        queue on the way to one (a chunk holds all of its offsets). A record the fetch loop is
        still handing over (a full stream buffer) is in none of these: no later fetch has begun
        then, which refetch_lost_records waits for."""
        messages = [m for m in list(self._unacked_messages) if m.tp == tp]
        for channel in self.app.topics._tp_index.get(tp, ()):
            for event in list(getattr(channel.queue, "_queue", ())):
                message = getattr(event, "message", None)
                if message is not None and message.tp == tp:
                    messages.append(message)
        return {offset for message in messages for offset in message_offsets(message)}

    async def refetch_lost_records(self) -> list[tuple[TP, int]]:
        """Seek back to each record lost for LOST_RECORD_GRACE_S (see the module's docstring);
        what was sought, for the log and the tests."""
        if self.app.rebalancing:  # the assignment's own seek comes first
            return []
        try:
            assigned = self.assignment()
        except ConsumerNotStarted:  # stopping before it started (a worker that cannot start)
            return []
        now = time.monotonic()
        sought = []
        for tp in [tp for tp in assigned if not self._is_changelog_tp(tp)]:
            lost, position = self.lost_record(tp), None
            if lost is None and (tail := await self.lost_tail(tp)) is not None:
                lost, position = tail
            if lost is None:
                self._lost_since.pop(tp, None)
                continue
            seen = self._lost_since.get(tp)
            if seen is None or seen[0] != lost:
                self._lost_since[tp] = (lost, now, self._fetch_rounds)
                continue
            if now - seen[1] < LOST_RECORD_GRACE_S or self._fetch_rounds <= seen[2]:
                continue
            del self._lost_since[tp]
            # The replay ends where the fetch loop had read to (by the position, for a
            # partition's last records, which left the read offset at the committed one).
            read = max(self._read_offset[tp] or lost, (position or 0) - 1)
            self._refetching[tp] = (set(self._acked_index[tp]) | self._held(tp), read)
            log.warning("%s:%s offset %s was dropped before any stream got it, and the commit "
                        "waits for it: fetching it again (read up to %s; what was processed "
                        "or is held is not delivered again)", tp.topic, tp.partition, lost, read)
            await self.seek(tp, lost)
            self.fetched_again[tp.topic] += 1
            sought.append((tp, lost))
        return sought

    def skip_refetched(self, tp: TP, offset: int) -> bool:
        """While `tp` is read again after a lost record: whether the record at `offset` was
        processed or is held already (then it is not delivered twice)."""
        refetching = self._refetching.get(tp)
        if refetching is None:
            return False
        done, until = refetching
        if offset >= until:
            del self._refetching[tp]
        if offset in done:
            self._read_offset[tp] = offset  # read, as far as the fetch loop's gap check goes
            return True
        return False

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Any]]:
        order, again = self._order, set()  # partitions sought back: the rest comes again
        async for tp, message in super().getmany(timeout):
            if tp in again:
                continue
            # A partition being read again is never chunked (_wait_next_records).
            if (self._refetching and not isinstance(message, ChunkMessage)
                    and self.skip_refetched(tp, message.offset)):
                if order is not None:
                    order.passed(tp, (message.offset,))
            elif order is None or (back := order.admit(tp, message_offsets(message))) is None:
                yield tp, message
            else:
                again.add(tp)
                await self.seek(tp, back)

    async def seek(self, partition: TP, offset: int) -> None:
        await super().seek(partition, offset)
        if self._order is not None and not self._is_changelog_tp(partition):
            self._order.sought(partition, offset)

    async def _wait_next_records(self, timeout: float) -> tuple[Any, Any]:
        """A fetch, the chunked topics' records as chunks (streamapp.pipeline.chunks): Faust's
        getmany then makes one message of each (`_to_message`), in its round robin."""
        records, active_partitions = await super()._wait_next_records(timeout)
        self._fetch_rounds += 1
        if records and self._chunked_topics:
            records = {tp: self._chunks(tp, fetched) for tp, fetched in records.items()}
        return records, active_partitions

    def _chunks(self, tp: TP, fetched: list[Any]) -> list[Any]:
        if tp.topic not in self._chunked_topics or tp in self._refetching or not fetched:
            return fetched
        read = self._read_offset.get(tp)
        if read is not None:  # what the fetch loop would drop record by record
            fetched = [record for record in fetched if record.offset >= read]
        return split_fetch(fetched, self._chunk_size)  # type: ignore[return-value]

    def _to_message(self, tp: TP, record: Any) -> Any:
        if isinstance(record, FetchChunk):
            self._chunk_first[tp] = record[0].offset  # for the fetch loop's gap check
            return chunk_message(tp, record, self.app.consumer_generation_id)
        if self._chunk_first:
            self._chunk_first.pop(tp, None)  # a record on its own: no chunk to check against
        return super()._to_message(tp, record)

    def ack(self, message: Message) -> bool:
        """Faust's ack, for a chunk every offset it holds (faust.transport.consumer.ack)."""
        if not isinstance(message, ChunkMessage):
            return bool(super().ack(message))
        with ack_lock:
            if message.acked:
                return False
            message.acked = True
            tp = message.tp
            try:
                if not self.app.topics.acks_enabled_for(message.topic):
                    return False
                committed = self._committed_offset[tp]
                index, acked = self._acked_index[tp], self._acked[tp]
                new = [offset for offset in message.offsets
                       if (committed is None or offset >= committed) and offset not in index]
                self._unacked_messages.discard(message)
                index.update(new)
                acked.extend(new)
                self._n_acked += len(new)
                return bool(new)
            finally:
                notify(self._waiting_for_ack)

    def resume_partitions(self, tps: Iterable[TP]) -> None:
        """During a rebalance, stream partitions resume only once they are sought to their
        committed offsets (perform_seek). Faust's recovery resumes them first, with the flow
        already on (it reads the changelogs), so records fetched from the old position were
        delivered while the seek ran, then fetched again: the offset jumps above, and the
        records lost inside a running worker (LOST_RECORD_GRACE_S) were among those.

        Only while that seek is still to come: a resume after it (the same rebalance, which
        lasts until Faust's `on_rebalance_end`) goes through at once, or it would wait for
        the next rebalance, and the partition would stay silent until then."""
        tps = ensure_TPset(tps)
        if self._seek_due_generation is not None and self.app.rebalancing and not FAUST_GAPS:
            streams = {tp for tp in tps if not self._is_changelog_tp(tp)}
            self._resume_after_seek |= streams
            tps = tps - streams
        super().resume_partitions(tps)

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        self._seek_due_generation = generation_id  # the recovery seeks these next
        await super().on_partitions_assigned(assigned, generation_id)

    async def seek_to_committed(self) -> Any:
        """Faust relies on this seek to fetch again what it dropped around an assignment (a
        `getmany` cut short by the generation change, a stream skipping a record of the old
        generation, the queues cleared as the flow resumes), but aiokafka only seeks a
        partition with an offset committed above 0: one with none stayed where its fetcher
        was, past the dropped records, and Faust then commits its first acked run from
        wherever that starts. A stream partition with none is sought to the log's start:
        the reset position (consumer_auto_offset_reset "earliest")."""
        committed = await super().seek_to_committed()
        if FAUST_GAPS:
            return committed
        starts = {TP(p.topic, p.partition): offset for p, offset in committed.items()
                  if not self._is_changelog_tp(TP(p.topic, p.partition))}
        uncommitted = [tp for tp, offset in starts.items() if offset is None or offset <= 0]
        for tp, start in ((await self.earliest_offsets(*uncommitted)) if uncommitted
                          else {}).items():
            await self._seek(tp, start)
            starts[tp] = start
        for tp, start in starts.items():
            if self._order is not None and start is not None:
                self._order.sought(tp, start)
        return committed

    async def perform_seek(self) -> None:
        generation = self._seek_due_generation
        await super().perform_seek()
        if generation != self._seek_due_generation:
            # A newer assignment came while this seek ran: its own seek resumes them.
            return
        self._seek_due_generation = None
        if self._resume_after_seek:
            waiting, self._resume_after_seek = self._resume_after_seek, set()
            super().resume_partitions(waiting & self.assignment())

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        for tp in revoked:
            self._lost_since.pop(tp, None)
            self._refetching.pop(tp, None)
        if self._order is not None:
            self._order.forget(revoked)
        if not FAUST_GAPS and not (self.should_stop or self.app.should_stop):
            # Faust forgets the revoked partitions' acks before the app commits (after its
            # agents drain): what was processed since the last commit went to the next owner
            # to process again. Commit it now (the producer is flushed first); not when
            # stopping: the stop has committed, and the broker may be going too (Ctrl-C).
            try:
                await asyncio.wait_for(self.commit(revoked), REVOKE_COMMIT_TIMEOUT_S)
            except Exception as exc:  # the next owner then replays it, as before
                log.warning("commit before the revocation failed: %r", exc)
        await super().on_partitions_revoked(revoked)

    async def commit(self, topics: Any = None, start_new_transaction: bool = True) -> bool:
        if not FAUST_GAPS:
            await self.refetch_lost_records()
        return await super().commit(topics, start_new_transaction)

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return FetchWaitConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        first = self._chunk_first.pop(tp, None)
        if first is not None and offset_to >= first:
            # The fetch loop checks a chunk by its last offset: only offsets before the
            # chunk's first are missing.
            if offset_from >= first:
                return
            offset_to = first
        if FAUST_GAPS:
            await super()._add_gap(tp, offset_from, offset_to)
            return
        if self._real_gaps and offset_from > self._delivered.get(tp, -1):
            # Faust's gap includes `offset_to`, the record just arrived and not processed yet.
            await super()._add_gap(tp, offset_from, offset_to - 1)
            return
        # Unseen offsets are not acked: delivered, they are acked when processed; if not
        # (streamapp.pipeline.holes fetches them again), the commit stays before them.
        log.warning("offset jump on %s:%s: read offset %s, next record %s; not counted as "
                    "processed (committed %s)", tp.topic, tp.partition, offset_from - 1,
                    offset_to, self._committed_offset[tp])

    def _new_offset(self, tp: TP) -> int | None:
        if not FAUST_GAPS:
            acked = self._acked[tp]
            committed = self._committed_offset[tp]
            # `committed` is the next offset to read: a commit may only start from it, or from
            # a real gap there (exactly_once: a transaction marker; no gaps are kept otherwise).
            if (acked and committed is not None and min(acked) > committed
                    and not self._gap[tp].overlaps(committed)):
                return None
        return super()._new_offset(tp)
