"""Runs the model on micro-batches off the event loop, isolating records that make it fail.

The Faust event loop must keep heartbeating, fetching and serving the web view while the model
computes, so every model call goes to one dedicated thread (torch releases the GIL in its
kernels). Tokenizing runs in a thread of its own, so the next batch is tokenized while the
model computes this one; on a CPU two model threads compute two batches at once
(STREAMAPP_MODEL_THREADS, streamapp.serving.manager.batches_at_once), and a batch long enough
to pay for it is cut into one part per model thread, so that a batch computing alone (the last
of a backlog, or any batch at low load) still has every thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import torch

from streamapp.records import Reason
from streamapp.serving.outcomes import (  # noqa: F401 (the engine's API, defined torch-free)
    BatchTiming,
    ModelFailure,
    Outcome,
    Scored,
    score_of,
)
from streamapp.serving.scores import ScoreError

log = logging.getLogger(__name__)

# A batch is cut into parts for the model threads only where each part would compute at least
# this long, by the time per record measured so far: a call's fixed cost then stays small.
# On the 2-core AMD EPYC (BENCHMARKS.md, "Probes", session 16): BERT-base shape, a batch of
# 55 on one thread 6.8 s, in two halves on two threads 3.5 s, two batches cut in halves 7.2 s
# against 7.1 whole; the demo model's 64 in 52 ms whole and 33 ms in halves, but two batches
# in halves 8% slower than whole.
SPLIT_MIN_PART_S = 0.1


def failure(exc: BaseException) -> ModelFailure:
    """A record's failure: output that cannot be read as a score, or the model raising."""
    if isinstance(exc, ScoreError):
        return ModelFailure(f"the model's output cannot be read as a score: {exc}",
                            Reason.BAD_MODEL_OUTPUT)
    return ModelFailure(f"{type(exc).__name__}: {exc}", Reason.MODEL_ERROR)


class BatchModel(Protocol):
    """What the engine runs, in two stages: `prepare` (tokenizing) in the tokenizer thread,
    `finish` (the model) in the model thread; either may raise for the whole batch. A model
    whose `overlap_stages` is false has both run in the model thread."""

    def prepare(self, requests: Sequence[dict[str, Any]], timing: BatchTiming) -> Any: ...

    def finish(self, prepared: Any, requests: Sequence[dict[str, Any]],
               timing: BatchTiming) -> list[Outcome]: ...


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError | torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


