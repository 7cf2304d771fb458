"""The batch path, shared by the Faust inference agent and the batch intake: a batch of
records to where the model is (decoded, scored and encoded there, streamapp.pipeline.
batchwork), its results and dead letters to the producer, its counts to the stats topic; up
to `STREAMAPP_PIPELINE_DEPTH` batches in flight (BatchPipeline).

No exception may leave a batch: anything unexpected stops the process without committing
(exit 70), so the batch is replayed after the restart.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import orjson
from faust.types import TopicT
from murmurhash2 import murmurhash2

from streamapp.pipeline.batchwork import BatchWork, comments_in, records_to_frame
from streamapp.pipeline.counts import BatchTally
from streamapp.pipeline.outbox import Outbox, aiokafka_producer
from streamapp.pipeline.stats import BatchReport
from streamapp.records import Incoming

if TYPE_CHECKING:
    from streamapp.application import StreamApp

log = logging.getLogger(__name__)


EXIT_UNEXPECTED = 70  # EX_SOFTWARE


def exit_without_commit(exc: BaseException) -> None:
    """Stop at once, committing nothing: the records in flight are replayed after a restart."""
    log.critical("unexpected error in the data path; exiting without commit: %r", exc,
                 exc_info=exc)
    logging.shutdown()
    os._exit(EXIT_UNEXPECTED)


async def produce(app: StreamApp, topic: TopicT, key: str, value: bytes) -> None:
    """Hand one message to the producer (flushed before offsets are committed, or committed
    with them in the batch's transaction under STREAMAPP_GUARANTEE=exactly_once).

    Straight to the aiokafka producer: the values are already bytes, so Faust's per-message
    serializing and future bookkeeping in Topic.send would be pure overhead here.
    """
    await aiokafka_producer(app).send(topic.get_topic_name(), value, key=key.encode())


async def send_letters(app: StreamApp, work: BatchWork) -> None:
    """A batch's dead letters to the producer (its counts go with the batch's)."""
    for letter in work.letters:
        await produce(app, app.dlq_topic, letter.record_id, letter.value)
        app.worker_stats.on_dead_letter(letter.record_id, letter.reason, letter.error)


async def send_counts(app: StreamApp, counts: list[tuple[str, dict[str, Any]]]) -> None:
    """Counts per table key to the stats topic: one message per partition the keys fall in
    (Kafka's default partitioner, so a key's counts always share one partition and the
    tally's offsets per key only grow). A batch touches ~30 keys: with one message each, the
    tally agent's per-event Faust path took ~9% of the worker's time in a profile."""
    topic = app.stats_topic.get_topic_name()
    partition_of = await key_partitioner(app, topic)
    by_partition: dict[int, dict[str, dict[str, Any]]] = {}
    for key, delta in counts:
        by_partition.setdefault(partition_of(key.encode()), {})[key] = delta
    producer = aiokafka_producer(app)
    for partition, entries in by_partition.items():
        await producer.send(topic, orjson.dumps(entries), partition=partition)


class CountsBuffer:
    """Consecutive batches' counts, merged for up to `window_s` and then sent as one stats
    message per stats partition: a key's table write (and its changelog message) per window,
    not per batch. A batch of 64 touches ~28 keys, two table writes each: in a profile of the
    demo model (session 9) the tally agent took 23% of the worker's samples and the changelog
    sends through Faust's producer buffer 16%.

    A batch's offsets may be committed only once its counts are with the producer (the
    ledger's "all counts before a commit were sent"): `add` gives the future of the window's
    send, which the batch awaits before it is acked. Windows are sent one after another, in
    the order their batches were read, so a key's offsets per lane still only grow."""

    def __init__(self, app: StreamApp, window_s: float) -> None:
        self.app = app
        self.window_s = window_s
        # The open window: its merged counts and the future of its send.
        self._window: tuple[BatchTally, asyncio.Future[None]] | None = None
        self._last_send: asyncio.Task[None] | None = None

    def add(self, tally: BatchTally) -> asyncio.Future[None]:
        if self._window is None:
            loop = asyncio.get_running_loop()
            self._window = BatchTally(), loop.create_future()
            loop.call_later(self.window_s, self._send_window)
        merged, sent = self._window
        merged.merge(tally)
        return sent

    def _send_window(self) -> None:
        assert self._window is not None
        (tally, sent), before = self._window, self._last_send
        self._window = None
        self._last_send = asyncio.ensure_future(self._send(tally, sent, before))

    async def _send(self, tally: BatchTally, sent: asyncio.Future[None],
                    before: asyncio.Task[None] | None) -> None:
        if before is not None:
            await asyncio.wait([before])  # its outcome is its own batches' to see
        try:
            await send_counts(self.app, tally.entries())
        except Exception as exc:
            sent.set_exception(exc)
        else:
            sent.set_result(None)


KAFKA_MURMUR2_SEED = 0x9747B28C  # the seed of Kafka's default partitioner


async def key_partitioner(app: StreamApp, topic: str) -> Callable[[bytes], int]:
    """The partition of `topic` a message keyed so would land in: Kafka's default
    partitioner (murmur2 of the key, as Faust's Producer.key_partition and aiokafka's
    DefaultPartitioner; the same partitions, tested), in C.

    Over the partitions known now, not the producer's metadata at each call: a metadata
    refresh in between (a topic the worker creates, as it does the output topics at start)
    can leave that without this topic for a moment, and the batch then failed (CI: the
    worker's first batch, `TypeError: 'NoneType' object is not iterable`)."""
    partitions = sorted(await aiokafka_producer(app).partitions_for(topic))
    return functools.partial(kafka_partition, partitions=partitions)


def kafka_partition(key: bytes, partitions: Sequence[int]) -> int:
    """Kafka's default partitioner over `partitions` (sorted): murmur2 of the key."""
    return partitions[(murmurhash2(key, KAFKA_MURMUR2_SEED) & 0x7FFFFFFF) % len(partitions)]


class Turn:
    """One of a chain of turns: `async with turn:` waits until the turn before it has ended.
    Concurrent batches send their counts in the order they were read through these."""

    def __init__(self, before: Turn | None) -> None:
        self._before = before
        self._ended = asyncio.Event()

    async def __aenter__(self) -> None:
        if self._before is not None:
            await self._before._ended.wait()
            self._before = None  # the chain behind it may go

    async def __aexit__(self, *exc: object) -> None:
        self.end()

    def end(self) -> None:
        self._ended.set()


async def infer_batch(app: StreamApp, kind: str, records: Sequence[Incoming],
                      counts_turn: Turn, counts: CountsBuffer | None = None,
                      ) -> asyncio.Future[None] | None:
    """Score one batch of records where the model is (streamapp.pipeline.batchwork) and hand
    its results and dead letters to the producer; its counts go to the stats topic in
    `counts_turn`, after the batch read before it: sent here, or into `counts`, whose send
    (the future returned) the batch has to await before its offsets may be committed."""
    started = time.time()
    reply, blobs = await app.models.work(*records_to_frame(kind, records))
    work = BatchWork.from_frame(reply, blobs)
    async with Outbox(app, app.results_topic.get_topic_name()) as results:
        for record_id, value in work.results:
            results.add(record_id.encode(), value)
    await send_letters(app, work)
    counted = None
    async with counts_turn:  # a lane's counts reach the tally in offset order (pipeline.ledger)
        if counts is not None:
            counted = counts.add(work.tally)
        else:
            await send_counts(app, work.tally.entries())
    finished = time.time()
    app.worker_stats.on_batch(BatchReport(finished_at=finished, batch_s=finished - started,
                                          counts=work.tally.items(), **work.report))
    return counted


class _Countdown:
    """Runs `done` once every model batch of one submitted batch has ended well."""

    __slots__ = ("_done", "_left")

    def __init__(self, done: Callable[[], None]) -> None:
        self._done = done
        self._left = 1  # the submitter's own, released once every model batch is started

    def add(self) -> None:
        self._left += 1

    def release(self) -> None:
        self._left -= 1
        if self._left == 0:
            self._done()


class BatchPipeline:
    """Up to `depth` batches in flight: while the model process computes one, the event loop
    reads the next and produces the previous one's outputs.

    A submitted batch of records goes to the model in batches of at most batch_size comments
    (an inference-topic record holds a whole ingest batch's comments for its partition).
    `done` runs once all of them have handed every result and dead letter to the producer:
    the caller lets the records' offsets be committed then, and not before (at-least-once, as
    with depth 1). Batches may finish out of order, but each sends its counts only after the
    one started before it has sent its own: the tally's exact counting relies on that order.
    """

    def __init__(self, app: StreamApp, kind: str, depth: int) -> None:
        self.app = app
        self.kind = kind  # streamapp.pipeline.batchwork.DECODERS
        window_s = app.settings.counts_window_ms / 1000
        self.counts = CountsBuffer(app, window_s) if window_s > 0 else None
        self._slots = asyncio.Semaphore(depth)
        self._running: set[asyncio.Task[None]] = set()
        self._last_turn: Turn | None = None  # the latest batch's, to send counts after

    async def submit(self, records: list[Incoming], done: Callable[[], None]) -> None:
        size = self.app.settings.batch_size
        fanned_out = self.kind == "fanned_out"
        countdown = _Countdown(done)
        batch: list[Incoming] = []
        held = 0  # comments in `batch`
        try:
            for record in records:
                # An inference-topic record holds an ingest batch's comments for its partition:
                # batches of whole messages of at most batch_size comments (one larger alone).
                comments = comments_in(record.value) if fanned_out else 1
                if batch and held + comments > size:
                    await self._start(batch, countdown)
                    batch, held = [], 0
                batch.append(record)
                held += comments
                if held >= size:
                    await self._start(batch, countdown)
                    batch, held = [], 0
            if batch:
                await self._start(batch, countdown)
        except Exception as exc:
            exit_without_commit(exc)
        countdown.release()

    async def _start(self, records: list[Incoming], countdown: _Countdown) -> None:
        await self._slots.acquire()  # bounds memory: at most `depth` batches held
        turn = self._last_turn = Turn(self._last_turn)
        countdown.add()
        task = asyncio.create_task(self._run(records, countdown, turn))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, records: list[Incoming], countdown: _Countdown, turn: Turn) -> None:
        try:
            counted = await infer_batch(self.app, self.kind, records, turn, self.counts)
        except Exception as exc:
            exit_without_commit(exc)
            return
        finally:
            turn.end()  # whatever happened, the next batch's counts may go
            self._slots.release()  # the next batch need not wait for this one's counts
        try:
            if counted is not None:
                await counted
        except Exception as exc:
            exit_without_commit(exc)
        else:
            countdown.release()

    async def drain(self) -> None:
        while self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
