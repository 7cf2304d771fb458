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
from typing import Protocol

log = logging.getLogger(__name__)


class PairScorer(Protocol):
    """What the engine needs of a model: match probabilities for (review, SKU name) pairs."""

    def predict(self, reviews: Sequence[str], sku_names: Sequence[str]) -> list[float]: ...


@dataclass(frozen=True)
class ModelFailure:
    """The model raised on this record alone (found by bisecting its batch)."""

    error: str


Outcome = float | ModelFailure


class InferenceEngine:
    def __init__(self, scorer: PairScorer) -> None:
        self.scorer = scorer
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamapp-model")

    def _predict_checked(self, reviews: Sequence[str], skus: Sequence[str]) -> list[float]:
        scores = self.scorer.predict(reviews, skus)
        if len(scores) != len(reviews):
            raise ValueError(f"model returned {len(scores)} scores for {len(reviews)} inputs")
        for score in scores:
            if not 0.0 <= score <= 1.0:  # also catches NaN
                raise ValueError(f"model returned score {score!r}, outside 0..1")
        return scores

    async def score(self, reviews: Sequence[str], skus: Sequence[str]) -> list[Outcome]:
        """A score per pair, or a ModelFailure for each pair the model cannot score.

        Never raises: when a batch fails it is split in halves and retried, so one poisonous
        record costs about 2*log2(n) extra calls and only that record fails.
        """
        if not reviews:
            return []
        loop = asyncio.get_running_loop()
        try:
            return list(
                await loop.run_in_executor(self._executor, self._predict_checked, reviews, skus)
            )
        except Exception as exc:
            if len(reviews) == 1:
                log.warning("model failed on one record: %r", exc)
                return [ModelFailure(f"{type(exc).__name__}: {exc}")]
            mid = len(reviews) // 2
            left = await self.score(reviews[:mid], skus[:mid])
            right = await self.score(reviews[mid:], skus[mid:])
            return left + right

    def close(self) -> None:
        self._executor.shutdown(wait=True)