class InferenceEngine:
    """The model thread, with batch bisection on failure and a batch size that adapts to
    memory: an out-of-memory error halves the largest batch the model is given, and after
    `recover_after` good batches in a row it doubles again, up to `max_batch`."""

    def __init__(self, max_batch: int = 4096, recover_after: int = 50,
                 model_threads: int = 1) -> None:
        # Model threads: one, or several for a model whose batches may run at once
        # (STREAMAPP_MODEL_THREADS); a model that may not is given one batch at a time.
        self._executor = ThreadPoolExecutor(max_workers=model_threads,
                                            thread_name_prefix="streamapp-model")
        self.model_threads = model_threads
        self._one_at_a_time = asyncio.Lock()
        # Tokenizing the next batch while the model computes this one (batches in flight,
        # STREAMAPP_PIPELINE_DEPTH): on a GPU the CPU work then hides behind the kernels.
        self._tokenizer = ThreadPoolExecutor(max_workers=1,
                                             thread_name_prefix="streamapp-tokenizer")
        self.max_batch = max_batch
        self.limit = max_batch
        self.recover_after = recover_after
        self.out_of_memory = 0
        self._good_in_a_row = 0
        self._seconds_per_record: float | None = None  # a model thread's, running average

    def _on_success(self) -> None:
        self._good_in_a_row += 1
        if self.limit < self.max_batch and self._good_in_a_row >= self.recover_after:
            self.limit = min(self.max_batch, self.limit * 2)
            self._good_in_a_row = 0
            log.info("batch limit raised to %d after %d good batches", self.limit,
                     self.recover_after)

    def _on_out_of_memory(self, size: int) -> None:
        self.out_of_memory += 1
        self._good_in_a_row = 0
        self.limit = max(1, min(self.limit, size) // 2)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # give the failed batch's memory back before the retry
        log.warning("out of memory on a batch of %d: batch limit now %d", size, self.limit)

    def _finish_checked(self, model: BatchModel, prepared: Any,
                        requests: Sequence[dict[str, Any]],
                        timing: BatchTiming) -> list[Outcome]:
        started = time.perf_counter()
        outcomes = model.finish(prepared, requests, timing)
        per_record = (time.perf_counter() - started) / max(len(requests), 1)
        before = self._seconds_per_record
        self._seconds_per_record = per_record if before is None else \
            0.8 * before + 0.2 * per_record
        if len(outcomes) != len(requests):
            raise ScoreError(f"model returned {len(outcomes)} scores for {len(requests)} inputs")
        for outcome in outcomes:
            if not isinstance(outcome, ModelFailure) and not 0.0 <= score_of(outcome) <= 1.0:
                raise ScoreError(f"model returned score {outcome!r}, outside 0..1")  # or NaN
        return outcomes

    async def score(self, model: BatchModel, requests: Sequence[dict[str, Any]],
                    timing: BatchTiming | None = None) -> list[Outcome]:
        """An outcome per request, in order. Never raises."""
        timing = timing if timing is not None else BatchTiming()
        outcomes: list[Outcome] = []
        start = 0
        while start < len(requests):
            chunk = requests[start:start + self.limit]  # the limit may shrink in between
            outcomes += await self._score_in_parts(model, chunk, timing)
            start += len(chunk)
        return outcomes

    def parts_for(self, model: BatchModel, size: int) -> int:
        """How many parts a batch of `size` is computed in: one per model thread, for a model
        whose batches may run at once, as long as each part computes SPLIT_MIN_PART_S."""
        per_record = self._seconds_per_record
        if self.model_threads < 2 or per_record is None or \
                not getattr(model, "concurrent_batches", False):
            return 1
        parts = min(self.model_threads, size)
        while parts > 1 and size / parts * per_record < SPLIT_MIN_PART_S:
            parts -= 1
        return parts

    async def _score_in_parts(self, model: BatchModel, requests: Sequence[dict[str, Any]],
                              timing: BatchTiming) -> list[Outcome]:
        # The parts queue for the model threads with any other batch's: no thread computes
        # more than one part at a time, so nothing oversubscribes the cores.
        parts = self.parts_for(model, len(requests))
        if parts == 1:
            return await self._score(model, requests, timing)
        size = len(requests)
        cut = [requests[i * size // parts:(i + 1) * size // parts] for i in range(parts)]
        timings = [BatchTiming() for _ in cut]
        scored = await asyncio.gather(*(self._score(model, part, part_timing)
                                        for part, part_timing in zip(cut, timings, strict=True)))
        timing.add_parts(timings)
        return [outcome for part in scored for outcome in part]

    async def _score(self, model: BatchModel, requests: Sequence[dict[str, Any]],
                     timing: BatchTiming) -> list[Outcome]:
        """When a batch fails it is split in halves and retried, so one poisonous record
        costs about 2*log2(n) extra calls and only that record fails."""
        loop = asyncio.get_running_loop()
        stage_one = self._tokenizer if getattr(model, "overlap_stages", True) else self._executor
        alone = self.model_threads > 1 and not getattr(model, "concurrent_batches", False)
        try:
            async with self._one_at_a_time if alone else contextlib.nullcontext():
                prepared = await loop.run_in_executor(stage_one, model.prepare, requests, timing)
                outcomes = await loop.run_in_executor(self._executor, self._finish_checked,
                                                      model, prepared, requests, timing)
        except Exception as exc:
            if is_out_of_memory(exc):
                self._on_out_of_memory(len(requests))
            if len(requests) == 1:
                log.warning("model failed on one record: %r", exc)
                return [failure(exc)]
            mid = len(requests) // 2
            left = await self._score(model, requests[:mid], timing)
            right = await self._score(model, requests[mid:], timing)
            return left + right
        self._on_success()
        return outcomes

    def close(self) -> None:
        self._tokenizer.shutdown(wait=True)
        self._executor.shutdown(wait=True)
