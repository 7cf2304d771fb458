"""The benchmark report: the machine's description, BENCHMARKS.md and bench/results.json."""

from __future__ import annotations

import json
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch


def machine() -> dict[str, Any]:
    import os

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "gpu": torch.cuda.get_device_name(0)
            if torch.cuda.is_available() else None}


def write_report(results: dict[str, Any], out_md: Path, out_json: Path) -> None:
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    out_md.write_text(render_markdown(results))


def render_markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        "# Benchmarks",
        "",
        f"Written by `{r['command']}` on {r['date']}: {m['cpu']}, {m['cores']} cores, "
        f"Python {m['python']}, torch {m['torch']}, GPU: {m['gpu'] or 'none'}. "
        f"Comments: {r['comments_source']}. Medians of {r['runs']} runs unless noted. "
        "All figures of one table come from the same run on the same machine; the machine "
        "is shared and noisy, so compare ratios, not absolute figures across runs.",
        "",
        "## Ratios",
        "",
        "| ratio | value | goal |",
        "| --- | --- | --- |",
    ]
    goals = {"e2e_over_model_ceiling": ">= 0.95", "batched_over_per_record": ">= 1.5",
             "null_pipeline_over_raw_aiokafka": ">= 0.5"}
    for name, value in r["ratios"].items():
        lines.append(f"| `{name}` | {value} | {goals.get(name, '')} |")
    lines += ["", "## Throughput", "", "| measure | " + " | ".join(r["models"]) + " |",
              "| --- |" + " --- |" * len(r["models"])]
    for key, label in (("model_ceiling", "1. model alone, batched (seq/s)"),
                       ("end_to_end", "2. end to end, one worker (records/s)"),
                       ("end_to_end_intake",
                        "2. end to end, one worker, batch intake, one hop (records/s)"),
                       ("per_record", "3. seed pattern, one call per comment (seq/s)"),
                       ("int8_ceiling", "model alone, int8 dynamic (seq/s)")):
        cells = [str(r["per_model"][name].get(key, "")) for name in r["models"]]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "## The pipeline without a model", "",
              "A backlog the worker finds at start, timed as the raw loop is: from the first "
              "batch starting to the last result written.", "",
              "| measure | records/s |", "| --- | --- |"]
    for key, value in r["pipeline"].items():
        lines.append(f"| {key} | {value} |")
    if "pmml" in r:
        lines += pmml_section(r["pmml"])
    lines += ["", "## Latency, memory", "", "```json",
              json.dumps({k: r[k] for k in ("latency", "memory", "int8_agreement", "padding",
                                              "token_budget_at_128_tokens")
                          if k in r},
                         indent=2, ensure_ascii=False), "```", ""]
    if "loader" in r:
        lines += render_loader(r["loader"], r.get("loader_note"))
    return "\n".join(lines)


def render_loader(loader: dict[str, Any], note: str | None) -> list[str]:
    """`streamapp load` per input format (bench.loader.compare_formats): a row each."""
    by_format = {loader["format"]: loader} if "format" in loader else loader  # older: one
    lines = ["## Loader", "",
             "`streamapp load` of the same synthetic export into the embedded broker, JSON "
             "messages, in a fresh process (its own peak RSS).", "",
             "| input | rows | file MB | rows/s | peak RSS MB | seconds |",
             "| --- | --- | --- | --- | --- | --- |"]
    for fmt, f in by_format.items():
        lines.append(f"| {fmt} | {f['rows']} | {f['file_mb']} | {f['rows_per_s']} | "
                     f"{f['peak_rss_mb']} | {f['seconds']} |")
    return [*lines, *(["", note] if note else []), ""]


def pmml_section(p: dict[str, Any]) -> list[str]:
    return [
        "", "## PMML: the demo XGBoost model (JPMML evaluator)", "",
        f"Written by `{p['command']}` on {p['date']}: {p['records']} comments. \"Alone\" is "
        "the PMML handler's work in one thread (rows from the comment and the feature "
        "function, then the evaluator), warmed, the two ways alternating; end to end is one "
        f"worker (batch intake, one hop, batches of up to {p['worker_batch_size']}) on a "
        "backlog it finds at start, from its first batch to its last result, and with the "
        "comments produced while it runs (first in to last out). The worker evaluates a "
        "batch per call (the faster).", "",
        "| measure | records/s |", "| --- | --- |",
        f"| alone, one evaluator call per record | {p['alone_per_record']} |",
        f"| alone, one evaluator call per batch of {p['worker_batch_size']} | "
        f"{p['alone_batched']} |",
        f"| end to end, one worker, a backlog | {p.get('end_to_end_backlog', '')} |",
        f"| end to end, one worker, comments produced meanwhile | {p['end_to_end']} |",
        f"| ratio batched / per record | {p['batched_over_per_record']} |",
        f"| ratio end to end (backlog) / alone (goal >= 0.8) | {p['e2e_over_alone']} |",
        f"| ratio end to end (produced meanwhile) / alone | "
        f"{p.get('e2e_producing_over_alone', '')} |",
    ]


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
