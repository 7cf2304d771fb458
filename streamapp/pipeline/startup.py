"""A worker's start: broker reachable, model loaded once, and a log that says what it serves.

Runs from `StreamApp.on_first_start`: once per process, only when the app starts as a worker
(not for `faust -A streamapp agents` or any other command), after the Worker has set up
logging, and before the consumer, the agents or the batch intake start, so nothing is consumed
before the model is ready. (Faust's `on_worker_init` fires for every command, and twice under
`faust -A streamapp worker`; anything logged then is lost.)
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from streamapp.connect import wait_for_broker
from streamapp.security import bootstrap_servers

if TYPE_CHECKING:
    from streamapp.application import StreamApp
    from streamapp.settings import Settings

log = logging.getLogger(__name__)


async def prepare_worker(app: StreamApp) -> None:
    """Wait for the broker, load the model (in its own process, or off the loop), log what
    this worker serves.

    A bad model or handler, or STREAMAPP_GUARANTEE=exactly_once on a broker without
    transactions, stops the worker here with its message and exit status 2.
    """
    from streamapp.collector import settle_after_start
    from streamapp.pipeline.batchwork import answer_work
    from streamapp.pipeline.model_process import PROGRAM
    from streamapp.serving.outcomes import ModelStartError
    from streamapp.serving.service import start_model_service

    settings = app.settings
    await wait_for_broker(settings, log)
    try:
        app.models = await start_model_service(settings, answer_work, PROGRAM)
    except ModelStartError as exc:
        log.critical("cannot start: %s", exc)
        raise SystemExit(2) from None
    if settings.guarantee == "exactly_once":
        from streamapp.pipeline.transactions import (
            TransactionsRefused,
            start_transactional_producer,
        )

        try:  # before anything is consumed; the batch intake stops it
            app.transactional_producer = await start_transactional_producer(settings)
        except TransactionsRefused as exc:
            log.critical("cannot start: %s", exc)
            raise SystemExit(2) from None
    for line in serving_summary(app, app.models.status()):
        log.info("%s", line)
    settle_after_start()


def serving_summary(app: StreamApp, served: dict[str, Any]) -> list[str]:
    """What an operator needs to know about this worker, in a few lines of its log."""
    settings = app.settings
    path = (f"{settings.comments_topic} -> {settings.app_id}-inference -> "
            if settings.fanout else f"{settings.comments_topic} -> ")
    calls = (f"whole batches of up to {settings.batch_size}" if served["batch"]
             else "once per record")
    at_once = served.get("batches_at_once", 1)
    if at_once > 1:
        calls += f", {at_once} batches at once"
    where = (f"in model process {served['process']}" if "process" in served
             else "on threads of the worker")
    intake = ("batch (aiokafka getmany)" if settings.intake == "batch"
              else "agent (Faust take_events)")
    return [
        f"serving model {served['name']} version {served['version']} from {served['path']} "
        f"on {served['device']} ({served['dtype']}), {where}",
        f"handler {served['handler']}, called with {calls}; "
        f"hot reload {_reload(settings)}",
        f"intake {intake}: {path}model -> {settings.results_topic}, dead letters -> "
        f"{settings.dlq_topic}; {settings.partitions} partitions; group {settings.app_id} "
        f"on {bootstrap_servers(settings.broker)}",
    ]


def _reload(settings: Settings) -> str:
    if settings.model_version is not None:
        return f"off (version {settings.model_version} pinned)"
    if settings.reload_interval_s <= 0:
        return "off"
    return f"every {settings.reload_interval_s:g} s"
