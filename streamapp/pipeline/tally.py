"""The tally: the stats topic's counts into the tables `totals` and `per-minute`, each stats
message once and, per stats partition, in offset order.

The ledger (streamapp.pipeline.ledger) skips what a key has counted before by its marks, so a
stats message applied after a later one of its partition would lose counts it never added.
The consumer can hand a partition's records over with a hole: around an assignment a fetch
may be dropped and later offsets delivered (`join_leave` here: `offset jump on
streamapp-stats:2: read offset 30, next record 33`, that partition's keys 90 short of the
topics, the counts of offsets 30 to 32; in CI the keys of one partition 55 short); the
commit then waits at the hole, and the records come again after LOST_RECORD_GRACE_S
(streamapp.pipeline.offsets) or with the next assignment's seek. Applied on arrival, they
were skipped as counted. So the tally applies a partition's messages strictly one offset
after the other (`InOrder`): a message past a hole is held until the hole fills.

A held message is acked as it arrives: the commit cannot pass the hole (SafeOffsetConsumer
commits only unbroken runs of acked offsets), and once the hole's messages are acked, those
held after them are applied already, in the same step. Held unacked, they would stop a
rebalance: Faust waits for every delivered message to be acked before it gives partitions up
(`stream_wait_empty`), and the hole is fetched again only after the rebalance.

The stats topic has no holes of its own under at-least-once (it is neither compacted nor
written in transactions). Under STREAMAPP_GUARANTEE=exactly_once its transaction markers
are holes that never fill, so there the tally applies messages as they come, as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from faust.types import EventT

from streamapp.pipeline.counts import merge_counts, stats_entries
from streamapp.pipeline.ledger import apply_entry

if TYPE_CHECKING:
    from streamapp.application import StreamApp

log = logging.getLogger(__name__)

# Messages held past one partition's hole, at most: beyond it the hole is given up on (its
# counts are lost to the tables, with an error in the log) rather than hold memory without
# bound. At a message per partition every counts window (250 ms) from each of four
# workers, about ten minutes' worth.
MOST_HELD = 10_000
HOLE_WARNING_EVERY_S = 30.0


@dataclass
class _Partition:
    next_offset: int  # the next offset to apply
    held: dict[int, EventT] = field(default_factory=dict)  # past a hole, by offset
    hole_since: float | None = None  # monotonic, when the current hole was first seen
    warned_at: float = 0.0


class InOrder:
    """Per partition of one topic: which events to apply, in offset order, each offset once.

    `arrange(event)` returns the events to apply now: none for a replay (an offset applied
    already) or for one past a hole (held); the event and the held ones that follow it once
    it fills the hole. The first offset of a partition is where the consumer starts it
    (`start_of`: its committed offset); the state is dropped at each new consumer
    generation, whose seek starts every partition again at its committed offset.
    """

    def __init__(self, start_of: Callable[[int], Awaitable[int]],
                 generation: Callable[[], int], *, most_held: int = MOST_HELD) -> None:
        self._start_of = start_of
        self._generation = generation
        self._most_held = most_held
        self._partitions: dict[int, _Partition] = {}
        self._seen_generation: int | None = None

    async def arrange(self, event: EventT) -> list[EventT]:
        generation = self._generation()
        if generation != self._seen_generation:
            self._seen_generation = generation
            for partition, state in self._partitions.items():
                if state.held:
                    log.info("partition %s: a new consumer generation; the %s messages held "
                             "past offset %s come again from the committed offset", partition,
                             len(state.held), state.next_offset)
            self._partitions.clear()  # held events of the old generation: fetched again
        message = event.message
        state = self._partitions.get(message.partition)
        if state is None:
            state = _Partition(await self._start_of(message.partition))
            self._partitions[message.partition] = state
        offset = message.offset
        if offset < state.next_offset:
            return []  # applied before (a replay, or a held offset delivered again)
        if offset > state.next_offset:
            return self._hold(message.topic, message.partition, state, event)
        ready = [event]
        state.next_offset = offset + 1
        while (held := state.held.pop(state.next_offset, None)) is not None:
            ready.append(held)
            state.next_offset += 1
        for stale in [o for o in state.held if o < state.next_offset]:
            del state.held[stale]  # a copy of an offset applied by its own delivery
        if state.hole_since is not None and not state.held:
            log.info("%s:%s: the hole before offset %s filled after %.1f s; %s messages "
                     "applied in order", message.topic, message.partition, state.next_offset,
                     time.monotonic() - state.hole_since, len(ready))
            state.hole_since = None
        return ready

    def _hold(self, topic: str, partition: int, state: _Partition,
              event: EventT) -> list[EventT]:
        offset = event.message.offset
        now = time.monotonic()
        if state.hole_since is None:
            state.hole_since = now
        state.held.setdefault(offset, event)
        if now - state.warned_at >= HOLE_WARNING_EVERY_S:
            state.warned_at = now
            log.warning("%s:%s: offset %s arrived before %s; holding %s messages until the "
                        "offsets between arrive (fetched again by the consumer)", topic,
                        partition, offset, state.next_offset, len(state.held))
        if len(state.held) <= self._most_held:
            return []
        # Given up: apply what is held from its lowest offset on, the hole's counts lost.
        first = min(state.held)
        log.error("%s:%s: offsets %s to %s never arrived in %.0f s; applying the %s messages "
                  "after them (the tables miss those offsets' counts)", topic, partition,
                  state.next_offset, first - 1, now - state.hole_since, len(state.held))
        ready = [state.held.pop(o) for o in sorted(state.held)]
        state.next_offset = ready[-1].message.offset + 1
        state.hole_since = None
        return ready


async def tally_event(app: StreamApp, order: InOrder | None, event: EventT) -> None:
    """Apply one stats event (and the held ones it frees) to the tables."""
    ready = [event] if order is None else await order.arrange(event)
    for applied in ready:
        _apply(app, applied.message.offset, applied.key, applied.value)


def _apply(app: StreamApp, offset: int, key: bytes | None, value: Any) -> None:
    # `totals` knows what each key has counted (streamapp.pipeline.ledger): a replayed batch,
    # however cut, adds nothing, and the per-minute table gets only what it added.
    for name, entry in stats_entries(key, value).items():
        total, added = apply_entry(app.totals[name], entry, offset)
        app.totals[name] = total
        if added:
            app.per_minute[name] = merge_counts(app.per_minute[name].value(), added)


def stats_order(app: StreamApp) -> InOrder | None:
    """The tally's ordering, or None where the stats topic has holes of its own."""
    if app.settings.guarantee == "exactly_once":
        return None
    topic = app.stats_topic.get_topic_name()

    async def start_of(partition: int) -> int:
        return await app.consumer.next_to_read(topic, partition)

    return InOrder(start_of, lambda: app.consumer_generation_id)
