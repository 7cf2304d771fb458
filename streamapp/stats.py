"""Throughput counters: per batch aggregation for the tables, and this worker's live numbers.

Faust forbids table writes inside a `take()` loop (the current event is a ContextVar of the
draining task), so the inference agent sums a batch's counts per category here and sends one
message per category to the stats topic; a plain `async for` agent adds them to the tables.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field

# Table keys are "<kind>:<name>"; kinds let one stats topic and one table carry all counters.
CATEGORY = "category"  # first-level category
PATH = "path"  # full category path, "生鲜/水果/苹果"
DEAD_LETTER = "dead_letter"  # reason code

COUNTERS = ("seen", "predicted", "matched", "failed")


def stats_key(kind: str, name: str) -> str:
    return f"{kind}:{name}"


def split_key(key: str) -> tuple[str, str]:
    kind, _, name = key.partition(":")
    return kind, name


def merge_counts(current: dict[str, int] | None, delta: dict[str, int]) -> dict[str, int]:
    merged = dict(current or {})
    for name, value in delta.items():
        merged[name] = merged.get(name, 0) + value
    return merged


class BatchTally:
    """Counts of one batch, keyed like the table, ready to send to the stats topic."""

    def __init__(self) -> None:
        self.counts: defaultdict[str, Counter[str]] = defaultdict(Counter)

    def add(self, first_category: str, path: str, *, predicted: bool, matched: bool) -> None:
        for key in (stats_key(CATEGORY, first_category), stats_key(PATH, path)):
            counter = self.counts[key]
            counter["seen"] += 1
            counter["predicted" if predicted else "failed"] += 1
            if matched:
                counter["matched"] += 1

    def items(self) -> list[tuple[str, dict[str, int]]]:
        return [(key, dict(counter)) for key, counter in self.counts.items()]


@dataclass(frozen=True)
class BatchReport:
    """Everything one inference batch did: what the web view and metrics are made of."""

    finished_at: float  # unix seconds
    size: int
    predicted: int
    matched: int
    failed: int
    model_name: str
    model_version: str
    queue_ms: list[float]  # per record: comment timestamp -> batch start
    end_to_end_ms: list[float]  # per record: comment timestamp -> result
    preprocess_s: float  # tokenization (the handler's preprocess)
    process_s: float  # the model (the handler's process)
    batch_s: float  # the whole batch: decode, model, produce
    tokens: int  # real tokens (0 when the handler's input has no attention mask)
    padded_tokens: int  # tokens including padding
    counts: list[tuple[str, dict[str, int]]]  # the batch's table counts (BatchTally.items)


@dataclass
class WorkerStats:
    """This worker's own numbers for the web view (not shared across workers)."""

    started_at: float = field(default_factory=time.time)
    batches: int = 0
    records: int = 0
    predicted: int = 0
    dead_letters: int = 0
    compute_seconds: float = 0.0
    max_batch_size: int = 0
    # (finish time, size) of recent batches, for the rate over the last minute.
    recent: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=10_000))

    def on_batch(self, report: BatchReport) -> None:
        self.batches += 1
        self.records += report.size
        self.predicted += report.predicted
        self.compute_seconds += report.preprocess_s + report.process_s
        self.max_batch_size = max(self.max_batch_size, report.size)
        self.recent.append((time.monotonic(), report.size))

    def on_dead_letter(self, record_id: str, reason: str, error: str) -> None:
        self.dead_letters += 1

    def records_per_second(self, window: float = 60.0) -> float:
        now = time.monotonic()
        while self.recent and self.recent[0][0] < now - window:
            self.recent.popleft()
        if not self.recent:
            return 0.0
        span = max(now - self.recent[0][0], 1.0)
        return sum(size for _, size in self.recent) / span

    def snapshot(self) -> dict[str, float | int]:
        return {
            "uptime_s": round(time.time() - self.started_at, 1),
            "batches": self.batches,
            "records": self.records,
            "predicted": self.predicted,
            "dead_letters": self.dead_letters,
            "mean_batch_size": round(self.records / self.batches, 2) if self.batches else 0.0,
            "max_batch_size": self.max_batch_size,
            "records_per_second": round(self.records_per_second(), 2),
            "model_seconds": round(self.compute_seconds, 3),
        }
