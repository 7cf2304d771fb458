"""The benchmark measures of the pipeline: a real broker and worker around the model (the
model alone is bench.alone).

Every figure comes from real parts: the real loading code, a real broker process and a real
worker process, on the same machine in one run, so the ratios between them mean something on
a shared, noisy machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import torch

from streamapp.broker import EmbeddedBroker, free_port
from streamapp.edges.clients import follow, open_producer, produce, send_all
from streamapp.processes import WorkerProcess
from streamapp.security import bootstrap_servers

NULL_HANDLER = "streamapp.serving.handlers.null:ConstantInfer"
INTAKE = {"intake": "batch", "fanout": "false"}  # the fast path: batch intake, one hop
BERT_BASE = {"vocab_size": 21128, "hidden_size": 768, "num_hidden_layers": 12,
             "num_attention_heads": 12, "intermediate_size": 3072}


def load_comments(path: Path | None, count: int) -> list[dict[str, Any]]:
    """Comments from a JSON Lines file (labels kept), else from the project's generator."""
    if path is not None and path.exists():
        rows = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    else:
        from streamapp.demo.synthetic import generate_comments

        rows = list(generate_comments(count, seed=2024))
    while len(rows) < count:
        rows += rows[: count - len(rows)]
    return rows[:count]


def comment_values(rows: Sequence[dict[str, Any]]) -> list[bytes]:
    return [orjson.dumps({k: v for k, v in r.items() if k != "label"}) for r in rows]


def median_of(runs: int, measure: Callable[[], float]) -> float:
    return round(statistics.median(measure() for _ in range(runs)), 2)


# --- models ------------------------------------------------------------------------------


def bert_base_shape(out_dir: Path, demo_dir: Path) -> Path:
    """A BERT-base-shaped pair classifier with random weights (speed only), made once."""
    vocab = [v for v in (demo_dir / "vocab.txt").read_text().split("\n") if v]
    return random_bert(out_dir, vocab, BERT_BASE, "bert-base-shape")


def random_bert(out_dir: Path, vocab: list[str], shape: dict[str, int], name: str) -> Path:
    """A BERT pair classifier of `shape` with random weights, its vocabulary padded to the
    shape's size: speed only. Made once (a finished directory is reused)."""
    if (out_dir / "config.json").exists():
        return out_dir
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    vocab = vocab + [f"[unused{i}]" for i in range(shape["vocab_size"] - len(vocab))]
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(tmp / "vocab.txt"), tokenize_chinese_chars=True)
    torch.manual_seed(0)
    config = BertConfig(**shape, num_labels=2, streamapp_model_name=name,
                        streamapp_model_version="random")
    BertForSequenceClassification(config).save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out_dir)
    return out_dir


# --- the pipeline ------------------------------------------------------------------------


@dataclass
class Pipeline:
    """A fresh broker and one worker, ready (holding its partitions) before anything is sent."""

    broker: EmbeddedBroker
    worker: WorkerProcess


@contextlib.contextmanager
def running_pipeline(model_dir: Path, settings: dict[str, str] | None = None,
                     preload: Sequence[bytes] = ()) -> Iterator[Pipeline]:
    """`preload` comments are produced before the worker starts (a backlog)."""
    with tempfile.TemporaryDirectory(prefix="streamapp-bench-") as tmp, \
            EmbeddedBroker(free_port()) as broker:
        if preload:
            asyncio.run(produce(broker.url, "comments", preload))
        env = {"broker": broker.url, "model": str(model_dir), "datadir": f"{tmp}/data",
               "web_port": str(free_port()), "log_level": "warning", "reload_interval_s": "0",
               **(settings or {})}
        with WorkerProcess(env, Path(tmp) / "worker.log", log_level="warning") as worker:
            worker.wait_ready(timeout=300, topic=worker.source_topic)
            yield Pipeline(broker, worker)


def _rss_mb(worker: WorkerProcess) -> float:
    """The worker's resident memory with its model process's."""
    import psutil

    assert worker.proc is not None
    process = psutil.Process(worker.proc.pid)
    return round(sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])
                 / 2**20, 1)


