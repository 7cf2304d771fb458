"""Fault-injection harness: feed comments while real workers run, inject a fault, then check
from the output topics alone that every comment has exactly one result or dead letter.

    report = run_scenario(model_dir, fault="kill9", records=3000, seed=1, workdir=tmp)
    assert report.lost == 0

A run starts an embedded broker and `faust -A streamapp worker` processes (WorkerProcess),
produces `records` synthetic comments at `rate` per second, injects the fault at a moment drawn
from `seed`, waits for the outputs and accounts for every source offset of the comment topic:
an id (`comments:partition:offset`) with no output is lost, one with several is duplicated.

Faults live in `FAULTS` (name -> coroutine); add one by writing `async def _my_fault(run)` and
registering it. CLI: `python -m streamapp.reliability --fault kill9 --runs 3 --records 3000`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson

from streamapp.broker import EmbeddedBroker, free_port
from streamapp.clients import follow, open_producer, send_all
from streamapp.processes import WorkerProcess
from streamapp.records import comment_id
from streamapp.synthetic import generate_comments

COMMENTS, RESULTS, DLQ = "comments", "sku-matches", "comments-dlq"
APP_ID = "streamapp"
READY_TIMEOUT = 120.0


@dataclass
class ReliabilityReport:
    """What one run saw; `ok` when nothing was lost and no worker crashed on its own."""

    fault: str
    seed: int
    records_in: int
    outputs: int  # messages on the result and dead-letter topics for our ids
    lost: int  # ids with no output at all
    duplicated: int  # ids with more than one output
    dead_lettered: int  # ids whose (first) output is a dead letter
    # Duplicated ids produced after the fault ended: not in flight during it. A few per
    # partition come from a restarted worker re-reading what it fetched while Faust's
    # perform_seek ran (see streamapp.offsets); more would point at a new defect.
    unexplained_duplicates: int
    recovery_s: float | None  # fault start -> first output after the fault ended
    fault_at_s: float  # fault start, seconds after the feed started
    elapsed_s: float
    lost_ids: list[str] = field(default_factory=list)  # the first few, sorted
    duplicated_ids: list[str] = field(default_factory=list)
    unexpected_ids: list[str] = field(default_factory=list)  # outputs for ids never produced
    crashed: list[str] = field(default_factory=list)  # workers that exited on their own
    logs: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and not self.unexpected_ids and not self.crashed

    def summary(self) -> str:
        recovery = "n/a" if self.recovery_s is None else f"{self.recovery_s:.1f}s"
        return (f"{self.fault} seed={self.seed}: in={self.records_in} out={self.outputs} "
                f"lost={self.lost} duplicated={self.duplicated} "
                f"(unexplained {self.unexplained_duplicates}) dead_lettered={self.dead_lettered}"
                f" fault_at={self.fault_at_s:.1f}s recovery={recovery} "
                f"elapsed={self.elapsed_s:.0f}s" + (f" CRASHED {self.crashed}" if self.crashed
                                                    else ""))


# id -> [(topic, when the worker made it: `predicted_at` / `failed_at`, ms)]
Outputs = dict[str, list[tuple[str, int]]]


class Run:
    """The live pieces of one scenario, handed to a fault."""

    def __init__(self, broker: EmbeddedBroker, model_dir: Path, workdir: Path,
                 rng: random.Random, worker_settings: dict[str, str], feed_s: float) -> None:
        self.broker = broker
        self.model_dir = model_dir
        self.workdir = workdir
        self.rng = rng
        self.worker_settings = worker_settings
        self.feed_s = feed_s  # how long the feed lasts: faults land inside it
        self.workers: list[WorkerProcess] = []
        self.retired: set[int] = set()  # slots a fault stopped for good
        self._settings: list[dict[str, str]] = []  # per worker slot
        self.fault_started: float | None = None  # wall clock, seconds
        self.fault_ended: float | None = None

    def new_worker(self, slot: int | None = None) -> WorkerProcess:
        """A worker process (not started). `slot` reuses an earlier worker's settings, data
        dir and log, as a restart on the same machine would; None makes a new member."""
        if slot is None:
            slot = len(self._settings)
            self._settings.append({
                "broker": self.broker.url,
                "model": str(self.model_dir),
                "datadir": str(self.workdir / f"data-{slot}"),
                "web_port": str(free_port()),
                "batch_wait_ms": "20",
                "torch_threads": "1",
                **self.worker_settings,
            })
        settings = self._settings[slot]
        worker = WorkerProcess(settings, self.workdir / f"worker-{slot}.log",
                               log_level=settings.get("log_level", "info"))
        if slot < len(self.workers):
            self.workers[slot] = worker
        else:
            self.workers.append(worker)
        return worker

    def crashed(self) -> list[str]:
        """Workers the faults did not stop that have exited anyway."""
        return [f"{w.log_path} exited {w.proc.returncode}" for slot, w in enumerate(self.workers)
                if slot not in self.retired and w.proc is not None and w.proc.poll() is not None]

    def start_ready(self, worker: WorkerProcess) -> WorkerProcess:
        worker.start().wait_ready(READY_TIMEOUT, topic=f"{APP_ID}-inference")
        return worker

    async def at_random_moment(self, lo: float = 0.25, hi: float = 0.75) -> None:
        """Sleep to a moment drawn (from the seed) inside the feed."""
        await asyncio.sleep(self.rng.uniform(lo, hi) * self.feed_s)

    def mark_start(self) -> None:
        self.fault_started = time.time()

    def mark_end(self) -> None:
        self.fault_ended = time.time()


Fault = Callable[[Run], Awaitable[None]]


async def _kill9(run: Run) -> None:
    """SIGKILL worker 0 mid-stream, start it again (same data dir) at once."""
    await run.at_random_moment()
    run.mark_start()
    run.workers[0].kill()
    run.mark_end()
    await asyncio.to_thread(run.start_ready, run.new_worker(slot=0))


async def _kill9_twice(run: Run) -> None:
    """A crash loop: SIGKILL, restart, SIGKILL again 0 to 2 s after it is ready, restart."""
    await _kill9(run)
    await asyncio.sleep(run.rng.uniform(0.0, 2.0))
    run.workers[0].kill()
    run.mark_end()
    await asyncio.to_thread(run.start_ready, run.new_worker(slot=0))


async def _sigterm(run: Run) -> None:
    """Graceful stop of worker 0 mid-batch, then a restart."""
    await run.at_random_moment()
    run.mark_start()
    await asyncio.to_thread(run.workers[0].stop, 60.0)
    run.mark_end()
    await asyncio.to_thread(run.start_ready, run.new_worker(slot=0))


async def _join_leave(run: Run) -> None:
    """A second worker joins mid-stream (rebalance), works a while, then leaves (SIGTERM)."""
    await run.at_random_moment(0.1, 0.4)
    run.mark_start()
    joined = run.new_worker()
    await asyncio.to_thread(run.start_ready, joined)
    await asyncio.sleep(run.rng.uniform(1.0, 4.0))
    await asyncio.to_thread(joined.stop, 60.0)
    run.retired.add(run.workers.index(joined))
    run.mark_end()


async def _broker_pause(run: Run) -> None:
    """SIGSTOP the broker for 2 to 6 s, then SIGCONT: every client times out and retries."""
    await run.at_random_moment()
    assert run.broker.proc is not None
    run.mark_start()
    run.broker.proc.send_signal(signal.SIGSTOP)
    try:
        await asyncio.sleep(run.rng.uniform(2.0, 6.0))
    finally:
        run.broker.proc.send_signal(signal.SIGCONT)
    run.mark_end()


async def _no_fault(run: Run) -> None:
    """The baseline: nothing happens."""


FAULTS: dict[str, Fault] = {
    "none": _no_fault,
    "kill9": _kill9,
    "kill9_twice": _kill9_twice,
    "sigterm": _sigterm,
    "join_leave": _join_leave,
    "broker_pause": _broker_pause,
}


def comment_values(count: int, seed: int) -> list[bytes]:
    """`count` synthetic comments as the upstream job writes them (JSON, no label)."""
    values = []
    for row in generate_comments(count, seed=seed):
        row.pop("label")
        values.append(orjson.dumps(row))
    return values


async def _feed(broker: str, values: list[bytes], rate: float,
                chunk: int) -> dict[str, float]:
    """Produce `values` at about `rate` per second; return id -> when it was sent (wall
    clock, seconds), in order."""
    ids: dict[str, float] = {}
    started = time.monotonic()
    async with open_producer(broker) as producer:
        for i in range(0, len(values), chunk):
            sent = time.time()
            metadata = await send_all(producer, COMMENTS, values[i:i + chunk])
            ids.update((comment_id(m.topic, m.partition, m.offset), sent) for m in metadata)
            ahead = started + (i + chunk) / rate - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
    return ids


async def collect_outputs(broker: str, expected: set[str], timeout: float,
                          settle: float = 3.0) -> Outputs:
    """Read the result and dead-letter topics until every expected id has an output (then
    `settle` more seconds, to catch late duplicates) or `timeout` passes."""
    seen: Outputs = defaultdict(list)
    deadline = time.monotonic() + timeout
    done_at: list[float] = []

    def finished() -> bool:
        now = time.monotonic()
        if not done_at and expected <= seen.keys():
            done_at.append(now)
        return now > deadline or bool(done_at and now - done_at[0] > settle)

    async for record in follow(broker, [RESULTS, DLQ], stop=finished):
        key = record.key.decode() if record.key else ""
        value = orjson.loads(record.value)
        made = value["timing"]["predicted_at"] if record.topic == RESULTS else value["failed_at"]
        seen[key].append((record.topic, int(made)))
    return seen


def account(fault: str, seed: int, ids: dict[str, float], outputs: Outputs, *,
            fault_started: float | None, fault_ended: float | None, feed_started: float,
            elapsed_s: float, logs: list[str], crashed: list[str],
            sample: int = 20) -> ReliabilityReport:
    """The report, from the produced ids and what the output topics hold."""
    expected = set(ids)
    lost = sorted(expected - outputs.keys())
    dups = sorted(i for i in expected if len(outputs.get(i, ())) > 1)
    unexplained = [i for i in dups if ids[i] > (fault_ended or float("inf"))]
    recovery = None
    if fault_started is not None and fault_ended is not None:
        after = [ts for outs in outputs.values() for _, ts in outs if ts >= fault_ended * 1000]
        if after:
            recovery = round(min(after) / 1000 - fault_started, 3)
    return ReliabilityReport(
        fault=fault, seed=seed, records_in=len(ids),
        outputs=sum(len(outputs.get(i, ())) for i in expected), lost=len(lost),
        duplicated=len(dups),
        dead_lettered=sum(1 for i in expected if outputs.get(i) and outputs[i][0][0] == DLQ),
        unexplained_duplicates=len(unexplained), recovery_s=recovery,
        fault_at_s=round((fault_started or feed_started) - feed_started, 3),
        elapsed_s=round(elapsed_s, 1), lost_ids=lost[:sample], duplicated_ids=dups[:sample],
        unexpected_ids=sorted(outputs.keys() - expected)[:sample], crashed=crashed, logs=logs)


async def _scenario(run: Run, fault: Fault, values: list[bytes], rate: float,
                    chunk: int, drain_timeout: float) -> tuple[dict[str, float], Outputs, float]:
    feed_started = time.time()
    feed = asyncio.ensure_future(_feed(run.broker.url, values, rate, chunk))
    injected = asyncio.ensure_future(fault(run))
    try:
        ids, _ = await asyncio.gather(feed, injected)
    finally:
        for task in (feed, injected):
            task.cancel()
    outputs = await collect_outputs(run.broker.url, set(ids), drain_timeout)
    return ids, outputs, feed_started


def run_scenario(model_dir: str | Path, *, fault: str = "kill9", records: int = 3000,
                 seed: int = 0, rate: float = 600.0, workers: int = 1,
                 workdir: str | Path | None = None, drain_timeout: float = 90.0,
                 worker_settings: dict[str, str] | None = None) -> ReliabilityReport:
    """One scenario on a fresh broker; returns its report (logs stay in `workdir`)."""
    if fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
    rng = random.Random(seed)
    values = comment_values(records, seed)
    chunk = max(1, int(rate / 10))  # ten sends a second
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="reliability-"))
        started = time.monotonic()
        broker = stack.enter_context(EmbeddedBroker(free_port()))
        run = Run(broker, Path(model_dir), Path(workdir), rng, dict(worker_settings or {}),
                  feed_s=records / rate)
        stack.callback(_stop_all, run)
        for _ in range(workers):
            run.start_ready(run.new_worker())
        ids, outputs, feed_started = asyncio.run(
            _scenario(run, FAULTS[fault], values, rate, chunk, drain_timeout))
        return account(fault, seed, ids, outputs, fault_started=run.fault_started,
                       fault_ended=run.fault_ended, feed_started=feed_started,
                       elapsed_s=time.monotonic() - started,
                       logs=sorted({str(w.log_path) for w in run.workers}),
                       crashed=run.crashed())


def _stop_all(run: Run) -> None:
    for worker in run.workers:
        worker.stop(timeout=30)


@contextlib.contextmanager
def demo_model_dir(path: str | Path | None = None) -> Iterator[Path]:
    """A small demo model (built in seconds) at `path`, or in a temporary directory."""
    from streamapp.model.demo import build_demo_model

    with contextlib.ExitStack() as stack:
        if path is None:
            path = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "model"
        path = Path(path)
        if not (path / "config.json").exists():
            build_demo_model(path, train_size=600, test_size=100, epochs=1, log=None)
        yield path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fault", choices=sorted(FAULTS), default="kill9")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="first seed; run i uses seed+i")
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=600.0, help="comments per second")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--model", type=Path, default=None,
                        help="model dir (default: a small demo model, built when missing)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep worker logs here")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="extra STREAMAPP_* worker setting, e.g. --set log_level=debug")
    parser.add_argument("--json", action="store_true", help="print each report as JSON")
    args = parser.parse_args(argv)
    extra = dict(item.split("=", 1) for item in args.set)
    totals: Counter[str] = Counter()
    with demo_model_dir(args.model) as model:
        for i in range(args.runs):
            workdir = None if args.workdir is None else args.workdir / f"run-{i}"
            report = run_scenario(model, fault=args.fault, records=args.records,
                                  seed=args.seed + i, rate=args.rate, workers=args.workers,
                                  workdir=workdir, worker_settings=extra)
            print(orjson.dumps(asdict(report)).decode() if args.json else report.summary(),
                  flush=True)
            totals.update(runs=1, records_in=report.records_in, lost=report.lost,
                          duplicated=report.duplicated, failed=int(not report.ok))
    print(" ".join(f"{k}={v}" for k, v in totals.items()), flush=True)
    return 1 if totals["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
