"""Tests for the inference engine (off-loop model calls, failure isolation) and the counters."""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import Awaitable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import orjson
import pytest
import torch

from streamapp.pipeline.counts import (
    CATEGORY,
    PATH,
    BatchTally,
    merge_counts,
    split_key,
    stats_entries,
    stats_key,
)
from streamapp.pipeline.stats import BatchReport, WorkerStats
from streamapp.records import Reason
from streamapp.serving.engine import BatchTiming, InferenceEngine, ModelFailure, Outcome

POISON = "☠ poison"


def expected_score(review: str, sku: str) -> float:
    """What TextScorer gives: depends on both texts, so misaligned pairs would show."""
    return (sum(map(ord, review)) * 7 + sum(map(ord, sku))) % 101 / 100


class TextScorer:
    """Deterministic scorer; records every batch it sees and the thread it ran on."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.threads: set[int] = set()
        self.thread_names: set[str] = set()

    def predict(self, reviews: Sequence[str], sku_names: Sequence[str]) -> list[float]:
        assert len(reviews) == len(sku_names)
        self.batches.append(list(reviews))
        self.threads.add(threading.get_ident())
        self.thread_names.add(threading.current_thread().name)
        return [expected_score(r, s) for r, s in zip(reviews, sku_names, strict=True)]


class PoisonScorer(TextScorer):
    """Raises on any batch holding a poison review, like a model hitting a bad input."""

    def predict(self, reviews: Sequence[str], sku_names: Sequence[str]) -> list[float]:
        scores = super().predict(reviews, sku_names)
        if any(POISON in r for r in reviews):
            raise RuntimeError("CUDA error: device-side assert triggered")
        return scores


class AlwaysFails(TextScorer):
    def predict(self, reviews: Sequence[str], sku_names: Sequence[str]) -> list[float]:
        super().predict(reviews, sku_names)
        raise MemoryError("model exploded")


class OneScoreTooMany(TextScorer):
    def predict(self, reviews: Sequence[str], sku_names: Sequence[str]) -> list[float]:
        return [*super().predict(reviews, sku_names), 0.5]


class BadValueScorer(TextScorer):
    """Returns `bad` for the review "bad", real scores for the rest."""

    def __init__(self, bad: float) -> None:
        super().__init__()
        self.bad = bad

    def predict(self, reviews: Sequence[str], sku_names: Sequence[str]) -> list[float]:
        scores = super().predict(reviews, sku_names)
        return [self.bad if r == "bad" else s for r, s in zip(reviews, scores, strict=True)]


class SlowScorer(TextScorer):
    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def predict(self, reviews: Sequence[str], sku_names: Sequence[str]) -> list[float]:
        time.sleep(self.seconds)  # blocks whatever thread it runs on, as a model would
        return super().predict(reviews, sku_names)


class PairScorer(Protocol):
    def predict(self, reviews: Sequence[str], sku_names: Sequence[str]) -> list[float]: ...


class ScorerModel:
    """The engine's BatchModel over a pair scorer: what a batch handler amounts to."""

    def __init__(self, scorer: PairScorer) -> None:
        self.scorer = scorer

    def prepare(self, requests: Sequence[dict[str, Any]], timing: BatchTiming) -> None:
        return None

    def finish(self, prepared: None, requests: Sequence[dict[str, Any]],
               timing: BatchTiming) -> list[Outcome]:
        return list(self.scorer.predict([r["input"] for r in requests],
                                        [r["baseSkuName"] for r in requests]))


def score(engine: InferenceEngine, scorer: PairScorer, reviews: Sequence[str],
          skus: Sequence[str]) -> Awaitable[list[Outcome]]:
    requests = [{"input": r, "baseSkuName": s} for r, s in zip(reviews, skus, strict=True)]
    return engine.score(ScorerModel(scorer), requests)


