"""The Faust application: topics, tables and settings wired from `Settings`.

The agents that move records live in `streamapp.pipeline.agents`, the web view in
`streamapp.web.views`; `create_app` puts them together so that `faust -A streamapp worker`
finds one `app`.
"""

from __future__ import annotations

import logging
import sys
from datetime import timedelta
from typing import Any

import faust

from streamapp.pipeline.stats import WorkerStats
from streamapp.security import broker_credentials
from streamapp.settings import Settings, SettingsError

log = logging.getLogger(__name__)

# Events a stream may hold unprocessed (Faust's default; the comment topic's buffer is sized
# from it when it holds fetch chunks).
STREAM_BUFFER_MAXSIZE = 4096

# Per-minute counts are kept for an hour: what the web view charts.
WINDOW = timedelta(minutes=1)
WINDOW_EXPIRES = timedelta(hours=1)


# Table keys are "<kind>:<name>" strings, values dicts of counters (streamapp.pipeline.counts).
_TABLE_SCHEMA = faust.Schema(key_type=str, key_serializer="json", value_serializer="json")


class StreamApp(faust.App):
    """A Faust app that also carries streamapp's settings, topics, tables, model and stats."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(settings.app_id, **kwargs)
        self.settings = settings
        self.worker_stats = WorkerStats()
        # Set when the worker starts (streamapp.pipeline.startup), before anything is consumed.
        self.models: Any = None  # streamapp.serving.service.ModelService
        # streamapp.pipeline.intake.BatchIntake, with STREAMAPP_INTAKE=batch
        self.intake: Any = None
        # aiokafka's transactional producer, with STREAMAPP_GUARANTEE=exactly_once: the data
        # path's outputs go through it (streamapp.pipeline.outbox.aiokafka_producer).
        self.transactional_producer: Any = None
        owned = {"partitions": settings.partitions}  # topics streamapp creates
        # Raw bytes everywhere: decoding is ours, so a bad record becomes a dead letter,
        # never a crash inside Faust's deserializer.
        self.comments_topic = self._raw_topic(settings.comments_topic)
        if settings.chunked_comments:
            # The stream buffer then counts chunks: sized to hold about the records Faust's
            # holds (streamapp.pipeline.chunks). Set on the topic, which the agent's channel
            # is cloned from: Faust's app.topic() takes `maxsize` but does not pass it on.
            from streamapp.pipeline.chunks import channel_maxsize

            self.comments_topic.maxsize = channel_maxsize(STREAM_BUFFER_MAXSIZE,
                                                          settings.batch_size)
        # The fan-out hop: valid comments keyed by id, spread over `partitions` partitions
        # whatever partition count the upstream comment topic has.
        self.inference_topic = self._raw_topic(f"{settings.app_id}-inference", internal=True,
                                               **owned)
        self.stats_topic = self._raw_topic(f"{settings.app_id}-stats", internal=True, **owned)
        self.results_topic = self._raw_topic(settings.results_topic, **owned)
        self.dlq_topic = self._raw_topic(settings.dlq_topic, **owned)
        # Counters per "<kind>:<name>" key (see streamapp.pipeline.counts): since the start, and per
        # one-minute window for the last hour.
        self.totals = self.Table(
            "totals", default=dict, schema=_TABLE_SCHEMA, **owned,
            help="counts per category, category path and dead-letter reason, since the start")
        self.per_minute = self.Table(
            "per-minute", default=dict, schema=_TABLE_SCHEMA, **owned,
            help="the same counts per one-minute window, kept for an hour",
        ).tumbling(WINDOW, expires=WINDOW_EXPIRES)

    async def on_first_start(self) -> None:
        await super().on_first_start()
        # Once per process, and only in a worker: other Faust commands never start the app,
        # and a client-only start (`faust send`) needs no model.
        if not (self.client_only or self.producer_only):
            from streamapp.pipeline.startup import prepare_worker

            await prepare_worker(self)

    def _new_transport(self) -> Any:
        # Commit only offsets processed in an unbroken run (streamapp.pipeline.offsets: Faust's
        # "gap" handling commits past unprocessed records after a restart).
        from streamapp.pipeline.offsets import SafeOffsetConsumer

        transport = super()._new_transport()
        transport.Consumer = SafeOffsetConsumer
        return transport

    def _raw_topic(self, name: str, **kwargs: Any) -> faust.TopicT:
        return self.topic(name, key_serializer="raw", value_serializer="raw", **kwargs)


def faust_config(settings: Settings) -> dict[str, Any]:
    store = "memory://" if settings.store == "memory" else "rocksdb://"
    return {
        "broker": settings.broker_urls,
        "broker_credentials": broker_credentials(settings),
        "store": store,
        "datadir": str(settings.datadir),
        "topic_partitions": settings.partitions,
        "topic_replication_factor": 1,
        "web_bind": settings.web_bind,
        "web_port": settings.web_port,
        "web_host": settings.web_bind if settings.web_bind != "0.0.0.0" else None,
        "web_enabled": True,
        # Faust's /table/ routes serve raw table contents: off unless asked for.
        "web_tables_enabled": settings.web_tables,
        # Faust's own exactly_once (a transactional producer per partition, managed by its
        # consumer) is not used: exactly_once is the batch intake's (streamapp.pipeline.intake).
        "processing_guarantee": "at_least_once",
        # Static membership (KIP-345): a restarted worker keeps its partitions.
        "consumer_group_instance_id": settings.instance_id,
        "broker_session_timeout": settings.session_timeout_s,
        "broker_heartbeat_interval": settings.heartbeat_interval_s,
        "broker_commit_interval": 1.0,
        "consumer_auto_offset_reset": "earliest",
        "table_standby_replicas": 0,
        "producer_linger_ms": 5,
        "producer_max_batch_size": settings.producer_batch_bytes,
        "stream_buffer_maxsize": STREAM_BUFFER_MAXSIZE,
        # Faust's Stream, but an idle take sleeps instead of waking every batch wait.
        "Stream": "streamapp.pipeline.streams:BatchingStream",
    }


def create_app(settings: Settings) -> StreamApp:
    app = StreamApp(settings, **faust_config(settings))
    logging.getLogger("streamapp").setLevel(settings.log_level.upper())
    # aiokafka logs a debug line per produced message; building those records cost ~5% of
    # the pipeline's time in a profile even when no handler printed them.
    logging.getLogger("aiokafka").setLevel(max(logging.INFO,
                                               logging.getLevelName(settings.log_level.upper())))
    from streamapp.pipeline import agents
    from streamapp.web import views as web

    agents.register(app)
    web.register(app)
    return app


def app_from_env() -> StreamApp:
    """The app of `faust -A streamapp`: settings from the environment, or a clear exit."""
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"streamapp: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return create_app(settings)
