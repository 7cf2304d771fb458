"""Fault-injection scenarios: real broker and workers, a feed of comments, a fault mid-stream.

    report = run_scenario(model_dir, fault="kill9", records=3000, seed=1, workdir=tmp)
    assert report.lost == 0

A run starts an embedded broker and `faust -A streamapp worker` processes (WorkerProcess),
produces `records` synthetic comments at `rate` per second, injects the fault at a moment drawn
from `seed`, waits for the outputs and accounts for them (reliability.accounting).

Faults live in `FAULTS` (name -> coroutine); add one by writing `async def _my_fault(run)` and
registering it. CLI: `python -m reliability.report --fault kill9 --runs 3 --records 3000`.

`FAULT_DEFAULTS` gives the faults that need them their worker settings: `slow_model` and
`backpressure` run `streamapp.serving.handlers.null:SlowInfer`, whose per-batch delay is
`SLOW_INFER_DELAY_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import signal
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import orjson

from reliability.accounting import (
    APP_ID,
    COMMENTS,
    Outputs,
    ReliabilityReport,
    account,
    check_tables,
    collect_both,
    collect_outputs,
    count_rejoins,
    oracle_counts,
    replay_tally,
    stats_topic_counts,
    table_counts,
)
from streamapp.broker import EmbeddedBroker, free_port
from streamapp.demo.synthetic import generate_comments
from streamapp.edges.clients import open_producer, send_all
from streamapp.processes import WorkerProcess
from streamapp.records import comment_id

READY_TIMEOUT = 120.0
SLOW_HANDLER = "streamapp.serving.handlers.null:SlowInfer"
SLOW_DELAY_ENV = "SLOW_INFER_DELAY_S"  # read by SlowInfer; not a STREAMAPP_* setting
# Worker settings and environment a fault runs with unless the caller says otherwise.
FAULT_DEFAULTS: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    # A batch takes 7 s of the 10 s session timeout (STREAMAPP_SESSION_TIMEOUT_S).
    "slow_model": ({"handler": SLOW_HANDLER, "batch_size": "100"}, {SLOW_DELAY_ENV: "7"}),
    # 64 records per 0.2 s: a backlog builds at any feed rate above ~300/s per worker.
    "backpressure": ({"handler": SLOW_HANDLER, "batch_size": "64"}, {SLOW_DELAY_ENV: "0.2"}),
}


class Run:
    """The live pieces of one scenario, handed to a fault."""

    def __init__(self, broker: EmbeddedBroker, model_dir: Path, workdir: Path,
                 rng: random.Random, worker_settings: dict[str, str], feed_s: float,
                 env: dict[str, str] | None = None, pause_s: float = 30.0) -> None:
        self.broker = broker
        self.model_dir = model_dir
        self.workdir = workdir
        self.rng = rng
        self.worker_settings = worker_settings
        self.env = dict(env or {})  # other environment of the workers (SLOW_INFER_DELAY_S)
        self.feed_s = feed_s  # how long the feed lasts: faults land inside it
        self.pause_s = pause_s  # broker_pause: how long the broker stays frozen
        self.workers: list[WorkerProcess] = []
        self.retired: set[int] = set()  # slots a fault stopped for good
        self._settings: list[dict[str, str]] = []  # per worker slot
        self.starts = 0  # worker processes started
        self.fault_started: float | None = None  # wall clock, seconds
        self.fault_ended: float | None = None
        self.exit_s: float | None = None
        self.exit_code: int | None = None
        self.rss_ready_mb: float | None = None
        self.rss_peak_mb: float | None = None
        self.join_s: float | None = None
        self.joined_at: float | None = None  # wall clock
        self.joined_partitions: list[str] = []

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
        worker.env.update(self.env)
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
        self.starts += 1
        worker.start().wait_ready(READY_TIMEOUT, topic=worker.source_topic)
        rss = rss_mb(worker)
        if rss is not None:
            self.rss_ready_mb = max(self.rss_ready_mb or 0.0, rss)
        return worker

    def sample_rss(self) -> None:
        """Fold the live workers' RSS into the peak."""
        for worker in list(self.workers):
            rss = rss_mb(worker)
            if rss is not None:
                self.rss_peak_mb = max(self.rss_peak_mb or 0.0, rss)

    def live(self) -> list[WorkerProcess]:
        return [w for slot, w in enumerate(self.workers) if slot not in self.retired
                and w.proc is not None and w.proc.poll() is None]

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
    """Graceful stop of worker 0 mid-batch (its exit time measured), then a restart."""
    await run.at_random_moment()
    run.mark_start()
    started = time.monotonic()
    run.exit_code = await asyncio.to_thread(run.workers[0].stop, 60.0)
    run.exit_s = round(time.monotonic() - started, 2)
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
    """SIGSTOP the broker for `pause_s` (30 s: three session timeouts), then SIGCONT: every
    client times out and retries, the group expires its members and rebalances."""
    await run.at_random_moment()
    assert run.broker.proc is not None
    run.mark_start()
    run.broker.proc.send_signal(signal.SIGSTOP)
    try:
        await asyncio.sleep(run.pause_s)
    finally:
        run.broker.proc.send_signal(signal.SIGCONT)
    run.mark_end()