def run_scores(scorer: PairScorer, reviews: Sequence[str], skus: Sequence[str]) -> list[Outcome]:
    engine = InferenceEngine()
    try:
        return asyncio.run(score(engine, scorer, reviews, skus))
    finally:
        engine.close()


def pairs(n: int) -> tuple[list[str], list[str]]:
    reviews = [f"评论 {i}：苹果很甜" for i in range(n)]
    skus = [f"红富士苹果 {i}斤装" for i in range(n)]
    return reviews, skus


# --- results and failure isolation ------------------------------------------------------


def test_scores_come_back_in_order_in_one_call() -> None:
    reviews, skus = pairs(10)
    scorer = TextScorer()
    outcomes = run_scores(scorer, reviews, skus)
    assert outcomes == [expected_score(r, s) for r, s in zip(reviews, skus, strict=True)]
    assert len(set(outcomes)) > 1, "the test scorer must tell records apart"
    assert scorer.batches == [reviews]


def test_empty_input_never_calls_the_model() -> None:
    scorer = TextScorer()
    assert run_scores(scorer, [], []) == []
    assert scorer.batches == []


@pytest.mark.parametrize(("n", "poisoned"), [(8, {5}), (13, {0}), (13, {12}), (1, {0}),
                                             (16, {3, 4, 11}), (7, {0, 1, 2, 3, 4, 5, 6})])
def test_poison_records_are_isolated(n: int, poisoned: set[int]) -> None:
    reviews, skus = pairs(n)
    for i in poisoned:
        reviews[i] = f"{POISON} {i}"
    scorer = PoisonScorer()
    outcomes = run_scores(scorer, reviews, skus)
    assert len(outcomes) == n
    for i, (outcome, review, sku) in enumerate(zip(outcomes, reviews, skus, strict=True)):
        if i in poisoned:
            assert outcome == ModelFailure("RuntimeError: CUDA error: device-side assert triggered")
        else:
            assert outcome == expected_score(review, sku), i
    # Every record the model saw was scored at most once in a batch that succeeded.
    scored = [r for batch in scorer.batches if not any(POISON in x for x in batch) for r in batch]
    assert sorted(scored) == sorted(r for i, r in enumerate(reviews) if i not in poisoned)


def test_one_poison_record_costs_about_two_log2_n_extra_calls() -> None:
    n = 64
    reviews, skus = pairs(n)
    reviews[37] = POISON
    scorer = PoisonScorer()
    outcomes = run_scores(scorer, reviews, skus)
    assert [i for i, o in enumerate(outcomes) if isinstance(o, ModelFailure)] == [37]
    assert len(scorer.batches) <= 1 + 2 * math.ceil(math.log2(n))


def test_always_failing_model_gives_a_failure_per_record_and_never_raises() -> None:
    reviews, skus = pairs(9)
    outcomes = run_scores(AlwaysFails(), reviews, skus)
    assert outcomes == [ModelFailure("MemoryError: model exploded")] * 9


def test_wrong_number_of_scores_is_a_failure() -> None:
    reviews, skus = pairs(4)
    outcomes = run_scores(OneScoreTooMany(), reviews, skus)
    assert len(outcomes) == 4
    for outcome in outcomes:
        assert isinstance(outcome, ModelFailure)
        assert "returned 2 scores for 1 inputs" in outcome.error


@pytest.mark.parametrize("bad", [math.nan, 1.5, -0.01, math.inf, -math.inf])
def test_score_outside_zero_to_one_is_a_failure_of_that_record_only(bad: float) -> None:
    reviews, skus = pairs(6)
    reviews[2] = "bad"
    outcomes = run_scores(BadValueScorer(bad), reviews, skus)
    failure = outcomes[2]
    assert isinstance(failure, ModelFailure)
    assert failure.reason == Reason.BAD_MODEL_OUTPUT
    assert "outside 0..1" in failure.error
    for i in (0, 1, 3, 4, 5):
        assert outcomes[i] == expected_score(reviews[i], skus[i])


