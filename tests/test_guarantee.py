"""STREAMAPP_GUARANTEE against real broker and worker processes.

Exactly-once itself needs a broker with transactions, which this machine does not have (the
embedded broker refuses InitProducerId, and no Apache Kafka can be installed here): what is
tested is that such a broker stops the worker at once, with one line.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from streamapp.broker import EmbeddedBroker, free_port
from tests.conftest import run_failing_worker

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
    said = ("cannot start: STREAMAPP_GUARANTEE=exactly_once needs a broker with transactions, "
            f"and the broker at {broker.url} has none (InitProducerId refused: UnknownError); "
            "use a Kafka broker with transactions or STREAMAPP_GUARANTEE=at_least_once")
    assert [line for line in log.splitlines() if "InitProducerId" in line] == [
        line for line in log.splitlines() if line.rstrip().endswith(said)], log
    assert sum(said in line for line in log.splitlines()) == 1, log
    assert "Traceback" not in log
    assert took < 60, f"took {took:.0f} s to give up"  # model load included; never hangs
