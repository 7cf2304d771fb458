"""`/healthz` and `/readyz` on real workers and a real broker: through a start, a rebalance
(a second worker joins) and a broker pause (SIGSTOP), and on an app that has not started."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from streamapp.application import create_app
from streamapp.broker import HOST, EmbeddedBroker
from streamapp.processes import WorkerProcess
from streamapp.settings import Settings
from streamapp.web.health import BrokerProbe, readiness
from tests.conftest import StartWorker, wait_until

PAUSE_S = 8.0  # below the 10 s session timeout: the group survives, the probe must not


def probe(worker: WorkerProcess, path: str) -> tuple[int, dict[str, Any]] | None:
    """(status, body) of a probe path, or None while nothing answers."""
    url = f"http://{HOST}:{worker.web_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    except OSError:
        return None


def poll_ready(worker: WorkerProcess, timeout: float) -> list[tuple[int, dict[str, Any]]]:
    """Poll `/readyz` until it answers 200; every answer seen, in order."""
    seen: list[tuple[int, dict[str, Any]]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert worker.proc is not None and worker.proc.poll() is None, worker.log_tail()
        answer = probe(worker, "/readyz")
        if answer is not None:
            seen.append(answer)
            if answer[0] == 200:
                return seen
        time.sleep(0.1)
    raise AssertionError(f"not ready after {timeout:.0f}s; last: {seen[-1:]}")


def test_readiness_through_start_and_rebalance(start_worker: StartWorker) -> None:
    first = start_worker(wait=False)
    seen = poll_ready(first, 90)
    assert probe(first, "/healthz") == (200, {"status": "ok"})
    for status, body in seen[:-1]:  # not ready yet: it says why
        assert status == 503 and body["reasons"] and not body["ready"], body
    checks = seen[-1][1]["checks"]
    assert checks["model"]["ok"] and checks["producer"]["ok"]
    wait_until(lambda: (probe(first, "/readyz") or (0, {}))[1]
               .get("checks", {}).get("consumer", {}).get("state") == "assigned",
               30, "the first worker to hold partitions")

    # A second worker joins: the first stays ready through the rebalance (it holds partitions
    # or waits for its new assignment), and the second becomes ready.
    second = start_worker(wait=False)
    states: set[str] = set()
    deadline = time.monotonic() + 60
    while True:
        answer = probe(first, "/readyz")
        assert answer is not None and answer[0] == 200, answer
        states.add(answer[1]["checks"]["consumer"]["state"])
        joined = probe(second, "/readyz")
        if joined is not None and joined[0] == 200 and second.stats()["assigned_partitions"]:
            break
        assert time.monotonic() < deadline, second.log_tail()
        time.sleep(0.2)
    assert states <= {"assigned", "waiting for assignment"}
    wait_until(lambda: bool(first.stats()["assigned_partitions"]), 30,
               "the first worker to hold partitions again")


def test_broker_pause_makes_the_worker_unready_until_it_answers(
        broker: EmbeddedBroker, start_worker: StartWorker) -> None:
    worker = start_worker()
    poll_ready(worker, 30)
    assert broker.proc is not None
    broker.proc.send_signal(signal.SIGSTOP)
    try:
        paused = time.monotonic()
        answer: tuple[int, dict[str, Any]] | None = None
        while time.monotonic() - paused < PAUSE_S:
            answer = probe(worker, "/readyz")
            if answer is not None and answer[0] == 503:
                break
            time.sleep(0.2)
        # The event loop still answers: alive, not ready, and it says why.
        assert probe(worker, "/healthz") == (200, {"status": "ok"})
        assert answer is not None and answer[0] == 503, answer
        assert any(r.startswith("producer: broker unreachable") for r in answer[1]["reasons"])
        time.sleep(max(PAUSE_S - (time.monotonic() - paused), 0))
    finally:
        broker.proc.send_signal(signal.SIGCONT)
    assert poll_ready(worker, 30)[-1][1]["checks"]["producer"]["ok"]


def test_an_app_that_has_not_started_is_not_ready(broker: EmbeddedBroker,
                                                  tmp_path: Path) -> None:
    app = create_app(Settings.from_env({"STREAMAPP_BROKER": broker.url,
                                        "STREAMAPP_DATADIR": str(tmp_path)}))
    answer = asyncio.run(readiness(app, BrokerProbe(app)))
    assert not answer["ready"]
    assert answer["reasons"] == ["model: model not loaded", "consumer: consumer not started",
                                 "producer: producer not started"]