@pytest.mark.parametrize("edge", [0.0, 1.0])
def test_scores_of_exactly_zero_and_one_are_fine(edge: float) -> None:
    reviews, skus = pairs(3)
    reviews[1] = "bad"
    assert run_scores(BadValueScorer(edge), reviews, skus)[1] == edge


# --- the model runs off the event loop --------------------------------------------------


def test_model_runs_on_one_dedicated_thread_not_the_loop() -> None:
    scorer = PoisonScorer()
    reviews, skus = pairs(8)
    reviews[3] = POISON  # bisecting makes several calls: all must be on the same thread
    engine = InferenceEngine()

    async def main() -> int:
        await score(engine, scorer, reviews, skus)
        await score(engine, scorer, *pairs(2))
        return threading.get_ident()

    try:
        loop_thread = asyncio.run(main())
    finally:
        engine.close()
    assert len(scorer.batches) > 3
    assert len(scorer.threads) == 1
    assert loop_thread not in scorer.threads
    assert threading.get_ident() not in scorer.threads
    (name,) = scorer.thread_names
    assert name.startswith("streamapp-model")


def test_event_loop_stays_responsive_while_the_model_computes() -> None:
    scorer = SlowScorer(0.3)
    engine = InferenceEngine()

    async def main() -> tuple[list[Outcome], int, float]:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        started = time.monotonic()
        outcomes = await score(engine, scorer, *pairs(3))
        elapsed = time.monotonic() - started
        stop.set()
        await task
        return outcomes, ticks, elapsed

    try:
        outcomes, ticks, elapsed = asyncio.run(main())
    finally:
        engine.close()
    assert len(outcomes) == 3 and not any(isinstance(o, ModelFailure) for o in outcomes)
    assert elapsed >= 0.3
    # About 30 ticks fit in 0.3 s; a model blocking the loop would allow at most one.
    assert ticks >= 10


# --- the real model ---------------------------------------------------------------------


@pytest.mark.slow
def test_real_model_through_the_engine(tiny_model: Path) -> None:
    from streamapp.demo.synthetic import generate_comments
    from streamapp.serving.formats.huggingface import SkuMatchClassifier

    classifier = SkuMatchClassifier.load(tiny_model, device="cpu")
    rows = list(generate_comments(24, seed=11))
    reviews = [str(r["reviewBody"]) for r in rows]
    skus = [str(r["baseSkuName"]) for r in rows]
    direct = classifier.predict(reviews, skus)
    outcomes = run_scores(classifier, reviews, skus)
    assert all(isinstance(o, float) and 0.0 <= o <= 1.0 for o in outcomes)
    assert outcomes == pytest.approx(direct, abs=1e-6)

    class PoisonedClassifier:
        """The real model, failing on one review as a model bug would."""

        def predict(self, reviews: Sequence[str], sku_names: Sequence[str]) -> list[float]:
            if reviews_poisoned[5] in reviews:
                raise RuntimeError("poisoned")
            return classifier.predict(reviews, sku_names)

    reviews_poisoned = [*reviews]
    reviews_poisoned[5] = "坏数据" * 50
    outcomes = run_scores(PoisonedClassifier(), reviews_poisoned, skus)
    assert outcomes[5] == ModelFailure("RuntimeError: poisoned")
    others = [o for i, o in enumerate(outcomes) if i != 5]
    # Smaller batches pad differently; the attention mask keeps the scores the same.
    assert others == pytest.approx([d for i, d in enumerate(direct) if i != 5], abs=1e-4)


# --- counters ---------------------------------------------------------------------------


def test_stats_keys() -> None:
    assert stats_key(CATEGORY, "生鲜") == "category:生鲜"
    assert split_key("path:生鲜/水果") == ("path", "生鲜/水果")
    assert split_key(stats_key(PATH, "a:b")) == (PATH, "a:b")


