"""STREAMAPP_GUARANTEE and STREAMAPP_INSTANCE_ID against real broker and worker processes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from streamapp.broker import EmbeddedBroker, free_port
from tests.conftest import StartWorker, run_failing_worker, wait_until

EXACTLY_ONCE = {"guarantee": "exactly_once", "intake": "batch", "fanout": "false"}


@pytest.mark.integration
def test_exactly_once_on_a_broker_without_transactions_stops_with_one_line(
    broker: EmbeddedBroker, tiny_model: Path, tmp_path: Path
) -> None:
    started = time.monotonic()
    code, log = run_failing_worker(
        {"broker": broker.url, "model": str(tiny_model), "web_port": str(free_port()),
         "datadir": str(tmp_path / "data"), **EXACTLY_ONCE}, tmp_path)
    took = time.monotonic() - started
    assert code == 2, log
    lines = [line for line in log.splitlines() if line.startswith("streamapp: cannot start:")]
    assert lines == [
        "streamapp: cannot start: STREAMAPP_GUARANTEE=exactly_once needs a broker with "
        f"transactions, and the broker at {broker.url} has none (InitProducerId refused: "
        "UnknownError); use a Kafka broker with transactions or "
        "STREAMAPP_GUARANTEE=at_least_once"], log
    assert "Traceback" not in log
    assert took < 60, f"took {took:.0f} s to give up"  # model load included; never hangs


def _intake_partitions(log: Path) -> list[str]:
    """Every 'intake assigned [...]' line of a worker's log, in order."""
    return [line.split("intake assigned ", 1)[1] for line in
            log.read_text(errors="replace").splitlines() if "intake assigned " in line]


@pytest.mark.integration
def test_a_static_member_restarted_in_time_keeps_its_partitions(
    broker: EmbeddedBroker, start_worker: StartWorker
) -> None:
    """KIP-345: kill -9 one of two static members and restart it within the session timeout:
    the other member is not revoked, the restarted one gets its own partitions back."""
    common = {"intake": "batch", "fanout": "false", "session_timeout_s": "20",
              "ready_topic": "comments"}
    first = start_worker(instance_id="worker-a", **common)
    second = start_worker(instance_id="worker-b", **common)
    wait_until(lambda: len(first.stats()["assigned_partitions"]) == 2
               and len(second.stats()["assigned_partitions"]) == 2, 60, "a 2/2 assignment")
    held = first.stats()["assigned_partitions"]
    assignments_of_second = len(_intake_partitions(second.log_path))

    first.kill()
    restarted = start_worker(instance_id="worker-a", **common)
    wait_until(lambda: restarted.stats()["assigned_partitions"] == held, 30,
               f"the restarted member to hold {held} again")
    assert len(_intake_partitions(second.log_path)) == assignments_of_second, \
        "the other member went through a rebalance"
