"""Where a comment's latency goes at a steady rate, hop by hop.

    python -m bench.latency_breakdown MODEL_DIR RATE SECONDS [setting=value ...]

Comments at RATE per second for SECONDS into one worker (settings as STREAMAPP_* without the
prefix, e.g. fetch_wait_ms=10); then, per comment: its Kafka timestamp -> the ingest agent's
inference message (that message's Kafka timestamp, with the fan-out) -> its model batch
starting (the result's timing) -> its score. Percentiles of each leg, and the latency goal
of `make bench` (batch wait + two batches' compute).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
from pathlib import Path
from typing import Any

from bench.measures import feed_and_read, load_comments, running_pipeline, steady_values
from streamapp.edges.clients import follow
from streamapp.framing import header_of
from streamapp.pipeline.batchwork import FANNED_OUT_MARK
from streamapp.settings import Settings

COMMENTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "comments.jsonl"


def fanned_out_ids(value: bytes) -> list[str]:
    """The comment ids an inference-topic message carries (streamapp.pipeline.fanout)."""
    return header_of(value, len(FANNED_OUT_MARK))[0]["id"]


def percentiles(values: list[float]) -> str:
    q = statistics.quantiles(values, n=100, method="inclusive")
    return f"p50 {q[49]:.0f}  p90 {q[89]:.0f}  p99 {q[98]:.0f}  max {max(values):.0f} ms"


def breakdown(model: Path, rate: float, seconds: float, settings: dict[str, str]) -> None:
    rows = load_comments(COMMENTS if COMMENTS.exists() else None, 5000)
    values = steady_values(rows, rate, seconds)
    results: dict[str, dict[str, Any]] = {}
    fanned_at: dict[str, int] = {}  # comment id -> its inference message's timestamp

    with running_pipeline(model, settings) as pipe:
        async def run() -> None:
            await feed_and_read(pipe.broker.url, values, rate, seconds,
                                on_value=lambda value: results.__setitem__(value["id"], value))
            if settings.get("fanout", "true") == "true":
                async for record in follow(pipe.broker.url, [pipe.worker.source_topic],
                                           idle_timeout=3):
                    for comment_id in fanned_out_ids(record.value):
                        fanned_at[comment_id] = record.timestamp

        asyncio.run(run())
        agents = pipe.worker.stats()["agents"]
    total, to_fanout, to_batch, scoring, compute = [], [], [], [], []
    for record_id, result in results.items():
        timing = result["timing"]
        if not timing.get("source_ts"):
            continue
        batch_start = timing["source_ts"] + timing["queued_ms"]
        total.append(timing["predicted_at"] - timing["source_ts"])
        scoring.append(timing["predicted_at"] - batch_start)
        compute.append(timing["compute_ms"])
        if record_id in fanned_at:
            to_fanout.append(fanned_at[record_id] - timing["source_ts"])
            to_batch.append(batch_start - fanned_at[record_id])
    goal = Settings().batch_wait_ms + 2000 * agents["model_seconds"] / max(agents["batches"], 1)
    print(f"settings {settings or 'default'}, {rate:g} comments/s for {seconds:g} s, "
          f"{len(total)} results, mean batch {agents['mean_batch_size']}, goal {goal:.0f} ms")
    print(f"  end to end                      {percentiles(total)}")
    if to_fanout:
        print(f"  comment -> inference message    {percentiles(to_fanout)}")
        print(f"  inference message -> batch      {percentiles(to_batch)}")
    print(f"  batch start -> scored           {percentiles(scoring)}")
    print(f"    its batch's model compute     {percentiles(compute)}")  # per comment


def main(argv: list[str]) -> None:
    model, rate, seconds, *pairs = argv
    breakdown(Path(model), float(rate), float(seconds),
              dict(pair.split("=", 1) for pair in pairs))


if __name__ == "__main__":
    main(sys.argv[1:])
