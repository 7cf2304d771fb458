"""The batch intake (STREAMAPP_INTAKE=batch): its offset bookkeeping, and real workers using it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest
from aiokafka import TopicPartition

from reliability.scenarios import run_scenario
from streamapp.broker import EmbeddedBroker
from streamapp.pipeline.intake import OffsetTracker
from streamapp.records import Incoming, SkuMatchResult
from tests.conftest import StartWorker, collect_outputs, demo_rows, send, wait_until
from tests.test_pipeline import DLQ, RESULTS, category_totals

P0, P1 = TopicPartition("comments", 0), TopicPartition("comments", 1)


def batch(*offsets: tuple[int, int]) -> list[Incoming]:
    return [Incoming(b"{}", "comments", p, o, None) for p, o in offsets]


def test_a_partition_commits_up_to_its_first_batch_not_done() -> None:
    tracker = OffsetTracker()
    first = tracker.track(batch((0, 0), (0, 1), (1, 0)))
    second = tracker.track(batch((0, 2), (0, 3)))
    assert tracker.to_commit({P0, P1}) == {}
    tracker.done(second)  # finished first, but the batch before it is still running
    assert tracker.to_commit({P0, P1}) == {}
    tracker.done(first)
    assert tracker.to_commit({P0, P1}) == {P0: 4, P1: 1}
    tracker.committed({P0: 4, P1: 1})
    assert tracker.to_commit({P0, P1}) == {}


def test_only_assigned_partitions_are_committed_and_forgotten_ones_never() -> None:
    tracker = OffsetTracker()
    spans = tracker.track(batch((0, 5), (1, 7)))
    tracker.done(spans)
    assert tracker.to_commit({P1}) == {P1: 8}
    late = tracker.track(batch((0, 6)))
    tracker.forget({P0})  # revoked: its batch finishing later must not commit anything
    tracker.done(late)
    assert tracker.to_commit({P0, P1}) == {P1: 8}


def test_a_failed_commit_is_offered_again() -> None:
    tracker = OffsetTracker()
    tracker.done(tracker.track(batch((0, 0))))
    assert tracker.to_commit({P0}) == {P0: 1}
    assert tracker.to_commit({P0}) == {P0: 1}  # nothing marked committed yet


@pytest.mark.integration
@pytest.mark.parametrize("fanout", ["false", "true"])
def test_batch_intake_gives_every_comment_one_output_and_counts_it(
        broker: EmbeddedBroker, start_worker: StartWorker, fanout: str) -> None:
    source = "streamapp-inference" if fanout == "true" else "comments"
    worker = start_worker(intake="batch", fanout=fanout, ready_topic=source)
    rows = demo_rows(300, seed=21)
    values = [orjson.dumps(r) for r in rows] + [b"{not json", b""]
    ids = send(broker, values)

    outputs = collect_outputs(broker.url, [RESULTS, DLQ], set(ids))

    assert set(outputs) == set(ids)
    assert all(len(v) == 1 for v in outputs.values())
    for record_id, row in zip(ids, rows, strict=False):
        topic, value = outputs[record_id][0]
        assert topic == RESULTS
        result = SkuMatchResult.model_validate(value)
        assert result.baseSkuName == row["baseSkuName"]
    assert {outputs[i][0][0] for i in ids[len(rows):]} == {DLQ}
    expected = Counter(str(r["categoryFirstName"]) for r in rows)
    wait_until(lambda: category_totals([worker]) == expected, 30, "table counts")
    stats = worker.stats()
    assert stats["agents"]["records"] == len(rows)
    assert any(p.startswith(f"{source}:") for p in stats["assigned_partitions"])

    def source_lag() -> list[dict[str, object]]:
        return [p for p in worker.stats()["lag"]["partitions"] if p["topic"] == source]

    # Everything was processed: the intake commits it, and its lag reads zero.
    wait_until(lambda: source_lag() and all(p["lag"] == 0 and p["committed"] is not None
                                            for p in source_lag()), 30, "intake lag 0")


@pytest.mark.integration
@pytest.mark.slow
def test_two_batch_intake_workers_split_the_partitions(
        broker: EmbeddedBroker, start_worker: StartWorker) -> None:
    workers = [start_worker(intake="batch", fanout="false", ready_topic="comments")
               for _ in range(2)]
    wait_until(lambda: all(any(p.startswith("comments:") for p in w.stats()["assigned_partitions"])
                           for w in workers), 60, "both workers to hold comment partitions")
    rows = demo_rows(400, seed=22)
    ids = send(broker, [orjson.dumps(r) for r in rows])

    outputs = collect_outputs(broker.url, [RESULTS, DLQ], set(ids))

    assert set(outputs) == set(ids)
    assert all(len(v) == 1 and v[0][0] == RESULTS for v in outputs.values())
    held = [{p for p in w.stats()["assigned_partitions"] if p.startswith("comments:")}
            for w in workers]
    assert held[0] and held[1] and not held[0] & held[1]
    assert all(w.stats()["agents"]["records"] > 0 for w in workers)


@pytest.mark.integration
@pytest.mark.slow
def test_hard_killed_batch_intake_worker_loses_nothing(tiny_model: Path,
                                                       tmp_path: Path) -> None:
    """kill -9 twice under a steady feed: every comment still gets its output, the
    duplicates are only the batches in flight at a kill (no Faust re-read here), and the
    tables count each comment once."""
    report = run_scenario(tiny_model, fault="kill9_twice", records=3000, rate=400.0, seed=3,
                          workdir=tmp_path, drain_timeout=60.0,
                          worker_settings={"store": "rocksdb", "intake": "batch",
                                           "fanout": "false"})
    assert report.lost == 0, f"{report.summary()}; lost e.g. {report.lost_ids}"
    assert not report.crashed and not report.unexpected_ids, report.summary()
    assert report.table_over_count == 0, f"{report.summary()}; per category {report.table_diff}"
    assert report.table_ok, f"{report.summary()}; per category {report.table_diff}"
