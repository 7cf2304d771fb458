"""The batch path, shared by the Faust inference agent and the batch intake: decode a batch,
score it (in the model process, streamapp.serving.service), produce one result or dead letter
per record and the batch's counts; up to `STREAMAPP_PIPELINE_DEPTH` batches in flight
(BatchPipeline).

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

from streamapp.decoding import decode_comment
from streamapp.pipeline.ledger import source_of
from streamapp.pipeline.outbox import Outbox, aiokafka_producer
from streamapp.pipeline.stats import (
    BatchReport,
    BatchTally,
    Source,
)
from streamapp.records import (
    Comment,
    Incoming,
    RejectedRecord,
    dead_letter,
    path_of,
    result_json,
)
from streamapp.serving.outcomes import ModelFailure, Scored

if TYPE_CHECKING:
    from streamapp.application import StreamApp

log = logging.getLogger(__name__)


EXIT_UNEXPECTED = 70  # EX_SOFTWARE


def _now_ms() -> int:
    return int(time.time() * 1000)


async def send_dead_letter(
    app: StreamApp, record_id: str, reason: str, error: str, raw: bytes | None,
    source_ts: int | None, source: Source, tally: BatchTally | None = None,
) -> None:
    """A dead letter; counted in `tally` when it is part of a batch (sent with the batch's
    counts), else sent to the stats topic at once. `source`: what the tally dedupes it by."""
    letter = dead_letter(record_id, reason, error, raw, source_ts=source_ts,
                         failed_at=_now_ms(), max_value_bytes=app.settings.dlq_max_value_bytes)
    await produce(app, app.dlq_topic, record_id, letter.model_dump_json().encode())
    if tally is not None:
        tally.add_dead_letter(reason, source)
    else:
        alone = BatchTally()
        alone.add_dead_letter(reason, source)
        await send_counts(app, alone.entries())
    app.worker_stats.on_dead_letter(record_id, reason, error)


def exit_without_commit(exc: BaseException) -> None:
    """Stop at once, committing nothing: the records in flight are replayed after a restart."""
    log.critical("unexpected error in the data path; exiting without commit: %r", exc,
                 exc_info=exc)
    logging.shutdown()
    os._exit(EXIT_UNEXPECTED)


Decoded = tuple[str, int | None, Comment]  # comment id, source timestamp (ms), comment


# The comments one record carries (raises RejectedRecord for the whole record): one for a
# comment-topic record (decode_direct), those of an ingest batch for an inference-topic one
# (streamapp.pipeline.fanout.decode_fanned_out).
Decoder = Callable[["StreamApp", Incoming], list[Decoded]]

# One comment and the record it came in, or a record rejected whole (its dead letter).
Unit = tuple[Incoming, Decoded | RejectedRecord]


def decode_source(app: StreamApp, record: Incoming) -> Decoded:
    """A record of the comment topic: decode and validate (raises RejectedRecord)."""
    settings = app.settings
    comment = decode_comment(record.value, input_format=settings.input_format,
                             separator=settings.separator,
                             max_review_chars=settings.max_review_chars)
    return record.id, record.timestamp_ms, comment


def decode_direct(app: StreamApp, record: Incoming) -> list[Decoded]:
    """The direct path's decoder: a comment-topic record is one comment."""
    return [decode_source(app, record)]


def units_of(app: StreamApp, record: Incoming, decode: Decoder) -> list[Unit]:
    try:
        return [(record, decoded) for decoded in decode(app, record)]
    except RejectedRecord as rejected:
        return [(record, rejected)]


async def produce(app: StreamApp, topic: TopicT, key: str, value: bytes) -> None:
    """Hand one message to the producer (flushed before offsets are committed, or committed
    with them in the batch's transaction under STREAMAPP_GUARANTEE=exactly_once).

    Straight to the aiokafka producer: the values are already bytes, so Faust's per-message
    serializing and future bookkeeping in Topic.send would be pure overhead here.
    """
    await aiokafka_producer(app).send(topic.get_topic_name(), value, key=key.encode())


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


def _request(comment: Comment) -> dict[str, Any]:
    """The seed's reqDict: the comment's fields, and the review text as `input`."""
    # vars(): the validated fields as they are; model_dump() copies them, 30 times slower.
    return {**vars(comment), "input": comment.reviewBody}


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


