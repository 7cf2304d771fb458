"""The model in a child process of the worker (STREAMAPP_MODEL_PROCESS=true, the default).

The worker starts `python -m streamapp.serving.child` with one end of a socket pair; over it go
length-prefixed JSON frames (never pickle):

    worker -> child   {"op": "score", "id": 7, "requests": [reqDict, ...]}
                      {"op": "reload", "id": 8}
    child -> worker   {"op": "ready", "status": {...}}       once, when the model is loaded
                      {"op": "failed", "error": "..."}       instead, when it cannot be
                      {"id": 7, "outcomes": [...], "model": {...}, "timing": {...},
                       "engine": {...}}
                      {"id": 8, "swapped": true, "status": {...}}

A batch of 64 comments of the shared data is 46 KB of JSON, 0.1 ms to write and read. The
child runs the same engine as the in-process mode (bisection, out-of-memory halving, a tokenizer
thread beside the model thread) and the same hot reload. When the worker goes, the child reads
end-of-file and exits; when the child goes, every batch waiting on it fails, and the worker
stops without committing (its records are replayed after the restart).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import socket
import struct
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import orjson

from streamapp.serving.outcomes import (
    BatchScores,
    BatchTiming,
    ModelFailure,
    ModelStartError,
    Outcome,
    Scored,
)
from streamapp.settings import Settings

log = logging.getLogger(__name__)

_LENGTH = struct.Struct("!I")
STOP_WAIT_S = 10.0


class ModelProcessGone(RuntimeError):
    """The model process exited while the worker still needed it."""


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any]:
    """One frame; raises asyncio.IncompleteReadError at end of file."""
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    return orjson.loads(await reader.readexactly(length))


def write_frame(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    """Whole frames in one write, so concurrent writers never interleave."""
    payload = orjson.dumps(message, default=str)
    writer.write(_LENGTH.pack(len(payload)) + payload)


def encode_outcome(outcome: Outcome) -> Any:
    if isinstance(outcome, ModelFailure):
        return {"error": outcome.error, "reason": outcome.reason}
    if isinstance(outcome, Scored):
        return {"score": outcome.score, "outputs": outcome.outputs}
    return outcome


def decode_outcome(value: Any) -> Outcome:
    if isinstance(value, dict):
        if "error" in value:
            return ModelFailure(value["error"], value["reason"])
        return Scored(value["score"], value["outputs"])
    return float(value)


def encode_scores(scores: BatchScores) -> dict[str, Any]:
    timing = scores.timing
    return {"outcomes": [encode_outcome(o) for o in scores.outcomes], "model": scores.model,
            "timing": [timing.preprocess_s, timing.process_s, timing.tokens,
                       timing.padded_tokens]}


def decode_scores(message: dict[str, Any]) -> BatchScores:
    return BatchScores([decode_outcome(o) for o in message["outcomes"]], message["model"],
                       BatchTiming(*message["timing"]))


class ModelProcess:
    """The worker's side: sends batches, matches answers to them by id."""

    def __init__(self, proc: subprocess.Popen[bytes], sock: socket.socket,
                 reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 status: dict[str, Any]) -> None:
        self.proc = proc
        self._sock = sock
        self._closing = False
        self._reader = reader
        self._writer = writer
        self._status = status
        self._engine: dict[str, Any] = {}
        self.handler_spec: str = status.get("handler", "")
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next_id = 0
        self._gone: str | None = None
        self._replies = asyncio.ensure_future(self._read_replies())
        atexit.register(self.close)

    @classmethod
    async def start(cls, settings: Settings) -> ModelProcess:
        """Start the child and wait until its model is loaded (it logs to the worker's log);
        raises ModelStartError with the child's own message."""
        ours, theirs = socket.socketpair()
        with theirs:
            proc = subprocess.Popen(
                [sys.executable, "-m", "streamapp.serving.child", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        try:
            first = await read_frame(reader)
        except asyncio.IncompleteReadError:
            code = await asyncio.get_running_loop().run_in_executor(None, proc.wait)
            writer.close()
            raise ModelStartError(f"the model process exited with status {code} before the "
                                  "model was loaded (its log lines are above)") from None
        if first.get("op") != "ready":
            writer.close()
            await asyncio.get_running_loop().run_in_executor(None, proc.wait)
            raise ModelStartError(first.get("error", f"unexpected first frame {first!r}"))
        log.info("model process %d ready", proc.pid)
        return cls(proc, ours, reader, writer, first["status"])

    async def _read_replies(self) -> None:
        try:
            while True:
                message = await read_frame(self._reader)
                future = self._pending.pop(message.pop("id"), None)
                if future is not None and not future.done():
                    future.set_result(message)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            self._gone = f"the model process {self.proc.pid} exited ({type(exc).__name__})"
        except Exception as exc:  # a frame we cannot read: the child is not what we started
            self._gone = f"the model process {self.proc.pid} sent a bad frame: {exc!r}"
        if not self._closing:
            log.critical("%s", self._gone)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ModelProcessGone(self._gone))
        self._pending.clear()

    async def _call(self, message: dict[str, Any]) -> dict[str, Any]:
        if self._gone is not None:
            raise ModelProcessGone(self._gone)
        self._next_id += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[self._next_id] = future
        try:
            write_frame(self._writer, {**message, "id": self._next_id})
            await self._writer.drain()
        except ConnectionError as exc:  # gone before the reply reader saw end of file
            self._pending.pop(self._next_id, None)
            raise ModelProcessGone(
                f"the model process {self.proc.pid} exited ({type(exc).__name__})") from exc
        return await future

    async def score(self, requests: Sequence[dict[str, Any]]) -> BatchScores:
        reply = await self._call({"op": "score", "requests": requests})
        self._engine = reply["engine"]
        return decode_scores(reply)

    async def maybe_reload(self) -> bool:
        reply = await self._call({"op": "reload"})
        self._status = reply["status"]
        return bool(reply["swapped"])

    def status(self) -> dict[str, Any]:
        return {**self._status, "process": self.proc.pid}

    def engine_state(self) -> dict[str, Any]:
        return dict(self._engine)

    def close(self) -> None:
        """End of file to the child, which then exits; killed if it does not in time. (On the
        socket itself: at interpreter exit the event loop may be closed already.)"""
        if self._closing:
            return
        self._closing = True
        with contextlib.suppress(OSError):  # closed already
            self._sock.shutdown(socket.SHUT_RDWR)
        try:
            self.proc.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
