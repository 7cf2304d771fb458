"""The model alone, no broker and no worker: batched, two batches at once, the seed's
per-record pattern, int8 agreement and padding (bench.suite gathers them)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from streamapp.serving.formats.huggingface import (
    DEFAULT_TOKEN_BUDGET,
    CompileMode,
    PairClassifier,
)


def model_ceiling(model_dir: Path, rows: Sequence[dict[str, Any]], batch_size: int,
                  quantize: bool = False, max_tokens: int = 64,
                  token_budget: int | None = DEFAULT_TOKEN_BUDGET,
                  compile_mode: CompileMode | None = None) -> float:
    """Tokenize + forward in a tight batched loop, packed as the handler does (or one batch
    padded to its longest with `token_budget=None`): sequences per second."""
    model = load_warm(model_dir, quantize=quantize, max_tokens=max_tokens,
                      compile_mode=compile_mode)
    return predict_rate(model, rows, batch_size, token_budget)


def load_warm(model_dir: Path, *, compile_mode: CompileMode | None = None,
              **options: Any) -> PairClassifier:
    """The model as the built-in handler loads it; compiled, warmed up as the handler does
    (compiling takes seconds: none of it is timed)."""
    from streamapp.serving.formats.huggingface import SkuMatchClassifier

    model = SkuMatchClassifier.load(model_dir, compile_mode=compile_mode, **options)
    if compile_mode is not None:
        for size in (2, 1):
            model.predict(["预热"] * size, ["预热"] * size)
    return model


def predict_rate(model: PairClassifier, rows: Sequence[dict[str, Any]], batch_size: int,
                 token_budget: int | None = DEFAULT_TOKEN_BUDGET) -> float:
    """`model.predict` (tokenize, forward, scores back on the host) over `rows` in batches,
    after one warm-up batch: sequences per second."""
    reviews = [str(r["reviewBody"]) for r in rows]
    skus = [str(r["baseSkuName"]) for r in rows]
    # Two warm-up batches: a model compiled in reduce-overhead mode records its CUDA graph
    # for a shape on a later call than the first.
    for _ in range(2):
        model.predict(reviews[:batch_size], skus[:batch_size], token_budget)
    started = time.perf_counter()
    for i in range(0, len(rows), batch_size):
        model.predict(reviews[i:i + batch_size], skus[i:i + batch_size], token_budget)
    return len(rows) / (time.perf_counter() - started)


def model_two_at_once(model_dir: Path, rows: Sequence[dict[str, Any]], batch_size: int,
                      at_once: int = 2, compile_mode: CompileMode | None = None) -> float:
    """As `model_ceiling`, with `at_once` batches computing at once on threads of their own,
    each with cores / at_once torch threads: what the model process does by default on a CPU
    (streamapp.serving.manager.batches_at_once). Sequences per second."""
    model = load_warm(model_dir, compile_mode=compile_mode)
    reviews = [str(r["reviewBody"]) for r in rows]
    skus = [str(r["baseSkuName"]) for r in rows]
    starts = list(range(0, len(rows), batch_size))
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, previous // at_once))
    try:
        model.predict(reviews[:batch_size], skus[:batch_size])  # warm-up
        with ThreadPoolExecutor(max_workers=at_once) as pool:
            started = time.perf_counter()
            list(pool.map(lambda i: model.predict(reviews[i:i + batch_size],
                                                  skus[i:i + batch_size]), starts))
            return len(rows) / (time.perf_counter() - started)
    finally:
        torch.set_num_threads(previous)


def per_record(model_dir: Path, rows: Sequence[dict[str, Any]]) -> float:
    """The seed's pattern: one process() per comment, padded to max_length: seq/s."""
    from streamapp.serving.formats.huggingface import SkuMatchClassifier

    model = SkuMatchClassifier.load(model_dir)
    started = time.perf_counter()
    with torch.inference_mode():
        for row in rows:
            batch = model.tokenize([str(row["reviewBody"])], [str(row["baseSkuName"])],
                                   pad_to_max=True)
            model.probabilities(batch)
    return len(rows) / (time.perf_counter() - started)


def agreement(model_dir: Path, rows: Sequence[dict[str, Any]], threshold: float = 0.5,
              batch_size: int = 64) -> dict[str, float]:
    """int8 against fp32 on the same comments: label agreement, and each one's accuracy."""
    from streamapp.serving.formats.huggingface import SkuMatchClassifier

    reviews = [str(r["reviewBody"]) for r in rows]
    skus = [str(r["baseSkuName"]) for r in rows]
    labels = [int(r.get("label", -1)) for r in rows]
    scores = {}
    for quantize in (False, True):
        model = SkuMatchClassifier.load(model_dir, quantize=quantize)
        scores[quantize] = [s for i in range(0, len(rows), batch_size)
                            for s in model.predict(reviews[i:i + batch_size],
                                                   skus[i:i + batch_size])]
    fp32 = [s >= threshold for s in scores[False]]
    int8 = [s >= threshold for s in scores[True]]

    def accuracy(predicted: list[bool]) -> float:
        return round(sum(p == (y == 1) for p, y in zip(predicted, labels, strict=True))
                     / len(rows), 4)

    return {"agreement": round(sum(a == b for a, b in zip(fp32, int8, strict=True))
                               / len(rows), 4),
            "fp32_accuracy": accuracy(fp32), "int8_accuracy": accuracy(int8)}


def padding(model_dir: Path, rows: Sequence[dict[str, Any]], batch_size: int = 64,
            max_tokens: int = 64) -> dict[str, float]:
    """Share of padding tokens in batches of `batch_size`: the seed's max_length padding, one
    batch padded to its longest pair, and length-sorted sub-batches within the default token
    budget (what the built-in handler computes)."""
    from streamapp.serving.formats.huggingface import SkuMatchClassifier

    model = SkuMatchClassifier.load(model_dir, max_tokens=max_tokens)
    totals = {"seed_max_length": [0, 0], "longest_in_batch": [0, 0],
              "token_budget_sorted": [0, 0]}
    for i in range(0, len(rows), batch_size):
        reviews = [str(r["reviewBody"]) for r in rows[i:i + batch_size]]
        skus = [str(r["baseSkuName"]) for r in rows[i:i + batch_size]]
        for label, pad_to_max in (("seed_max_length", True), ("longest_in_batch", False)):
            mask = model.tokenize(reviews, skus, pad_to_max=pad_to_max)["attention_mask"]
            totals[label][0] += int(mask.sum())
            totals[label][1] += mask.numel()
        packed = model.pack(reviews, skus, DEFAULT_TOKEN_BUDGET)
        totals["token_budget_sorted"][0] += packed.tokens
        totals["token_budget_sorted"][1] += packed.padded_tokens
    return {label: round(1 - real / padded, 4) for label, (real, padded) in totals.items()}
