"""This worker's live numbers for the web view: what each batch did (BatchReport), counters,
batching and latency histograms. The tables' counts are streamapp.pipeline.counts'."""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from streamapp.pipeline.counts import RECOVERED, split_key


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


# ---------------------------------------------------------------------------------------------
# This worker's live numbers, from the BatchReports (Faust's Monitor miscounts with take()).
# Everything below is mergeable: the cluster view adds the workers' numbers and histograms.

# Latency bounds 0.1 ms .. 1000 s, 10^(1/80) (2.9%) apart: a quantile interpolated inside its
# bucket is off by less than 3%. Kept sparse in JSON, so the fine grid costs little.
LATENCY_BOUNDS_MS: tuple[float, ...] = tuple(round(10 ** (k / 80), 6) for k in range(-80, 481))
BATCH_SIZE_BOUNDS: tuple[float, ...] = tuple(float(2**k) for k in range(13))  # 1 .. 4096
TOKEN_BOUNDS: tuple[float, ...] = tuple(float(2**k) for k in range(4, 21))  # 16 .. 1M

BATCHING_HISTOGRAMS = {"batch_size": BATCH_SIZE_BOUNDS, "tokens_per_batch": TOKEN_BOUNDS}
LATENCY_HISTOGRAMS = {name: LATENCY_BOUNDS_MS for name in
                      ("queue_ms", "tokenize_ms", "model_ms", "end_to_end_ms")}
QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}

WINDOW_MINUTES = 5  # the "recent window" of batching and latency numbers
LATEST_DEAD_LETTERS = 10


