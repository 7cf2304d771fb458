"""Runs the model on micro-batches off the event loop, isolating records that make it fail.

The Faust event loop must keep heartbeating, fetching and serving the web view while the model
computes, so every model call goes to one dedicated thread (torch releases the GIL in its
kernels, and one thread keeps batches in order and the model's memory single).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from streamapp.model.scores import ScoreError
from streamapp.records import Reason

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelFailure:
    """The model could not score this record (found alone by bisecting its batch)."""

    error: str
    reason: str = Reason.MODEL_ERROR


Outcome = float | ModelFailure


@dataclass
class BatchTiming:
    """Where a batch's model time went; filled in the model thread (bisection adds up)."""

    preprocess_s: float = 0.0
    process_s: float = 0.0
    tokens: int = 0  # real tokens, when the preprocessed batch has an attention mask
    padded_tokens: int = 0  # tokens including padding


def failure(exc: BaseException) -> ModelFailure:
    """A record's failure: output that cannot be read as a score, or the model raising."""
    if isinstance(exc, ScoreError):
        return ModelFailure(f"the model's output cannot be read as a score: {exc}",
                            Reason.BAD_MODEL_OUTPUT)
    return ModelFailure(f"{type(exc).__name__}: {exc}", Reason.MODEL_ERROR)


class BatchModel(Protocol):
    """What the engine runs: one outcome per request, or an exception for the whole batch."""

    def run(self, requests: Sequence[dict[str, Any]],
            timing: BatchTiming | None = None) -> list[Outcome]: ...


class InferenceEngine:
    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamapp-model")

    def _run_checked(self, model: BatchModel, requests: Sequence[dict[str, Any]],
                     timing: BatchTiming | None) -> list[Outcome]:
        outcomes = model.run(requests, timing)
        if len(outcomes) != len(requests):
            raise ScoreError(f"model returned {len(outcomes)} scores for {len(requests)} inputs")
        for outcome in outcomes:
            if not isinstance(outcome, ModelFailure) and not 0.0 <= outcome <= 1.0:
                raise ScoreError(f"model returned score {outcome!r}, outside 0..1")  # or NaN
        return outcomes

    async def score(self, model: BatchModel, requests: Sequence[dict[str, Any]],
                    timing: BatchTiming | None = None) -> list[Outcome]:
        """An outcome per request, in order. Never raises.

        When a batch fails it is split in halves and retried, so one poisonous record costs
        about 2*log2(n) extra calls and only that record fails.
        """
        if not requests:
            return []
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._run_checked, model,
                                              requests, timing)
        except Exception as exc:
            if len(requests) == 1:
                log.warning("model failed on one record: %r", exc)
                return [failure(exc)]
            mid = len(requests) // 2
            left = await self.score(model, requests[:mid], timing)
            right = await self.score(model, requests[mid:], timing)
            return left + right

    def close(self) -> None:
        self._executor.shutdown(wait=True)
