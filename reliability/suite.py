"""Fault-injection harness: feed comments while real workers run, inject a fault, then check
from the output topics alone that every comment has exactly one result or dead letter.

    report = run_scenario(model_dir, fault="kill9", records=3000, seed=1, workdir=tmp)
    assert report.lost == 0

A run starts an embedded broker and `faust -A streamapp worker` processes (WorkerProcess),
produces `records` synthetic comments at `rate` per second, injects the fault at a moment drawn
from `seed`, waits for the outputs and accounts for every source offset of the comment topic:
an id (`comments:partition:offset`) with no output is lost, one with several is duplicated.

Faults live in `FAULTS` (name -> coroutine); add one by writing `async def _my_fault(run)` and
registering it. CLI: `python -m reliability.suite --fault kill9 --runs 3 --records 3000`.

Beyond the ids, each run checks the per-category tables against an oracle from the topics:
after the outputs are in, every live worker's `/api/stats/` `categories[name]["seen"]`,
summed over workers, against the distinct ids per first-level category among the results and
model-failure dead letters. The tables are at-least-once too: a replayed batch counts again,
so `table_over_count` (tables minus distinct) is reported and checked against the replayed
outputs that the topics show (`replayed_outputs`, `table_ok`).

The suite (`run_suite`, `streamapp reliability`, `make reliability`) runs every fault several
times with fixed seeds and writes RELIABILITY.md. `FAULT_DEFAULTS` gives the faults that need
them their worker settings: `slow_model` and `backpressure` run
`streamapp.serving.handlers.null:SlowInfer`, whose per-batch delay is `SLOW_INFER_DELAY_S`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import platform
import random
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from streamapp.broker import EmbeddedBroker, free_port
from streamapp.demo.synthetic import generate_comments
from streamapp.edges.clients import follow, follow_until_complete, open_producer, send_all
from streamapp.pipeline.stats import CATEGORY, split_key, stats_entries
from streamapp.processes import WorkerProcess
from streamapp.records import Reason, comment_id

COMMENTS, RESULTS, DLQ = "comments", "sku-matches", "comments-dlq"
APP_ID = "streamapp"
STATS = f"{APP_ID}-stats"  # per-batch counts per category, which the tally adds to the tables
READY_TIMEOUT = 120.0
SLOW_HANDLER = "streamapp.serving.handlers.null:SlowInfer"
SLOW_DELAY_ENV = "SLOW_INFER_DELAY_S"  # read by SlowInfer; not a STREAMAPP_* setting
# Dead letters the tally counts (the comment was decoded, then the model failed on it); the
# decode rejections are counted under `dead_letter:<reason>` only, never per category.
MODEL_FAILURES = frozenset({Reason.MODEL_ERROR, Reason.BAD_MODEL_OUTPUT})
# Worker settings and environment a fault runs with unless the caller says otherwise.
FAULT_DEFAULTS: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    # A batch takes 7 s of the 10 s session timeout (STREAMAPP_SESSION_TIMEOUT_S).
    "slow_model": ({"handler": SLOW_HANDLER, "batch_size": "100"}, {SLOW_DELAY_ENV: "7"}),
    # 64 records per 0.2 s: a backlog builds at any feed rate above ~300/s per worker.
    "backpressure": ({"handler": SLOW_HANDLER, "batch_size": "64"}, {SLOW_DELAY_ENV: "0.2"}),
}


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
    # perform_seek ran (see streamapp.pipeline.offsets); more would point at a new defect.
    unexplained_duplicates: int
    recovery_s: float | None  # fault start -> first output after the fault ended
    fault_at_s: float  # fault start, seconds after the feed started
    elapsed_s: float
    replayed_outputs: int = 0  # outputs beyond the first per id (counted ids only, see below)
    # Tables vs the topics: the live workers' /api/stats categories[*]["seen"], summed, against
    # the distinct ids per first-level category in the results + model-failure dead letters.
    table_seen: int | None = None  # None: no worker answered
    oracle_seen: int = 0  # distinct ids the tally should have counted
    table_over_count: int | None = None  # table_seen - oracle_seen
    # The over-count in two parts, both read from topics: the stats topic's own sum (every
    # count message the inference agent sent) minus the distinct ids = batches replayed after
    # a crash, which also show as replayed outputs; the tables minus the stats topic's sum =
    # count messages the tally applied twice (its changelog ran ahead of its committed offset
    # on the stats topic when the worker died; not visible in the output topics).
    stats_topic_seen: int | None = None
    batch_replay_count: int | None = None  # stats_topic_seen - oracle_seen
    tally_replay_count: int | None = None  # table_seen - stats_topic_seen
    # Tables lost nothing (>= distinct ids in every category) and the batch-replay part is
    # within the replayed outputs, in every category.
    table_ok: bool | None = None
    table_diff: dict[str, int] = field(default_factory=dict)  # category -> table - oracle, != 0
    exit_s: float | None = None  # sigterm: SIGTERM -> process exit
    exit_code: int | None = None
    rss_ready_mb: float | None = None  # largest worker RSS when it became ready
    rss_peak_mb: float | None = None  # largest worker RSS seen during the run (every 0.5 s)
    rejoins: int = 0  # "Joined group" log lines beyond one per worker start
    join_s: float | None = None  # backpressure: second worker start -> it holds partitions
    joined_partitions: list[str] = field(default_factory=list)  # ... of the inference topic
    backlog_at_join: int | None = None  # ids without an output yet when it held them
    lost_ids: list[str] = field(default_factory=list)  # the first few, sorted
    duplicated_ids: list[str] = field(default_factory=list)
    unexpected_ids: list[str] = field(default_factory=list)  # outputs for ids never produced
    crashed: list[str] = field(default_factory=list)  # workers that exited on their own
    logs: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.lost == 0 and not self.unexpected_ids and not self.crashed
                and self.table_ok is not False)

    def summary(self) -> str:
        recovery = "n/a" if self.recovery_s is None else f"{self.recovery_s:.1f}s"
        return (f"{self.fault} seed={self.seed}: in={self.records_in} out={self.outputs} "
                f"lost={self.lost} duplicated={self.duplicated} "
                f"(unexplained {self.unexplained_duplicates}) dead_lettered={self.dead_lettered}"
                f" fault_at={self.fault_at_s:.1f}s recovery={recovery} "
                f"table={self.table_seen} oracle={self.oracle_seen} "
                f"over={self.table_over_count} (batch replays {self.batch_replay_count}, "
                f"tally replays {self.tally_replay_count}) replayed={self.replayed_outputs} "
                f"table_ok={self.table_ok} rejoins={self.rejoins} "
                + (f"exit={self.exit_s:.1f}s code={self.exit_code} " if self.exit_s is not None
                   else "")
                + (f"join={self.join_s:.1f}s partitions={self.joined_partitions} "
                   f"backlog_at_join={self.backlog_at_join} " if self.join_s is not None
                   else "")
                + f"rss={self.rss_ready_mb}->{self.rss_peak_mb}MB "
                f"elapsed={self.elapsed_s:.0f}s" + (f" CRASHED {self.crashed}" if self.crashed
                                                    else ""))


# id -> [(topic, when the worker made it: `predicted_at` / `failed_at` (ms), first-level
# category the tally counts it under, None for a dead letter it does not count)]
Outputs = dict[str, list[tuple[str, int, str | None]]]


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


async def collect_outputs(broker: str, expected: set[str], timeout: float,
                          settle: float = 3.0) -> Outputs:
    """Read the result and dead-letter topics until every expected id has an output (then
    `settle` more seconds, to catch late duplicates) or `timeout` passes."""
    seen: Outputs = defaultdict(list)
    async for record in follow_until_complete(broker, [RESULTS, DLQ], expected,
                                              timeout=timeout, settle=settle):
        key = record.key.decode() if record.key else ""
        value = orjson.loads(record.value)
        if record.topic == RESULTS:
            made, category = value["timing"]["predicted_at"], _first_category(value)
        else:
            made, category = value["failed_at"], _dead_letter_category(value)
        seen[key].append((record.topic, int(made), category))
    return seen


def _first_category(result: dict[str, Any]) -> str:
    """The tally's key for a result: Comment.first_category (categories[0] is
    categoryFirstName whenever that is set: the path keeps the levels up to the last set one)."""
    categories = result.get("categories") or []
    return categories[0] if categories and categories[0] else "(none)"


def _dead_letter_category(letter: dict[str, Any]) -> str | None:
    """A model failure carries the decoded comment (JSON) and is counted by the tally; a
    decode rejection is not."""
    if letter.get("reason") not in MODEL_FAILURES or letter.get("value_base64"):
        return None
    try:
        comment = orjson.loads(letter.get("value") or "")
    except orjson.JSONDecodeError:
        return None
    return (comment.get("categoryFirstName") or "(none)") if isinstance(comment, dict) else None


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
        after = [ts for outs in outputs.values() for _, ts, _ in outs if ts >= fault_ended * 1000]
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


def oracle_counts(ids: set[str], outputs: Outputs) -> tuple[Counter[str], Counter[str]]:
    """From the topics: distinct ids per first-level category that the tally counts (results
    and model-failure dead letters), and the outputs beyond the first of each such id (a
    replayed batch's, which the at-least-once tables count again)."""
    distinct: Counter[str] = Counter()
    replayed: Counter[str] = Counter()
    for record_id in ids:
        counted = [category for _, _, category in outputs.get(record_id, ()) if category]
        if counted:
            distinct[counted[0]] += 1
            replayed[counted[0]] += len(counted) - 1
    return distinct, replayed


def table_counts(workers: list[WorkerProcess], at_least: int,
                 timeout: float = 30.0) -> Counter[str] | None:
    """`categories[name]["seen"]` of every worker's /api/stats/, summed; polled until the total
    reaches `at_least` and holds still for a second (the tally trails the results), or
    `timeout`. None when no worker answers."""
    deadline = time.monotonic() + timeout
    last: Counter[str] | None = None
    while True:
        counts: Counter[str] = Counter()
        answered = 0
        for worker in workers:
            try:
                stats = worker.stats()
            except (OSError, ValueError):
                continue
            answered += 1
            for name, entry in stats.get("categories", {}).items():
                counts[name] += int(entry.get("seen", 0))
        current = counts if answered else None
        total = sum(counts.values())
        if current is not None and current == last and total >= at_least:
            return current
        if time.monotonic() > deadline:
            return current
        last = current
        time.sleep(1.0)


async def stats_topic_counts(broker: str, idle_timeout: float = 2.0) -> Counter[str]:
    """First-level category -> sum of the `seen` counts on the stats topic: what the tables
    would hold had the tally applied every count message exactly once."""
    counts: Counter[str] = Counter()
    async for record in follow(broker, [STATS], idle_timeout=idle_timeout):
        for key, entry in stats_entries(record.key, record.value).items():
            kind, name = split_key(key)
            if kind == CATEGORY:
                counts[name] += int(entry.get("seen", 0))
    return counts


def check_tables(report: ReliabilityReport, table: Counter[str] | None,
                 distinct: Counter[str], replayed: Counter[str],
                 stats: Counter[str] | None = None) -> ReliabilityReport:
    """Fill the table fields. Ok when no category's table count is below its distinct ids and
    (given the stats topic) the stats topic's excess over them is within the replayed outputs."""
    report.oracle_seen = sum(distinct.values())
    report.replayed_outputs = sum(replayed.values())
    if stats is not None:
        report.stats_topic_seen = sum(stats.values())
        report.batch_replay_count = report.stats_topic_seen - report.oracle_seen
    if table is None:
        return report
    report.table_seen = sum(table.values())
    report.table_over_count = report.table_seen - report.oracle_seen
    if report.stats_topic_seen is not None:
        report.tally_replay_count = report.table_seen - report.stats_topic_seen
    names = sorted(set(table) | set(distinct))
    diff = {name: table[name] - distinct[name] for name in names}
    report.table_diff = {name: d for name, d in diff.items() if d}
    ok = all(d >= 0 for d in diff.values())
    if stats is not None:
        ok = ok and all(0 <= stats[n] - distinct[n] <= replayed[n] for n in names)
    report.table_ok = ok
    return report


def count_rejoins(logs: list[Path], starts: int) -> int:
    """'Joined group' lines in the worker logs beyond one per worker start: rebalances that
    took a member out of the group and back (a session expiry, a kick-out)."""
    joins = 0
    for log in logs:
        with contextlib.suppress(OSError):
            joins += len(re.findall(r"Joined group '", log.read_text(errors="replace")))
    return max(joins - starts, 0)


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
            ids, outputs, feed_started = asyncio.run(
                _scenario(run, FAULTS[fault], values, rate, chunk, drain_timeout))
        crashed = run.crashed()
        report = account(fault, seed, ids, outputs, fault_started=run.fault_started,
                         fault_ended=run.fault_ended, feed_started=feed_started,
                         elapsed_s=time.monotonic() - started,
                         logs=sorted({str(w.log_path) for w in run.workers}),
                         crashed=crashed)
        distinct, replayed = oracle_counts(set(ids), outputs)
        table = stats = None
        if check_table:
            # Stats topic first, then the tables once they hold at least as much (the tally
            # trails the stats topic; a late rebalance, e.g. a killed member's session
            # expiring, can still replay batches), then the outputs again, to their end: the
            # duplicate results of those replays come after the first reading.
            stats = asyncio.run(stats_topic_counts(run.broker.url))
            table = table_counts(run.live(), max(sum(distinct.values()), sum(stats.values())))
            everything = asyncio.run(collect_outputs(run.broker.url, set(ids), timeout=30.0,
                                                     settle=2.0))
            distinct, replayed = oracle_counts(set(ids), everything)
        check_tables(report, table, distinct, replayed, stats)
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


# -- the suite: every fault, several runs, RELIABILITY.md ----------------------------------------

@dataclass(frozen=True)
class SuiteCase:
    """How the suite runs one fault."""

    fault: str
    records: int
    rate: float
    model: str  # what scores the comments, for the report
    settings: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    drain_timeout: float = 120.0


SUITE_FAULTS = ("kill9", "kill9_twice", "sigterm", "join_leave", "broker_pause", "slow_model",
                "backpressure")


def suite_cases(*, records: int = 20_000, rate: float = 600.0, backlog: int = 50_000,
                pause_s: float = 30.0, slow_delay_s: float = 7.0,
                slow_records: int = 600) -> dict[str, SuiteCase]:
    """The suite's cases. Demo model where its speed is part of the fault (crash, rebalance,
    broker pause under real load); SlowInfer where the model's speed is the point."""
    demo = "demo model (var/models/demo)"
    feed_s = records / rate
    return {
        "kill9": SuiteCase("kill9", records, rate, demo),
        "kill9_twice": SuiteCase("kill9_twice", records, rate, demo),
        # SlowInfer at 0.25 s per batch of 64 (~256/s) under a faster feed: the model is always
        # busy, so the SIGTERM lands mid-batch and the exit time includes finishing it.
        "sigterm": SuiteCase("sigterm", records, rate / 2,
                             "SlowInfer, SLOW_INFER_DELAY_S=0.25, batch 64",
                             {"handler": SLOW_HANDLER, "batch_size": "64"},
                             {SLOW_DELAY_ENV: "0.25"}, drain_timeout=120.0 + feed_s),
        "join_leave": SuiteCase("join_leave", records, rate, demo),
        "broker_pause": SuiteCase("broker_pause", records, rate, demo,
                                  drain_timeout=120.0 + pause_s),
        "slow_model": SuiteCase(
            "slow_model", slow_records, slow_records / 10.0,
            f"SlowInfer, SLOW_INFER_DELAY_S={slow_delay_s:g}, batch 100",
            {"handler": SLOW_HANDLER, "batch_size": "100"},
            {SLOW_DELAY_ENV: f"{slow_delay_s:g}"},
            drain_timeout=60.0 + 2 * slow_delay_s * slow_records / 100),
        "backpressure": SuiteCase(
            "backpressure", backlog, 25_000.0, "SlowInfer, SLOW_INFER_DELAY_S=0.2, batch 64",
            {"handler": SLOW_HANDLER, "batch_size": "64"}, {SLOW_DELAY_ENV: "0.2"},
            drain_timeout=120.0 + backlog / 250),
    }


def run_suite(model_dir: str | Path, *, runs: int = 3, seed: int = 0,
              faults: tuple[str, ...] = SUITE_FAULTS, workdir: str | Path | None = None,
              pause_s: float = 30.0, log: Callable[[str], None] | None = None,
              **case_options: Any) -> dict[str, list[ReliabilityReport]]:
    """Every fault `runs` times (seeds seed, seed+1, ...); fault -> reports."""
    cases = suite_cases(pause_s=pause_s, **case_options)
    results: dict[str, list[ReliabilityReport]] = {}
    for fault in faults:
        case = cases[fault]
        for i in range(runs):
            where = None if workdir is None else Path(workdir) / fault / f"run-{i}"
            if where is not None and where.exists():
                shutil.rmtree(where)  # old logs and RocksDB stores would skew this run
            report = run_scenario(model_dir, fault=fault, records=case.records,
                                  seed=seed + i, rate=case.rate, workdir=where,
                                  drain_timeout=case.drain_timeout,
                                  worker_settings=case.settings, env=case.env,
                                  pause_s=pause_s)
            results.setdefault(fault, []).append(report)
            if log is not None:
                log(report.summary())
    return results


def _range(values: list[float | None], fmt: str = "{:.1f}") -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "n/a"
    lo, hi = fmt.format(min(known)), fmt.format(max(known))
    return lo if lo == hi else f"{lo} to {hi}"


REPORT_NOTES = """\
## How to read it

Every run starts a fresh embedded broker and real `faust -A streamapp worker` processes
(RocksDB tables, 4 partitions, session timeout 10 s), produces synthetic comments, injects the
fault at a moment drawn from the seed (run i uses seed i), then reads the result and
dead-letter topics until every source offset has an output. Columns (sums over the runs;
ranges for times and memory):

- **lost**: source offsets of the comment topic with no result and no dead letter. Must be 0.
- **duplicated**: ids with more than one output: work in flight (not yet committed) at a
  crash, a graceful stop or a rebalance, replayed. Each is identifiable by its id
  (`comments:partition:offset`); the per-run lines list how many came from comments sent after
  the fault ended (`unexplained`).
- **dead-lettered**: ids whose output is a dead letter (the synthetic comments are all valid).
- **time to recover**: fault start -> first output made after the fault ended.
- **table over-count (replayed outputs)**: after the run, `categories[*]["seen"]` of every live
  worker's `/api/stats/`, summed, minus the distinct ids per first-level category in the results
  and model-failure dead letters (the oracle from the topics). The tables are at-least-once, so
  they over-count; the per-run lines split it, from the topics, into *batch replays* (the
  stats topic's own sum minus the oracle: counts of a replayed batch, sent again; always within
  the replayed outputs in brackets) and *tally replays* (tables minus the stats topic's sum:
  count messages the tally agent applied twice because its table changelog ran ahead of its
  committed offset on the stats topic when the worker died; they show in no output topic).
- **tables ok**: no category below the oracle, and every category's batch-replay part within
  its replayed outputs.
- **rejoins**: `Joined group` lines beyond one per worker start: every rebalance makes every
  member join again (kill -9 leaves a dead member until its session expires: one more).
  For `slow_model`, 0 means the group never dropped the worker.
- **exit time** (`sigterm`): SIGTERM -> process exit (exit code 0 in every run): the batches in
  flight finish, their outputs are produced and the offsets committed first.
- **RSS**: the worker's resident memory when ready, and its peak (sampled every 0.5 s).
  `backpressure` runs a 50,000-comment backlog through a slow model; a second worker joins once
  the backlog is in: the per-run lines show how long it took to hold partitions of the
  inference topic, which ones, and how many comments still had no output at that moment.
"""


def write_report(results: dict[str, list[ReliabilityReport]], out: Path, *, command: str,
                 cases: dict[str, SuiteCase] | None = None,
                 notes: str = REPORT_NOTES) -> None:
    """RELIABILITY.md: one row per fault (sums over runs; ranges for times and memory)."""
    cases = cases or suite_cases()
    lines = [
        "# Reliability",
        "",
        f"Produced by `{command}` on {datetime.date.today().isoformat()}, on "
        f"{platform.machine()} with {os.cpu_count()} CPUs ({platform.python_implementation()} "
        f"{platform.python_version()}), the embedded broker and real worker processes "
        "(`streamapp/reliability.py`).",
        "",
        "| fault | runs | records in | lost | duplicated | dead-lettered | time to recover "
        "| table over-count (replayed outputs) | tables ok | rejoins | exit time | RSS ready -> "
        "peak (MiB) | model |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for fault, reports in results.items():
        case = cases.get(fault)
        over = [r.table_over_count for r in reports]
        lines.append(
            f"| {fault} | {len(reports)} | {sum(r.records_in for r in reports)} "
            f"| {sum(r.lost for r in reports)} | {sum(r.duplicated for r in reports)} "
            f"| {sum(r.dead_lettered for r in reports)} "
            f"| {_range([r.recovery_s for r in reports], '{:.1f} s')} "
            f"| {'n/a' if None in over else sum(o or 0 for o in over)} "
            f"({sum(r.replayed_outputs for r in reports)}) "
            f"| {'yes' if all(r.table_ok for r in reports) else 'NO'} "
            f"| {sum(r.rejoins for r in reports)} "
            f"| {_range([r.exit_s for r in reports], '{:.1f} s')} "
            f"| {_range([r.rss_ready_mb for r in reports], '{:.0f}')} -> "
            f"{_range([r.rss_peak_mb for r in reports], '{:.0f}')} "
            f"| {case.model if case else ''} |")
    lines += ["", "Per run:", "", "```"]
    lines += [r.summary() for reports in results.values() for r in reports]
    lines += ["```", ""]
    if notes:
        lines += [notes.rstrip(), ""]
    out.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fault", choices=sorted(FAULTS), default="kill9")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="first seed; run i uses seed+i")
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=600.0, help="comments per second")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--pause-s", type=float, default=30.0, help="broker_pause's freeze")
    parser.add_argument("--model", type=Path, default=None,
                        help="model dir (default: a small demo model, built when missing)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep worker logs here")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="extra STREAMAPP_* worker setting, e.g. --set log_level=debug")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="other worker environment, e.g. --env SLOW_INFER_DELAY_S=7")
    parser.add_argument("--json", action="store_true", help="print each report as JSON")
    args = parser.parse_args(argv)
    extra = dict(item.split("=", 1) for item in args.set)
    env = dict(item.split("=", 1) for item in args.env)
    totals: Counter[str] = Counter()
    with demo_model_dir(args.model) as model:
        for i in range(args.runs):
            workdir = None if args.workdir is None else args.workdir / f"run-{i}"
            report = run_scenario(model, fault=args.fault, records=args.records,
                                  seed=args.seed + i, rate=args.rate, workers=args.workers,
                                  workdir=workdir, worker_settings=extra, env=env,
                                  pause_s=args.pause_s,
                                  drain_timeout=max(90.0, 90.0 + args.pause_s))
            print(orjson.dumps(asdict(report)).decode() if args.json else report.summary(),
                  flush=True)
            totals.update(runs=1, records_in=report.records_in, lost=report.lost,
                          duplicated=report.duplicated, failed=int(not report.ok))
    print(" ".join(f"{k}={v}" for k, v in totals.items()), flush=True)
    return 1 if totals["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
