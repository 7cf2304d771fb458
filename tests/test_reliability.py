"""Offsets are committed only past processed records: the consumer's bookkeeping, and fault
injection through streamapp.reliability (real broker, real worker processes)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from faust.types import TP

from streamapp.application import create_app
from streamapp.offsets import SafeOffsetConsumer
from streamapp.reliability import run_scenario
from streamapp.settings import Settings


def test_a_restart_offset_jump_is_not_committed_before_its_records_are_processed() -> None:
    """The bookkeeping seen on every kill -9 + restart (worker log, comments:0): committed
    442; records 442..463 delivered while `perform_seek` ran; read offset reset to 442; next
    record 464, so Faust records the gap 443..464. With only 442..444 processed, a commit
    must stop at 445: Faust's own handling commits 465, and a crash or rebalance now would
    lose 445..463 for good."""

    async def commits_after_acks() -> list[int]:
        consumer = create_app(Settings(store="memory")).consumer
        assert isinstance(consumer, SafeOffsetConsumer)
        tp = TP("comments", 0)
        consumer._committed_offset[tp] = 442
        await consumer._add_gap(tp, 443, 464)
        committed = []
        for offset in (442, 443, 444):
            consumer._acked[tp].append(offset)
            consumer._acked_index[tp].add(offset)
            for _ in range(2):  # two commit rounds after each ack
                new = consumer._new_offset(tp)
                if new is not None and consumer._should_commit(tp, new):
                    consumer._committed_offset[tp] = new  # as _commit_offsets does
                    committed.append(new)
        return committed

    assert asyncio.run(commits_after_acks()) == [443, 444, 445]


def test_a_commit_starts_at_the_committed_offset() -> None:
    """Committed 10 is the next offset to read: with 10 never acked, acks 11..12 commit
    nothing (Faust's head check lets a commit start one past the committed offset)."""
    consumer = create_app(Settings(store="memory")).consumer
    tp = TP("comments", 1)
    consumer._committed_offset[tp] = 10
    consumer._acked[tp].extend([11, 12])
    consumer._acked_index[tp].update([11, 12])
    assert consumer._new_offset(tp) is None


# Memory store: with rocksdb a restarted worker crashes in table recovery on the embedded
# broker (its end offsets are wrong); a different defect from the one tested here.
SETTINGS = {"store": "memory"}


@pytest.mark.integration
@pytest.mark.slow
def test_hard_killed_worker_loses_nothing_after_restart(tiny_model: Path,
                                                        tmp_path: Path) -> None:
    """kill -9 mid-stream, restart at once, kill -9 again just after it is ready, restart:
    every comment still gets an output, and only work in flight at a kill is repeated."""
    report = run_scenario(tiny_model, fault="kill9_twice", records=3000, rate=400.0, seed=1,
                          workdir=tmp_path, worker_settings=SETTINGS, drain_timeout=60.0)
    assert report.lost == 0, f"{report.summary()}; lost e.g. {report.lost_ids}"
    assert report.unexplained_duplicates == 0, report.summary()
    assert not report.crashed, report.summary()
    assert not report.unexpected_ids, report.summary()
