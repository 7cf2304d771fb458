"""What Faust's sensor costs per record: `python -m bench.sensor [--records N]`.

Every record a Faust stream takes passes four sensor hooks (message in, stream event in and
out, message out). This times the four in a loop, in this process, for Faust's plain Monitor,
Faust's PrometheusMonitor and streamapp's FaustSensor (streamapp.web.metrics): microseconds per
record, best of three rounds.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

from faust.sensors.monitor import Monitor
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from faust.types import TP
from prometheus_client import CollectorRegistry

from streamapp.application import create_app
from streamapp.settings import Settings
from streamapp.web.metrics import FaustSensor


class _Message:
    """The attributes the hooks set on a message."""

    time_in: float | None = None
    time_out: float | None = None
    time_total: float | None = None


class _Owner:
    """A stream's task owner (the hooks count events per owner)."""


def probe_streams(count: int) -> list[Any]:
    """`count` streams (of topics of their own) of an app that is never started."""
    app = create_app(Settings(store="memory"))
    streams = [app.stream(app.topic(f"sensor-probe-{i}")) for i in range(count)]
    for stream in streams:
        stream.task_owner = _Owner()
    return streams


def feed(monitor: Monitor, streams: Sequence[Any], records: int, partitions: int = 1,
         unacked_every: int = 0) -> None:
    """The four hooks for `records` records, round robin over `partitions` partitions of
    `comments` and over `streams`; every `unacked_every`-th record is left unacked."""
    for offset in range(records):
        tp, stream = TP("comments", offset % partitions), streams[offset % len(streams)]
        message = _Message()
        monitor.on_message_in(tp, offset, message)  # type: ignore[arg-type]
        state = monitor.on_stream_event_in(tp, offset, stream, None)  # type: ignore[arg-type]
        monitor.on_stream_event_out(tp, offset, stream, None, state)  # type: ignore[arg-type]
        if not unacked_every or offset % unacked_every:
            monitor.on_message_out(tp, offset, message)  # type: ignore[arg-type]


def per_record_us(monitor: Monitor, streams: Sequence[Any], records: int) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        feed(monitor, streams, records)
        best = min(best, (time.perf_counter() - started) / records * 1e6)
    return round(best, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sensor",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    args = parser.parse_args(argv)
    streams = probe_streams(1)

    def metrics() -> FaustMetrics:
        return FaustMetrics.create(CollectorRegistry(), "faust")

    for name, monitor in [("Faust's Monitor", Monitor()),
                          ("Faust's PrometheusMonitor", PrometheusMonitor(metrics=metrics())),
                          ("streamapp's FaustSensor", FaustSensor(metrics=metrics()))]:
        print(f"{name}: {per_record_us(monitor, streams, args.records)} us per record")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
