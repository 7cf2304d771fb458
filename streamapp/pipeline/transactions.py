"""STREAMAPP_GUARANTEE=exactly_once: a batch's outputs and its source offsets in one transaction.

The batch intake (streamapp.pipeline.intake) opens a Kafka transaction per fetched batch on
aiokafka's transactional producer, produces the batch's results, dead letters and counts in it,
adds the batch's next offsets with `send_offsets_to_transaction` and commits. A `read_committed`
consumer then sees each comment's outputs once, whatever moment a worker is killed at: a batch
whose transaction did not commit is aborted (when a producer with the same transactional id
starts, or after the transaction timeout) and read again from the committed offsets.

A broker without transactions (the embedded development broker refuses InitProducerId) stops
the worker at start (streamapp.pipeline.startup) with one line that says so, before it
consumes anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
    UnknownError,
    UnsupportedVersionError,
)

if TYPE_CHECKING:
    from streamapp.settings import Settings

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0  # InitProducerId retries forever while no transaction coordinator answers

# What a broker without (usable) transactions answers InitProducerId with: Tansu (the embedded
# broker) UnknownError at once; an old broker UnsupportedVersion; a secured one the ACL errors.
_REFUSALS = (UnknownError, UnsupportedVersionError, TransactionalIdAuthorizationFailed,
             ClusterAuthorizationFailedError, asyncio.TimeoutError)


class TransactionsRefused(Exception):
    """The broker will not run transactions for this worker."""


def transactional_id(settings: Settings) -> str:
    """Stable with STREAMAPP_INSTANCE_ID: a restarted worker fences its killed predecessor and
    aborts its open transaction at once, instead of after the transaction timeout."""
    return f"{settings.app_id}-intake-{settings.instance_id or uuid.uuid4().hex}"


async def start_transactional_producer(settings: Settings) -> AIOKafkaProducer:
    """A started transactional producer (InitProducerId done), or TransactionsRefused."""
    from streamapp.security import aiokafka_security, bootstrap_servers

    # An open transaction of a killed worker holds back read_committed readers of every
    # partition it wrote to until it is aborted: keep that as short as a session.
    timeout_ms = max(int(settings.session_timeout_s * 1000), 1000)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers(settings.broker),
        client_id=f"{settings.app_id}-intake", transactional_id=transactional_id(settings),
        enable_idempotence=True, acks="all", linger_ms=5, transaction_timeout_ms=timeout_ms,
        max_batch_size=settings.producer_batch_bytes,
        **aiokafka_security(settings))
    try:
        with _quiet(logging.getLogger("aiokafka.producer.sender")):  # the refusal is ours to say
            await asyncio.wait_for(producer.start(), START_TIMEOUT_S)
    except _REFUSALS as exc:
        await producer.stop()
        why = (f"no transaction coordinator answered within {START_TIMEOUT_S:.0f} s"
               if isinstance(exc, asyncio.TimeoutError)
               else f"InitProducerId refused: {type(exc).__name__}")
        raise TransactionsRefused(
            f"STREAMAPP_GUARANTEE=exactly_once needs a broker with transactions, and the broker "
            f"at {settings.broker} has none ({why}); use a Kafka broker with transactions or "
            f"STREAMAPP_GUARANTEE=at_least_once") from None
    log.info("exactly_once: transactional producer %s ready",
             producer._txn_manager.transactional_id)
    return producer


@contextlib.contextmanager
def _quiet(logger: logging.Logger) -> Iterator[None]:
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)
