"""The tables' counts of a batch: their keys, each record's source, and the stats messages.

Faust forbids table writes inside a `take()` loop (the current event is a ContextVar of the
draining task), so a batch's counts are summed per table key here (BatchTally) and sent to the
stats topic, one message per stats partition holding the counts of every key that belongs
there (the batches of one STREAMAPP_COUNTS_WINDOW_MS window merged,
streamapp.pipeline.batches.CountsBuffer); the tally agent adds them to the tables
(streamapp.pipeline.tally), counting each record once (streamapp.pipeline.ledger).
"""

from __future__ import annotations

from typing import Any

import orjson

# Table keys are "<kind>:<name>"; kinds let one stats topic and one table carry all counters.
CATEGORY = "category"  # first-level category
PATH = "path"  # full category path, "生鲜/水果/苹果"
DEAD_LETTER = "dead_letter"  # reason code
RECOVERED = "recovered"  # what a comment was decoded despite (records.Recovery)

COUNTERS = ("seen", "predicted", "matched", "failed")
# Table values also keep the offset of the last stats message applied, and `totals` values per
# lane the highest source offset counted; stats entries carry their source offsets per lane
# (streamapp.pipeline.ledger).
APPLIED_OFFSET = "_offset"
COUNTED_UPTO = "_upto"
SOURCES = "_src"


def stats_key(kind: str, name: str) -> str:
    return f"{kind}:{name}"


def split_key(key: str) -> tuple[str, str]:
    kind, _, name = key.partition(":")
    return kind, name


def stats_entries(key: bytes | None, value: bytes) -> dict[str, dict[str, int]]:
    """A stats message's counts per table key. One message holds a batch's keys of one stats
    partition (`{"category:生鲜": {"seen": 3, ...}, ...}`, no message key); a message keyed by
    a table key holds that key's counts alone (the form earlier versions wrote)."""
    parsed = orjson.loads(value)
    return {key.decode(): parsed} if key else parsed


def merge_counts(current: dict[str, int] | None, delta: dict[str, int]) -> dict[str, int]:
    merged = dict(current or {})
    for name, value in delta.items():
        merged[name] = merged.get(name, 0) + value
    return merged


def tally_keys(first_category: str, path: str) -> tuple[str, str]:
    """The table keys a predicted or failed comment counts in: its first-level category's and
    its path's."""
    return stats_key(CATEGORY, first_category), stats_key(PATH, path)


# A record's source: (lane, offset), what the tally deduplicates by (streamapp.pipeline.ledger).
Source = tuple[str, int]

# What one record adds to a key, as its sources name it ("seen,predicted,matched" ...).
_PREDICTED = ("seen,predicted", "seen,predicted,matched")
_FAILED = "seen,failed"
_SEEN = "seen"


class BatchTally:
    """Counts of one batch, keyed like the table, ready to send to the stats topic; with each
    record's source, so that the tally counts a replayed record once."""

    def __init__(self, offsets: dict[tuple[str, str, str | None], list[int]] | None = None,
                 ) -> None:
        # (key, what a record adds, lane) -> source offsets, in the order counted; lane None
        # for records counted without a source. One lookup per record and key; the counts
        # per key are summed from these once, when the batch's counts are sent.
        self._offsets = {} if offsets is None else offsets

    def _count(self, key: str, names: str, source: Source | None) -> None:
        lane, offset = source if source is not None else (None, -1)
        offsets = self._offsets.get((key, names, lane))
        if offsets is None:
            self._offsets[(key, names, lane)] = [offset]
        else:
            offsets.append(offset)

    def add(self, first_category: str, path: str, *, predicted: bool, matched: bool,
            source: Source | None = None) -> None:
        self.add_to(tally_keys(first_category, path), predicted=predicted, matched=matched,
                    source=source)

    def add_to(self, keys: tuple[str, str], *, predicted: bool, matched: bool,
               source: Source | None = None) -> None:
        """`add`, with the keys of the record's category and path made (tally_keys)."""
        names = _PREDICTED[matched] if predicted else _FAILED
        self._count(keys[0], names, source)
        self._count(keys[1], names, source)

    def add_dead_letter(self, reason: str, source: Source | None = None) -> None:
        self._count(stats_key(DEAD_LETTER, reason), _SEEN, source)

    def add_recovered(self, recovery: str, source: Source | None = None) -> None:
        self._count(stats_key(RECOVERED, recovery), _SEEN, source)

    def merge(self, other: BatchTally) -> None:
        """Add the counts and sources of `other`, a batch read after this one's."""
        for bucket, offsets in other._offsets.items():
            self._offsets.setdefault(bucket, []).extend(offsets)

    def to_wire(self) -> list[list[Any]]:
        """As JSON: [key, what a record adds, lane, offsets] per bucket (from_wire reads it)."""
        return [[*bucket, offsets] for bucket, offsets in self._offsets.items()]

    @classmethod
    def from_wire(cls, buckets: list[list[Any]]) -> BatchTally:
        return cls({(key, names, lane): offsets for key, names, lane, offsets in buckets})

    def items(self) -> list[tuple[str, dict[str, int]]]:
        """The counts per key."""
        counts: dict[str, dict[str, int]] = {}
        for (key, names, _), offsets in self._offsets.items():
            counter = counts.setdefault(key, {})
            for name in names.split(","):
                counter[name] = counter.get(name, 0) + len(offsets)
        return list(counts.items())

    def entries(self) -> list[tuple[str, dict[str, Any]]]:
        """The stats entries: the counts per key, with their sources."""
        sources: dict[str, dict[str, dict[str, list[int]]]] = {}
        for (key, names, lane), offsets in self._offsets.items():
            if lane is not None:
                sources.setdefault(key, {}).setdefault(lane, {})[names] = offsets
        return [(key, {**counts, SOURCES: sources[key]} if key in sources else counts)
                for key, counts in self.items()]
