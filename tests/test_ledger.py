"""Exact tables (streamapp.pipeline.ledger): a replayed record adds nothing to the tables,
however its batch is cut, whoever replays it, and in whatever order concurrent batches end."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import orjson
import pytest

from streamapp.pipeline import ledger
from streamapp.pipeline.batches import Turn
from streamapp.pipeline.batchwork import decode_direct
from streamapp.pipeline.counts import COUNTERS, BatchTally, stats_entries
from streamapp.pipeline.ledger import apply_entry, count_new, source_of
from streamapp.records import Incoming
from streamapp.settings import Settings

Table = dict[str, dict[str, Any]]
CATEGORIES = ("生鲜", "数码", "图书")


def record(topic: str, partition: int, offset: int) -> Incoming:
    return Incoming(b"{}", topic, partition, offset, None)


def test_a_record_is_counted_by_its_comment_offset_in_the_lane_it_was_read_from() -> None:
    direct = record("comments", 3, 41)
    assert source_of(direct, direct.id) == ("comments:3", 41)
    fanned_out = record("streamapp-inference", 1, 7)
    assert source_of(fanned_out, "comments:3:41") == ("streamapp-inference:1>comments:3", 41)
    # Not a comment id (a foreign producer's record): its own offset, in its own lane.
    assert source_of(fanned_out, "no-offset") == ("streamapp-inference:1", 7)
    # The direct path's decoder counts each record where source_of does.
    batch = [record("comments", p, o) for p, o in ((3, 41), (0, 5), (3, 42), (1, 0))]
    assert [source for _, source in decode_direct(Settings(), batch)] == [
        source_of(r, r.id) for r in batch]


class Tally:
    """The tally agent's bookkeeping over plain dicts: stats messages in, `totals` and the
    per-minute additions out."""

    def __init__(self) -> None:
        self.totals: Table = {}
        self.added: Counter[str] = Counter()  # what the per-minute table got, per key
        self.stats_offset = 0

    def send(self, tally: BatchTally) -> bytes:
        """One stats message holding every key (the real one is split by stats partition)."""
        return orjson.dumps(dict(tally.entries()))

    def apply(self, message: bytes, offset: int | None = None) -> None:
        if offset is None:
            offset = self.stats_offset = self.stats_offset + 1
        for key, entry in stats_entries(None, message).items():
            self.totals[key], added = apply_entry(self.totals.get(key), entry, offset)
            self.added.update({f"{key}/{name}": n for name, n in added.items()})

    def seen(self) -> dict[str, int]:
        return {key: value.get("seen", 0) for key, value in self.totals.items()}


def batch_of(lane: str, offsets: list[int], category_of: dict[int, str]) -> BatchTally:
    tally = BatchTally()
    for offset in offsets:
        category = category_of[offset]
        tally.add(category, f"{category}/x", predicted=offset % 5 != 0,
                  matched=offset % 3 == 0 and offset % 5 != 0, source=(lane, offset))
        if offset % 5 == 0:
            tally.add_dead_letter("model_error", (lane, offset))
        if offset % 7 == 0:
            tally.add_recovered("separator_in_review", (lane, offset))
    return tally


def expected_seen(offsets: range, category_of: dict[int, str]) -> dict[str, int]:
    seen: Counter[str] = Counter()
    for offset in offsets:
        seen[f"category:{category_of[offset]}"] += 1
        seen[f"path:{category_of[offset]}/x"] += 1
        if offset % 5 == 0:
            seen["dead_letter:model_error"] += 1
        if offset % 7 == 0:
            seen["recovered:separator_in_review"] += 1
    return dict(seen)


def test_a_replayed_batch_cut_differently_counts_only_what_is_new() -> None:
    category_of = {o: CATEGORIES[o % 3] for o in range(40)}
    tally = Tally()
    tally.apply(tally.send(batch_of("comments:0", list(range(0, 10)), category_of)))
    tally.apply(tally.send(batch_of("comments:0", list(range(10, 16)), category_of)))
    # A crash after offset 16 was sent, committed at 4: the replay reads 4..29 in other cuts.
    for cut in (range(4, 11), range(11, 23), range(23, 30)):
        tally.apply(tally.send(batch_of("comments:0", list(cut), category_of)))
    assert tally.seen() == expected_seen(range(30), category_of)
    value = tally.totals["category:生鲜"]
    assert value["_upto"] == {"comments:0": 27}  # the last 生鲜 offset: one mark per lane
    assert value["predicted"] + value["failed"] == value["seen"]
    # The per-minute table was given exactly what `totals` gained.
    assert tally.added["category:生鲜/seen"] == value["seen"]
    assert tally.added["category:生鲜/matched"] == value["matched"]


def test_the_tally_replaying_its_own_stats_messages_adds_nothing() -> None:
    category_of = {o: CATEGORIES[o % 3] for o in range(20)}
    tally = Tally()
    message = tally.send(batch_of("comments:1", list(range(20)), category_of))
    tally.apply(message, offset=7)
    before = {key: dict(value) for key, value in tally.totals.items()}
    tally.apply(message, offset=7)  # the tally restarted before committing offset 7
    tally.apply(message, offset=8)  # the same counts sent twice by a replayed batch
    assert {key: value["seen"] for key, value in tally.totals.items()} == {
        key: value["seen"] for key, value in before.items()}


def test_one_offset_twice_in_a_batch_counts_once() -> None:
    """The ingest agent, replayed, wrote a comment to the inference topic twice: both copies
    can land in one inference batch."""
    tally = BatchTally()
    lane = "streamapp-inference:2>comments:0"
    for matched in (True, False):
        tally.add("生鲜", "生鲜/x", predicted=True, matched=matched, source=(lane, 12))
    entry = dict(tally.entries())["category:生鲜"]
    delta, upto = count_new(None, entry)
    assert delta["seen"] == 1 and delta["predicted"] == 1
    assert delta["matched"] == 1  # the first copy's outcome counts
    assert upto == {lane: 12}


def test_offsets_read_in_order_and_any_offsets_count_alike() -> None:
    """count_new's binary search (each outcome's offsets rising, none named twice) gives what
    the general path gives, on entries of both kinds and marks anywhere."""
    rnd = random.Random(7)
    outcomes = ["seen,predicted", "seen,predicted,matched", "seen,failed", "seen"]
    in_order = 0
    for _ in range(3000):
        by_outcome = {}
        for outcome in rnd.sample(outcomes, rnd.randint(1, 3)):
            picked = rnd.sample(range(100, 130), rnd.randint(0, 8))
            by_outcome[outcome] = sorted(picked) if rnd.random() < 0.7 else picked
        mark = rnd.randint(90, 135)
        fast = ledger._new_in_order(by_outcome, mark)
        if fast is not None:
            in_order += 1
            assert fast == ledger._new_deduplicated(by_outcome, mark), (by_outcome, mark)
    assert 500 < in_order < 2900  # both kinds were drawn


def test_entries_without_sources_still_add_their_counts_once_per_stats_offset() -> None:
    """The form earlier versions wrote: counts alone, deduplicated by stats offset only."""
    value, added = apply_entry(None, {"seen": 3, "matched": 1}, 10)
    assert value == {"seen": 3, "matched": 1, "_offset": 10} and added == {"seen": 3,
                                                                          "matched": 1}
    assert apply_entry(value, {"seen": 3, "matched": 1}, 10) == (value, {})  # replayed
    assert apply_entry(value, {"seen": 5}, 9) == (value, {})  # older: applied before
    value, added = apply_entry(value, {"seen": 2}, 11)
    assert value == {"seen": 5, "matched": 1, "_offset": 11} and added == {"seen": 2}


def run_lanes(seed: int) -> tuple[Tally, dict[str, int]]:
    """Four lanes worked by a changing set of workers: random batch cuts, crashes (a reader
    starts again at the committed offset: the batches after it are replayed, cut anew),
    rebalances (a lane's next reader starts at the committed offset while the old one still
    sends a late batch, a zombie's, after its earlier ones) and the stats messages of
    different lanes interleaved at random."""
    rng = random.Random(seed)
    lanes = [f"streamapp-inference:{j}>comments:0" for j in range(4)]
    size = 300
    category_of = {o: rng.choice(CATEGORIES) for o in range(size * 4)}
    # Each lane holds every fourth comment offset, as the fan-out hop's hashing would.
    offsets = {lane: [o for o in range(size * 4) if o % 4 == j] for j, lane in enumerate(lanes)}
    committed = dict.fromkeys(lanes, 0)  # index into the lane's offsets
    position = dict.fromkeys(lanes, 0)
    log: list[bytes] = []  # the stats topic, not yet read by the tally
    read = 0  # messages the tally has read so far
    zombies: list[tuple[int, bytes]] = []  # (messages before it in the log, message)
    tally = Tally()

    def read_one() -> None:
        nonlocal read
        tally.apply(log.pop(0))
        read += 1

    while any(position[lane] < len(offsets[lane]) for lane in lanes):
        lane = rng.choice(lanes)
        move = rng.random()
        left = position[lane] < len(offsets[lane])
        if left and move < 0.8:
            cut = offsets[lane][position[lane]:position[lane] + rng.randint(1, 40)]
            log.append(tally.send(batch_of(lane, cut, category_of)))
            position[lane] += len(cut)
            if rng.random() < 0.5:  # counts sent (and flushed) before the commit
                committed[lane] = position[lane]
        elif move < 0.88:  # kill -9 and restart: replay from the committed offset
            position[lane] = committed[lane]
        elif left:  # rebalance: the old member's last batch goes out late
            cut = offsets[lane][position[lane]:position[lane] + rng.randint(1, 20)]
            zombies.append((read + len(log), tally.send(batch_of(lane, cut, category_of))))
            position[lane] = committed[lane]
        while log and rng.random() < 0.6:
            read_one()
        # A zombie's message lands anywhere after what its member sent before it.
        for late in [z for z in zombies if z[0] <= read + len(log) and rng.random() < 0.3]:
            zombies.remove(late)
            log.append(late[1])
    log.extend(message for _, message in zombies)
    while log:
        read_one()
    return tally, expected_seen(range(size * 4), category_of)


@pytest.mark.parametrize("seed", range(20))
def test_lanes_replayed_cut_and_moved_at_random_count_each_record_once(seed: int) -> None:
    tally, expected = run_lanes(seed)
    assert tally.seen() == expected
    for key, value in tally.totals.items():
        counts = {name: value.get(name, 0) for name in COUNTERS}
        if key.startswith("category:"):
            assert counts["predicted"] + counts["failed"] == counts["seen"], key
        assert tally.added[f"{key}/seen"] == counts["seen"], "per-minute follows totals"
        assert len(value["_upto"]) <= 4  # bounded: one mark per lane


def test_the_pipeline_sends_counts_in_the_order_batches_were_read() -> None:
    """Batches in flight may end in any order; their counts go in the order they started."""

    async def main() -> list[str]:
        sent: list[str] = []

        async def batch(turn: Turn, name: str, compute_s: float) -> None:
            await asyncio.sleep(compute_s)
            async with turn:
                await asyncio.sleep(0)
                sent.append(name)

        first = Turn(None)
        second = Turn(first)
        third = Turn(second)
        await asyncio.gather(batch(third, "third", 0.0), batch(second, "second", 0.01),
                             batch(first, "first", 0.05))
        return sent

    assert asyncio.run(main()) == ["first", "second", "third"]


def test_a_turn_ended_without_sending_lets_the_next_go() -> None:
    async def main() -> bool:
        first = Turn(None)
        second = Turn(first)
        first.end()  # its batch failed before sending (the process exits in real life)
        async with second:
            return True

    assert asyncio.run(asyncio.wait_for(main(), 1.0))


def test_batches_merged_into_one_window_count_as_they_would_one_by_one() -> None:
    """A CountsBuffer window is its batches' tallies merged: the tally counts it as it would
    have counted them one message each, replays of them included."""
    category_of = {o: CATEGORIES[o % 3] for o in range(60)}
    cuts = [range(0, 10), range(10, 25), range(25, 40)]
    one_by_one, merged = Tally(), Tally()
    window = BatchTally()
    for cut in cuts:
        one_by_one.apply(one_by_one.send(batch_of("comments:0", list(cut), category_of)))
        window.merge(batch_of("comments:0", list(cut), category_of))
    merged.apply(merged.send(window))
    assert merged.totals == {key: {**value, "_offset": 1}
                             for key, value in one_by_one.totals.items()}
    # Replayed in other cuts after a crash (committed at 12): nothing counted twice.
    for cut in (range(12, 30), range(30, 50)):
        merged.apply(merged.send(batch_of("comments:0", list(cut), category_of)))
    assert merged.seen() == expected_seen(range(50), category_of)


def test_the_counts_buffer_sends_a_window_once_and_windows_in_order(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches within one window share one send; each batch's future is done only once that
    send is; a later window waits for the one before it, however slow that one's send."""
    import streamapp.pipeline.batches as batches

    sends: list[list[int]] = []
    started: list[int] = []
    release_first = asyncio.Event()

    async def send_counts(app: Any, entries: list[tuple[str, dict[str, Any]]]) -> None:
        offsets = sorted(o for _, entry in entries if "_src" in entry
                         for by in entry["_src"].values() for os_ in by.values() for o in os_)
        started.append(offsets[0])
        if offsets[0] == 0:
            await release_first.wait()  # the first window's send is slow
        sends.append(sorted(set(offsets)))

    monkeypatch.setattr(batches, "send_counts", send_counts)
    category_of = {o: CATEGORIES[o % 3] for o in range(40)}

    async def main() -> None:
        buffer = batches.CountsBuffer(app=None, window_s=0.01)  # type: ignore[arg-type]
        first = buffer.add(batch_of("comments:0", list(range(0, 10)), category_of))
        second = buffer.add(batch_of("comments:0", list(range(10, 20)), category_of))
        assert first is second and not first.done()
        while not started:  # the first window's send has begun, and hangs
            await asyncio.sleep(0.005)
        third = buffer.add(batch_of("comments:0", list(range(20, 30)), category_of))
        await asyncio.sleep(0.05)  # the second window is due: it waits for the first
        assert started == [0] and not first.done() and not third.done()
        release_first.set()
        await asyncio.wait_for(asyncio.gather(first, third), 1.0)

    asyncio.run(main())
    assert sends == [list(range(0, 20)), list(range(20, 30))]


def test_a_failed_window_send_fails_its_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Their offsets are then never acked (the worker exits without commit)."""
    import streamapp.pipeline.batches as batches

    async def send_counts(app: Any, entries: list[tuple[str, dict[str, Any]]]) -> None:
        raise RuntimeError("the producer is gone")

    monkeypatch.setattr(batches, "send_counts", send_counts)

    async def main() -> None:
        buffer = batches.CountsBuffer(app=None, window_s=0.01)  # type: ignore[arg-type]
        sent = buffer.add(batch_of("comments:0", [1, 2], {1: "图书", 2: "数码"}))
        with pytest.raises(RuntimeError, match="producer is gone"):
            await asyncio.wait_for(sent, 1.0)

    asyncio.run(main())
