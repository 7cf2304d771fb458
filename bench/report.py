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


RESULTS_JSON = Path("bench/results.json")
KEPT = ("gpu", "profiles", "probes")
BENCHMARKS_MD = Path("BENCHMARKS.md")


def write_report(results: dict[str, Any], out_md: Path, out_json: Path) -> None:
    """Both files; what other runs wrote is kept: the GPU section (`make bench-gpu`, run on
    another machine), the profiles (py-spy) and the probes (figures of one-off comparisons),
    both written by hand after their runs."""
    if out_json.exists():
        previous = json.loads(out_json.read_text())
        results = {**{k: previous[k] for k in KEPT if k in previous}, **results}
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
             "null_pipeline_over_raw_aiokafka": ">= 0.5",
             "default_demo_e2e_over_model_alone": ">= 0.85",
             "default_null_over_raw_aiokafka": ">= 0.5", "intake_null_over_raw_aiokafka": ">= 0.9"}
    for name, value in r["ratios"].items():
        lines.append(f"| `{name}` | {value} | {goals.get(name, '')} |")
    lines += ["", "## Throughput", "", "| measure | " + " | ".join(r["models"]) + " |",
              "| --- |" + " --- |" * len(r["models"])]
    for key, label in (("model_ceiling", "1. model alone, batched (seq/s)"),
                       ("model_two_at_once",
                        "model alone, two batches at once, cores / 2 threads each (seq/s)"),
                       ("end_to_end", "2. end to end, one worker (records/s)"),
                       ("end_to_end_intake",
                        "2. end to end, one worker, batch intake, one hop (records/s)"),
                       ("per_record", "3. seed pattern, one call per comment (seq/s)"),
                       ("int8_ceiling", "model alone, int8 dynamic (seq/s)"),
                       ("compiled_ceiling", "model alone, STREAMAPP_COMPILE=default (seq/s)"),
                       ("compiled_two_at_once",
                        "model alone, compiled, two batches at once (seq/s)"),
                       ("end_to_end_compiled",
                        "end to end, one worker, STREAMAPP_COMPILE=default (records/s)")):
        cells = [str(r["per_model"][name].get(key, "")) for name in r["models"]]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "## The pipeline without a model", "",
              "A backlog the worker finds at start, timed as the raw loop is: from the first "
              "batch starting to the last result written.", "",
              "| measure | records/s |", "| --- | --- |"]
    for key, value in r["pipeline"].items():
        lines.append(f"| {key} | {value} |")
    lines += cpu_bound_section(r)
    if "pmml" in r:
        lines += pmml_section(r["pmml"], r["machine"]["cores"])
    lines += ["", "## Latency, memory", "", "```json",
              json.dumps({k: r[k] for k in ("latency", "memory", "int8_agreement", "padding",
                                              "token_budget_at_128_tokens")
                          if k in r},
                         indent=2, ensure_ascii=False), "```", ""]
    if "loader" in r:
        lines += render_loader(r["loader"], r.get("loader_note"))
    if "probes" in r:
        lines += ["## Probes", "", *r["probes"], ""]  # lines of markdown
    if "profiles" in r:
        lines += ["## Profiles", "", *r["profiles"], ""]  # lines of markdown
    if "gpu" in r:
        lines += render_gpu(r["gpu"])
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


def cpu_bound(r: dict[str, Any], model: str = "demo") -> dict[str, Any] | None:
    """What the cores allow end to end: each process's CPU time per record in the first
    end-to-end run of `model` (default configuration), added up; the cores divided by that sum
    is the most records/s they can carry, whatever the pipeline does."""
    figures = r["per_model"].get(model, {})
    runs = figures.get("end_to_end_runs") or [{}]
    per_record = runs[0].get("cpu_ms_per_record")
    if not per_record:
        return None
    total_ms = sum(per_record.values())
    bound = r["machine"]["cores"] * 1000 / total_ms
    e2e = runs[0]["records_per_second"]
    return {"cpu_ms_per_record": per_record, "total_ms": round(total_ms, 4),
            "bound_records_per_second": round(bound, 1), "end_to_end": e2e,
            "alone": figures["model_ceiling"],
            "bound_over_alone": round(bound / figures["model_ceiling"], 3),
            "e2e_over_bound": round(e2e / bound, 3)}


