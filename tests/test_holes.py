"""The consumer hands each stream partition's records over in offset order (streamapp.
pipeline.holes): a record past a hole is fetched again from the hole, not handed over."""

from __future__ import annotations

import logging

import pytest
from faust.types import TP

from streamapp.pipeline.holes import DeliveryOrder

COMMENTS = TP("comments", 3)


def test_records_in_order_and_replays_are_handed_over() -> None:
    order = DeliveryOrder()
    order.sought(COMMENTS, 100)
    assert order.admit(COMMENTS, [100]) is None
    assert order.admit(COMMENTS, [101, 102, 103]) is None  # a chunk
    assert order.due[COMMENTS] == 104
    assert order.admit(COMMENTS, [90]) is None  # a replay: the ledger skips its counts
    assert order.due[COMMENTS] == 104


def test_a_record_past_a_hole_sends_the_partition_back_to_the_hole(
        caplog: pytest.LogCaptureFixture) -> None:
    """The `make reliability` join_leave run: comments:3 committed 3989, next chunk 4802."""
    order = DeliveryOrder()
    order.sought(COMMENTS, 3989)
    with caplog.at_level(logging.WARNING, "streamapp.pipeline.holes"):
        assert order.admit(COMMENTS, [4802, 4803]) == 3989
    assert "offset 4802 came before 3989" in caplog.text
    order.sought(COMMENTS, 3989)  # the consumer's seek back
    assert order.admit(COMMENTS, [3989, 3990]) is None  # fetched again, in order
    assert order.due[COMMENTS] == 3991


def test_a_hole_still_there_after_the_refetch_is_real_and_passed() -> None:
    """A transaction marker or a compacted record: no record at that offset comes at all."""
    order = DeliveryOrder()
    order.sought(COMMENTS, 50)
    assert order.admit(COMMENTS, [52]) == 50
    order.sought(COMMENTS, 50)
    assert order.admit(COMMENTS, [52]) is None
    assert order.due[COMMENTS] == 53
    # The next hole is sought back again.
    assert order.admit(COMMENTS, [60]) == 53


def test_partitions_never_sought_are_not_tracked() -> None:
    """Changelog partitions (compacted: holes are real) are read by Faust's recovery, which
    this consumer does not report as sought."""
    order = DeliveryOrder()
    changelog = TP("streamapp-totals-changelog", 0)
    assert order.admit(changelog, [5]) is None
    assert order.admit(changelog, [9]) is None
    assert changelog not in order.due


def test_a_revoked_partition_is_forgotten() -> None:
    order = DeliveryOrder()
    order.sought(COMMENTS, 10)
    order.forget({COMMENTS})
    assert order.admit(COMMENTS, [40]) is None
