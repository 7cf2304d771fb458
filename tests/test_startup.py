"""A worker's start and stop, as a new user meets them: the model loaded once, a log that says
what the worker serves, a broker that is not there, and Ctrl-C in `make run`."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from streamapp.broker import EmbeddedBroker, free_port
from streamapp.processes import WorkerProcess
from tests.conftest import StartWorker, collect_outputs, demo_rows, send, wait_until
from tests.handlers.counting import COUNT_FILE
from tests.model_builders import hf_version

HANDLER = "tests.handlers.counting:CountingInfer"
# What a normal stop must never show: the broker going before its clients.
ALARMS = ("KafkaConnectionError", "Unable connect to node", "Unable to update metadata",
          "Traceback")


def initializations(count_file: Path) -> Counter[tuple[str, str]]:
    """(pid, version directory name) -> how many times `initialize` ran there."""
    if not count_file.exists():
        return Counter()
    lines = count_file.read_text().splitlines()
    return Counter((pid, Path(path).name) for pid, _, path in (ln.split(" ", 2) for ln in lines))


def model_process(worker: WorkerProcess) -> str:
    """The pid of the worker's model process (streamapp.serving.process), a child of it."""
    assert worker.proc is not None
    pid = str(worker.stats()["model"]["process"])
    parent = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
    assert parent == str(worker.proc.pid)
    return pid