def test_stats_messages_hold_many_keys_and_the_earlier_single_key_form_still_reads() -> None:
    grouped = orjson.dumps({"category:生鲜": {"seen": 3, "matched": 1},
                            "path:生鲜/水果": {"seen": 3}})
    assert stats_entries(None, grouped) == {"category:生鲜": {"seen": 3, "matched": 1},
                                            "path:生鲜/水果": {"seen": 3}}
    assert stats_entries(b"dead_letter:invalid_json", b'{"seen":1}') == {
        "dead_letter:invalid_json": {"seen": 1}}


def test_batch_tally() -> None:
    tally = BatchTally()
    tally.add("生鲜", "生鲜/水果", predicted=True, matched=True)
    tally.add("生鲜", "生鲜/蔬菜", predicted=True, matched=False)
    tally.add("生鲜", "生鲜/水果", predicted=False, matched=False)
    tally.add("(none)", "(none)", predicted=True, matched=True)
    assert dict(tally.items()) == {
        "category:生鲜": {"seen": 3, "predicted": 2, "matched": 1, "failed": 1},
        "path:生鲜/水果": {"seen": 2, "predicted": 1, "matched": 1, "failed": 1},
        "path:生鲜/蔬菜": {"seen": 1, "predicted": 1},
        "category:(none)": {"seen": 1, "predicted": 1, "matched": 1},
        "path:(none)": {"seen": 1, "predicted": 1, "matched": 1},
    }
    assert BatchTally().items() == []


def test_merge_counts() -> None:
    delta = {"seen": 2, "matched": 1}
    assert merge_counts(None, delta) == {"seen": 2, "matched": 1}
    current = {"seen": 5, "failed": 1}
    merged = merge_counts(current, delta)
    assert merged == {"seen": 7, "failed": 1, "matched": 1}
    assert current == {"seen": 5, "failed": 1}, "the stored value must not be changed in place"
    assert delta == {"seen": 2, "matched": 1}
    assert merge_counts({}, {}) == {}


def report(size: int, predicted: int, model_seconds: float) -> BatchReport:
    return BatchReport(
        finished_at=time.time(), size=size, predicted=predicted, matched=0,
        failed=size - predicted, model_name="m", model_version="1", queue_ms=[],
        end_to_end_ms=[], preprocess_s=0.0, process_s=model_seconds, batch_s=model_seconds,
        tokens=0, padded_tokens=0, counts=[])


def test_worker_stats_snapshot() -> None:
    empty = WorkerStats().snapshot()
    assert empty["batches"] == 0
    assert empty["mean_batch_size"] == 0.0
    assert empty["records_per_second"] == 0.0

    stats = WorkerStats()
    stats.on_batch(report(10, predicted=9, model_seconds=0.5))
    stats.on_batch(report(30, predicted=30, model_seconds=0.25))
    stats.on_dead_letter("comments:0:1", "invalid_json", "not JSON")
    snap = stats.snapshot()
    assert snap["batches"] == 2
    assert snap["records"] == 40
    assert snap["predicted"] == 39
    assert snap["dead_letters"] == 1
    assert snap["mean_batch_size"] == 20.0
    assert snap["max_batch_size"] == 30
    assert snap["model_seconds"] == 0.75
    # Both batches finished just now: the rate is spread over at least one second.
    assert snap["records_per_second"] == 40.0
    assert snap["batches_per_second"] == 2.0
    assert 0 <= snap["uptime_s"] < 5


def test_worker_stats_rate_window() -> None:
    stats = WorkerStats()
    now = time.monotonic()
    stats.recent.extend([(now - 120, 1000), (now - 10, 50), (now, 50)])
    assert stats.records_per_second(window=60) == pytest.approx(10.0, rel=0.05)
    assert stats.batches_per_second(window=60) == pytest.approx(0.2, rel=0.05)
    assert len(stats.recent) == 2, "batches older than the window are dropped"
    assert stats.records_per_second(window=5) == pytest.approx(50.0, rel=0.05)


