"""Each stream partition's records handed over in offset order, without a hole.

Around an assignment Faust can drop a partition's fetched records before any stream sees
them (a `getmany` cut short by a stopped flow) and hand over the next fetch: `make
reliability`, join_leave: `offset jump on comments:3: read offset 3989, next record 4802`.
The commit waits at the hole (streamapp.pipeline.offsets) and the records come again later,
after records past them were processed: every output is still made, but the tables are not
exact any more. The ledger (streamapp.pipeline.ledger) counts a lane's comments by "counted up
to W", so comments counted after later ones of their lane are skipped: 813 comments short of
the topics in that run, exactly the hole.

So the consumer tracks, per stream partition, the next offset a stream is due, and a record
past it is not handed over: the partition is sought back to the hole, and what was fetched
with that record is dropped (it comes again in order). A hole that the refetch leaves too is
real (transaction markers, compaction) and is passed. Not under STREAMAPP_GUARANTEE=
exactly_once, whose stats topic has a transaction marker after every batch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from faust.types import TP

log = logging.getLogger(__name__)


class DeliveryOrder:
    """The next offset due per stream partition (`due`), set where the consumer seeks and
    advanced by what it hands over; `admit(tp, offsets)` says whether a record (its offsets:
    a chunk's several) comes past it and must be fetched again from there."""

    def __init__(self) -> None:
        self.due: dict[TP, int] = {}
        self._sought_back: dict[TP, int] = {}  # partitions sought back to this offset

    def sought(self, tp: TP, offset: int) -> None:
        """The consumer sought `tp` to `offset`: the next record due there."""
        self.due[tp] = offset

    def forget(self, tps: set[TP]) -> None:
        for tp in tps:
            self.due.pop(tp, None)
            self._sought_back.pop(tp, None)

    def passed(self, tp: TP, offsets: Sequence[int]) -> None:
        """A record handed over (or skipped as processed): the next one is due after it."""
        due = self.due.get(tp)
        if due is not None and offsets[-1] >= due:  # tracked since a seek: stream partitions
            self.due[tp] = offsets[-1] + 1

    def admit(self, tp: TP, offsets: Sequence[int]) -> int | None:
        """None to hand the record at `offsets` over (in order, a replay, or past a hole
        found real; it is `passed` then); else the offset to seek `tp` back to, the hole's."""
        due = self.due.get(tp)
        if due is None:
            return None  # not tracked: a changelog, or a partition never sought
        first = offsets[0]
        if first <= due:  # in order (the common case), or a replay
            if offsets[-1] >= due:
                self.due[tp] = offsets[-1] + 1
            if self._sought_back:
                self._sought_back.pop(tp, None)
            return None
        if self._sought_back.pop(tp, None) == due:
            log.info("%s:%s: offsets %s to %s are not on the log (fetched again, still "
                     "missing): passed", tp.topic, tp.partition, due, first - 1)
            self.passed(tp, offsets)
            return None
        self._sought_back[tp] = due
        log.warning("%s:%s: offset %s came before %s (the records between were dropped "
                    "before any stream got them): fetching again from %s", tp.topic,
                    tp.partition, first, due, due)
        return due
