"""Fault-injection accounting: read the output topics and the workers' tables, judge a run.

Every source offset of the comment topic must have exactly one output: an id
(`comments:partition:offset`) with no output is lost, one with several is duplicated.

Beyond the ids, each run checks the per-category tables against an oracle from the topics:
after the outputs are in, every live worker's `/api/stats/` `categories[name]["seen"]`,
summed over workers, against the distinct ids per first-level category among the results and
model-failure dead letters. The tables are exact (streamapp.pipeline.ledger): a replayed
batch sends its counts again, and the tally skips what it counted before, so `table_ok` wants
every category's table count equal to its distinct ids (`table_over_count` 0).

The outputs are read twice, side by side: as `read_uncommitted` (every record on the log) and
as `read_committed` (what a downstream consumer of an exactly-once pipeline sees: records of
aborted transactions skipped). Without transactions (the default `at_least_once`, or the
embedded broker) the two readings hold the same records.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from streamapp.edges.clients import follow, follow_until_complete
from streamapp.pipeline.counts import CATEGORY, COUNTED_UPTO, SOURCES, split_key, stats_entries
from streamapp.pipeline.ledger import apply_entry
from streamapp.processes import WorkerProcess
from streamapp.records import Reason

COMMENTS, RESULTS, DLQ = "comments", "sku-matches", "comments-dlq"
APP_ID = "streamapp"
READ_UNCOMMITTED, READ_COMMITTED = "read_uncommitted", "read_committed"
STATS = f"{APP_ID}-stats"  # per-batch counts per category, which the tally adds to the tables
# Dead letters the tally counts (the comment was decoded, then the model failed on it); the
# decode rejections are counted under `dead_letter:<reason>` only, never per category.
MODEL_FAILURES = frozenset({Reason.MODEL_ERROR, Reason.BAD_MODEL_OUTPUT})


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
    # `duplicated` as a read_committed consumer counts it; None when not read that way.
    duplicated_committed: int | None = None
    replayed_outputs: int = 0  # outputs beyond the first per id (counted ids only, see below)
    # Tables vs the topics: the live workers' /api/stats categories[*]["seen"], summed, against
    # the distinct ids per first-level category in the results + model-failure dead letters.
    table_seen: int | None = None  # None: no worker answered
    oracle_seen: int = 0  # distinct ids the tally should have counted
    table_over_count: int | None = None  # table_seen - oracle_seen: must be 0
    # The stats topic's own sum (every count the inference agent sent) minus the distinct ids:
    # counts of replayed batches, sent again, which the tally had to skip.
    stats_topic_seen: int | None = None
    batch_replay_count: int | None = None  # stats_topic_seen - oracle_seen
    # Every category's table count equals its distinct ids: nothing missing, nothing twice.
    table_ok: bool | None = None
    table_diff: dict[str, int] = field(default_factory=dict)  # category -> table - oracle, != 0
    # When the tables are off: the stats topic as read, put through the ledger in each
    # partition's offset order (what a tally that lost no state would hold), and the source
    # offsets it skipped as counted before. The replay short as well: the counts reached the
    # topic out of their lane's order; the replay exact: the tables lost state or applied
    # out of order.
    replayed_tally_seen: int | None = None
    replay_skips: list[str] = field(default_factory=list)
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
                f"(unexplained {self.unexplained_duplicates}) "
                f"duplicated_read_committed={self.duplicated_committed} "
                f"dead_lettered={self.dead_lettered}"
                f" fault_at={self.fault_at_s:.1f}s recovery={recovery} "
                f"table={self.table_seen} oracle={self.oracle_seen} "
                f"over={self.table_over_count} (replayed counts skipped "
                f"{self.batch_replay_count}) replayed={self.replayed_outputs} "
                f"table_ok={self.table_ok} rejoins={self.rejoins} "
                + (f"replayed_tally={self.replayed_tally_seen} skips={self.replay_skips[:5]} "
                   if self.replayed_tally_seen is not None else "")
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


async def collect_outputs(broker: str, expected: set[str], timeout: float,
                          settle: float = 3.0, isolation_level: str = READ_UNCOMMITTED
                          ) -> Outputs:
    """Read the result and dead-letter topics at `isolation_level` until every expected id has
    an output (then `settle` more seconds, to catch late duplicates) or `timeout` passes."""
    seen: Outputs = defaultdict(list)
    async for record in follow_until_complete(broker, [RESULTS, DLQ], expected,
                                              timeout=timeout, settle=settle,
                                              isolation_level=isolation_level):
        key = record.key.decode() if record.key else ""
        value = orjson.loads(record.value)
        if record.topic == RESULTS:
            made, category = value["timing"]["predicted_at"], _first_category(value)
        else:
            made, category = value["failed_at"], _dead_letter_category(value)
        seen[key].append((record.topic, int(made), category))
    return seen


async def collect_both(broker: str, expected: set[str], timeout: float,
                       settle: float = 3.0) -> tuple[Outputs, Outputs]:
    """(read_uncommitted, read_committed) outputs: one reader per isolation level, run side by
    side so that both cover the same stretch of the log."""
    uncommitted, committed = await asyncio.gather(
        *(collect_outputs(broker, expected, timeout, settle, level)
          for level in (READ_UNCOMMITTED, READ_COMMITTED)))
    return uncommitted, committed


def duplicated_ids(expected: set[str], outputs: Outputs) -> list[str]:
    """The expected ids with more than one output, sorted."""
    return sorted(i for i in expected if len(outputs.get(i, ())) > 1)


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
            committed: Outputs | None = None, sample: int = 20) -> ReliabilityReport:
    """The report, from the produced ids and what the output topics hold (`outputs` read
    uncommitted, `committed` read_committed when it was read)."""
    expected = set(ids)
    lost = sorted(expected - outputs.keys())
    dups = duplicated_ids(expected, outputs)
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
        duplicated_committed=None if committed is None else len(duplicated_ids(expected,
                                                                               committed)),
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


async def stats_topic_counts(broker: str, idle_timeout: float = 2.0,
                             dump: Path | None = None) -> Counter[str]:
    """First-level category -> sum of the `seen` counts on the stats topic: what the tables
    would hold had the tally applied every count message exactly once. `dump`: a JSON-lines
    file of every stats message as read (partition, offset, entries), to replay the tally by
    hand when a table is off."""
    counts: Counter[str] = Counter()
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(dump.open("wb")) if dump is not None else None
        async for record in follow(broker, [STATS], idle_timeout=idle_timeout):
            entries = stats_entries(record.key, record.value)
            if out is not None:
                out.write(orjson.dumps({"partition": record.partition, "offset": record.offset,
                                        "entries": entries}) + b"\n")
            _add_seen(counts, entries)
    return counts


def _add_seen(counts: Counter[str], entries: dict[str, dict[str, Any]]) -> None:
    for key, entry in entries.items():
        kind, name = split_key(key)
        if kind == CATEGORY:
            counts[name] += int(entry.get("seen", 0))


def replay_tally(dump: Path) -> tuple[Counter[str], list[str]]:
    """The stats topic dumped by `stats_topic_counts`, put through the ledger
    (streamapp.pipeline.ledger.apply_entry) one partition at a time in offset order: the
    `seen` counts per first-level category, and a line per entry whose counts it skipped for
    source offsets at or below its key's mark (a replay, or counts that came out of order)."""
    messages = [orjson.loads(line) for line in dump.read_bytes().splitlines() if line]
    messages.sort(key=lambda m: (m["partition"], m["offset"]))
    values: dict[str, dict[str, Any]] = {}
    seen: Counter[str] = Counter()
    skips: list[str] = []
    for message in messages:
        for key, entry in message["entries"].items():
            current = values.get(key)
            marks = (current or {}).get(COUNTED_UPTO, {})
            values[key], added = apply_entry(current, entry, message["offset"])
            kind, name = split_key(key)
            if kind == CATEGORY:
                seen[name] += added.get("seen", 0)
            if added.get("seen", 0) < entry.get("seen", 0):
                below = {lane: [o for offsets in by_outcome.values() for o in offsets
                                if o <= marks.get(lane, -1)]
                         for lane, by_outcome in entry.get(SOURCES, {}).items()}
                skips.append(f"stats:{message['partition']}@{message['offset']} {key}: "
                             + ", ".join(f"{lane} {min(o)}..{max(o)} at or below "
                                         f"{marks.get(lane)}" for lane, o in below.items() if o))
    return seen, skips