class RunsOutOfMemoryAbove:
    """A model that runs out of memory on batches larger than `fits`, as a GPU would."""

    def __init__(self, fits: int) -> None:
        self.fits = fits
        self.sizes: list[int] = []

    def prepare(self, requests: Sequence[dict[str, Any]], timing: BatchTiming) -> None:
        return None

    def finish(self, prepared: None, requests: Sequence[dict[str, Any]],
               timing: BatchTiming) -> list[Outcome]:
        self.sizes.append(len(requests))
        if len(requests) > self.fits:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [0.5] * len(requests)


def test_out_of_memory_splits_the_batch_and_adapts_the_batch_size_then_recovers() -> None:
    model = RunsOutOfMemoryAbove(fits=8)
    engine = InferenceEngine(max_batch=64, recover_after=3)
    requests = [{"input": str(i)} for i in range(64)]

    async def main() -> list[list[Outcome]]:
        return [await engine.score(model, requests) for _ in range(3)]

    try:
        first, second, third = asyncio.run(main())
    finally:
        engine.close()
    assert first == second == third == [0.5] * 64, "nothing lost to out-of-memory"
    assert engine.out_of_memory >= 1
    # After the first batch the engine only sends what fits: 8 at a time, no more errors...
    after_first = model.sizes[model.sizes.index(8):]
    assert max(model.sizes[len(model.sizes) - 16:]) <= 16
    assert engine.limit in (8, 16)
    # ...and every `recover_after` good batches it tries twice as many again.
    assert 16 in after_first, "the batch size is raised again after good batches"


