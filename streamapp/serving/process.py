"""The model in a child process of the worker (STREAMAPP_MODEL_PROCESS=true, the default).

The worker starts its model process program (`python -m streamapp.pipeline.model_process`,
streamapp.serving.child running the pipeline's job) with one end of a socket pair; over it go
frames (never pickle), each its length and then a JSON header with the binary values it
names (a record's value, a result; streamapp.framing):

    worker -> child   {"op": "work", "id": 7, ...the job's header}  + values
                      {"op": "reload", "id": 8}
    child -> worker   {"op": "ready", "status": {...}}       once, when the model is loaded
                      {"op": "failed", "error": "..."}       instead, when it cannot be
                      {"id": 7, "engine": {...}, ...the job's reply}  + values
                      {"id": 8, "swapped": true, "status": {...}}

What a "work" frame carries is the job's (streamapp.pipeline.batchwork: a batch of records
out, their results, dead letters and counts back): the model side knows nothing of Kafka. The
child runs the same engine as the in-process mode (bisection, out-of-memory halving, a
tokenizer thread beside the model thread) and the same hot reload. When the worker goes, the
child reads end-of-file and exits; when the child goes, every batch waiting on it fails, and
the worker stops without committing (its records are replayed after the restart).
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
from typing import Any

from streamapp.framing import Values, pack, unpack
from streamapp.serving.outcomes import ModelStartError
from streamapp.settings import Settings

log = logging.getLogger(__name__)

_LENGTH = struct.Struct("!I")
STOP_WAIT_S = 10.0

Blobs = Values  # a frame's binary values (streamapp.framing)
Frame = tuple[dict[str, Any], list[bytes | None]]


class ModelProcessGone(RuntimeError):
    """The model process exited while the worker still needed it."""


async def read_frame(reader: asyncio.StreamReader) -> Frame:
    """One frame: its header and values; raises asyncio.IncompleteReadError at end of file."""
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    return unpack(await reader.readexactly(length))


def write_frame(writer: asyncio.StreamWriter, message: dict[str, Any], blobs: Blobs = ()) -> None:
    """Whole frames in one write, so concurrent writers never interleave."""
    payload = pack(message, blobs)
    writer.write(_LENGTH.pack(len(payload)) + payload)


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
        self._pending: dict[int, asyncio.Future[Frame]] = {}
        self._next_id = 0
        self._gone: str | None = None
        self._replies = asyncio.ensure_future(self._read_replies())
        atexit.register(self.close)

    @classmethod
    async def start(cls, settings: Settings, program: str) -> ModelProcess:
        """Start the child (`python -m PROGRAM FD`, a module that runs streamapp.serving.child
        with its job) and wait until its model is loaded (it logs to the worker's log);
        raises ModelStartError with the child's own message."""
        ours, theirs = socket.socketpair()
        with theirs:
            proc = subprocess.Popen(
                [sys.executable, "-m", program, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        try:
            first, _ = await read_frame(reader)
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
                message, blobs = await read_frame(self._reader)
                future = self._pending.pop(message.pop("id"), None)
                if future is not None and not future.done():
                    future.set_result((message, blobs))
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

    async def _call(self, message: dict[str, Any], blobs: Blobs = ()) -> Frame:
        if self._gone is not None:
            raise ModelProcessGone(self._gone)
        self._next_id += 1
        future: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._pending[self._next_id] = future
        try:
            write_frame(self._writer, {**message, "id": self._next_id}, blobs)
            await self._writer.drain()
        except ConnectionError as exc:  # gone before the reply reader saw end of file
            self._pending.pop(self._next_id, None)
            raise ModelProcessGone(
                f"the model process {self.proc.pid} exited ({type(exc).__name__})") from exc
        return await future

    async def work(self, header: dict[str, Any], blobs: Blobs) -> Frame:
        reply, reply_blobs = await self._call({**header, "op": "work"}, blobs)
        self._engine = reply.pop("engine")
        return reply, reply_blobs

    async def maybe_reload(self) -> bool:
        reply, _ = await self._call({"op": "reload"})
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
