"""The model process's server: `main(job)` is the whole program of a module the worker starts
as `python -m MODULE FD` (streamapp.serving.process; the data path's is
streamapp.pipeline.model_process), with its end of a socket pair as FD.

It reads the worker's STREAMAPP_* settings from the environment it inherits, loads the model
once, answers `ready` (or `failed` with the reason), then runs the job on each "work" frame
and reloads on request until the worker closes the socket. Its log lines go to the worker's
own output.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from typing import Any

from streamapp.collector import settle_after_start
from streamapp.serving.outcomes import ModelStartError
from streamapp.serving.process import Blobs, read_frame, write_frame
from streamapp.serving.service import InProcessModels, Job
from streamapp.settings import Settings

log = logging.getLogger("streamapp.model_process")


async def _answer_work(models: InProcessModels, writer: asyncio.StreamWriter,
                       message: dict[str, Any], blobs: Blobs) -> None:
    reply, reply_blobs = await models.work(message, blobs)  # a job never raises for a record
    write_frame(writer, {**reply, "id": message["id"], "engine": models.engine_state()},
                reply_blobs)
    await writer.drain()


async def _answer_reload(models: InProcessModels, writer: asyncio.StreamWriter,
                         message: dict[str, Any], blobs: Blobs) -> None:
    swapped = await models.maybe_reload()  # a failed load is reported in the status
    write_frame(writer, {"id": message["id"], "swapped": swapped, "status": models.status()})
    await writer.drain()


async def serve(sock: socket.socket, job: Job) -> None:
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    settings = Settings.from_env()
    try:
        models = await asyncio.get_running_loop().run_in_executor(None, InProcessModels.load,
                                                                  settings, job, log)
    except ModelStartError as exc:
        write_frame(writer, {"op": "failed", "error": str(exc)})
        await writer.drain()
        return
    settle_after_start()
    write_frame(writer, {"op": "ready", "status": models.status()})
    await writer.drain()
    running: set[asyncio.Task[None]] = set()  # held until done (the loop keeps weak refs)
    while True:
        try:
            message, blobs = await read_frame(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            return  # the worker is gone or done: nothing here is worth finishing
        answer = _answer_work if message["op"] == "work" else _answer_reload
        task = asyncio.create_task(answer(models, writer, message, blobs))
        running.add(task)
        task.add_done_callback(running.discard)
        task.add_done_callback(_answered)


def _answered(task: asyncio.Task[None]) -> None:
    """An answer that could not be sent would leave the worker waiting: exit instead, so the
    worker sees end-of-file and stops without committing."""
    if not task.cancelled() and task.exception() is not None:
        log.critical("cannot answer the worker: %r", task.exception(),
                     exc_info=task.exception())
        logging.shutdown()
        os._exit(1)


def main(job: Job) -> None:
    # Ctrl-C and a SIGTERM to the process group reach this process too: it must outlive the
    # worker's drain of the batches in flight, and exits when the worker closes the socket.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    settings_level = os.environ.get("STREAMAPP_LOG_LEVEL", "info").upper()
    logging.basicConfig(
        stream=sys.stderr, level=getattr(logging, settings_level, logging.INFO),
        format="[%(asctime)s] [%(process)d] [%(levelname)s] [model process] %(name)s: "
               "%(message)s")
    sock = socket.socket(fileno=int(sys.argv[1]))
    try:
        asyncio.run(serve(sock, job))
    except Exception:
        log.exception("the model process failed")
        logging.shutdown()
        os._exit(1)
    logging.shutdown()
    # Not a normal exit: the model thread may be inside a batch nobody waits for any more.
    os._exit(0)
