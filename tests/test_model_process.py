"""The model in its own process (streamapp.serving.process): the wire format, and a real worker
whose model process dies, or that runs its model on threads instead."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import orjson
import pytest

from streamapp.broker import EmbeddedBroker
from streamapp.serving.outcomes import BatchScores, BatchTiming, ModelFailure, Scored
from streamapp.serving.process import decode_scores, encode_scores
from tests.conftest import StartWorker, collect_outputs, demo_rows, send


def test_a_batch_crosses_the_wire_unchanged() -> None:
    scores = BatchScores(
        [0.25, Scored(0.75, {"probability(1)": 0.75, "label": "1"}),
         ModelFailure("ValueError: bad", "bad_model_output"), 1.0],
        {"name": "standard_bert", "version": "3"}, BatchTiming(0.5, 1.25, 100, 128))
    wire = orjson.loads(orjson.dumps(encode_scores(scores)))  # what a frame carries: JSON
    assert decode_scores(wire) == scores


def _model_pid(worker_stats: dict[str, object]) -> int:
    model = worker_stats["model"]
    assert isinstance(model, dict)
    return int(model["process"])


@pytest.mark.integration
def test_when_the_model_process_dies_the_worker_stops_without_commit_and_nothing_is_lost(
    broker: EmbeddedBroker, start_worker: StartWorker,
) -> None:
    worker = start_worker()
    assert worker.proc is not None
    first = send(broker, [orjson.dumps(r) for r in demo_rows(40, seed=5)])
    collect_outputs(broker.url, ["sku-matches"], set(first))
    killed = _model_pid(worker.stats())
    os.kill(killed, signal.SIGKILL)
    # The next batch finds the model gone: the worker exits 70 (EX_SOFTWARE), committing
    # nothing of that batch.
    second = send(broker, [orjson.dumps(r) for r in demo_rows(40, seed=6)])
    assert worker.proc.wait(60) == 70
    log = worker.log_path.read_text()
    assert "exited" in log and "exiting without commit" in log

    restarted = start_worker()  # the next owner replays what was not committed
    outputs = collect_outputs(broker.url, ["sku-matches", "comments-dlq"], set(second))
    assert set(second) <= set(outputs)
    assert _model_pid(restarted.stats()) != killed


@pytest.mark.integration
def test_the_model_on_threads_of_the_worker_serves_the_same(
    broker: EmbeddedBroker, start_worker: StartWorker, tmp_path: Path,
) -> None:
    worker = start_worker(model_process="false")
    assert worker.proc is not None
    assert "process" not in worker.stats()["model"]
    assert "on threads of the worker" in worker.log_path.read_text()
    ids = send(broker, [orjson.dumps(r) for r in demo_rows(30, seed=8)])
    outputs = collect_outputs(broker.url, ["sku-matches", "comments-dlq"], set(ids))
    assert set(outputs) == set(ids)
    assert all(len(v) == 1 and v[0][0] == "sku-matches" for v in outputs.values())
    # The worker's own process holds torch's threads: no child process was started.
    children = Path(f"/proc/{worker.proc.pid}/task/{worker.proc.pid}/children")
    assert children.read_text().split() == []


def test_a_batch_written_to_a_model_process_already_gone_fails_saying_so() -> None:
    """Seen in CI: the child killed, the next batch's write met the closed socket before the
    reply reader saw end of file; the batch must fail as ModelProcessGone, not as a bare
    ConnectionResetError (the worker's log then says which process exited)."""
    import asyncio
    import socket
    import subprocess
    import sys

    from streamapp.serving.process import ModelProcess, ModelProcessGone

    class ClosedWriter:
        def write(self, data: bytes) -> None:
            pass

        async def drain(self) -> None:
            raise ConnectionResetError("Connection lost")

    async def run() -> str:
        proc = subprocess.Popen([sys.executable, "-c", "pass"])
        proc.wait()
        ours, theirs = socket.socketpair()
        theirs.close()
        model = ModelProcess(proc, ours, asyncio.StreamReader(), ClosedWriter(),  # type: ignore[arg-type]
                             {"handler": "x"})
        with pytest.raises(ModelProcessGone) as gone:
            await model.score([{"input": "a"}])
        assert model._pending == {}
        model._replies.cancel()
        model.close()
        return str(gone.value)

    message = asyncio.run(run())
    assert "exited (ConnectionResetError)" in message
