"""What a rebalance costs: a second worker joins a busy group (what a KEDA scale-up does).

    python -m bench.rebalance --model var/models/demo --runs 3

One broker, one worker holding every partition, comments fed at a steady rate; at `join_at_s`
a second worker starts, and the feed goes on until both have produced results for `after_s`.
Per run, from the two workers' `/readyz` and `/api/stats` (polled every 0.1 s) and the results
topic (a result's timestamp is when its worker produced it):

- `start_s`: the second process starting -> its `/readyz` answering 200 (imports, model load,
  consumer and producer up): the pod's start, before it takes part in the group;
- `both_producing_s`: that moment -> both workers have produced results since (the join:
  JoinGroup, assignment, table recovery, the first batch);
- `longest_gap_s`: the longest time without any result from the start of the second process
  until the last result: the stop-the-world pause of the group (every member gives up its
  partitions while it rebalances); `gap_before_s` is the same measure before the join.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.measures import (
    comment_values,
    feed_at_rate,
    load_comments,
    read_results,
    running_pipeline,
)
from streamapp.broker import free_port
from streamapp.processes import WorkerProcess


def _ready(worker: WorkerProcess) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(
                f"http://127.0.0.1:{worker.web_port}/readyz", timeout=5) as response:
            return bool(response.status == 200)
    except (urllib.error.HTTPError, OSError):
        return False


def _records(worker: WorkerProcess) -> int:
    try:
        return int(worker.stats()["agents"]["records"])
    except (OSError, KeyError, ValueError):
        return -1


def _watch_join(first: WorkerProcess, second: WorkerProcess, timeout: float) -> dict[str, float]:
    """Start `second`; wall-clock moments: started, ready, both producing since ready."""
    started = time.time()
    second.start()
    deadline = time.monotonic() + timeout
    while not _ready(second):
        if time.monotonic() > deadline:
            raise TimeoutError(f"second worker not ready:\n{second.log_tail()}")
        time.sleep(0.1)
    ready = time.time()
    base = (_records(first), _records(second))
    while not (_records(first) > base[0] and _records(second) > base[1]):
        if time.monotonic() > deadline:
            raise TimeoutError(f"not both producing:\n{second.log_tail()}")
        time.sleep(0.1)
    return {"started": started, "ready": ready, "both": time.time()}


def _longest_gap(stamps: Sequence[float], lo: float, hi: float) -> float:
    inside = sorted(t for t in stamps if lo <= t <= hi)
    return max((b - a for a, b in itertools.pairwise(inside)), default=0.0)


def measure(model_dir: Path, rows: Sequence[dict[str, Any]], *, rate: float = 200.0,
            join_at_s: float = 8.0, after_s: float = 10.0, timeout: float = 240.0,
            settings: dict[str, str] | None = None) -> dict[str, float]:
    """The feed goes on until both workers have produced for `after_s` (at most `timeout`)."""
    values = comment_values([rows[i % len(rows)] for i in range(int(rate * timeout))])
    stamps: list[float] = []
    with running_pipeline(model_dir, settings) as pipe:
        env = {**{k.removeprefix("STREAMAPP_").lower(): v for k, v in pipe.worker.env.items()
                  if k.startswith("STREAMAPP_")}, "web_port": str(free_port())}
        env["datadir"] = env["datadir"] + "-2"
        second = WorkerProcess(env, pipe.worker.log_path.with_name("worker-2.log"),
                               log_level="warning")
        moments: dict[str, float] = {}

        def stamp(value: dict[str, Any]) -> None:
            if "timing" in value:  # a result, not a dead letter
                stamps.append(value["timing"]["predicted_at"] / 1000)

        def join() -> None:
            time.sleep(join_at_s)
            try:
                moments.update(_watch_join(pipe.worker, second, timeout=timeout))
            finally:
                moments.setdefault("both", 0.0)  # the feed stops either way

        def enough() -> bool:
            return "both" in moments and time.time() > moments["both"] + after_s

        async def run() -> None:
            sent = await feed_at_rate(pipe.broker.url, values, rate, stop=enough)
            # results carry the time they were produced: reading them afterwards is the same
            await read_results(pipe.broker.url, sent, timeout, stamp)

        joiner = threading.Thread(target=join)
        joiner.start()
        try:
            asyncio.run(run())
        finally:
            joiner.join()
            second.stop()
    return {"start_s": round(moments["ready"] - moments["started"], 2),
            "both_producing_s": round(moments["both"] - moments["ready"], 2),
            "longest_gap_s": round(_longest_gap(stamps, moments["started"], max(stamps)), 2),
            "gap_before_s": round(_longest_gap(stamps, min(stamps), moments["started"]), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--comments", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--intake", choices=("agent", "batch"), default="agent")
    args = parser.parse_args()
    settings = ({"intake": "batch", "fanout": "false"} if args.intake == "batch" else {})
    rows = load_comments(args.comments, 2000)
    runs = [measure(args.model, rows, rate=args.rate, settings=settings)
            for _ in range(args.runs)]
    for run in runs:
        print(json.dumps(run))
    print(json.dumps({name: statistics.median(run[name] for run in runs) for name in runs[0]}))


if __name__ == "__main__":
    main()
