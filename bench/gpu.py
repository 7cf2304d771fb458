"""`make bench-gpu`: the BERT-base shape on one GPU, alone and through 1, 2 and 4 workers.

Within about 8 minutes on one GPU, with no network: a BERT-base-shaped pair classifier
(random weights, as `make bench` builds it) alone at 64 tokens for batches of 64 to 512, in
float16 (what the worker runs) and bfloat16: tokenize + forward as the handler does, and the
forward pass alone on batches tokenized beforehand. Then end to end through 1, 2 and 4
workers sharing the GPU on the embedded broker (batch intake, one hop): the workers are
started and hold their partitions, then a backlog is sent at once and timed from the first
record sent to the last result read, with the GPU's utilisation sampled from `nvidia-smi`.
Every phase runs within what is left of `--budget-s`; a phase that does not fit is reported
as skipped, and the figures are written after every phase.

`--smoke` runs the same code on a CPU with a tiny model and small counts
(tests/test_bench_tools.py), so `make test` never needs a GPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
import torch

from bench.alone import load_warm, predict_rate
from bench.gpu_sampler import GpuSampler
from bench.measures import BERT_BASE, comment_values, random_bert, read_results
from streamapp.broker import EmbeddedBroker, free_port
from streamapp.edges.clients import create_topic, open_producer, send_batched
from streamapp.processes import WorkerProcess
from streamapp.serving.formats.huggingface import PairClassifier

TINY = {"vocab_size": 8192, "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 2, "intermediate_size": 64}


@dataclass(frozen=True)
class Plan:
    shape: dict[str, int]
    device: str
    alone_records: int  # comments per batch size, model alone
    batch_sizes: tuple[int, ...]
    dtypes: tuple[str, ...]
    records: int  # the backlog, end to end
    workers: tuple[str, ...]  # run specs: a worker count, `:name=value` adds settings
    worker_batch: int  # STREAMAPP_BATCH_SIZE
    budget_s: float
    worker_env: dict[str, str] = field(default_factory=dict)
    # The model alone, the first dtype, compiled with these torch.compile modes as well
    # (STREAMAPP_COMPILE); each adds a row per batch size.
    compile_modes: tuple[str, ...] = ()


# bfloat16 ran as float16 within noise (2026-11-30): the time goes to the compiled variants.
FULL = Plan(shape=BERT_BASE, device="cuda", alone_records=16_384,
            batch_sizes=(128, 256, 512), dtypes=("float16",), records=300_000,
            workers=("1", "4", "4:compile=reduce-overhead"), worker_batch=512, budget_s=450.0,
            compile_modes=("reduce-overhead",))
SMOKE = Plan(shape=TINY, device="cpu", alone_records=256, batch_sizes=(64,),
             dtypes=("float32",), records=600, workers=("2",), worker_batch=64, budget_s=180.0,
             worker_env={"torch_threads": "1"}, compile_modes=("default",))
PARTITIONS = 8  # of every topic: at least the most workers
WORKER_READY_S = 150.0  # a worker's start: imports, the model onto the GPU, joining the group
COMPILE_S = 150.0  # more for a worker that compiles its model (STREAMAPP_COMPILE)


class Budget:
    """The time left of the whole run; each phase asks whether its estimate still fits."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def fits(self, seconds: float) -> bool:
        return self.left() >= seconds


# --- the model alone -----------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_alone(plan: Plan, model_dir: Path, rows: list[dict[str, Any]],
                budget: Budget, log: Callable[[str], None]) -> dict[str, Any]:
    """seq/s per dtype (and compiled variant) and batch size: `predict` as the handler calls
    it (tokenize, pack, forward, scores to the host), and the forward pass alone on batches
    tokenized before."""
    variants = [(dtype, None) for dtype in plan.dtypes]
    variants += [(plan.dtypes[0], mode) for mode in plan.compile_modes]
    figures: dict[str, Any] = {}
    for dtype_name, mode in variants:
        label = dtype_name if mode is None else f"{dtype_name}, compiled {mode}"
        if not budget.fits(60 if mode is None else 90):
            figures[label] = "skipped: out of time"
            continue
        started = time.monotonic()
        try:
            model = load_warm(model_dir, device=plan.device, dtype=getattr(torch, dtype_name),
                              compile_mode=mode)
        except Exception as exc:  # torch.compile's (no Triton, no compiler): keep the rest
            if mode is None:
                raise
            figures[label] = f"failed: {type(exc).__name__}: {exc}"[:2000]
            log(f"{label}: {figures[label]}")
            continue
        if mode is not None:
            log(f"{label}: loaded and compiled in {time.monotonic() - started:.0f}s")
        figures[label] = _rates(plan, model, rows, budget, log, label)
        del model
        if plan.device == "cuda":
            torch.cuda.empty_cache()
    return figures


