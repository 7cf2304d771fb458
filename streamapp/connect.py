"""Reaching the brokers: one probe and one message, for the worker and the command-line clients.

aiokafka's own words for a broker that is not there ("Unable to bootstrap from
[('127.0.0.1', 9092, <AddressFamily.AF_UNSPEC: 0>)]", then a stream of "Unable connect to node"
lines) name neither the setting nor what to do; these say both, in one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

from aiokafka import AIOKafkaClient
from aiokafka.errors import KafkaConnectionError, KafkaError

from streamapp.security import aiokafka_security, bootstrap_servers
from streamapp.settings import Settings

# The worker's first look at the broker: a refused port answers at once; a host that drops
# packets must not keep the operator waiting for aiokafka's 40 s default.
PROBE_TIMEOUT_MS = 5000
RETRY_INTERVAL_S = 2.0


def unreachable(broker: str, exc: BaseException) -> str:
    """The one line that says which setting points where, and what went wrong."""
    reason = str(exc) or type(exc).__name__
    if "Unable to bootstrap" in reason:
        reason = "no broker answers there (connection refused, or no route to it)"
    return (f"cannot reach the Kafka broker at {bootstrap_servers(broker)} "
            f"(STREAMAPP_BROKER={broker}): {reason}")


class _BootstrapNoise(logging.Filter):
    """Drops aiokafka's per-host 'Unable connect to "host:port"' error at bootstrap: the
    caller reports a failed bootstrap itself, in one line that names the setting."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Unable connect to \"")


@contextlib.contextmanager
def quiet_bootstrap() -> Iterator[None]:
    noise = _BootstrapNoise()
    logger = logging.getLogger("aiokafka")  # aiokafka.client logs as "aiokafka"
    logger.addFilter(noise)
    try:
        yield
    finally:
        logger.removeFilter(noise)


async def probe(settings: Settings, timeout_ms: int = PROBE_TIMEOUT_MS) -> None:
    """Connect to the bootstrap servers and fetch metadata once; raises KafkaError if not."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap_servers(settings.broker),
                            request_timeout_ms=timeout_ms, **aiokafka_security(settings))
    try:
        await asyncio.wait_for(client.bootstrap(), timeout_ms / 1000)
    except TimeoutError as exc:
        raise KafkaConnectionError(f"no answer within {timeout_ms / 1000:g} s") from exc
    finally:
        await client.close()


async def wait_for_broker(settings: Settings, log: logging.Logger,
                          interval_s: float = RETRY_INTERVAL_S) -> int:
    """Probe until the broker answers, one error line per failed attempt; returns the attempts.

    A long-running consumer keeps trying, as Kafka's own clients do (README, "Running a
    worker"): a worker started before its broker, or during a broker restart, comes up by itself.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            with quiet_bootstrap():
                await probe(settings)
        except (KafkaError, OSError) as exc:
            log.error("%s; retrying in %g s (attempt %d)", unreachable(settings.broker, exc),
                      interval_s, attempt)
            await asyncio.sleep(interval_s)
            continue
        if attempt > 1:
            log.warning("Kafka broker at %s reachable after %d attempts",
                        bootstrap_servers(settings.broker), attempt)
        return attempt


def is_unreachable(exc: BaseException) -> bool:
    """An error that means the client never got to talk to a broker."""
    return isinstance(exc, KafkaConnectionError)

