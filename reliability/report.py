"""The fault-injection suite: every fault several times with fixed seeds, then RELIABILITY.md.

`run_suite` (`streamapp reliability`, `make reliability`) runs the cases of `suite_cases`;
`write_report` writes the table. `main` runs one fault: `python -m reliability.report --help`.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from reliability.accounting import ReliabilityReport
from reliability.recovery import keep_section
from reliability.scenarios import (
    FAULTS,
    SLOW_DELAY_ENV,
    SLOW_HANDLER,
    demo_model_dir,
    run_scenario,
)


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
- **duplicated (read_committed)**: the same count as a consumer with
  `isolation_level="read_committed"` reads the result and dead-letter topics (a second reader,
  side by side with the first). Under the default `at_least_once` nothing is transactional and
  it equals **duplicated**. Under `STREAMAPP_GUARANTEE=exactly_once` (a broker with
  transactions; the embedded one refuses them) replays sit in aborted transactions, and this
  column is the one that must be 0.
- **dead-lettered**: ids whose output is a dead letter (the synthetic comments are all valid).
- **time to recover**: fault start -> first output made after the fault ended.
- **table over-count**: after the run, `categories[*]["seen"]` of every live worker's
  `/api/stats/`, summed, minus the distinct ids per first-level category in the results and
  model-failure dead letters (the oracle from the topics). Must be 0: each stats message says
  which source offsets it counts, and the tally counts an offset once
  (`streamapp/pipeline/ledger.py`).
- **replayed counts skipped (replayed outputs)**: the stats topic's own sum minus the oracle:
  counts that replayed batches sent again and the tally skipped; in brackets the outputs beyond
  the first per id that the topics show for those replays.
- **tables ok**: every category's table count equals its distinct ids (nothing missing,
  nothing twice). When it fails, the run's folder holds `stats-topic.jsonl`, the stats topic
  as read, to replay the tally by hand: so the join_leave failure CI met was traced to stats
  messages applied after later ones of their partition (streamapp/pipeline/tally.py). The
  run then also replays that dump through the ledger itself and its summary adds
  `replayed_tally` (what a tally that lost no state would hold) and `skips` (the source
  offsets it skipped as counted, by lane): a replay short as well means counts reached the
  topic out of their lane's order; a replay that is exact puts the loss in the tables'
  state. The tests' message adds the workers' unusual warnings, as CI keeps no run folders.
- **rejoins**: `Joined group` lines beyond one per worker start: every rebalance makes every
  member join again (kill -9 leaves a dead member until its session expires: one more).
  For `slow_model`, 0 means the group never dropped the worker.
- **exit time** (`sigterm`): SIGTERM -> process exit (exit code 0 in every run): the batches in
  flight finish, their outputs are produced and the offsets committed first.
- **RSS**: the worker process's resident memory when ready, and its peak (sampled every 0.5 s);
  the model process beside it (STREAMAPP_MODEL_PROCESS) is not counted: it holds the model,
  about 500 MiB with the demo model, and no records.
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
        "(`reliability/`).",
        "",
        "| fault | runs | records in | lost | duplicated | duplicated (read_committed) "
        "| dead-lettered | time to recover "
        "| table over-count | replayed counts skipped (replayed outputs) | tables ok | rejoins "
        "| exit time | RSS ready -> peak (MiB) | model |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- "
        "| --- |",
    ]
    for fault, reports in results.items():
        case = cases.get(fault)
        over = [r.table_over_count for r in reports]
        skipped = [r.batch_replay_count for r in reports]
        committed = [r.duplicated_committed for r in reports]
        lines.append(
            f"| {fault} | {len(reports)} | {sum(r.records_in for r in reports)} "
            f"| {sum(r.lost for r in reports)} | {sum(r.duplicated for r in reports)} "
            f"| {'n/a' if None in committed else sum(c or 0 for c in committed)} "
            f"| {sum(r.dead_lettered for r in reports)} "
            f"| {_range([r.recovery_s for r in reports], '{:.1f} s')} "
            f"| {'n/a' if None in over else sum(o or 0 for o in over)} "
            f"| {'n/a' if None in skipped else sum(k or 0 for k in skipped)} "
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
    keep_section(out.read_text() if out.exists() else None, lines)  # reliability.recovery's
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
                          duplicated=report.duplicated,
                          duplicated_read_committed=report.duplicated_committed or 0,
                          failed=int(not report.ok))
    print(" ".join(f"{k}={v}" for k, v in totals.items()), flush=True)
    return 1 if totals["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
