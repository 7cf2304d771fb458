"""`/metrics`: Prometheus text, Faust's own sensor (`faust_*`) and streamapp's (`streamapp_*`).

streamapp's metrics come from the BatchReports (WorkerStats passes them on), not from Faust's
Monitor, whose event counts are wrong with `take()`. Latencies are in seconds, as Prometheus
wants; the web view shows milliseconds. Consumer lag is the web view's (views.LagMonitor),
refreshed before each scrape is answered: Faust's own end-offset gauge reads ListOffsets,
which is wrong on the embedded broker (README, "Consumer lag").
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from faust.sensors.monitor import Monitor
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from faust.types import TP, EventT, StreamT
from faust.web import Request, Response, View
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from streamapp.pipeline.counts import CATEGORY, RECOVERED, split_key
from streamapp.pipeline.stats import BatchReport

if TYPE_CHECKING:
    from streamapp.application import StreamApp
    from streamapp.web.views import LagMonitor

BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
TOKEN_BUCKETS = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0, 60.0, 300.0)


class FaustSensor(PrometheusMonitor):
    """Faust's Prometheus sensor, the same metrics and values, with its per-record label
    lookups done once per partition and stream.

    Faust's runs on every record: `labels()` three times (a lock and a key each) and a regex
    turning the stream's label into a metric name. With those done once, the four per-record
    hooks take 0.5 to 0.7 of Faust's time (`python -m bench.sensor`; BENCHMARKS.md, Probes).
    """

    def __init__(self, metrics: FaustMetrics) -> None:
        super().__init__(metrics=metrics)
        self._per_tp: dict[TP, tuple[Any, Any]] = {}
        self._per_stream: dict[str, Any] = {}

    def on_message_in(self, tp: TP, offset: int, message: Any) -> None:
        Monitor.on_message_in(self, tp, offset, message)
        metrics = self._metrics
        metrics.messages_received.inc()
        metrics.active_messages.inc()
        children = self._per_tp.get(tp)
        if children is None:
            children = self._per_tp[tp] = (
                metrics.messages_received_per_topics.labels(topic=tp.topic),
                metrics.messages_received_per_topics_partition.labels(
                    topic=tp.topic, partition=tp.partition))
        children[0].inc()
        children[1].set(offset)

    def on_stream_event_in(self, tp: TP, offset: int, stream: StreamT,
                           event: EventT) -> dict[str, Any] | None:
        state = Monitor.on_stream_event_in(self, tp, offset, stream, event)
        metrics = self._metrics
        metrics.total_events.inc()
        metrics.total_active_events.inc()
        name = self.stream_lookup[stream]  # str(stream), kept by Monitor (weakly)
        child = self._per_stream.get(name)
        if child is None:
            child = self._per_stream[name] = metrics.total_events_per_stream.labels(
                stream=f"stream.{self._stream_label(stream)}.events")
        child.inc()
        return state


def observe_all(histogram: Histogram, values: Sequence[float]) -> None:
    """`histogram.observe(v)` for each value: a lock per bucket touched, not two per value.
    prometheus_client has no batch API: these are the fields its own `observe` updates (an
    amount goes to the first bucket whose bound is >= it), tested equal to one by one. A
    batch's per-comment latencies one by one took ~10% of the worker's main thread in a
    profile without a model (BENCHMARKS.md, "Profiles")."""
    if not values:
        return
    bounds = histogram._upper_bounds
    for bucket, n in Tally(bisect_left(bounds, v) for v in values).items():
        histogram._buckets[bucket].inc(n)
    histogram._sum.inc(sum(values))


class PrometheusMetrics:
    """streamapp's metrics, fed by WorkerStats as a listener."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, buckets=buckets, registry=registry)

        self.batch_size = histogram("streamapp_batch_size", "Comments per model batch",
                                    BATCH_SIZE_BUCKETS)
        self.batch_tokens = histogram("streamapp_batch_tokens",
                                      "Real (unpadded) tokens per model batch", TOKEN_BUCKETS)
        self.queue_wait = histogram(
            "streamapp_queue_wait_seconds",
            "Per comment: its Kafka timestamp to the start of its batch", LATENCY_BUCKETS)
        self.tokenize = histogram("streamapp_tokenize_seconds",
                                  "Per batch: tokenization (the handler's preprocess)",
                                  LATENCY_BUCKETS)
        self.compute = histogram("streamapp_model_compute_seconds",
                                 "Per batch: the model's forward pass (the handler's process)",
                                 LATENCY_BUCKETS)
        self.end_to_end = histogram(
            "streamapp_end_to_end_seconds",
            "Per comment: its Kafka timestamp to its result", LATENCY_BUCKETS)
        self.tokens = Counter("streamapp_tokens", "Tokens fed to the model, real or padding",
                              ["kind"], registry=registry)
        self.records = Counter(
            "streamapp_records", "Comments through the model, by first-level category and "
            "outcome (matched, not_matched, failed)", ["category", "outcome"], registry=registry)
        self.dead_letters = Counter("streamapp_dead_letters", "Dead letters by reason code",
                                    ["reason"], registry=registry)
        self.recovered = Counter(
            "streamapp_recovered", "Comments decoded despite a flaw, by kind "
            "(separator_in_review: a delimited review holding the separator)", ["kind"],
            registry=registry)

    def on_batch(self, report: BatchReport) -> None:
        self.batch_size.observe(report.size)
        if report.padded_tokens:
            self.batch_tokens.observe(report.tokens)
            self.tokens.labels("real").inc(report.tokens)
            self.tokens.labels("padding").inc(report.padded_tokens - report.tokens)
        self.tokenize.observe(report.preprocess_s)
        self.compute.observe(report.process_s)
        observe_all(self.queue_wait, [ms / 1000 for ms in report.queue_ms])
        observe_all(self.end_to_end, [ms / 1000 for ms in report.end_to_end_ms])
        for key, counts in report.counts:
            kind, name = split_key(key)
            if kind == RECOVERED:
                self.recovered.labels(name).inc(counts.get("seen", 0))
            if kind != CATEGORY:
                continue  # paths would explode the label space
            matched = counts.get("matched", 0)
            for outcome, n in (("matched", matched),
                               ("not_matched", counts.get("predicted", 0) - matched),
                               ("failed", counts.get("failed", 0))):
                if n:
                    self.records.labels(name, outcome).inc(n)

    def on_dead_letter(self, record_id: str, reason: str, error: str) -> None:
        self.dead_letters.labels(reason).inc()