async def read_results(broker: str, expected: int, timeout: float,
                   on_value: Callable[[dict[str, Any]], None] | None = None,
                   ) -> tuple[list[float], float]:
    """Read results until `expected` distinct ids: (end-to-end latencies ms, last arrival)."""
    seen: set[bytes] = set()
    latencies: list[float] = []
    last = 0.0  # the latest result's timestamp (partitions are read in no particular order)
    deadline = time.monotonic() + timeout

    def done() -> bool:
        return len(seen) >= expected or time.monotonic() > deadline

    async for record in follow(broker, ["sku-matches", "comments-dlq"], stop=done):
        if record.key in seen:
            continue
        seen.add(record.key or b"")
        value = orjson.loads(record.value)
        if on_value is not None:
            on_value(value)
        timing = value.get("timing")
        if timing and timing.get("source_ts"):
            latencies.append(timing["predicted_at"] - timing["source_ts"])
        last = max(last, record.timestamp / 1000.0)
    if len(seen) < expected:
        raise TimeoutError(f"only {len(seen)} of {expected} results after {timeout:.0f}s")
    return latencies, last


class CpuAccount:
    """CPU time (user + system) per record of each process a run shares the cores with: the
    model process, the worker around it, the broker, and this bench's own clients."""

    def __init__(self, pipe: Pipeline) -> None:
        import psutil

        assert pipe.worker.proc is not None and pipe.broker.proc is not None
        worker = psutil.Process(pipe.worker.proc.pid)
        self.processes = {"worker": worker, "broker": psutil.Process(pipe.broker.proc.pid),
                          "bench clients": psutil.Process()}
        for child in worker.children(recursive=True):
            self.processes["model process"] = child
        self.before = self._now()

    def _now(self) -> dict[str, float]:
        return {name: sum(p.cpu_times()[:2]) for name, p in self.processes.items()}

    def per_record_ms(self, records: int) -> dict[str, float]:
        after = self._now()
        return {name: round(1000 * (after[name] - self.before[name]) / records, 4)
                for name in self.processes}


def end_to_end(model_dir: Path, rows: Sequence[dict[str, Any]], *,
               settings: dict[str, str] | None = None, timeout: float = 900.0,
               sample_rss: bool = False) -> dict[str, Any]:
    """All comments produced at once to a fresh broker; records/s from first in to last out."""
    values = comment_values(rows)
    with running_pipeline(model_dir, settings) as pipe:
        idle_rss = _rss_mb(pipe.worker) if sample_rss else None
        peak = [0.0]
        ticks = [0]

        def sample(value: dict[str, Any]) -> None:
            ticks[0] += 1
            if sample_rss and ticks[0] % 500 == 0:
                peak[0] = max(peak[0], _rss_mb(pipe.worker))

        cpu = CpuAccount(pipe)
        started = time.time()
        asyncio.run(produce(pipe.broker.url, "comments", values))
        _, last = asyncio.run(read_results(pipe.broker.url, len(values), timeout, sample))
        cpu_ms = cpu.per_record_ms(len(values))
        stats = pipe.worker.stats()
        loaded_rss = _rss_mb(pipe.worker) if sample_rss else None
    seconds = last - started
    agents = stats["agents"]
    return {
        "records": len(values),
        "seconds": round(seconds, 3),
        "records_per_second": round(len(values) / seconds, 1),
        "mean_batch_size": agents["mean_batch_size"],
        "batch_compute_ms": round(1000 * agents["model_seconds"] / max(agents["batches"], 1),
                                  2),
        "rss_mb": {"idle": idle_rss, "peak_under_load": max(peak[0], loaded_rss or 0.0)}
        if sample_rss else None,
        "cpu_ms_per_record": cpu_ms,
    }


async def feed_at_rate(broker: str, values: Sequence[bytes], rate: float, tick: float = 0.05,
                       stop: Callable[[], bool] | None = None) -> int:
    """Produce `values` to the comment topic at a steady `rate` per second, until all are sent
    or `stop()` says so; how many were sent."""
    per_tick = max(rate * tick, 1.0)
    async with open_producer(broker) as producer:
        sent = 0
        started = time.monotonic()
        while sent < len(values) and not (stop is not None and stop()):
            target = min(len(values), int((time.monotonic() - started) / tick * per_tick) + 1)
            if target > sent:
                await send_all(producer, "comments", values[sent:target])
                sent = target
            await asyncio.sleep(tick / 2)
    return sent


def steady_values(rows: Sequence[dict[str, Any]], rate: float, seconds: float) -> list[bytes]:
    """`rate * seconds` comments (at least 10), the rows over again as needed."""
    return comment_values([rows[i % len(rows)] for i in range(max(int(rate * seconds), 10))])


async def feed_and_read(broker: str, values: Sequence[bytes], rate: float, seconds: float,
                        on_value: Callable[[dict[str, Any]], None] | None = None,
                        ) -> list[float]:
    """`values` produced at `rate` while their results are read: the end-to-end latencies."""
    reader = asyncio.create_task(read_results(broker, len(values), seconds * 4 + 60, on_value))
    await feed_at_rate(broker, values, rate)
    latencies, _ = await reader
    return latencies


