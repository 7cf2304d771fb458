"""The model in its own process (streamapp.serving.process): the wire format, and a real worker
whose model process dies, or that runs its model on threads instead."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import orjson
import pytest

from streamapp.broker import EmbeddedBroker
from streamapp.pipeline.batchwork import (
    BatchWork,
    answer_work,
    records_from_frame,
    records_to_frame,
)
from streamapp.records import Incoming, Reason
from streamapp.serving.outcomes import BatchScores, BatchTiming, ModelFailure, Scored
from streamapp.serving.process import read_frame, write_frame
from streamapp.settings import Settings
from tests.conftest import StartWorker, collect_outputs, demo_rows, send


async def _through_a_socket(message: dict[str, object], blobs: list[bytes | None],
                            ) -> tuple[dict[str, object], list[bytes | None]]:
    """One frame written to one end of a socket pair and read at the other."""
    import asyncio
    import socket

    ours, theirs = socket.socketpair()
    _, writer = await asyncio.open_unix_connection(sock=ours)
    reader, _ = await asyncio.open_unix_connection(sock=theirs)
    write_frame(writer, message, blobs)
    await writer.drain()
    frame = await read_frame(reader)
    writer.close()
    return frame


def test_a_batch_of_records_crosses_the_wire_unchanged_binary_values_and_none_included() -> None:
    import asyncio

    records = [Incoming(b'{"a": "\xe8\x8b\xb9"}', "comments", 0, 5, 1_700_000_000_000),
               Incoming(None, "comments", 1, 0, None),
               Incoming(b"\xff\x00 not utf-8", "comments", 2, 9, 7),
               Incoming(b"", "other", 3, 1, 8)]
    header, blobs = records_to_frame("direct", records)
    message, read = asyncio.run(_through_a_socket({"op": "work", **header}, blobs))
    assert message.pop("op") == "work"
    assert records_from_frame(message, read) == ("direct", records)


def test_a_batchs_work_crosses_the_wire_and_says_what_the_model_gave() -> None:
    """The job on a real frame: a valid comment scored (a float and a Scored with outputs), a
    bad record and a model failure as dead letters, all counted; then read back unchanged."""
    import asyncio

    outcomes = [0.25, Scored(0.75, {"probability(1)": 0.75, "label": "1"}),
                ModelFailure("ValueError: bad", "bad_model_output")]

    async def score(requests: object) -> BatchScores:
        assert isinstance(requests, list) and len(requests) == 3
        assert requests[0]["input"] == requests[0]["reviewBody"]  # the seed's reqDict
        return BatchScores(outcomes, {"name": "standard_bert", "version": "3"},
                           BatchTiming(0.5, 1.25, 100, 128))

    rows = demo_rows(3, seed=9)
    records = [Incoming(orjson.dumps(rows[0]), "comments", 0, 1, 1_700_000_000_000),
               Incoming(b"{broken", "comments", 0, 2, 1_700_000_000_001),
               Incoming(orjson.dumps(rows[1]), "comments", 0, 3, None),
               Incoming(orjson.dumps(rows[2]), "comments", 1, 4, 1_700_000_000_002)]
    header, blobs = records_to_frame("direct", records)
    reply, reply_blobs = asyncio.run(answer_work(score, Settings(), header, blobs))
    message, read = asyncio.run(_through_a_socket(reply, reply_blobs))
    work, sent = BatchWork.from_frame(message, read), BatchWork.from_frame(reply, reply_blobs)
    assert (work.results, work.letters, work.report) == (sent.results, sent.letters, sent.report)
    assert work.tally.entries() == sent.tally.entries()
    results = {record_id: orjson.loads(value) for record_id, value in work.results}
    assert list(results) == ["comments:0:1", "comments:0:3"]
    assert results["comments:0:1"]["score"] == 0.25
    assert results["comments:0:3"]["outputs"] == {"probability(1)": 0.75, "label": "1"}
    assert [(x.record_id, x.reason) for x in work.letters] == [
        ("comments:0:2", Reason.INVALID_JSON), ("comments:1:4", "bad_model_output")]
    assert orjson.loads(work.letters[0].value)["value"] == "{broken"
    counts = dict(work.tally.items())
    assert counts["dead_letter:invalid_json"] == {"seen": 1}
    assert sum(c.get("failed", 0) for k, c in counts.items() if k.startswith("category:")) == 1
    assert work.report["size"] == 3 and work.report["predicted"] == 2
    assert work.report["matched"] == 1 and work.report["model_version"] == "3"
    assert work.report["queue_ms"] and work.report["process_s"] == 1.25


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
            await model.work({"kind": "direct", "records": []}, [])
        assert model._pending == {}
        model._replies.cancel()
        model.close()
        return str(gone.value)

    message = asyncio.run(run())
    assert "exited (ConnectionResetError)" in message