class ModelInfo(Collector):
    """`streamapp_model_info`: the model being served, read at scrape time (it hot-swaps)."""

    def __init__(self, app: StreamApp) -> None:
        self.app = app

    def collect(self) -> Iterator[InfoMetricFamily]:
        if self.app.models is None:
            return
        status = self.app.models.status()
        info = InfoMetricFamily("streamapp_model", "The model this worker serves")
        info.add_metric([], {name: str(status[name]) for name in
                             ("name", "version", "device", "dtype", "handler")})
        yield info


class ConsumerLag(Collector):
    """`streamapp_consumer_lag{topic,partition}`: the partitions this worker holds, from the
    lag the web view computes (refreshed before the scrape is answered, see `register`)."""

    def __init__(self, lag: LagMonitor) -> None:
        self.lag = lag

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily("streamapp_consumer_lag",
                                  "End offset - committed offset, per partition this worker "
                                  "holds", labels=["topic", "partition"])
        for entry in self.lag.latest["partitions"]:
            if entry["lag"] is not None:
                gauge.add_metric([entry["topic"], str(entry["partition"])], entry["lag"])
        yield gauge


class RecordsFetchedAgain(Collector):
    """Records the consumer sought back to after Faust dropped them (pipeline.offsets): should
    stay 0; anything else names a Faust drop that would otherwise have stalled a partition."""

    def __init__(self, app: StreamApp) -> None:
        self.app = app

    def collect(self) -> Iterator[CounterMetricFamily]:
        counter = CounterMetricFamily(
            "streamapp_records_fetched_again",
            "Records dropped before any stream got them and fetched again, per topic",
            labels=["topic"])
        for topic, count in sorted(getattr(self.app.consumer, "fetched_again", {}).items()):
            counter.add_metric([topic], count)
        yield counter


def register(app: StreamApp, lag: LagMonitor) -> CollectorRegistry:
    """Serve `/metrics`: Faust's Prometheus sensor and streamapp's metrics, one registry per
    app (not the process-wide default, so several apps in one process do not collide).
    Faust's sensor is set up as `setup_prometheus_sensors` does, with a page of our own that
    refreshes the consumer lag first."""
    registry = CollectorRegistry()
    app.monitor = FaustSensor(metrics=FaustMetrics.create(registry, "faust"))
    app.worker_stats.listeners.append(PrometheusMetrics(registry))
    registry.register(ModelInfo(app))
    registry.register(ConsumerLag(lag))
    registry.register(RecordsFetchedAgain(app))

    class MetricsView(View):
        async def get(self, request: Request) -> Response:
            await lag.current()  # never raises: an error is kept in the answer, no gauge
            # in the headers: aiohttp refuses a content_type argument with a charset
            return self.bytes(generate_latest(registry),
                              headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.page("/metrics", name="streamapp/metrics")(MetricsView)
    return registry