def cpu_table(per_record: dict[str, float]) -> list[str]:
    """Each process's CPU ms per record, and their sum."""
    return ["| process | CPU ms per record |", "| --- | --- |",
            *[f"| {name} | {ms} |" for name, ms in per_record.items()],
            f"| all | {round(sum(per_record.values()), 4)} |"]


def cpu_bound_section(r: dict[str, Any]) -> list[str]:
    b = cpu_bound(r)
    if b is None:
        return []
    lines = ["", "## What two cores allow: CPU time per record (demo model, default "
             "configuration)", "",
             "The model process, the worker around it, the broker and this bench's own clients "
             "(producer and reader) share the cores. CPU time (user + system) of each over the "
             "first end-to-end run, per record:", "",
             *cpu_table(b["cpu_ms_per_record"])]
    cores = r["machine"]["cores"]
    lines += ["", f"Bound: {cores} cores x 1000 ms / {b['total_ms']} ms = "
              f"{b['bound_records_per_second']} records/s, {b['bound_over_alone']} of the model "
              f"alone ({b['alone']} seq/s). End to end: {b['end_to_end']} records/s, "
              f"{b['e2e_over_bound']} of the bound."]
    return lines


def pmml_section(p: dict[str, Any], cores: int) -> list[str]:
    return [
        "", "## PMML: the demo XGBoost model (JPMML evaluator)", "",
        f"Written by `{p['command']}` on {p['date']}: {p['records']} comments. \"Alone\" is "
        "the PMML handler's work in one thread (rows from the comment and the feature "
        "function, then the evaluator), warmed, the two ways alternating; end to end is one "
        f"worker (batch intake, one hop, batches of up to {p['worker_batch_size']}) on a "
        "backlog it finds at start, from its first batch to its last result, and with the "
        "comments produced while it runs (first in to last out). The worker calls JPMML's "
        "Java API per record; jpmml-evaluator's evaluateAll takes a batch per call but "
        "pickles it across, so it is measured for comparison only.", "",
        "| measure | records/s |", "| --- | --- |",
        f"| alone, JPMML's Java API per record (what the worker serves with) | "
        f"{p['alone_per_record']} |",
        f"| alone, the library's evaluateAll per batch of {p['worker_batch_size']} | "
        f"{p['alone_batched']} |",
        f"| end to end, one worker, a backlog | {p.get('end_to_end_backlog', '')} |",
        f"| end to end, one worker, comments produced meanwhile | {p['end_to_end']} |",
        f"| ratio batched / per record | {p['batched_over_per_record']} |",
        f"| ratio end to end (backlog) / alone (goal >= 0.8) | {p['e2e_over_alone']} |",
        f"| ratio end to end (produced meanwhile) / alone | "
        f"{p.get('e2e_producing_over_alone', '')} |",
        *pmml_cpu_bound(p, cores),
    ]