async def infer_batch(app: StreamApp, units: Sequence[Unit], counts_turn: Turn,
                      counts: CountsBuffer | None = None) -> asyncio.Future[None] | None:
    """Score one micro-batch and produce a result or dead letter for every unit in it; its
    counts go to the stats topic in `counts_turn`, after the batch read before it: sent here,
    or into `counts`, whose send (the future returned) the batch has to await before its
    offsets may be committed."""
    started = time.time()
    tally = BatchTally()
    items: list[Decoded] = []
    sources: list[Source] = []
    for record, decoded in units:
        if isinstance(decoded, RejectedRecord):
            await send_dead_letter(app, record.id, decoded.reason, decoded.error,
                                   record.value, record.timestamp_ms,
                                   source_of(record, record.id), tally)
            continue
        items.append(decoded)
        sources.append(source_of(record, decoded[0]))
        if decoded[2].recovered is not None:
            tally.add_recovered(decoded[2].recovered, sources[-1])
    scored = await app.models.score([_request(c) for _, _, c in items])
    outcomes, timing, model_ref = scored.outcomes, scored.timing, scored.model
    finished = time.time()
    # With batches in flight a batch may wait for the model thread: compute is the model's
    # own time, measured there.
    compute_ms = round((timing.preprocess_s + timing.process_s) * 1000, 3)
    started_ms, finished_ms = started * 1000, finished * 1000
    queue_ms: list[float] = []
    end_to_end_ms: list[float] = []
    threshold = app.settings.match_threshold
    predicted = matched = 0
    async with Outbox(app, app.results_topic.get_topic_name()) as results:
        for (record_id, source_ts, comment), outcome, source in zip(items, outcomes, sources,
                                                                   strict=True):
            categories = comment.categories
            path = path_of(categories)
            if isinstance(outcome, ModelFailure):
                tally.add(comment.first_category, path, predicted=False, matched=False,
                          source=source)
                await send_dead_letter(app, record_id, outcome.reason,
                                       f"the model failed on this comment: {outcome.error}",
                                       comment.model_dump_json().encode(), source_ts, source,
                                       tally)
                continue
            outputs = outcome.outputs if isinstance(outcome, Scored) else None
            score = outcome.score if isinstance(outcome, Scored) else outcome
            match = score >= threshold
            tally.add(comment.first_category, path, predicted=True, matched=match,
                      source=source)
            predicted += 1
            matched += match
            queued = 0.0
            if source_ts:
                queued = round(started_ms - source_ts, 3)
                queue_ms.append(queued)
                end_to_end_ms.append(finished_ms - source_ts)
            results.add(record_id.encode(), result_json(
                record_id, comment, categories, path, score=score, match=match,
                model=model_ref, outputs=outputs,
                timing={"source_ts": source_ts, "queued_ms": queued, "compute_ms": compute_ms,
                        "batch_started_at": int(started_ms), "batch_size": len(items),
                        "predicted_at": int(finished_ms)}))
    counted = None
    async with counts_turn:  # a lane's counts reach the tally in offset order (pipeline.ledger)
        if counts is not None:
            counted = counts.add(tally)
        else:
            await send_counts(app, tally.entries())
    batch_counts = tally.items()
    app.worker_stats.on_batch(BatchReport(
        finished_at=time.time(), size=len(items), predicted=predicted, matched=matched,
        failed=len(items) - predicted, model_name=model_ref["name"],
        model_version=model_ref["version"],
        queue_ms=queue_ms, end_to_end_ms=end_to_end_ms, preprocess_s=timing.preprocess_s,
        process_s=timing.process_s, batch_s=time.time() - started, tokens=timing.tokens,
        padded_tokens=timing.padded_tokens, counts=batch_counts))
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
    """Up to `depth` batches in flight: while the model thread computes one, the event loop
    decodes the next and produces the previous one's outputs.

    A submitted batch of records goes to the model in batches of at most batch_size comments
    (an inference-topic record carries a whole ingest batch's comments for its partition).
    `done` runs once all of them have handed every result and dead letter to the producer:
    the caller lets the records' offsets be committed then, and not before (at-least-once, as
    with depth 1). Batches may finish out of order, but each sends its counts only after the
    one started before it has sent its own: the tally's exact counting relies on that order.
    """

    def __init__(self, app: StreamApp, decode: Decoder, depth: int) -> None:
        self.app = app
        self.decode = decode
        window_s = app.settings.counts_window_ms / 1000
        self.counts = CountsBuffer(app, window_s) if window_s > 0 else None
        self._slots = asyncio.Semaphore(depth)
        self._running: set[asyncio.Task[None]] = set()
        self._last_turn: Turn | None = None  # the latest batch's, to send counts after

    async def submit(self, records: list[Incoming], done: Callable[[], None]) -> None:
        size = self.app.settings.batch_size
        countdown = _Countdown(done)
        units: list[Unit] = []
        try:
            # Decoded as they go to the model: only the batches in flight are held decoded.
            for record in records:
                units += units_of(self.app, record, self.decode)
                while len(units) >= size:
                    await self._start(units[:size], countdown)
                    units = units[size:]
            if units:
                await self._start(units, countdown)
        except Exception as exc:  # nothing but RejectedRecord is expected from a decoder
            exit_without_commit(exc)
        countdown.release()

    async def _start(self, units: list[Unit], countdown: _Countdown) -> None:
        await self._slots.acquire()  # bounds memory: at most `depth` batches held
        turn = self._last_turn = Turn(self._last_turn)
        countdown.add()
        task = asyncio.create_task(self._run(units, countdown, turn))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, units: list[Unit], countdown: _Countdown, turn: Turn) -> None:
        try:
            counted = await infer_batch(self.app, units, turn, self.counts)
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
