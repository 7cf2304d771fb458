"""The PMML measures: the demo PMML model alone (one evaluator call per record against one
call per batch) and end to end through a worker that serves it.

The model alone is timed as the worker runs it: the handler's rows (comment fields plus the
feature function) built and scored in one thread, so the ratio e2e / alone says what the
pipeline costs around the evaluator.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.measures import INTAKE, end_to_end, pipeline_ceiling

PMML_BATCH = 256


def demo_pmml(models_dir: Path, log: Callable[[str], None]) -> Path:
    from streamapp.demo.pmml_model import PMML_FILE, build_pmml_demo_model

    path = models_dir / "demo-pmml"
    if not (path / PMML_FILE).exists():
        build_pmml_demo_model(path, log=log)
    return path


def pmml_alone(model_dir: Path, rows: Sequence[dict[str, Any]], rounds: int = 3,
               batch_size: int = PMML_BATCH) -> tuple[float, float]:
    """Records per second through the PMML handler's preprocess + the evaluator, in one
    thread: (streamapp's path: JPMML's Java API called per record through JPype; the
    jpmml-evaluator library's evaluateAll, one call per batch, which pickles the batch
    across to Java and the results back: measured only, never served). The two alternate,
    `rounds` times each after a warm-up pass, and the medians are returned, so a busy spell
    of the shared machine does not fall on one of them only."""
    from streamapp.demo.pmml_model import PMML_FILE
    from streamapp.serving.handlers.pmml import PmmlInfer

    handler = PmmlInfer()
    handler.load(model_dir / PMML_FILE)
    model = handler.model
    assert model is not None
    requests = [{**r, "input": r["reviewBody"]} for r in rows]

    def run(evaluate: Callable[[list[dict[str, Any]]], Any]) -> float:
        started = time.perf_counter()
        for i in range(0, len(requests), batch_size):
            chunk = requests[i:i + batch_size]
            prepared = handler.preprocess({k: [r.get(k) for r in chunk] for k in chunk[0]},
                                          None)
            evaluate(prepared.rows)
        return len(requests) / (time.perf_counter() - started)

    library = _library_batches(model.path)
    run(model.evaluate)  # steady state: the JVM compiles its hot paths in the first pass
    run(library)
    per_record, batched = [], []
    for _ in range(rounds):
        per_record.append(run(model.evaluate))
        batched.append(run(library))
    return statistics.median(per_record), statistics.median(batched)


def _library_batches(path: Path) -> Callable[[list[dict[str, Any]]], Any]:
    """jpmml-evaluator's own batch call (evaluateAll on a DataFrame, one thread)."""
    import pandas
    from jpmml_evaluator import make_evaluator

    evaluator = make_evaluator(str(path), backend="jpype").verify()
    return lambda rows: evaluator.evaluateAll(pandas.DataFrame(rows), parallelism=1)


def run_pmml(models_dir: Path, rows: Sequence[dict[str, Any]], runs: int,
             log: Callable[[str], None]) -> dict[str, Any]:
    model_dir = demo_pmml(models_dir, log)
    clean = [{k: v for k, v in r.items() if k != "label"} for r in rows]
    log("PMML: model alone, per record and batched")
    per_record, batched = pmml_alone(model_dir, clean[:10_000], rounds=max(3, runs))
    log("PMML: end to end")
    settings = {"batch_size": str(PMML_BATCH), **INTAKE}
    # The worker's own rate: a backlog it finds at start (no producer sharing the cores).
    backlog = statistics.median(pipeline_ceiling(model_dir, rows, settings)
                                for _ in range(runs))
    # And with all comments produced while it runs, as the model measures do.
    e2e_runs = [end_to_end(model_dir, rows, settings=settings) for _ in range(runs)]
    e2e = statistics.median(r["records_per_second"] for r in e2e_runs)
    alone = per_record  # what the worker serves with
    return {
        "records": len(rows),
        "worker_batch_size": PMML_BATCH,
        "alone_per_record": round(per_record, 1),
        "alone_batched": round(batched, 1),
        "batched_over_per_record": round(batched / per_record, 3),
        "end_to_end_backlog": round(backlog, 1),
        "end_to_end": round(e2e, 1),
        "end_to_end_runs": e2e_runs,
        "e2e_over_alone": round(backlog / alone, 3),
        "e2e_producing_over_alone": round(e2e / alone, 3),
    }