def _rates(plan: Plan, model: PairClassifier, rows: list[dict[str, Any]], budget: Budget,
           log: Callable[[str], None], label: str) -> dict[str, Any]:
    token_budget = int(plan.worker_env.get("token_budget", 65_536))
    device = torch.device(model.info.device)
    per_batch: dict[str, Any] = {}
    for batch in plan.batch_sizes:
        if not budget.fits(30):
            per_batch[str(batch)] = "skipped: out of time"
            continue
        subset = rows[:plan.alone_records]
        handler_path = predict_rate(model, subset, batch, token_budget)
        batches = [model.tokenize([str(r["reviewBody"]) for r in subset[i:i + batch]],
                                  [str(r["baseSkuName"]) for r in subset[i:i + batch]])
                   for i in range(0, len(subset), batch)]
        with torch.inference_mode():
            # Warm-up: a compiled model in reduce-overhead mode records its CUDA graph for a
            # shape on a later call than the first.
            for tokens in batches[:3]:
                model.probabilities(tokens)
            _sync(device)
            started = time.perf_counter()
            for tokens in batches:
                model.probabilities(tokens)
            _sync(device)
            forward = len(subset) / (time.perf_counter() - started)
        per_batch[str(batch)] = {"handler_path_seq_s": round(handler_path, 1),
                                 "forward_only_seq_s": round(forward, 1)}
        log(f"alone {label} batch {batch}: {per_batch[str(batch)]}")
    return per_batch


# --- end to end ----------------------------------------------------------------------------


@contextmanager
def _workers(plan: Plan, model_dir: Path, broker: EmbeddedBroker, count: int, tmp: Path,
             budget: Budget, extra: dict[str, str]) -> Iterator[list[WorkerProcess]]:
    """`count` workers started at once, returned when each holds comment partitions."""
    settings = {"broker": broker.url, "model": str(model_dir), "intake": "batch",
                "fanout": "false", "batch_size": str(plan.worker_batch),
                "token_budget": "65536", "device": plan.device, "store": "memory",
                "partitions": str(PARTITIONS), "reload_interval_s": "0",
                "log_level": "warning", **plan.worker_env, **extra}
    with ExitStack() as stack:
        workers = [stack.enter_context(WorkerProcess(
            {**settings, "datadir": str(tmp / f"data-{n}"), "web_port": str(free_port())},
            tmp / f"worker-{n}.log", log_level="warning")) for n in range(count)]
        ready_s = WORKER_READY_S + (COMPILE_S if settings.get("compile", "none") != "none"
                                    else 0.0)
        deadline = time.monotonic() + min(ready_s, budget.left())
        for worker in workers:
            worker.wait_ready(timeout=max(deadline - time.monotonic(), 1.0), topic="comments")
        while not all(any(p.startswith("comments:") for p in w.stats()["assigned_partitions"])
                      for w in workers):
            if time.monotonic() > deadline:
                raise TimeoutError("the workers did not all get comment partitions")
            time.sleep(0.25)
        yield workers


def parse_spec(spec: str) -> tuple[int, dict[str, str]]:
    """`4` or `4:switch_interval_ms=0.5,pipeline_depth=3`: workers and their extra settings."""
    count, _, rest = spec.partition(":")
    extra = dict(item.split("=", 1) for item in rest.split(",") if item)
    return int(count), extra