def check_tables(report: ReliabilityReport, table: Counter[str] | None,
                 distinct: Counter[str], replayed: Counter[str],
                 stats: Counter[str] | None = None) -> ReliabilityReport:
    """Fill the table fields. Ok when every category's table count equals its distinct ids
    (and, given the stats topic, it holds at least that many: nothing was lost before the
    tally)."""
    report.oracle_seen = sum(distinct.values())
    report.replayed_outputs = sum(replayed.values())
    if stats is not None:
        report.stats_topic_seen = sum(stats.values())
        report.batch_replay_count = report.stats_topic_seen - report.oracle_seen
    if table is None:
        return report
    report.table_seen = sum(table.values())
    report.table_over_count = report.table_seen - report.oracle_seen
    names = sorted(set(table) | set(distinct))
    diff = {name: table[name] - distinct[name] for name in names}
    report.table_diff = {name: d for name, d in diff.items() if d}
    ok = not report.table_diff
    if stats is not None:
        ok = ok and all(stats[n] >= distinct[n] for n in names)
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


# Warnings every rebalance or burst writes, which say nothing about a run gone wrong.
_ROUTINE_WARNINGS = ("producer buffer full", "because it is rebalancing")


def notable_log_lines(logs: list[str], most: int = 30) -> list[str]:
    """The workers' warnings and errors beyond the routine ones, the first `most`, each
    prefixed with its log's name: for a failed run's message, as CI keeps no run folders."""
    lines: list[str] = []
    for log in logs:
        with contextlib.suppress(OSError):
            for line in Path(log).read_text(errors="replace").splitlines():
                if re.search(r"\[(WARNING|ERROR|CRITICAL)\]", line) and \
                        not any(routine in line for routine in _ROUTINE_WARNINGS):
                    lines.append(f"{Path(log).name}: {line[:300]}")
    return lines[:most]
