"""`/healthz` and `/readyz`: probes for an orchestrator, cheap enough to poll every few seconds.

- `/healthz`: 200 as long as the process answers at all: the request is served by the worker's
  event loop, so a blocked loop (a synchronous model call, a deadlock) fails it by timing out.
- `/readyz`: 200 when the worker can do its work, else 503 with the reasons:
  the model is loaded (`app.models`, set at worker start); the consumer holds partitions or is
  waiting for an assignment (a rebalance, or more workers than partitions: both normal, both
  ready); the producer gets answers from a broker; with STREAMAPP_INTAKE=batch, the intake's
  consumer is running too.

"The producer gets answers" is measured, not read from a connection flag: a frozen or
partitioned broker keeps its TCP connections open, so aiokafka's `connected()` stays true while
nothing is answered. The probe sends ApiVersions (no payload, no broker work) through the
producer's own client and connections to the broker it last reached, waits at most
PROBE_TIMEOUT_S, and shares one answer between the requests of PROBE_INTERVAL_S.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from aiokafka.protocol.admin import ApiVersionRequest
from faust.web import Request, Response, View

if TYPE_CHECKING:
    from streamapp.application import StreamApp

PROBE_INTERVAL_S = 2.0
PROBE_TIMEOUT_S = 2.0

Json = dict[str, Any]


class BrokerProbe:
    """Whether the producer's client gets an answer from a broker, at most PROBE_INTERVAL_S old."""

    def __init__(self, app: StreamApp) -> None:
        self.app = app
        self.checked_at: float | None = None  # monotonic
        self.answered_at: float | None = None  # monotonic: the last answer
        self.node: int | None = None
        self.error: str | None = None
        self._probe: asyncio.Future[None] | None = None

    async def _ping(self) -> None:
        started = time.monotonic()
        try:
            client = self.app.producer._ensure_producer().client
            node = self.node if self.node is not None else client.get_random_node()
            if node is None:  # no metadata yet: the bootstrap has not answered
                raise ConnectionError("no broker known yet (bootstrap not answered)")
            await asyncio.wait_for(client.send(node, ApiVersionRequest()), PROBE_TIMEOUT_S)
        except TimeoutError:
            self.node = None  # try another broker next time
            self.error = f"broker unreachable: no answer within {PROBE_TIMEOUT_S:g} s"
        except Exception as exc:  # refused, reset, not started: say which
            self.node = None
            self.error = f"broker unreachable: {type(exc).__name__}: {exc}"
        else:
            self.node, self.error, self.answered_at = node, None, time.monotonic()
        self.checked_at = started

    async def check(self) -> Json:
        if not self.app.producer.started:
            return {"ok": False, "node": None, "error": "producer not started",
                    "last_answer_s_ago": None}
        now = time.monotonic()
        if self.checked_at is None or now - self.checked_at > PROBE_INTERVAL_S:
            if self._probe is None or self._probe.done():
                self._probe = asyncio.ensure_future(self._ping())
            await asyncio.shield(self._probe)  # a probe request going away must not cancel it
        answered = self.answered_at
        return {"ok": self.error is None, "node": self.node, "error": self.error,
                "last_answer_s_ago": None if answered is None
                else round(time.monotonic() - answered, 2)}


def _consumer(app: StreamApp) -> Json:
    """The Faust consumer: holds partitions, or waits for an assignment (both ready)."""
    consumer = app.consumer
    if not consumer.started:
        return {"ok": False, "error": "consumer not started"}
    try:
        assigned = consumer.assignment()
    except Exception as exc:  # its aiokafka consumer not created yet
        return {"ok": False, "error": f"consumer not ready: {type(exc).__name__}: {exc}"}
    return _assignment(assigned)


def _assignment(assigned: set[Any]) -> Json:
    return {"ok": True, "state": "assigned" if assigned else "waiting for assignment",
            "partitions": len(assigned)}


def _intake(app: StreamApp) -> Json | None:
    intake = app.intake
    if intake is None:
        return None
    if intake.consumer is None or not intake.started:
        return {"ok": False, "error": "intake consumer not started"}
    return _assignment(intake.assignment())


def _model(app: StreamApp) -> Json:
    if app.models is None:
        return {"ok": False, "error": "model not loaded"}
    status = app.models.status()
    return {"ok": True, "name": status.get("name"), "version": status.get("version")}


async def readiness(app: StreamApp, probe: BrokerProbe) -> Json:
    """`/readyz`'s answer: `ready`, the `reasons` it is not, and each check."""
    checks: Json = {"model": _model(app), "consumer": _consumer(app)}
    intake = _intake(app)
    if intake is not None:
        checks["intake"] = intake
    checks["producer"] = await probe.check()
    reasons = [f"{name}: {check['error']}" for name, check in checks.items() if not check["ok"]]
    return {"ready": not reasons, "reasons": reasons, "checks": checks}


def register(app: StreamApp) -> None:
    probe = BrokerProbe(app)

    class HealthView(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok"})

    class ReadyView(View):
        async def get(self, request: Request) -> Response:
            answer = await readiness(app, probe)
            return self.json(answer, status=200 if answer["ready"] else 503)

    app.page("/healthz", name="streamapp/healthz")(HealthView)
    app.page("/readyz", name="streamapp/readyz")(ReadyView)
