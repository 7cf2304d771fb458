"""Benchmarks: the model alone, the seed's per-record pattern, and the whole pipeline.

Every figure comes from real parts: the real loading code, a real broker process and a real
worker process. `make bench` runs them all in one go and writes BENCHMARKS.md.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from streamapp.broker import EmbeddedBroker, free_port
from streamapp.clients import follow, produce
from streamapp.processes import WorkerProcess


def load_comments(path: Path | None, count: int) -> list[dict[str, Any]]:
    """Comments from a JSON Lines file (labels dropped), else from the project's generator."""
    if path is not None and path.exists():
        rows = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    else:
        from streamapp.synthetic import generate_comments

        rows = list(generate_comments(count, seed=2024))
    while len(rows) < count:
        rows += rows[: count - len(rows)]
    rows = rows[:count]
    for row in rows:
        row.pop("label", None)
    return rows


def model_ceiling(model_dir: Path, rows: Sequence[dict[str, Any]], batch_size: int,
                  threads: int | None = None) -> float:
    """Tokenize + forward in a tight batched loop: sequences per second."""
    from streamapp.model.classifier import SkuMatchClassifier

    model = SkuMatchClassifier.load(model_dir, num_threads=threads)
    reviews = [str(r["reviewBody"]) for r in rows]
    skus = [str(r["baseSkuName"]) for r in rows]
    model.predict(reviews[:batch_size], skus[:batch_size])  # warm-up
    started = time.perf_counter()
    for i in range(0, len(rows), batch_size):
        model.predict(reviews[i:i + batch_size], skus[i:i + batch_size])
    return len(rows) / (time.perf_counter() - started)


def end_to_end(model_dir: Path, rows: Sequence[dict[str, Any]], *,
               settings: dict[str, str] | None = None, timeout: float = 600.0) -> dict[str, Any]:
    """Produce `rows` to a fresh broker, one worker predicts, read every result back.

    The worker is up and holds its partitions before the first comment is produced, so the
    figure is the steady pipeline, not the start-up.
    """
    with tempfile.TemporaryDirectory(prefix="streamapp-bench-") as tmp, \
            EmbeddedBroker(free_port()) as broker:
        env = {"broker": broker.url, "model": str(model_dir), "datadir": f"{tmp}/data",
               "web_port": str(free_port()), "log_level": "warning", **(settings or {})}
        with WorkerProcess(env, Path(tmp) / "worker.log", log_level="warning") as worker:
            worker.wait_ready(timeout=180, topic="streamapp-inference")
            values = [orjson.dumps(r) for r in rows]
            started = time.time()
            asyncio.run(produce(broker.url, "comments", values))
            latencies, last = asyncio.run(_read_results(broker.url, len(rows), timeout))
            stats = worker.stats()
        seconds = last - started
        return {
            "records": len(rows),
            "seconds": round(seconds, 3),
            "records_per_second": round(len(rows) / seconds, 1),
            "latency_ms_p50": _percentile(latencies, 50),
            "latency_ms_p99": _percentile(latencies, 99),
            "mean_batch_size": stats["agents"]["mean_batch_size"],
        }


async def _read_results(broker: str, expected: int, timeout: float) -> tuple[list[float], float]:
    seen: set[bytes] = set()
    latencies: list[float] = []
    last = time.time()
    deadline = time.monotonic() + timeout

    def done() -> bool:
        return len(seen) >= expected or time.monotonic() > deadline

    async for record in follow(broker, ["sku-matches", "comments-dlq"], stop=done):
        if record.key in seen:
            continue
        seen.add(record.key or b"")
        value = orjson.loads(record.value)
        timing = value.get("timing")
        if timing and timing.get("source_ts"):
            latencies.append(timing["predicted_at"] - timing["source_ts"])
        last = record.timestamp / 1000.0
    if len(seen) < expected:
        raise TimeoutError(f"only {len(seen)} of {expected} results after {timeout:.0f}s")
    return latencies, last


def _percentile(values: Sequence[float], pct: float) -> float:
    if not values:
        return 0.0
    return round(statistics.quantiles(values, n=100, method="inclusive")[int(pct) - 1], 1)
