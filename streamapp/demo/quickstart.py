"""`make run`: the whole pipeline on one machine, for a newcomer to watch.

Starts the embedded broker, builds the demo model when it is missing, starts a worker process,
feeds synthetic comments (JSON, delimited, and now and then a broken one) to the comment topic
and prints every prediction and dead letter as it arrives, until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import sys
import tempfile
from pathlib import Path

import orjson

from streamapp.broker import EmbeddedBroker
from streamapp.decoding import encode_delimited
from streamapp.demo.synthetic import generate_comments
from streamapp.edges.clients import follow, format_output, open_producer, send_all
from streamapp.processes import WorkerProcess
from streamapp.records import comment_id
from streamapp.settings import Settings

BROKEN_EVERY = 25  # one broken record in this many, to show the dead-letter topic at work


def demo_values(seed: int = 7) -> itertools.cycle[tuple[bytes, str]]:
    """(value, review) of comments in both encodings the seed's job writes, with some
    broken records."""
    values: list[tuple[bytes, str]] = []
    for i, row in enumerate(generate_comments(400, seed=seed)):
        row.pop("label", None)
        review = str(row["reviewBody"])
        if i % BROKEN_EVERY == BROKEN_EVERY - 1:
            values.append((b'{"baseSkuName": "broken export", "reviewBody": ', ""))
        elif i % 3 == 0:
            values.append((encode_delimited(row).encode(), review))
        else:
            values.append((orjson.dumps(row), review))
    return itertools.cycle(values)


async def _feed(broker: str, topic: str, rate: float, reviews: dict[str, str]) -> None:
    """Send `rate` comments a second; remember each one's review by id, for the display."""
    values = demo_values()
    async with open_producer(broker) as producer:
        while True:
            batch = [next(values) for _ in range(max(int(rate), 1))]
            sent = await send_all(producer, topic, [value for value, _ in batch])
            for (_, review), where in zip(batch, sent, strict=True):
                reviews[comment_id(where.topic, where.partition, where.offset)] = review
            await asyncio.sleep(1.0)


async def _show(broker: str, settings: Settings, reviews: dict[str, str]) -> None:
    topics = [settings.results_topic, settings.dlq_topic]
    color = sys.stdout.isatty()
    async for record in follow(broker, topics, from_beginning=False):
        value = orjson.loads(record.value)
        review = reviews.pop(value["id"], "")
        print(format_output(value, color=color) + (f"  {review[:36]}" if review else ""),
              flush=True)


def run_quickstart(port: int = 9092, rate: float = 20.0) -> int:
    settings = Settings.from_env()
    logdir = Path("var/log")
    logdir.mkdir(parents=True, exist_ok=True)
    with EmbeddedBroker(port) as broker:
        print(f"broker: {broker.bootstrap} (embedded, memory only)", flush=True)
        model_dir = settings.model_dir
        if settings.uses_demo_model and not (model_dir / "config.json").exists():
            from streamapp.demo.model import build_demo_model

            print(f"building the demo model into {model_dir} (about a minute) ...", flush=True)
            report = build_demo_model(model_dir)
            print(f"demo model: held-out accuracy {report.accuracy:.3f}", flush=True)
        # The embedded broker starts empty each time, so table state must too: a store left
        # by an earlier run would be ahead of its (new, empty) changelog.
        datadir = Path(tempfile.mkdtemp(prefix="streamapp-demo-"))
        worker = WorkerProcess({"broker": broker.url, "datadir": str(datadir)},
                               logdir / "worker.log").start()
        try:
            worker.wait_ready(timeout=180)
            web = worker.stats_url.removesuffix("api/stats/")
            print(f"worker: pid {worker.proc.pid if worker.proc else '?'}, log "
                  f"{worker.log_path}; dashboard {web}dashboard/", flush=True)
            print(f"feeding {rate:g} demo comments/s to '{settings.comments_topic}'; "
                  "Ctrl-C stops everything\n", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                asyncio.run(_run(broker.url, settings, rate))
            print("\nstopping: feed and printer stopped", flush=True)
        except (RuntimeError, TimeoutError) as exc:
            print(f"the worker did not start: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\nstopping before the worker was ready", flush=True)
        finally:
            # Clients first, the broker last (it stops when the `with` ends): a broker that goes
            # before its clients makes them log connection errors.
            code = worker.stop(timeout=30)
            shutil.rmtree(datadir, ignore_errors=True)
        print(f"stopping: worker stopped (exit status {code})", flush=True)
    print(f"stopping: broker stopped; the worker's log is {worker.log_path}", flush=True)
    return 0


async def _run(broker: str, settings: Settings, rate: float) -> None:
    reviews: dict[str, str] = {}
    await asyncio.gather(_feed(broker, settings.comments_topic, rate, reviews),
                         _show(broker, settings, reviews))
