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
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import aiokafka
from aiokafka import TopicPartition
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, server_list
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.types import TP

log = logging.getLogger(__name__)

# Faust's own gap handling, for measuring what this module prevents.
FAUST_GAPS = os.environ.get("FAUST_OFFSET_GAPS", "") == "faust"


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

    def track_message(self, message: Any) -> None:
        super().track_message(message)
        if self._real_gaps and message.offset > self._delivered.get(message.tp, -1):
            self._delivered[message.tp] = message.offset

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return FetchWaitConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        if FAUST_GAPS:
            await super()._add_gap(tp, offset_from, offset_to)
            return
        if self._real_gaps and offset_from > self._delivered.get(tp, -1):
            # Faust's gap includes `offset_to`, the record just arrived and not processed yet.
            await super()._add_gap(tp, offset_from, offset_to - 1)
            return
        # Do not count unseen offsets as acked: if the records were delivered they will be
        # acked when processed; if not, the commit stays before them and they are replayed.
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
