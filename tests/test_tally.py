"""The tally applies each stats partition's messages in offset order (streamapp.pipeline.
tally): a message past a hole waits until the hole fills; replays add nothing."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import orjson
import pytest
from faust.types import TP
from faust.types.tuples import Message

from streamapp.pipeline.counts import BatchTally, stats_entries
from streamapp.pipeline.ledger import apply_entry
from streamapp.pipeline.tally import InOrder

TOPIC = "streamapp-stats"


@dataclass
class StatsEvent:
    """What the tally reads of a Faust event: its message (a real one) and its value; the
    stream holds one reference, as Faust's does, and acks it when the loop moves on."""

    message: Message
    key: bytes | None = None

    @property
    def value(self) -> bytes:
        return self.message.value

    def ack(self) -> bool:
        return self.message.ack(None)  # type: ignore[arg-type]


def event(partition: int, offset: int, value: bytes = b"{}") -> StatsEvent:
    message = Message(TOPIC, partition, offset, 0.0, 0, None, None, value, None, tp=TP(
        TOPIC, partition))
    message.incref()  # the stream's reference
    return StatsEvent(message)


class Stream:
    """Events through an InOrder as the tally agent passes them (the stream acks each one
    once the loop asks for the next)."""

    def __init__(self, starts: dict[int, int], generation: list[int] | None = None,
                 most_held: int = 100) -> None:
        self.generation = generation or [1]

        async def start_of(partition: int) -> int:
            return starts[partition]

        self.order = InOrder(start_of, lambda: self.generation[0], most_held=most_held)
        self.applied: list[tuple[int, int]] = []

    def deliver(self, *events: StatsEvent) -> list[tuple[int, int]]:
        applied = []
        for current in events:
            ready = asyncio.run(self.order.arrange(current))
            applied += [(e.message.partition, e.message.offset) for e in ready]
            current.ack()  # the stream's ack
        self.applied += applied
        return applied


def test_messages_in_order_are_applied_as_they_come_and_replays_not_at_all() -> None:
    stream = Stream({0: 5})
    assert stream.deliver(event(0, 5), event(0, 6), event(0, 7)) == [(0, 5), (0, 6), (0, 7)]
    assert stream.deliver(event(0, 6), event(0, 3)) == []  # replays: applied before
    assert stream.deliver(event(0, 8)) == [(0, 8)]


def test_a_message_past_a_hole_waits_until_the_hole_fills() -> None:
    stream = Stream({2: 30})
    # The CI run: offsets 30 to 32 dropped around an assignment, 33 onwards delivered.
    held = [event(2, 33), event(2, 34), event(2, 35)]
    assert stream.deliver(*held) == []
    # Acked (the commit stays at the hole: only unbroken runs are committed); a rebalance
    # does not wait for them.
    assert all(e.message.acked for e in held)
    assert stream.deliver(event(2, 30), event(2, 31)) == [(2, 30), (2, 31)]
    # 32 fills it: it and everything held after it, in order.
    assert stream.deliver(event(2, 32)) == [(2, 32), (2, 33), (2, 34), (2, 35)]
    # Held offsets fetched again (the consumer's refetch skips them; a seek may not): once.
    assert stream.deliver(event(2, 34), event(2, 36)) == [(2, 36)]


def test_partitions_are_ordered_each_on_its_own() -> None:
    stream = Stream({0: 0, 1: 10})
    assert stream.deliver(event(1, 11), event(0, 0), event(0, 1)) == [(0, 0), (0, 1)]
    assert stream.deliver(event(1, 10)) == [(1, 10), (1, 11)]


def test_a_new_generation_starts_every_partition_again_at_its_committed_offset() -> None:
    starts, generation = {0: 30}, [1]
    stream = Stream(starts, generation)
    stale = event(0, 33)
    assert stream.deliver(stale) == []
    # A rebalance: the seek to the committed offset (still 30, the hole) fetches it all again.
    generation[0], starts[0] = 2, 30
    assert stream.deliver(event(0, 30), event(0, 31), event(0, 32), event(0, 33)) == [
        (0, 30), (0, 31), (0, 32), (0, 33)]


def test_a_hole_that_never_fills_is_given_up_on_past_the_limit(
        caplog: pytest.LogCaptureFixture) -> None:
    stream = Stream({0: 0}, most_held=3)
    with caplog.at_level(logging.WARNING, "streamapp.pipeline.tally"):
        assert stream.deliver(event(0, 2), event(0, 3), event(0, 4)) == []
        assert "offset 2 arrived before 0" in caplog.text
        assert stream.deliver(event(0, 5)) == [(0, 2), (0, 3), (0, 4), (0, 5)]
    assert "offsets 0 to 1 never arrived" in caplog.text
    assert stream.deliver(event(0, 6)) == [(0, 6)]


def test_counts_delivered_past_a_hole_reach_the_table_exactly_once() -> None:
    """What the CI run lost: stats messages applied after later ones of their partition were
    skipped by the ledger's marks. In offset order, every count lands."""
    lane = "streamapp-inference:2>comments:0"
    values = []
    for first in range(0, 60, 10):  # six stats messages, ten comments each
        tally = BatchTally()
        for offset in range(first, first + 10):
            tally.add("生鲜", "生鲜/水果", predicted=True, matched=offset % 2 == 0,
                      source=(lane, offset))
        values.append(orjson.dumps(dict(tally.entries())))
    stream = Stream({0: 0})
    table: dict[str, dict] = {}
    delivery = [0, 1, 4, 5, 2, 3, 4]  # 2 and 3 dropped, fetched again after 4 and 5
    for offset in delivery:
        current = event(0, offset, values[offset])
        ready = asyncio.run(stream.order.arrange(current))
        for applied in ready:
            for key, entry in stats_entries(None, applied.value).items():
                table[key], _ = apply_entry(table.get(key), entry, applied.message.offset)
    assert table["category:生鲜"]["seen"] == 60
    assert table["category:生鲜"]["matched"] == 30