def end_to_end(plan: Plan, model_dir: Path, values: list[bytes], spec: str,
               budget: Budget, log: Callable[[str], None], logs: Path) -> dict[str, Any]:
    """Workers of `spec` on one broker: the backlog sent at once once they are ready. Their
    logs are left in `logs`."""
    count, extra = parse_spec(spec)
    shutil.rmtree(logs, ignore_errors=True)
    with EmbeddedBroker(free_port()) as broker:
        # Partitions for every worker: the broker's default for a topic made on first use
        # would leave workers idle.
        asyncio.run(create_topic(broker.url, "comments", PARTITIONS))
        started_at = time.monotonic()
        with _workers(plan, model_dir, broker, count, logs, budget, extra) as workers:
            ready_s = time.monotonic() - started_at
            log(f"{count} worker(s) ready in {ready_s:.0f}s")
            first_batch = [float("inf")]

            def on_result(value: dict[str, Any]) -> None:
                timing = value.get("timing")
                if timing:
                    first_batch[0] = min(first_batch[0], timing["batch_started_at"] / 1000.0)

            async def run() -> tuple[float, list[float], float]:
                reader = asyncio.create_task(read_results(
                    broker.url, len(values), max(budget.left() - 20.0, 10.0), on_result))
                async with open_producer(broker.url) as producer:
                    sent_at = time.time()
                    acks = []
                    step = max(len(values) // (4 * PARTITIONS), 1)  # each call: a random start
                    for i in range(0, len(values), step):
                        acks += await send_batched(producer, "comments", values[i:i + step])
                    await asyncio.gather(*acks)
                latencies, last = await reader
                return sent_at, latencies, last

            with GpuSampler() as sampler:
                try:
                    sent_at, latencies, last = asyncio.run(run())
                except TimeoutError as exc:  # what the workers say they did, to tell why
                    said = [(w.stats()["agents"], w.stats()["totals"]) for w in workers]
                    counts = [(a["records"], a["predicted"], a["dead_letters"], t)
                              for a, t in said]
                    raise TimeoutError(f"{exc}; the workers' records, predicted, dead "
                                       f"letters, totals: {counts}") from exc
            stats = [w.stats()["agents"] for w in workers]
    batches = sum(s["batches"] for s in stats)
    latencies.sort()
    return {
        "workers": count, "settings": extra, "records": len(values), "ready_s": round(ready_s, 1),
        "seconds": round(last - sent_at, 3),
        "records_per_second": round(len(values) / (last - sent_at), 1),
        "records_per_second_from_first_batch": round(len(values) / (last - first_batch[0]), 1),
        "per_worker_records": [s["records"] for s in stats],
        "mean_batch_size": round(sum(s["records"] for s in stats) / max(batches, 1), 1),
        "batch_compute_ms": round(1000 * sum(s["model_seconds"] for s in stats)
                                  / max(batches, 1), 2),
        "latency_p50_ms": latencies[len(latencies) // 2] if latencies else None,
        "gpu": sampler.summary(sent_at, last),
    }


# --- the run -------------------------------------------------------------------------------


def run(plan: Plan, work: Path, out: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """Every phase within the plan's budget; `out` is rewritten after each."""
    from streamapp.demo.model import build_vocab
    from streamapp.demo.synthetic import generate_comments

    budget = Budget(plan.budget_s)
    rows = list(generate_comments(max(plan.records, plan.alone_records), seed=2024))
    gpu_name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "make bench-gpu" + (" (--smoke)" if plan.shape is TINY else ""),
        "machine": {"gpu": gpu_name, "cores": os.cpu_count(),
                    "python": sys.version.split()[0], "torch": torch.__version__},
        "plan": {k: v for k, v in asdict(plan).items() if k != "shape"},
        "shape": plan.shape, "max_tokens": 64, "comments": "streamapp.demo.synthetic",
    }

    def save() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")

    started = time.monotonic()
    vocab = build_vocab([f"{r['reviewBody']}{r['baseSkuName']}" for r in rows[:5000]])
    name = "bert-base-shape" if plan.shape is BERT_BASE else "tiny-shape"
    model_dir = random_bert(work / name, vocab, plan.shape, name)
    results["model_build_s"] = round(time.monotonic() - started, 1)
    log(f"model at {model_dir} in {results['model_build_s']}s")
    results["alone"] = model_alone(plan, model_dir, rows, budget, log)
    save()
    values = comment_values(rows[:plan.records])
    e2e: dict[str, Any] = {}
    for spec in plan.workers:
        if not budget.fits(60 + 10 * parse_spec(spec)[0]):
            e2e[spec] = "skipped: out of time"
            continue
        try:
            e2e[spec] = end_to_end(plan, model_dir, values, spec, budget, log,
                                   work / f"e2e-{spec.replace(':', '-').replace('=', '')}")
        except (TimeoutError, RuntimeError) as exc:
            e2e[spec] = f"failed: {exc}"[:2000]
        log(f"end to end, {spec}: {e2e[spec]}")
        results["end_to_end"] = e2e
        save()
    results["ratios"] = ratios(results, plan)
    results["seconds"] = round(time.monotonic() - started, 1)
    save()
    return results


def ratios(results: dict[str, Any], plan: Plan) -> dict[str, float]:
    """Best end to end against the model alone (float16 handler path, the workers' batch)."""
    alone = results["alone"].get(plan.dtypes[0], {}).get(str(plan.worker_batch))
    runs = [r for r in results.get("end_to_end", {}).values() if isinstance(r, dict)]
    if not isinstance(alone, dict) or not runs:
        return {}
    best = max(runs, key=lambda r: r["records_per_second"])
    figures = {"best_e2e_records_per_second": best["records_per_second"],
               "best_e2e_workers": best["workers"],
               "e2e_over_alone": round(best["records_per_second"]
                                       / alone["handler_path_seq_s"], 3),
               "e2e_over_forward_only": round(best["records_per_second"]
                                              / alone["forward_only_seq_s"], 3)}
    for mode in plan.compile_modes:
        per_batch = results["alone"].get(f"{plan.dtypes[0]}, compiled {mode}")
        compiled = per_batch.get(str(plan.worker_batch)) if isinstance(per_batch, dict) else None
        if isinstance(compiled, dict):
            figures[f"forward_only_compiled_{mode}_over_eager"] = round(
                compiled["forward_only_seq_s"] / alone["forward_only_seq_s"], 3)
            figures[f"e2e_over_forward_only_compiled_{mode}"] = round(
                best["records_per_second"] / compiled["forward_only_seq_s"], 3)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model on a CPU, small counts")
    parser.add_argument("--out", type=Path, default=Path("var/bench-gpu.json"),
                        help="the figures, rewritten after every phase")
    parser.add_argument("--work", type=Path, default=Path("var/models"),
                        help="where the random model is made")
    parser.add_argument("--budget-s", type=float, help="the whole run's time limit")
    parser.add_argument("--records", type=int, help="the end-to-end backlog")
    parser.add_argument("--workers", help="runs, space-separated: a worker count, with extra "
                        "settings after a colon (e.g. '1 4 4:switch_interval_ms=0.5')")
    parser.add_argument("--batch-sizes", help="the model alone: batch sizes, comma-separated")
    parser.add_argument("--dtypes", help="the model alone: dtypes, comma-separated")
    parser.add_argument("--compile-modes", help="the model alone, the first dtype compiled "
                        "too: torch.compile modes, comma-separated ('' for none)")
    parser.add_argument("--report", action="store_true",
                        help="also write the GPU section of BENCHMARKS.md, bench/results.json")
    parser.add_argument("--merge", type=Path,
                        help="only merge figures written before (--out of a run elsewhere) "
                             "into BENCHMARKS.md and bench/results.json")
    args = parser.parse_args(argv)
    from bench.report import merge_gpu

    if args.merge is not None:
        merge_gpu(orjson.loads(args.merge.read_bytes()))
        return 0
    plan = SMOKE if args.smoke else FULL
    overrides: dict[str, Any] = {}
    if args.budget_s is not None:
        overrides["budget_s"] = args.budget_s
    if args.records is not None:
        overrides["records"] = args.records
    if args.workers:
        overrides["workers"] = tuple(args.workers.split())
    if args.batch_sizes:
        overrides["batch_sizes"] = tuple(int(b) for b in args.batch_sizes.split(","))
    if args.dtypes:
        overrides["dtypes"] = tuple(args.dtypes.split(","))
    if args.compile_modes is not None:
        overrides["compile_modes"] = tuple(m for m in args.compile_modes.split(",") if m)
    if overrides:
        plan = Plan(**{**asdict(plan), "shape": plan.shape, **overrides})
    results = run(plan, args.work, args.out,
                  lambda line: print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True))
    if args.report:
        merge_gpu(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