def pmml_cpu_bound(p: dict[str, Any], cores: int) -> list[str]:
    """What the cores allow: CPU time per record of each process in the median run with
    comments produced meanwhile, and the bound it sets, also were the model process to cost
    no more than the evaluator alone."""
    runs = sorted(p.get("end_to_end_runs") or [], key=lambda run: run["records_per_second"])
    if not runs or not runs[0].get("cpu_ms_per_record"):
        return []
    run = runs[len(runs) // 2]
    cpu = run["cpu_ms_per_record"]
    total = sum(cpu.values())
    bound = cores * 1000 / total
    evaluator_ms = 1000 / p["alone_per_record"]
    outside = total - cpu.get("model process", 0.0)
    best = cores * 1000 / (outside + evaluator_ms)
    return [
        "", f"CPU time per record (user + system) in the median of those runs "
        f"({run['records_per_second']} records/s):", "",
        *cpu_table(cpu), "",
        f"Bound: {cores} cores x 1000 ms / {total:.4f} ms = {bound:.0f} records/s, "
        f"{bound / p['alone_per_record']:.3f} of the evaluator alone; the run reached "
        f"{run['records_per_second'] / bound:.3f} of it. Were the model process to cost only "
        f"the evaluator's own {evaluator_ms:.4f} ms a record, the rest ({outside:.4f} ms: "
        f"worker, broker, the bench's clients) would still leave at most {best:.0f} "
        f"records/s, {best / p['alone_per_record']:.3f} of the evaluator alone.",
    ]


def merge_gpu(gpu: dict[str, Any], out_md: Path = BENCHMARKS_MD,
              out_json: Path = RESULTS_JSON) -> None:
    """The figures of `make bench-gpu` into bench/results.json (`gpu`) and BENCHMARKS.md."""
    results = json.loads(out_json.read_text())
    write_report({**results, "gpu": gpu}, out_md, out_json)


def render_gpu(g: dict[str, Any]) -> list[str]:
    m = g["machine"]
    lines = ["## GPU (`make bench-gpu`)", "",
             f"Written by `{g['command']}` on {g['date']}: {m['gpu'] or 'no GPU'}, "
             f"{m['cores']} cores, Python {m['python']}, torch {m['torch']}; {g['seconds']} s in "
             f"all. Model: BERT shape {g['shape']} with random weights, 64 tokens, comments "
             f"from {g['comments']}. One run of each figure.", "",
             "The model alone, seq/s: `predict` as the handler calls it (tokenize, pack, "
             "forward, scores to the host, one thread), and the forward pass alone on batches "
             "tokenized beforehand.", "",
             "| dtype, compiled | batch | handler path | forward only |",
             "| --- | --- | --- | --- |"]
    for dtype, per_batch in g.get("alone", {}).items():
        if not isinstance(per_batch, dict):  # skipped, or its compiling failed
            lines.append(f"| {dtype} | | {per_batch} | |")
            continue
        for batch, f in per_batch.items():
            cells = ([f["handler_path_seq_s"], f["forward_only_seq_s"]]
                     if isinstance(f, dict) else [f, ""])
            lines.append(f"| {dtype} | {batch} | {cells[0]} | {cells[1]} |")
    plan = g["plan"]
    lines += ["", f"End to end: workers sharing the GPU on the embedded broker, batch intake, "
              f"one hop, STREAMAPP_BATCH_SIZE={plan['worker_batch']}, "
              f"STREAMAPP_TOKEN_BUDGET=65536, {plan['records']} comments sent at once after "
              "the workers hold their partitions; records/s from the first sent to the last "
              "result read (and from the first batch starting). GPU utilisation: "
              "`nvidia-smi` every 500 ms over that time.", "",
              "| workers | records/s | from first batch | mean batch | batch compute ms "
              "| GPU util mean / max % | GPU memory MiB |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for count, e in g.get("end_to_end", {}).items():
        if not isinstance(e, dict):
            lines.append(f"| {count} | {e} | | | | | |")
            continue
        gpu = e.get("gpu") or {}
        lines.append(f"| {count} | {e['records_per_second']} | "
                     f"{e['records_per_second_from_first_batch']} | {e['mean_batch_size']} | "
                     f"{e['batch_compute_ms']} | {gpu.get('util_mean_pct', '')} / "
                     f"{gpu.get('util_max_pct', '')} | {gpu.get('memory_max_mib', '')} |")
    lines += ["", "| ratio | value | goal |", "| --- | --- | --- |"]
    goals = {"best_e2e_records_per_second": ">= 40000", "e2e_over_alone": ">= 0.9"}
    for name, value in g.get("ratios", {}).items():
        lines.append(f"| `{name}` | {value} | {goals.get(name, '')} |")
    if g.get("notes"):
        lines += ["", *g["notes"]]  # lines of markdown, written after a run
    return [*lines, ""]


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
