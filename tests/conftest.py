"""Fixtures: a tiny real model, a real broker process, real worker processes."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamapp.broker import EmbeddedBroker, free_port
from streamapp.demo.model import build_demo_model
from streamapp.demo.synthetic import generate_comments
from streamapp.edges.clients import follow_until_complete, produce
from streamapp.processes import WorkerProcess
from streamapp.records import comment_id


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small demo model, trained for a few seconds through the real build code."""
    path = tmp_path_factory.mktemp("models") / "tiny"
    build_demo_model(path, train_size=600, test_size=100, epochs=1, log=None)
    return path


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(free_port()) as running:
        yield running


StartWorker = Callable[..., WorkerProcess]


FAILED_KEY = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call" and report.failed:
        item.stash[FAILED_KEY] = True
    return report


@pytest.fixture
def start_worker(request: pytest.FixtureRequest, broker: EmbeddedBroker, tiny_model: Path,
                 tmp_path: Path) -> Iterator[StartWorker]:
    """Start `faust -A streamapp worker` processes on the test broker; all stop at teardown.
    When the test failed, each worker's log tail goes to the report (what it was doing)."""
    workers: list[WorkerProcess] = []

    def start(wait: bool = True, ready_topic: str = "streamapp-inference",
              command: list[str] | None = None, **settings: Any) -> WorkerProcess:
        """Start a worker; with `wait`, return once it holds partitions of `ready_topic`."""
        n = len(workers)
        env = {
            "broker": broker.url,
            "model": str(tiny_model),
            "datadir": str(tmp_path / f"data-{n}"),
            "web_port": str(free_port()),
            "batch_wait_ms": "20",
            "torch_threads": "1",
        }
        env.update({k: str(v) for k, v in settings.items()})
        worker = WorkerProcess(env, tmp_path / f"worker-{n}.log", command=command).start()
        workers.append(worker)
        if wait:
            worker.wait_ready(timeout=120, topic=ready_topic)
        return worker

    yield start
    failed = request.node.stash.get(FAILED_KEY, False)
    # A failed test's workers, still running: what each held and had read and committed.
    states = [_worker_state(worker) for worker in workers] if failed else []
    for worker in workers:
        worker.stop(timeout=30)
    if failed:
        for worker, state in zip(workers, states, strict=True):
            print(f"--- {worker.log_path}, last lines ---\n{worker.log_tail(80)}\n{state}")


def _worker_state(worker: WorkerProcess) -> str:
    """The partitions a worker held, its lag per partition and its agents' counters."""
    try:
        stats = worker.stats()
    except Exception as exc:  # stopped, or not answering: the log tail tells more
        return f"--- no /api/stats: {exc!r}"
    lag = [f"{p['topic']}:{p['partition']} end {p['end_offset']} committed {p['committed']}"
           for p in stats.get("lag", {}).get("partitions", [])]
    return (f"--- /api/stats: assigned {stats.get('assigned_partitions')}\n"
            f"lag: {'; '.join(lag)}\nagents: {stats.get('agents')}")


Outputs = dict[str, list[tuple[str, dict[str, Any]]]]


def collect_outputs(broker_url: str, topics: list[str], expected_ids: set[str],
                    timeout: float = 90.0, settle: float = 2.0) -> Outputs:
    """Read `topics` until every expected id has an output (then `settle` more seconds, to
    catch duplicates) or the timeout passes. Returns id -> [(topic, decoded value)]."""

    seen: Outputs = defaultdict(list)

    async def run() -> None:
        async for record in follow_until_complete(broker_url, topics, expected_ids,
                                                  timeout=timeout, settle=settle):
            key = record.key.decode() if record.key else ""
            seen[key].append((record.topic, orjson.loads(record.value)))

    asyncio.run(run())
    return seen


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.25)


def run_failing_worker(env: dict[str, Any], tmp_path: Path) -> tuple[int, str]:
    """Run a worker that should stop at start; its exit code and its output."""
    worker = WorkerProcess(env, tmp_path / "failing.log").start()
    assert worker.proc is not None
    code = worker.proc.wait(120)
    return code, worker.log_path.read_text(errors="replace")


def demo_rows(count: int, seed: int) -> list[dict[str, object]]:
    rows = list(generate_comments(count, seed=seed))
    for row in rows:
        row.pop("label")
    return rows


def comma_rows(count: int, seed: int) -> list[dict[str, object]]:
    """Demo rows whose reviews use ASCII commas between clauses, as many real ones do: the
    separator of the job's delimited records, which it does not quote."""
    rows = [r for r in demo_rows(2 * count, seed) if "，" in str(r["reviewBody"])][:count]
    for row in rows:
        row["reviewBody"] = str(row["reviewBody"]).replace("，", ",")
    assert len(rows) == count
    return rows


def send(broker: EmbeddedBroker, values: list[bytes], topic: str = "comments") -> list[str]:
    """Produce values, return their comment ids (topic:partition:offset) in order."""
    metadata = asyncio.run(produce(broker.url, topic, values))
    return [comment_id(m.topic, m.partition, m.offset) for m in metadata]


def steady_feed(broker: EmbeddedBroker, rows: list[dict[str, Any]], ids: list[str],
                stop: threading.Event | None = None) -> threading.Thread:
    """A started thread sending `rows` about 100 a second (10 every 0.1 s), their ids into
    `ids`, until all are sent or `stop` is set: a steady stream for hot-swap tests."""

    def stream() -> None:
        for start in range(0, len(rows), 10):
            if stop is not None and stop.is_set():
                break
            ids.extend(send(broker, [orjson.dumps(r) for r in rows[start:start + 10]]))
            time.sleep(0.1)

    feeder = threading.Thread(target=stream)
    feeder.start()
    return feeder