def test_out_of_memory_is_recognised_in_its_usual_forms() -> None:
    from streamapp.serving.engine import is_out_of_memory

    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("[enforce fail] DefaultCPUAllocator: out of memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


class WaitsForTheNextBatch:
    """A model whose first batch only finishes once the second has been prepared."""

    def __init__(self) -> None:
        self.second_prepared = threading.Event()

    def prepare(self, requests: Sequence[dict[str, Any]], timing: BatchTiming) -> None:
        if requests[0]["input"] == "second":
            self.second_prepared.set()

    def finish(self, prepared: None, requests: Sequence[dict[str, Any]],
               timing: BatchTiming) -> list[Outcome]:
        if requests[0]["input"] == "first" and not self.second_prepared.wait(10):
            raise RuntimeError("the next batch was not tokenized while this one computed")
        return [0.5] * len(requests)


def test_the_next_batch_is_tokenized_while_the_model_computes() -> None:
    model = WaitsForTheNextBatch()
    engine = InferenceEngine()

    async def main() -> list[list[Outcome]]:
        return list(await asyncio.gather(engine.score(model, [{"input": "first"}]),
                                         engine.score(model, [{"input": "second"}])))

    try:
        assert asyncio.run(main()) == [[0.5], [0.5]]
    finally:
        engine.close()


class Occupancy:
    """How many model calls are inside `finish` at once, and the most there ever were."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def inside(self) -> Iterator[None]:
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            yield
        finally:
            with self._lock:
                self.now -= 1


class MeetsTheOtherBatch:
    """A model whose batches each wait inside `finish` until the other one is there too: they
    finish only when two batches compute at once."""

    def __init__(self, concurrent: bool) -> None:
        self.concurrent_batches = concurrent
        self.both_in = threading.Barrier(2, timeout=2)
        self.occupancy = Occupancy()

    def prepare(self, requests: Sequence[dict[str, Any]], timing: BatchTiming) -> None:
        return None

    def finish(self, prepared: None, requests: Sequence[dict[str, Any]],
               timing: BatchTiming) -> list[Outcome]:
        with self.occupancy.inside():
            try:
                self.both_in.wait()
                return [0.5] * len(requests)
            except threading.BrokenBarrierError:
                return [0.25] * len(requests)  # alone: the other batch never came in beside it


@pytest.mark.parametrize("concurrent", [True, False])
def test_two_model_threads_compute_two_batches_at_once_only_for_a_model_that_allows_it(
        concurrent: bool) -> None:
    model = MeetsTheOtherBatch(concurrent)
    engine = InferenceEngine(model_threads=2)

    async def main() -> list[list[Outcome]]:
        return list(await asyncio.gather(engine.score(model, [{"input": "a"}]),
                                         engine.score(model, [{"input": "b"}])))

    try:
        outcomes = asyncio.run(main())
    finally:
        engine.close()
    if concurrent:
        assert outcomes == [[0.5], [0.5]] and model.occupancy.most == 2
    else:
        assert model.occupancy.most == 1 and outcomes == [[0.25], [0.25]]


class TakesItsTime:
    """A model that sleeps `per_record` seconds a record (the GIL let go, as torch's kernels
    do), scores each request by its index and reports one `process_s` a record."""

    concurrent_batches = True

    def __init__(self, per_record: float) -> None:
        self.per_record = per_record
        self.calls: list[list[int]] = []
        self.occupancy = Occupancy()

    def prepare(self, requests: Sequence[dict[str, Any]], timing: BatchTiming) -> None:
        return None

    def finish(self, prepared: None, requests: Sequence[dict[str, Any]],
               timing: BatchTiming) -> list[Outcome]:
        self.calls.append([r["i"] for r in requests])  # list.append holds the GIL
        with self.occupancy.inside():
            time.sleep(self.per_record * len(requests))
        timing.process_s += len(requests)
        timing.tokens += len(requests)
        return [r["i"] / 100 for r in requests]


@pytest.mark.parametrize(("per_record", "parts"), [(0.1, 2), (0.0, 1)])
def test_a_batch_long_enough_is_cut_into_a_part_per_model_thread(per_record: float,
                                                                 parts: int) -> None:
    """Once the engine knows a record's time: a batch whose halves take SPLIT_MIN_PART_S or
    more computes as two halves at once, its outcomes in order, its model time the longer
    half's; a quick model's batch stays whole."""
    model = TakesItsTime(per_record)
    engine = InferenceEngine(model_threads=2)
    batch = [{"i": i} for i in range(8)]
    timing = BatchTiming()
    try:
        assert engine.parts_for(model, 8) == 1  # nothing measured yet
        asyncio.run(engine.score(model, batch[:4]))
        assert engine.parts_for(model, 8) == parts
        outcomes = asyncio.run(engine.score(model, batch, timing))
    finally:
        engine.close()
    assert outcomes == [i / 100 for i in range(8)]
    if parts == 2:
        assert sorted(model.calls[1:]) == [[0, 1, 2, 3], [4, 5, 6, 7]] and model.occupancy.most == 2
        assert (timing.process_s, timing.tokens) == (4, 8)
    else:
        assert model.calls[1:] == [list(range(8))] and (timing.process_s, timing.tokens) == (8, 8)


@pytest.mark.parametrize(("handler", "device", "setting", "expected"), [
    ("streamapp.serving.handlers.builtin:SkuMatchInfer", "cpu", None, 2),
    ("streamapp.serving.handlers.builtin:SkuMatchInfer", "cuda", None, 1),
    ("streamapp.serving.handlers.builtin:SkuMatchInfer", "cpu", 3, 3),
    ("streamapp.serving.handlers.null:SlowInfer", "cpu", None, 1),
    ("streamapp.serving.handlers.pmml:PmmlInfer", "cpu", None, 1),
])
def test_batches_at_once_by_default_two_on_a_cpu_for_a_handler_that_allows_it(
        handler: str, device: str, setting: int | None, expected: int,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from streamapp.serving.handlers.contract import load_handler_class
    from streamapp.serving.manager import batches_at_once
    from streamapp.settings import Settings

    monkeypatch.setattr("os.cpu_count", lambda: 2)
    settings = Settings(model_threads=setting)
    assert batches_at_once(settings, load_handler_class(handler), torch.device(device)) \
        == expected