@pytest.mark.integration
def test_the_model_is_initialized_once_per_version_and_the_log_says_what_is_served(
    broker: EmbeddedBroker, start_worker: StartWorker, tiny_model: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    count_file = tmp_path / "initialize.log"
    monkeypatch.setenv(COUNT_FILE, str(count_file))
    root = tmp_path / "root"
    hf_version(tiny_model, root / "1")
    worker = start_worker(model=str(root), handler=HANDLER, reload_interval_s="0.5")
    pid = model_process(worker)
    assert initializations(count_file) == {(pid, "1"): 1}

    # Read once, at start: everything an operator needs, after Faust set up logging.
    log = worker.log_path.read_text()
    assert log.count("counting handler: initialize on") == 1
    [served] = re.findall(r"serving model (\S+) version (\S+) from (\S+) on (\S+) \((\w+)\), "
                          r"in model process (\d+)", log)
    assert served[1:] == ("1", str(root / "1"), "cpu", "float32", pid)
    assert log.count(f"handler {HANDLER}, called with whole batches of up to 64") == 1
    assert log.count("intake agent (Faust take_events): comments -> streamapp-inference -> "
                     "model -> sku-matches, dead letters -> comments-dlq; 4 partitions") == 1
    ids = send(broker, [orjson.dumps(r) for r in demo_rows(20, seed=31)])
    assert set(collect_outputs(broker.url, ["sku-matches"], set(ids))) == set(ids)

    # A new version: one more initialize, in the same model process.
    hf_version(tiny_model, root / "2")
    wait_until(lambda: worker.stats()["model"]["version"] == "2", 60, "the swap to version 2")
    # A second worker joins the group, started the other documented way: it initializes once,
    # and the rebalance it causes restarts nothing in the first.
    second = start_worker(model=str(root), handler=HANDLER, reload_interval_s="0.5",
                          command=[sys.executable, "-m", "streamapp.cli", "worker"])
    assert initializations(count_file) == {(pid, "1"): 1, (pid, "2"): 1,
                                           (model_process(second), "2"): 1}
    assert "model swapped" in worker.log_path.read_text()
    assert second.log_path.read_text().count("serving model") == 1


@pytest.mark.integration
def test_other_faust_commands_load_no_model_and_describe_agents_and_tables(
    tmp_path: Path,
) -> None:
    count_file = tmp_path / "initialize.log"
    demo_dir = tmp_path / "demo"  # missing: a worker would build the demo model here
    env = {**os.environ, COUNT_FILE: str(count_file), "STREAMAPP_HANDLER": HANDLER,
           "STREAMAPP_DEMO_MODEL_DIR": str(demo_dir)}
    env.pop("STREAMAPP_MODEL", None)
    outputs = {}
    for command in ("agents", "tables"):
        done = subprocess.run([sys.executable, "-m", "faust", "-A", "streamapp", command],
                              env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        outputs[command] = done.stdout + done.stderr
    assert not count_file.exists() and not demo_dir.exists()
    for text in outputs.values():
        assert "<N/A>" not in text and "Missing description" not in text
    assert all(name in outputs["agents"] for name in ("@ingest", "@infer", "@tally"))
    assert "totals" in outputs["tables"] and "per-minute" in outputs["tables"]


@pytest.mark.integration
def test_a_worker_without_a_broker_says_so_and_keeps_trying(tiny_model: Path,
                                                           tmp_path: Path) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    worker = WorkerProcess({"broker": f"kafka://{address}", "model": str(tiny_model),
                            "datadir": str(tmp_path / "data"), "web_port": str(free_port()),
                            "torch_threads": "1"}, tmp_path / "worker.log").start()
    try:
        expected = (f"cannot reach the Kafka broker at {address} "
                    f"(STREAMAPP_BROKER=kafka://{address})")
        wait_until(lambda: "(attempt 2)" in worker.log_tail(), 120, "a second attempt")
        log = worker.log_path.read_text()
        lines = [ln for ln in log.splitlines() if expected in ln]
        assert len(lines) >= 2 and "(attempt 1)" in lines[0] and "(attempt 2)" in lines[1]
        assert "Traceback" not in log and "Unable connect" not in log
        # The broker comes up: the worker goes on by itself.
        with EmbeddedBroker(port):
            worker.wait_ready(timeout=120)
            assert "reachable after" in worker.log_path.read_text()
            worker.stop(timeout=30)
    finally:
        worker.kill()


def _load_file(tmp_path: Path) -> Path:
    path = tmp_path / "comments.jsonl"
    path.write_text(orjson.dumps({"base_sku_name": "海南香蕉 3斤",
                                  "review_body": "香蕉熟得刚好"}).decode() + "\n")
    return path


CLIENT_COMMANDS = {
    "send": ["send", "--sku", "海南香蕉 3斤", "--review", "香蕉熟得刚好"],
    "ask": ["ask", "--sku", "海南香蕉 3斤", "--review", "香蕉熟得刚好", "--timeout", "5"],
    "tail": ["tail", "--json"],
    "sink": ["sink", "--db", "sqlite:///{tmp}/sink.db"],
    "load": ["load", "{tmp}/comments.jsonl", "--recall-label", ""],
}


@pytest.mark.parametrize("command", sorted(CLIENT_COMMANDS))
def test_a_client_without_a_broker_says_so_in_one_line(command: str, tmp_path: Path) -> None:
    _load_file(tmp_path)
    address = f"127.0.0.1:{free_port()}"
    args = [a.format(tmp=tmp_path) for a in CLIENT_COMMANDS[command]]
    env = {**os.environ, "STREAMAPP_BROKER": f"kafka://{address}"}
    done = subprocess.run([sys.executable, "-m", "streamapp.cli", *args], env=env,
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 69, done.stderr
    assert "Traceback" not in done.stderr
    # One line (after the sink's banner, which comes before it connects), nothing of aiokafka's.
    [line] = [ln for ln in done.stderr.splitlines() if not ln.startswith("sink: ")]
    assert line.startswith(f"streamapp {command}: cannot reach the Kafka broker at {address} "
                           f"(STREAMAPP_BROKER=kafka://{address})")


@pytest.mark.integration
def test_ctrl_c_in_make_run_stops_clients_before_the_broker(tiny_model: Path,
                                                            tmp_path: Path) -> None:
    env = {**os.environ, "STREAMAPP_MODEL": str(tiny_model), "STREAMAPP_TORCH_THREADS": "1",
           "STREAMAPP_WEB_PORT": str(free_port()), "PYTHONUNBUFFERED": "1"}
    # Its own process group, as a terminal gives a foreground job: Ctrl-C signals the group.
    demo = subprocess.Popen([sys.executable, "-m", "streamapp.cli", "demo", "--port",
                             str(free_port()), "--rate", "10"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            process_group=0)
    assert demo.stdout is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:  # until the first prediction is printed
            line = demo.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "[comments:" in line:
                break
        assert any("[comments:" in ln for ln in lines), "".join(lines)
        os.killpg(demo.pid, signal.SIGINT)
        rest, _ = demo.communicate(timeout=90)
    finally:
        if demo.poll() is None:
            demo.kill()
    output = "".join(lines) + rest
    assert demo.returncode == 0, output
    stops = [ln.split(":", 1)[1].strip() for ln in output.splitlines()
             if ln.startswith("stopping:")]
    assert [s.split()[0] for s in stops] == ["feed", "worker", "broker"], output
    assert "worker stopped (exit status 0)" in output
    worker_log = (tmp_path / "var" / "log" / "worker.log").read_text()
    for alarm in ALARMS:
        assert alarm not in output and alarm not in worker_log, alarm