async def _slow_model(run: Run) -> None:
    """Nothing to inject: the workers run a model whose batches take most of the session
    timeout (FAULT_DEFAULTS). The report's `rejoins` says whether the group kept them."""


async def _backpressure(run: Run) -> None:
    """The feed (run it fast: a backlog of tens of thousands) is in before a slow model works
    it off; once it is, a second worker joins and must get partitions of the inference topic
    while the backlog is still there. Memory: the report's RSS, ready vs peak."""
    await asyncio.sleep(run.feed_s + 1.0)
    run.mark_start()
    started = time.monotonic()
    joined = run.new_worker()
    await asyncio.to_thread(run.start_ready, joined)
    run.join_s = round(time.monotonic() - started, 2)
    run.joined_at = time.time()
    with contextlib.suppress(OSError):
        run.joined_partitions = [p for p in joined.stats()["assigned_partitions"]
                                 if p.startswith(f"{APP_ID}-inference:")]
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
    "slow_model": _slow_model,
    "backpressure": _backpressure,
}


def rss_mb(worker: WorkerProcess) -> float | None:
    """Resident memory of a running worker process (Linux /proc), MiB."""
    if worker.proc is None or worker.proc.poll() is not None:
        return None
    try:
        status = Path(f"/proc/{worker.proc.pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    return round(int(match.group(1)) / 1024, 1) if match else None


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


async def _scenario(run: Run, fault: Fault, values: list[bytes], rate: float,
                    chunk: int, drain_timeout: float
                    ) -> tuple[dict[str, float], Outputs, Outputs, float]:
    feed_started = time.time()
    feed = asyncio.ensure_future(_feed(run.broker.url, values, rate, chunk))
    injected = asyncio.ensure_future(fault(run))
    try:
        ids, _ = await asyncio.gather(feed, injected)
    finally:
        for task in (feed, injected):
            task.cancel()
    outputs, committed = await collect_both(run.broker.url, set(ids), drain_timeout)
    return ids, outputs, committed, feed_started


@contextlib.contextmanager
def _sampling_rss(run: Run, every: float = 0.5) -> Iterator[None]:
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(every):
            run.sample_rss()

    thread = threading.Thread(target=sample, name="rss-sampler", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def run_scenario(model_dir: str | Path, *, fault: str = "kill9", records: int = 3000,
                 seed: int = 0, rate: float = 600.0, workers: int = 1,
                 workdir: str | Path | None = None, drain_timeout: float = 90.0,
                 worker_settings: dict[str, str] | None = None,
                 env: dict[str, str] | None = None, pause_s: float = 30.0,
                 check_table: bool = True) -> ReliabilityReport:
    """One scenario on a fresh broker; returns its report (logs stay in `workdir`).

    `worker_settings` (STREAMAPP_* names without the prefix) and `env` (other variables, e.g.
    SLOW_INFER_DELAY_S) go over the fault's FAULT_DEFAULTS. `pause_s`: broker_pause's freeze.
    `check_table`: compare the workers' category tables with the topics after the run.
    """
    if fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
    default_settings, default_env = FAULT_DEFAULTS.get(fault, ({}, {}))
    settings = {**default_settings, **(worker_settings or {})}
    environment = {**default_env, **(env or {})}
    rng = random.Random(seed)
    values = comment_values(records, seed)
    chunk = max(1, int(rate / 10))  # ten sends a second
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="reliability-"))
        started = time.monotonic()
        broker = stack.enter_context(EmbeddedBroker(free_port()))
        run = Run(broker, Path(model_dir), Path(workdir), rng, settings,
                  feed_s=records / rate, env=environment, pause_s=pause_s)
        stack.callback(_stop_all, run)
        for _ in range(workers):
            run.start_ready(run.new_worker())
        with _sampling_rss(run):
            ids, outputs, committed, feed_started = asyncio.run(
                _scenario(run, FAULTS[fault], values, rate, chunk, drain_timeout))
        crashed = run.crashed()
        report = account(fault, seed, ids, outputs, fault_started=run.fault_started,
                         fault_ended=run.fault_ended, feed_started=feed_started,
                         elapsed_s=time.monotonic() - started,
                         logs=sorted({str(w.log_path) for w in run.workers}),
                         crashed=crashed, committed=committed)
        distinct, replayed = oracle_counts(set(ids), outputs)
        table = stats = None
        if check_table:
            # The tables once they hold the distinct ids and stand still (the tally trails the
            # results), the stats topic, then the outputs again, to their end: a late
            # rebalance (a killed member's session expiring) can still replay batches, whose
            # duplicate results come after the first reading and must add nothing.
            table = table_counts(run.live(), sum(distinct.values()))
            stats = asyncio.run(stats_topic_counts(run.broker.url,
                                                     dump=run.workdir / "stats-topic.jsonl"))
            everything = asyncio.run(collect_outputs(run.broker.url, set(ids), timeout=30.0,
                                                     settle=2.0))
            distinct, replayed = oracle_counts(set(ids), everything)
        check_tables(report, table, distinct, replayed, stats)
        if report.table_ok is False:
            replayed_seen, report.replay_skips = replay_tally(run.workdir / "stats-topic.jsonl")
            report.replayed_tally_seen = sum(replayed_seen.values())
        report.exit_s, report.exit_code = run.exit_s, run.exit_code
        report.rss_ready_mb, report.rss_peak_mb = run.rss_ready_mb, run.rss_peak_mb
        report.rejoins = count_rejoins([Path(p) for p in report.logs], run.starts)
        report.join_s, report.joined_partitions = run.join_s, run.joined_partitions
        if run.joined_at is not None:
            report.backlog_at_join = sum(
                1 for i in ids if not any(ts < run.joined_at * 1000 for _, ts, _ in
                                          outputs.get(i, ())))
        report.elapsed_s = round(time.monotonic() - started, 1)
        return report


def _stop_all(run: Run) -> None:
    for worker in run.workers:
        worker.stop(timeout=30)


@contextlib.contextmanager
def demo_model_dir(path: str | Path | None = None) -> Iterator[Path]:
    """A small demo model (built in seconds) at `path`, or in a temporary directory."""
    from streamapp.demo.model import build_demo_model

    with contextlib.ExitStack() as stack:
        if path is None:
            path = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "model"
        path = Path(path)
        if not (path / "config.json").exists():
            build_demo_model(path, train_size=600, test_size=100, epochs=1, log=None)
        yield path
