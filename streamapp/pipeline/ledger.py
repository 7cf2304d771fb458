"""Exact tables: each comment counted once, however often its batch is replayed or re-cut.

A stats entry (one table key's counts of one batch) carries the source offsets it counts, per
*lane*, grouped by what each one adds: `{"_src": {"comments:0": {"seen,predicted": [12, 17],
"seen,failed": [15]}}}`. A `totals` value keeps per lane the highest offset it has counted
(`_upto`), and the tally adds only the offsets above it.

A lane is an ordered stream of comments: the partition the batch was read from and, when that
is the inference topic, the comment-topic partition the comment came from
(`streamapp-inference:2>comments:0`); the offsets are the comments' own, in the comment topic.
Within a lane a key's offsets reach the tally in increasing order, replays aside:

- a reader takes a partition's records in order, and the batch pipeline sends its batches'
  counts in the order it read them (BatchPipeline; merged over a window, the windows one
  after another: CountsBuffer), which the producer keeps per partition;
- the ingest agent writes a comment partition's comments to the inference topic in order, and
  a comment's id always hashes to the same inference partition (a batch message holds the
  comments of one partition, streamapp.pipeline.fanout; each is counted by its own id);
- a partition's next reader (after a crash, a rebalance, a restart) starts at the committed
  offset, and all counts before it were sent and flushed before that commit. It repeats only
  offsets the lane has already counted or sent, cut into batches however it happens to be;
  so does a late batch of a member the group already dropped.

So "counted up to W" per key and lane is exact: at or below W is a replay, above is new. A
value holds one integer per lane, whatever the volume.
"""

from __future__ import annotations

import bisect
import itertools
from collections import Counter
from typing import Any

from streamapp.pipeline.counts import APPLIED_OFFSET, COUNTED_UPTO, SOURCES, Source, merge_counts
from streamapp.records import Incoming


def lane_of(topic: str, partition: int) -> str:
    """The lane of the records read from one partition (a comment's own, on the direct path)."""
    return f"{topic}:{partition}"


def source_of(record: Incoming, record_id: str) -> Source:
    """The lane and offset a record's counts are deduplicated by. `record_id` is the comment's
    id (`topic:partition:offset`): the record's own, or the one an inference record carries."""
    consumed = lane_of(record.topic, record.partition)
    origin, _, offset = record_id.rpartition(":")
    if record_id == record.id or not offset.isdigit() or not origin:
        return consumed, record.offset
    return f"{consumed}>{origin}", int(offset)


def count_new(current: dict[str, Any] | None,
              entry: dict[str, Any]) -> tuple[dict[str, int], dict[str, int] | None]:
    """What `entry` adds to the table value `current`: the counts of its offsets above the
    value's marks, and the marks after it (None for an entry without sources, an earlier
    form, whose counts are taken as they are)."""
    sources: dict[str, dict[str, list[int]]] | None = entry.get(SOURCES)
    if sources is None:
        return {name: n for name, n in entry.items() if not name.startswith("_")}, None
    upto: dict[str, int] = dict((current or {}).get(COUNTED_UPTO) or {})
    delta: Counter[str] = Counter()
    for lane, by_outcome in sources.items():
        mark = upto.get(lane, -1)
        new = _new_in_order(by_outcome, mark)
        if new is None:
            new = _new_deduplicated(by_outcome, mark)
        counts, upto[lane] = new
        for outcome, n in counts.items():
            for name in outcome.split(","):
                delta[name] += n
    return dict(delta), upto


def _new_in_order(by_outcome: dict[str, list[int]], mark: int
                  ) -> tuple[dict[str, int], int] | None:
    """The counts above `mark` per outcome and the new mark, where each outcome's offsets
    rise and no offset is named twice (a lane read once, in order: the common case); None
    otherwise. A binary search per outcome and C-level checks: the tally applies every
    record's offsets once per key it counts in."""
    named = list(itertools.chain.from_iterable(by_outcome.values()))
    if len(set(named)) != len(named) or any(offsets != sorted(offsets)
                                            for offsets in by_outcome.values()):
        return None
    counts = {outcome: n for outcome, offsets in by_outcome.items()
              if (n := len(offsets) - bisect.bisect_right(offsets, mark))}
    return counts, max([offsets[-1] for offsets in by_outcome.values() if offsets] + [mark])


def _new_deduplicated(by_outcome: dict[str, list[int]], mark: int
                      ) -> tuple[dict[str, int], int]:
    """`_new_in_order` for any offsets: an offset twice in one batch (a replayed ingest)
    counts once, for the first outcome that names it."""
    # Filled from the last outcome to the first, so the first overwrites; one C-level pass
    # per outcome, not a Python step per offset.
    outcome_of: dict[int, str] = {}
    for outcome, offsets in reversed(by_outcome.items()):
        outcome_of.update(dict.fromkeys([o for o in offsets if o > mark], outcome))
    return dict(Counter(outcome_of.values())), max(outcome_of, default=mark)


def apply_entry(current: dict[str, Any] | None, entry: dict[str, Any],
                offset: int) -> tuple[dict[str, Any], dict[str, int]]:
    """`current` with the stats entry read at `offset` of the stats topic added, and what it
    added (for the per-minute table, which follows `totals`).

    The stats offset check skips a message applied before (a key's messages share one stats
    partition, so its offsets only grow): the tally's own replays after a restart.
    """
    if current is not None and current.get(APPLIED_OFFSET, -1) >= offset:
        return current, {}
    delta, upto = count_new(current, entry)
    value = {**merge_counts(current, delta), APPLIED_OFFSET: offset}
    if upto is not None:
        value[COUNTED_UPTO] = upto
    return value, delta