class Histogram:
    """Counts per bucket (`value <= bound`, Prometheus' `le`), plus an overflow bucket."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf

    def observe(self, value: float) -> None:
        self.observe_all([value])

    def observe_all(self, values: list[float]) -> None:
        """Each of `values` (a batch's per-comment latencies), the sums taken once."""
        if not values:
            return
        counts, bounds = self.counts, self.bounds
        for value in values:
            counts[bisect_left(bounds, value)] += 1
        self.count += len(values)
        self.sum += sum(values)
        self.min = min(self.min, *values)
        self.max = max(self.max, *values)

    def merge(self, other: Histogram) -> None:
        self.counts = [n + m for n, m in zip(self.counts, other.counts, strict=True)]
        self.count += other.count
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def quantile(self, q: float) -> float | None:
        """Linear interpolation inside the bucket holding rank q * count, clamped to min/max."""
        if not self.count:
            return None
        rank = q * self.count
        below = 0
        for i, n in enumerate(self.counts):
            if n and below + n >= rank:
                lower = self.bounds[i - 1] if i > 0 else min(self.min, self.bounds[0])
                upper = self.bounds[i] if i < len(self.bounds) else self.max
                value = lower + (upper - lower) * (rank - below) / n
                return min(max(value, self.min), self.max)
            below += n
        return self.max

    def describe(self) -> dict[str, Any]:
        """JSON: summary numbers and the non-empty buckets ([le, count], le null = +Inf)."""
        empty = not self.count
        summary: dict[str, Any] = {
            name: _round(self.quantile(q)) for name, q in QUANTILES.items()}
        summary.update(
            count=self.count, sum=_round(self.sum),
            mean=None if empty else _round(self.sum / self.count),
            min=None if empty else _round(self.min), max=None if empty else _round(self.max),
            buckets=[[self.bounds[i] if i < len(self.bounds) else None, n]
                     for i, n in enumerate(self.counts) if n])
        return summary

    @classmethod
    def from_description(cls, bounds: tuple[float, ...], data: dict[str, Any]) -> Histogram:
        hist = cls(bounds)
        index = {bound: i for i, bound in enumerate(bounds)}
        for le, n in data.get("buckets", []):
            hist.counts[len(bounds) if le is None else index[float(le)]] += int(n)
        hist.count = int(data.get("count", 0))
        hist.sum = float(data.get("sum", 0.0))
        if hist.count:
            hist.min, hist.max = float(data["min"]), float(data["max"])
        return hist


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


BATCH_COUNTERS = ("batches", "records", "predicted", "matched", "failed", "dead_letters",
                  "tokens", "padded_tokens")


@dataclass
class Interval:
    """Batches (and dead letters) of a span of time: counters and histograms."""

    counters: Counter[str] = field(default_factory=Counter)
    histograms: dict[str, Histogram] = field(default_factory=lambda: {
        name: Histogram(bounds)
        for name, bounds in (BATCHING_HISTOGRAMS | LATENCY_HISTOGRAMS).items()})

    def add_batch(self, report: BatchReport) -> None:
        self.counters.update(batches=1, records=report.size, predicted=report.predicted,
                             matched=report.matched, failed=report.failed,
                             tokens=report.tokens, padded_tokens=report.padded_tokens)
        hist = self.histograms
        hist["batch_size"].observe(report.size)
        if report.padded_tokens:  # handlers without an attention mask report no tokens
            hist["tokens_per_batch"].observe(report.tokens)
        hist["tokenize_ms"].observe(report.preprocess_s * 1000)
        hist["model_ms"].observe(report.process_s * 1000)
        hist["queue_ms"].observe_all(report.queue_ms)
        hist["end_to_end_ms"].observe_all(report.end_to_end_ms)

    def merge(self, other: Interval) -> None:
        self.counters.update(other.counters)
        for name, hist in other.histograms.items():
            self.histograms[name].merge(hist)

    def describe(self, window_s: float) -> dict[str, Any]:
        """The `batching` and `latency` sections of /api/stats, over `window_s` seconds."""
        c = self.counters
        span = max(window_s, 1.0)
        batching: dict[str, Any] = {"window_s": round(window_s, 1)}
        batching.update({name: c[name] for name in BATCH_COUNTERS})
        batching.update(
            batches_per_second=round(c["batches"] / span, 3),
            records_per_second=round(c["records"] / span, 3),
            mean_batch_size=round(c["records"] / c["batches"], 2) if c["batches"] else 0.0,
            padding_fraction=(round(1 - c["tokens"] / c["padded_tokens"], 4)
                              if c["padded_tokens"] else None))
        batching.update({name: self.histograms[name].describe() for name in BATCHING_HISTOGRAMS})
        latency: dict[str, Any] = {"window_s": round(window_s, 1)}
        latency.update({name: self.histograms[name].describe() for name in LATENCY_HISTOGRAMS})
        return {"batching": batching, "latency": latency}

    @classmethod
    def from_description(cls, described: dict[str, Any]) -> Interval:
        """The inverse of `describe` (counters and histograms), to add up several workers."""
        batching, latency = described["batching"], described["latency"]
        interval = cls(counters=Counter({name: int(batching.get(name, 0))
                                         for name in BATCH_COUNTERS}))
        for section, bounds_by_name in ((batching, BATCHING_HISTOGRAMS),
                                        (latency, LATENCY_HISTOGRAMS)):
            for name, bounds in bounds_by_name.items():
                interval.histograms[name] = Histogram.from_description(bounds, section[name])
        return interval


class StatsListener(Protocol):
    """Something else fed with every batch and dead letter (streamapp.web.metrics)."""

    def on_batch(self, report: BatchReport) -> None: ...

    def on_dead_letter(self, record_id: str, reason: str, error: str) -> None: ...


@dataclass
class WorkerStats:
    """This worker's own numbers for the web view; listeners get the same events."""

    started_at: float = field(default_factory=time.time)
    batches: int = 0
    records: int = 0
    predicted: int = 0
    dead_letters: int = 0
    recovered: int = 0
    compute_seconds: float = 0.0
    max_batch_size: int = 0
    # (finish time, size) of recent batches, for the rates over the last minute.
    recent: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=10_000))
    # One Interval per wall-clock minute (unix time // 60), the last WINDOW_MINUTES only.
    minutes: dict[int, Interval] = field(default_factory=dict)
    latest_dead_letters: deque[dict[str, Any]] = field(
        default_factory=lambda: deque(maxlen=LATEST_DEAD_LETTERS))
    listeners: list[StatsListener] = field(default_factory=list)

    def _minute(self, now: float) -> Interval:
        minute = int(now // 60)
        for old in [m for m in self.minutes if m <= minute - WINDOW_MINUTES]:
            del self.minutes[old]
        return self.minutes.setdefault(minute, Interval())

    def on_batch(self, report: BatchReport) -> None:
        self.batches += 1
        self.records += report.size
        self.predicted += report.predicted
        self.recovered += sum(counts.get("seen", 0) for key, counts in report.counts
                              if split_key(key)[0] == RECOVERED)
        self.compute_seconds += report.preprocess_s + report.process_s
        self.max_batch_size = max(self.max_batch_size, report.size)
        self.recent.append((time.monotonic(), report.size))
        self._minute(time.time()).add_batch(report)
        for listener in self.listeners:
            listener.on_batch(report)

    def on_dead_letter(self, record_id: str, reason: str, error: str) -> None:
        self.dead_letters += 1
        now = time.time()
        self._minute(now).counters["dead_letters"] += 1
        self.latest_dead_letters.appendleft(
            {"id": record_id, "reason": reason, "error": error[:500], "at": round(now, 3)})
        for listener in self.listeners:
            listener.on_dead_letter(record_id, reason, error)

    def _rate(self, window: float, weight: Callable[[int], int]) -> float:
        now = time.monotonic()
        while self.recent and self.recent[0][0] < now - window:
            self.recent.popleft()
        if not self.recent:
            return 0.0
        span = max(now - self.recent[0][0], 1.0)
        return sum(weight(size) for _, size in self.recent) / span

    def records_per_second(self, window: float = 60.0) -> float:
        return self._rate(window, lambda size: size)

    def batches_per_second(self, window: float = 60.0) -> float:
        return self._rate(window, lambda size: 1)

    def window(self) -> tuple[Interval, float]:
        """The last WINDOW_MINUTES minutes (the current one partial) and their span, seconds."""
        now = time.time()
        self._minute(now)  # drops the minutes that left the window
        merged = Interval()
        for interval in self.minutes.values():
            merged.merge(interval)
        start = max(self.started_at, (int(now // 60) - WINDOW_MINUTES + 1) * 60)
        return merged, now - start

    def snapshot(self) -> dict[str, float | int]:
        return {
            "uptime_s": round(time.time() - self.started_at, 1),
            "batches": self.batches,
            "records": self.records,
            "predicted": self.predicted,
            "dead_letters": self.dead_letters,
            "recovered": self.recovered,
            "mean_batch_size": round(self.records / self.batches, 2) if self.batches else 0.0,
            "max_batch_size": self.max_batch_size,
            "records_per_second": round(self.records_per_second(), 2),
            "batches_per_second": round(self.batches_per_second(), 3),
            "model_seconds": round(self.compute_seconds, 3),
        }


def merge_snapshots(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """Several workers' `snapshot()`s as one: sums, except the maxima and the mean."""
    merged: dict[str, Any] = {}
    for name in ("batches", "records", "predicted", "dead_letters", "recovered",
                 "records_per_second", "batches_per_second", "model_seconds"):
        merged[name] = round(sum(s.get(name, 0) for s in snapshots), 3)
    merged["uptime_s"] = max((s.get("uptime_s", 0.0) for s in snapshots), default=0.0)
    merged["max_batch_size"] = max((s.get("max_batch_size", 0) for s in snapshots), default=0)
    merged["mean_batch_size"] = (round(merged["records"] / merged["batches"], 2)
                                 if merged["batches"] else 0.0)
    return merged
