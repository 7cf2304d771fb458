"""What Faust's sensor costs per record: `python -m bench.sensor [--records N]`.

Every record a Faust stream takes passes four sensor hooks (message in, stream event in and
out, message out). This times the four in a loop, in this process, for Faust's plain Monitor,
Faust's PrometheusMonitor and streamapp's FaustSensor (streamapp.web.metrics): microseconds per
record, best of three rounds.
"""

from __future__ import annotations

import argparse
import time
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


def per_record_us(monitor: Monitor, stream: Any, records: int) -> float:
    tp = TP("comments", 0)
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for offset in range(records):
            message = _Message()
            monitor.on_message_in(tp, offset, message)
            state = monitor.on_stream_event_in(tp, offset, stream, None)  # type: ignore[arg-type]
            monitor.on_stream_event_out(tp, offset, stream, None, state)  # type: ignore[arg-type]
            monitor.on_message_out(tp, offset, message)  # type: ignore[arg-type]
        best = min(best, (time.perf_counter() - started) / records * 1e6)
    return round(best, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sensor",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    args = parser.parse_args(argv)
    app = create_app(Settings(store="memory"))
    stream = app.stream(app.comments_topic)
    stream.task_owner = _Owner()

    def metrics() -> FaustMetrics:
        return FaustMetrics.create(CollectorRegistry(), "faust")

    for name, monitor in [("Faust's Monitor", Monitor()),
                          ("Faust's PrometheusMonitor", PrometheusMonitor(metrics=metrics())),
                          ("streamapp's FaustSensor", FaustSensor(metrics=metrics()))]:
        print(f"{name}: {per_record_us(monitor, stream, args.records)} us per record")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
