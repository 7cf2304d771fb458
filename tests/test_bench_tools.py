"""The bench tools that are not `make bench`: bench-gpu in its smoke mode (the same code as
on a GPU, a tiny model on the CPU), the profile reader, the latency breakdown's reading of
the fan-out hop and the hop probe."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from bench.gpu import main
from bench.profile import top_frames
from bench.report import render_gpu
from streamapp.broker import EmbeddedBroker


@pytest.mark.integration
@pytest.mark.slow
def test_smoke_run_measures_every_phase(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    assert main(["--smoke", "--out", str(out), "--work", str(tmp_path / "models")]) == 0

    figures = json.loads(out.read_text())
    alone = figures["alone"]["float32"]["64"]
    assert alone["handler_path_seq_s"] > 0 and alone["forward_only_seq_s"] > 0
    compiled = figures["alone"]["float32, compiled default"]["64"]  # STREAMAPP_COMPILE
    assert compiled["handler_path_seq_s"] > 0 and compiled["forward_only_seq_s"] > 0
    run = figures["end_to_end"]["2"]  # two workers sharing the partitions
    assert isinstance(run, dict), run
    # every comment got its result, and each worker computed some of them
    assert sum(run["per_worker_records"]) >= run["records"] == 600
    assert all(n > 0 for n in run["per_worker_records"])
    assert run["records_per_second"] > 0
    assert run["gpu"] is None  # no nvidia-smi here
    assert figures["ratios"]["best_e2e_records_per_second"] > 0
    markdown = "\n".join(render_gpu(figures))
    assert "## GPU" in markdown and "| 2 |" in markdown


def test_profile_top_frames_add_up_self_and_inclusive_time() -> None:
    raw = "\n".join([
        "thread (0x1);main (run.py:1);SkuMatchInfer.process (streamapp/x.py:2);"
        "Linear.forward (torch/linear.py:3) 6",
        "thread (0x1);main (run.py:1);Handle._run (asyncio/events.py:80) 3",
        "thread (0x2);main (run.py:1);SkuMatchInfer.process (streamapp/x.py:2) 1",
    ])
    lines = top_frames(raw, "probe", 1.0, 10)
    assert lines[0].startswith("probe: 10 samples")
    self_part = lines[lines.index("self time:") + 1:lines.index(
        "inclusive (streamapp, tokenizer, Kafka client, model layers):")]
    assert self_part[0].split() == ["60.0%", "Linear.forward", "(torch/linear.py:3)"]
    assert lines[-1].split() == ["70.0%", "SkuMatchInfer.process", "(streamapp/x.py:2)"]


def test_sensor_probe_times_the_three_sensors(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.sensor import main as sensor_main

    assert sensor_main(["--records", "300"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "Faust's Monitor", "Faust's PrometheusMonitor", "streamapp's FaustSensor"]
    assert all(float(line.split(": ")[1].split()[0]) > 0 for line in lines)


def test_latency_breakdown_reads_the_comment_ids_of_an_inference_message() -> None:
    from bench.latency_breakdown import fanned_out_ids
    from streamapp.pipeline.fanout import fanned_out_messages
    from streamapp.records import Incoming

    records = [Incoming(b'{"reviewBody": "x"}', "comments", 1, offset, 1_700_000_000_000)
               for offset in range(5)]
    messages = list(fanned_out_messages(records, limit=1 << 20, most=3))
    assert [fanned_out_ids(message) for message in messages] == [
        ["comments:1:0", "comments:1:1", "comments:1:2"], ["comments:1:3", "comments:1:4"]]


@pytest.mark.integration
def test_hop_probe_times_every_record_it_sends_once(broker: EmbeddedBroker) -> None:
    import asyncio

    from bench.hop import hop_latencies

    started = time.time()
    latencies = asyncio.run(hop_latencies(broker.url, "hop-test", 50, rate=200, seconds=1))
    assert len(latencies) == 200
    # From a record's own timestamp to its arrival: never negative, never older than the run.
    assert min(latencies) >= 0 and max(latencies) < 1000 * (time.time() - started)
