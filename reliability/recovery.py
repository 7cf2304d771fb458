"""Recovery time after kill -9: how long a killed worker's partitions stay silent.

Two workers share the comment topic (batch intake, one hop, so the comment partitions are the
work); a steady feed runs; one worker is killed with SIGKILL. Measured from the results topic:
the first result of a killed worker's partition predicted after the kill, minus the kill time.

    python -m reliability.recovery --write              # every case; RELIABILITY.md's section
    python -m reliability.recovery --case static_restart --runs 1

Cases: `takeover` (the killed worker stays dead: the other one takes its partitions when the
session times out), `restart` (restarted at once with a new identity) and `static_restart`
(restarted at once with the same STREAMAPP_INSTANCE_ID: KIP-345 static membership). For each,
whether the surviving worker went through a rebalance (its intake logged a new assignment).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shlex
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from reliability.accounting import COMMENTS
from reliability.scenarios import comment_values, demo_model_dir
from streamapp.broker import EmbeddedBroker, free_port
from streamapp.edges.clients import follow, open_producer, send_all
from streamapp.processes import WorkerProcess

RESULTS = "sku-matches"
CASES = ("takeover", "restart", "static_restart")
NULL_HANDLER = "streamapp.serving.handlers.null:ConstantInfer"  # the pipeline, not the model
READY_TIMEOUT = 120.0


@dataclass
class Recovery:
    case: str
    session_timeout_s: float
    silent_s: float | None  # kill -> first result of a killed worker's partition
    survivor_rebalanced: bool  # the other worker's intake was assigned anew
    killed_partitions: list[int]


def _intake_assignments(log: Path) -> int:
    return sum("intake assigned " in line for line in log.read_text(errors="replace").splitlines())


def _comment_partitions(worker: WorkerProcess) -> list[int]:
    held = worker.stats()["assigned_partitions"]
    return sorted(int(p.rsplit(":", 1)[1]) for p in held if p.startswith(f"{COMMENTS}:"))


class _Feed(threading.Thread):
    """Comments at `rate` per second and results as they come, until stopped."""

    def __init__(self, broker: str, rate: float) -> None:
        super().__init__(daemon=True)
        self.broker = broker
        self.rate = rate
        self.stopping = threading.Event()
        self.results: list[tuple[int, int]] = []  # (comment partition, predicted_at ms)

    def run(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        await asyncio.gather(self._produce(), self._follow())

    async def _produce(self) -> None:
        values = comment_values(1000, seed=7)
        chunk = max(int(self.rate / 10), 1)
        async with open_producer(self.broker) as producer:
            i = 0
            while not self.stopping.is_set():
                await send_all(producer, COMMENTS, [values[(i + k) % len(values)]
                                                    for k in range(chunk)])
                i += chunk
                await asyncio.sleep(chunk / self.rate)

    async def _follow(self) -> None:
        async for record in follow(self.broker, [RESULTS], stop=self.stopping.is_set):
            result = orjson.loads(record.value)
            partition = int(result["id"].rsplit(":", 2)[1])
            self.results.append((partition, int(result["timing"]["predicted_at"])))


def measure(model_dir: Path, workdir: Path, case: str, *, session_timeout_s: float = 10.0,
            rate: float = 100.0, broker_url: str | None = None) -> Recovery:
    """One kill -9 on a fresh broker (the embedded one unless `broker_url`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        if broker_url is None:
            broker_url = stack.enter_context(EmbeddedBroker(free_port())).url
        workers: list[WorkerProcess] = []
        stack.callback(lambda: [w.stop(timeout=30) for w in workers])

        def start(slot: int, instance: str | None) -> WorkerProcess:
            settings = {"broker": broker_url, "model": str(model_dir), "handler": NULL_HANDLER,
                        "intake": "batch", "fanout": "false", "web_port": str(free_port()),
                        "datadir": str(workdir / f"data-{slot}"), "batch_wait_ms": "20",
                        "session_timeout_s": str(session_timeout_s)}
            if instance is not None:
                settings["instance_id"] = instance
            worker = WorkerProcess(settings, workdir / f"worker-{slot}.log").start()
            workers.append(worker)
            return worker

        static = case == "static_restart"
        killed = start(0, "worker-a" if static else None)
        killed.wait_ready(READY_TIMEOUT, topic=COMMENTS)
        survivor = start(1, "worker-b" if static else None)
        survivor.wait_ready(READY_TIMEOUT, topic=COMMENTS)
        deadline = time.monotonic() + 60
        while (len(_comment_partitions(killed)), len(_comment_partitions(survivor))) != (2, 2):
            if time.monotonic() > deadline:
                raise TimeoutError("the two workers did not settle on 2 partitions each")
            time.sleep(0.5)
        feed = _Feed(broker_url, rate)
        feed.start()
        stack.callback(feed.join, 30)
        stack.callback(feed.stopping.set)
        time.sleep(5.0)  # steady state
        partitions = _comment_partitions(killed)
        assignments = _intake_assignments(survivor.log_path)
        killed.kill()
        killed_at_ms = time.time() * 1000
        if case != "takeover":
            start(2 if not static else 0, "worker-a" if static else None)
        silent: float | None = None
        deadline = time.monotonic() + session_timeout_s + 60
        while silent is None and time.monotonic() < deadline:
            time.sleep(0.5)
            after = [at for p, at in list(feed.results) if p in partitions and at > killed_at_ms]
            if after:
                silent = (min(after) - killed_at_ms) / 1000
        time.sleep(2.0)  # a rebalance the restart caused shows in the survivor's log by now
        return Recovery(case, session_timeout_s, silent,
                        _intake_assignments(survivor.log_path) > assignments, partitions)


# RELIABILITY.md keeps this section when reliability.report rewrites the rest (keep_section).
SECTION_START = "<!-- reliability.recovery: start -->"
SECTION_END = "<!-- reliability.recovery: end -->"

SECTION_NOTES = """\
Two workers (batch intake, one hop, the null handler: the pipeline without a model) share the
4 partitions of the comment topic under a steady feed of 100 comments/s; one is killed with
SIGKILL. **silent** is the time from the kill to the first result of one of the killed
worker's partitions predicted after it (median, range). **survivor rebalanced**: runs in which
the other worker's intake was assigned anew. `takeover`: the killed worker stays dead;
`restart`: started again at once as a new member; `static_restart`: started again at once
with the same `STREAMAPP_INSTANCE_ID` (KIP-345), which a broker with static membership
answers with the member's old assignment and no rebalance.

A takeover takes the session timeout (the broker declares the member dead), up to one
heartbeat (a tenth of the session timeout) for the survivor to hear of the rebalance, the
rebalance itself, and the first batch. The embedded broker answers JoinGroup only after half
the session timeout, so there a takeover takes about 1.5 times the session timeout; a Kafka
broker answers as soon as the members have joined. The embedded broker does not honour
static membership either: a restarted member with the same `group.instance.id` gets a new
member id and the group rebalances once the old member's session expires, so `restart` and
`static_restart` take the same time there (session timeout + half of it + the first batch).
Timing figures on a shared 2-core machine are noisy.
"""


def section_of(text: str) -> str | None:
    """The recovery section of a RELIABILITY.md text, markers included, if it has one."""
    start, end = text.find(SECTION_START), text.find(SECTION_END)
    if start < 0 or end < start:
        return None
    return text[start:end + len(SECTION_END)]


def keep_section(old_text: str | None, lines: list[str]) -> None:
    """Append the recovery section of the previous RELIABILITY.md to a new one's `lines`."""
    section = section_of(old_text or "")
    if section is not None:
        lines += [section, ""]


def write_section(path: Path, rows: str, command: str) -> None:
    """Put `rows` into RELIABILITY.md's recovery section: they replace earlier rows of the same
    broker, case and session timeout; others stay, with the commands that made them."""
    text = path.read_text() if path.exists() else "# Reliability\n"
    old = section_of(text)
    kept: dict[tuple[str, ...], str] = {}
    commands: list[str] = []
    for line in (old or "").splitlines():
        if line.startswith("Produced by `"):
            commands.append(line)
        elif line.startswith("| ") and not line.startswith(("| broker ", "| --- ")):
            cells = [c.strip() for c in line.strip("|").split("|")]
            kept[(cells[0], cells[1], cells[3])] = line
    for line in rows.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        kept[(cells[0], cells[1], cells[3])] = line
    produced = f"Produced by `{command}`."
    commands = [c for c in commands if c != produced] + [produced]
    body = "\n".join([
        SECTION_START, "## Recovery after kill -9 (reliability/recovery.py)", "",
        *commands, "",
        "| broker | case | runs | session timeout (s) | silent (s) | survivor rebalanced |",
        "| --- | --- | --- | --- | --- | --- |", *kept.values(), "", SECTION_NOTES.rstrip(),
        SECTION_END])
    text = text.replace(old, body) if old is not None else text.rstrip() + "\n\n" + body + "\n"
    path.write_text(text)


def render(results: list[Recovery], broker: str) -> str:
    """Markdown rows: case, runs, seconds silent (median, range), survivor rebalanced."""
    rows = []
    for case in CASES:
        runs = [r for r in results if r.case == case]
        if not runs:
            continue
        silent = [r.silent_s for r in runs if r.silent_s is not None]
        figure = (f"{statistics.median(silent):.1f} ({min(silent):.1f}–{max(silent):.1f})"
                  if silent else "never")
        if len(silent) < len(runs):
            figure += f", {len(runs) - len(silent)} never"
        rebalanced = sum(r.survivor_rebalanced for r in runs)
        rows.append(f"| {broker} | {case} | {len(runs)} | {runs[0].session_timeout_s:g} | "
                    f"{figure} | {rebalanced}/{len(runs)} |")
    return "\n".join(rows)


@contextlib.contextmanager
def _model(path: str | None) -> Iterator[Path]:
    with demo_model_dir(path) as model:
        yield model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=CASES, action="append")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--session-timeout-s", type=float, default=10.0)
    parser.add_argument("--broker", default=None,
                        help="bootstrap of a running broker (default: a fresh embedded one "
                             "per run)")
    parser.add_argument("--model", default=None)
    parser.add_argument("--workdir", type=Path, default=Path("var/reliability/recovery"))
    parser.add_argument("--write", type=Path, nargs="?", const=Path("RELIABILITY.md"),
                        help="put the rows into this file's recovery section (default "
                             "RELIABILITY.md), replacing those of the same case and timeout")
    args = parser.parse_args(argv)
    results = []
    with _model(args.model) as model:
        for case in args.case or CASES:
            for run in range(args.runs):
                result = measure(model, args.workdir / f"{case}-{run}", case,
                                 session_timeout_s=args.session_timeout_s,
                                 broker_url=args.broker)
                print(result, flush=True)
                results.append(result)
    rows = render(results, "embedded" if args.broker is None else args.broker)
    print(rows)
    if args.write is not None:
        command = "python -m reliability.recovery " + shlex.join(argv or sys.argv[1:])
        write_section(args.write, rows, command)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