def latency_at_rate(model_dir: Path, rows: Sequence[dict[str, Any]], rate: float,
                    seconds: float, settings: dict[str, str] | None = None) -> dict[str, Any]:
    """Comments at a steady `rate` per second: end-to-end latency percentiles (ms)."""
    values = steady_values(rows, rate, seconds)
    with running_pipeline(model_dir, settings) as pipe:
        latencies = asyncio.run(feed_and_read(pipe.broker.url, values, rate, seconds))
        stats = pipe.worker.stats()["agents"]
    quantiles = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"rate": round(rate, 1), "records": len(values),
            "p50_ms": round(quantiles[49], 1), "p95_ms": round(quantiles[94], 1),
            "p99_ms": round(quantiles[98], 1), "mean_batch_size": stats["mean_batch_size"],
            "batch_compute_ms": round(1000 * stats["model_seconds"] / max(stats["batches"], 1),
                                      2)}


def backlog_memory(model_dir: Path, rows: Sequence[dict[str, Any]], backlog: int,
                   settings: dict[str, str] | None = None,
                   seconds: float = 20.0) -> dict[str, float]:
    """RSS of a worker started on a backlog of `backlog` comments (a slow model: the backlog
    stays), sampled every second."""
    values = comment_values([rows[i % len(rows)] for i in range(backlog)])
    with running_pipeline(model_dir, settings, preload=values) as pipe:
        samples = []
        for _ in range(int(seconds)):
            time.sleep(1.0)
            samples.append(_rss_mb(pipe.worker))
        done = pipe.worker.stats()["agents"]["records"]
    return {"backlog": backlog, "rss_mb_max": max(samples), "rss_mb_last": samples[-1],
            f"processed_in_{int(seconds)}s": done}


def pipeline_ceiling(model_dir: Path, rows: Sequence[dict[str, Any]],
                     settings: dict[str, str], timeout: float = 600.0) -> float:
    """The worker on a backlog it finds at start, timed as `raw_aiokafka` is: from its first
    batch starting to its last result written (records/s), with nothing else on the cores.
    A producer running alongside would share them and time the producer as well; so would
    this bench's reader, which reads the results (with their times) only once the worker's
    web view counts them all, as the raw loop is timed with no reader beside it."""
    values = comment_values(rows)

    async def run(broker: str) -> float:
        first_ms = [float("inf")]  # the earliest batch start

        def on_result(value: dict[str, Any]) -> None:
            timing = value.get("timing")
            if timing:
                first_ms[0] = min(first_ms[0], timing["batch_started_at"])

        _, last = await read_results(broker, len(values), timeout, on_value=on_result)
        return len(values) / (last - first_ms[0] / 1000.0)

    with running_pipeline(model_dir, settings, preload=values) as pipe:
        deadline = time.monotonic() + timeout
        while (pipe.worker.stats()["agents"]["records"] < len(values)
               and time.monotonic() < deadline):
            time.sleep(0.1)
        return asyncio.run(run(pipe.broker.url))


def raw_aiokafka(rows: Sequence[dict[str, Any]]) -> float:
    """A plain consume-decode-produce-commit loop on the same broker: records/s from the
    first record read to the last output flushed and committed."""
    from aiokafka import AIOKafkaConsumer

    values = comment_values(rows)

    async def run(broker: str) -> float:
        await produce(broker, "comments", values)
        consumer = AIOKafkaConsumer("comments", bootstrap_servers=bootstrap_servers(broker),
                                    group_id="raw-bench", enable_auto_commit=False,
                                    auto_offset_reset="earliest", fetch_max_wait_ms=100)
        await consumer.start()
        done = 0
        try:
            async with open_producer(broker) as producer:
                started = None
                while done < len(values):
                    batches = await consumer.getmany(timeout_ms=500, max_records=2000)
                    if batches and started is None:
                        started = time.perf_counter()
                    for tp, records in batches.items():
                        for record in records:
                            comment = orjson.loads(record.value)
                            result = {"id": f"{tp.topic}:{tp.partition}:{record.offset}",
                                      "match": True, "score": 0.5,
                                      "baseSkuName": comment["baseSkuName"]}
                            await producer.send("raw-results", orjson.dumps(result),
                                                key=result["id"].encode())
                            done += 1
                    await producer.flush()
                    await consumer.commit()
                assert started is not None
                return done / (time.perf_counter() - started)
        finally:
            await consumer.stop()

    with EmbeddedBroker(free_port()) as broker:
        return asyncio.run(run(broker.url))
