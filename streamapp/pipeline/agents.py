"""The data path: comment topic -> ingest -> inference topic -> infer -> results / dead letters.

    comments ──ingest──┬──> {app}-inference ──infer (take_events, model thread)──> sku-matches
                       └──> comments-dlq  <──────────────── model failures ──┘
    infer / ingest ──> {app}-stats ──tally──> tables `totals`, `per-minute`

Both agents take batches (`take_events`); ingest writes one inference message per partition
per batch (streamapp.pipeline.fanout), so Faust's per-event path runs once per comment only
on the comment topic.

At-least-once: a comment's offset is acked only after everything it produces has been handed
to the producer, and Faust flushes the producer before it commits offsets. No exception may
leave the `take_events` loop (Faust would ack the batch and skip it), so anything unexpected
there stops the process without committing, and the batch is replayed after the restart.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from faust.types import EventT, StreamT, TopicT

from streamapp.pipeline.batches import BatchPipeline, exit_without_commit
from streamapp.pipeline.chunks import incoming_records
from streamapp.pipeline.fanout import ingest_batch
from streamapp.pipeline.tally import stats_order, tally_event

if TYPE_CHECKING:
    from streamapp.application import StreamApp
    from streamapp.settings import Settings

log = logging.getLogger(__name__)


def _batch_wait_s(settings: Settings) -> float:
    return max(settings.batch_wait_ms, 1) / 1000.0  # 0 would make Faust wait for a full batch


# The ingest batch only spares Faust's per-event cost on the hop; the model batch fills on the
# other side. Under load the stream's buffer fills a take at once, so a short wait costs no
# throughput, while waiting STREAMAPP_BATCH_WAIT_MS on both sides doubled the wait a comment
# sees at low rates (p99 at half load: 216 ms, against 120 ms with one hop; BENCHMARKS.md).
INGEST_WAIT_MS = 5


def _hold(events: Sequence[EventT]) -> None:
    """`take_events` acks a batch as soon as the loop asks for the next one (or leaves):
    each message holds one more reference until its outputs are with the producer."""
    for event in events:
        event.message.incref()


def _ack_all(events: Sequence[EventT]) -> None:
    for event in events:
        event.ack()  # the last reference: now the offset may be committed


def register(app: StreamApp) -> None:
    settings = app.settings

    if settings.fanout:
        @app.agent(app.comments_topic, name="ingest")
        async def ingest(stream: StreamT[Any]) -> None:
            """Decode and validate batches of comments: to the inference topic, one message
            per partition (streamapp.pipeline.fanout), or dead letters."""
            within = min(settings.batch_wait_ms, INGEST_WAIT_MS) or 1
            async for events in stream.take_events(settings.batch_size, within=within / 1000):
                _hold(events)
                try:
                    await ingest_batch(app, incoming_records(events))
                except Exception as exc:
                    exit_without_commit(exc)
                _ack_all(events)

    # Fan-out: batches of the inference topic. Direct: batches of the comment topic itself,
    # decoded in the batch (one Kafka hop less per comment). Read by the Faust agent, or by
    # the batch intake (streamapp.pipeline.intake) past Faust's per-event path.
    source, kind = ((app.inference_topic, "fanned_out") if settings.fanout
                    else (app.comments_topic, "direct"))

    if settings.intake == "batch":
        from streamapp.pipeline.intake import BatchIntake

        app.intake = BatchIntake(app, source,
                                 BatchPipeline(app, kind, settings.pipeline_depth),
                                 beacon=app.beacon)
        app.service(app.intake)
    else:
        register_infer_agent(app, source, kind)

    @app.task
    async def declare_output_topics() -> None:
        # Faust creates the topics it consumes; these it only produces to. (A cluster that
        # forbids topic creation needs them created beforehand, as docker-compose.yml does.)
        for topic in (app.results_topic, app.dlq_topic):
            await topic.maybe_declare()

    @app.agent(app.stats_topic, name="tally")
    async def tally(stream: StreamT[Any]) -> None:
        """Add each batch's counts to the tables totals and per-minute, each comment once,
        each stats partition's messages in offset order (streamapp.pipeline.tally)."""
        order = stats_order(app)
        async for event in stream.events():
            await tally_event(app, order, event)

    if settings.reload_interval_s > 0 and settings.model_version is None:
        @app.timer(settings.reload_interval_s, name="model-reload")
        async def reload_model() -> None:
            if app.models is not None:
                await app.models.maybe_reload()


def register_infer_agent(app: StreamApp, source: TopicT, kind: str) -> None:
    """The Faust inference agent: micro-batches of `source` with `take_events`."""
    settings = app.settings

    @app.agent(source, name="infer")
    async def infer(stream: StreamT[Any]) -> None:
        """Batches of comments through the model: results, dead letters, counts to stats."""
        pipeline = BatchPipeline(app, kind, settings.pipeline_depth)
        try:
            async for events in stream.take_events(settings.batch_size,
                                                   within=_batch_wait_s(settings)):
                _hold(events)
                await pipeline.submit(incoming_records(events),
                                      functools.partial(_ack_all, events))
        finally:
            # Let batches in flight produce their outputs and ack (shutdown, rebalance).
            await asyncio.shield(pipeline.drain())

