"""The model being served: a handler initialized on one model version, swapped on reload.

`ModelManager.current` is read once per batch, so a batch runs on one version from start to
end and its results name that version. A new version is loaded beside the current one and
swapped in between batches; a version that fails to load is reported and the current one
keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from streamapp.collector import settle_after_start
from streamapp.serving.engine import BatchTiming, ModelFailure, Outcome, Scored, failure
from streamapp.serving.formats.huggingface import ModelLoadError, PackedBatch, resolve_device
from streamapp.serving.handlers.builtin import SkuMatchInfer
from streamapp.serving.handlers.contract import (
    BUILTIN_HANDLER,
    HandlerError,
    accepts_batch,
    config_dict,
    load_handler_class,
)
from streamapp.serving.handlers.pmml import PMML_HANDLER, PmmlInfer
from streamapp.serving.repository import ModelVersion, resolve
from streamapp.serving.scores import ScoreError, to_scores
from streamapp.settings import Settings

log = logging.getLogger(__name__)
handler_log = logging.getLogger("streamapp.handler")


def _count_tokens(preprocessed: Any, timing: BatchTiming) -> None:
    """Real and padded token counts, when the handler's preprocess gives an attention mask
    (a tokenizer's BatchEncoding, or the seed's {"input": encoding})."""
    if isinstance(preprocessed, PackedBatch):
        timing.tokens += preprocessed.tokens
        timing.padded_tokens += preprocessed.padded_tokens
        return
    if isinstance(preprocessed, dict) and "attention_mask" not in preprocessed:
        preprocessed = preprocessed.get("input")
    try:
        mask = preprocessed["attention_mask"]
    except (KeyError, TypeError, IndexError):
        return
    if isinstance(mask, torch.Tensor):
        timing.tokens += int(mask.sum())
        timing.padded_tokens += mask.numel()
    elif isinstance(mask, list) and mask:
        rows = mask if isinstance(mask[0], list) else [mask]
        timing.tokens += sum(sum(row) for row in rows)
        timing.padded_tokens += sum(len(row) for row in rows)


def _result(output: Any) -> Any:
    if not isinstance(output, dict) or "result" not in output:
        raise ScoreError(f"process() must return {{'result': ...}}, got {type(output).__name__}")
    return output["result"]


def _per_record(output: dict[str, Any], key: str, count: int) -> list[Any] | None:
    values = output.get(key)
    if values is None:
        return None
    if not isinstance(values, list) or len(values) != count:
        raise ScoreError(f"process() returned {key!r} that is not a list of {count} entries")
    return values


def batch_outcomes(output: Any, count: int) -> list[Outcome]:
    """A batch handler's output as one outcome per record. Beside `result`, a handler may
    return `errors` (None, or why that record failed: it alone is dead-lettered, with no
    bisection) and `outputs` (a dict per record for the result's `outputs`)."""
    result = _result(output)
    errors = _per_record(output, "errors", count)
    outputs = _per_record(output, "outputs", count)
    if errors is None:
        scores = to_scores(result, count)
    else:
        good = [i for i, error in enumerate(errors) if error is None]
        rows = list(result)
        read = iter(to_scores([rows[i] for i in good], len(good)) if good else [])
        scores = [next(read) if error is None else 0.0 for error in errors]
    outcomes: list[Outcome] = []
    for i, score in enumerate(scores):
        if errors is not None and errors[i] is not None:
            outcomes.append(ModelFailure(str(errors[i])))
        elif outputs is not None and isinstance(outputs[i], dict):
            outcomes.append(Scored(score, outputs[i]))
        else:
            outcomes.append(score)
    return outcomes


@dataclass(frozen=True)
class LoadedModel:
    """A handler initialized on one version; `run` is called in the model thread."""

    handler: Any
    name: str
    version: str
    path: str
    device: str
    dtype: str
    batch: bool
    handler_spec: str = BUILTIN_HANDLER
    loaded_at: float = field(default_factory=time.time)

    @property
    def overlap_stages(self) -> bool:
        """Tokenize the next batch in a second thread while this one computes: it pays when
        the model's kernels let the GIL go (torch), not when both stages hold it (a handler
        may say `overlap_stages = False`)."""
        return bool(getattr(self.handler, "overlap_stages", True))

    @property
    def concurrent_batches(self) -> bool:
        """Whether the handler may compute two batches at once, on two threads (it says so
        with `concurrent_batches = True`; a team's handler may keep state between calls)."""
        return bool(getattr(self.handler, "concurrent_batches", False))

    @property
    def spec(self) -> dict[str, str]:
        """The seed's `modelSpec`: which model a request is for."""
        return {"name": self.name, "version": self.version}

    def _call(self, request: dict[str, Any], timing: BatchTiming) -> Any:
        return self._process(self._preprocess(request, timing), timing)

    def _preprocess(self, request: dict[str, Any], timing: BatchTiming) -> Any:
        started = time.perf_counter()
        preprocessed = self.handler.preprocess(request, self.spec)
        timing.preprocess_s += time.perf_counter() - started
        return preprocessed

    def _process(self, preprocessed: Any, timing: BatchTiming) -> Any:
        started = time.perf_counter()
        output = self.handler.process(preprocessed, self.spec)
        timing.process_s += time.perf_counter() - started
        _count_tokens(preprocessed, timing)
        return output

    def prepare(self, requests: Sequence[dict[str, Any]], timing: BatchTiming) -> Any:
        """Stage one, in the engine's tokenizer thread: a batch handler's `preprocess` on the
        whole batch (a per-record handler does both stages in `finish`)."""
        if not self.batch:
            return None
        return self._preprocess({key: [r[key] for r in requests] for key in requests[0]},
                                timing)

    def finish(self, prepared: Any, requests: Sequence[dict[str, Any]],
               timing: BatchTiming) -> list[Outcome]:
        """Stage two, in the model thread: one score per request. A batch handler's failure
        raises (the engine bisects); a per-record handler's failure is that record's alone."""
        if self.batch:
            return batch_outcomes(self._process(prepared, timing), len(requests))
        outcomes: list[Outcome] = []
        for request in requests:
            try:
                outcomes.append(to_scores(_result(self._call(request, timing)), 1)[0])
            except Exception as exc:  # the handler's own code: any error is the record's
                outcomes.append(failure(exc))
        return outcomes

    def run(self, requests: Sequence[dict[str, Any]],
            timing: BatchTiming | None = None) -> list[Outcome]:
        """Both stages in the calling thread."""
        timing = timing if timing is not None else BatchTiming()
        return self.finish(self.prepare(requests, timing), requests, timing)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "path": self.path,
                "device": self.device, "dtype": self.dtype, "loaded_at": self.loaded_at,
                "batch": self.batch, "handler": self.handler_spec}


def batches_at_once(settings: Settings, handler_class: type, device: torch.device) -> int:
    """How many batches the model computes at once (STREAMAPP_MODEL_THREADS). By default two
    on a CPU of two or more cores, for a handler that allows it: a batch's Python steps
    between kernels leave a core idle that the other batch fills. One on a GPU, whose kernels
    already run a batch across the whole device."""
    if settings.model_threads is not None:
        return settings.model_threads
    if device.type != "cpu" or not getattr(handler_class, "concurrent_batches", False):
        return 1
    return 2 if (os.cpu_count() or 1) >= 2 else 1


class ModelManager:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.handler_spec = settings.handler or BUILTIN_HANDLER
        self.handler_class = load_handler_class(self.handler_spec)
        self.batch = accepts_batch(self.handler_class, settings.handler_batch)
        self.device = resolve_device(settings.model_dir, settings.device)
        self.model_threads = batches_at_once(settings, self.handler_class, self.device)
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        elif self.model_threads > 1:
            # Unset, torch takes every core for each batch; two batches at once share them.
            # One torch thread per batch fights no other thread for a core: on two cores two
            # batches at once outran one batch on both cores (BENCHMARKS.md, "Probes").
            torch.set_num_threads(max(1, torch.get_num_threads() // self.model_threads))
        if settings.switch_interval_ms:
            # Each torch op gives the GIL up and waits to take it back; while the event loop
            # holds it, that wait lasts up to the switch interval (Python's 5 ms).
            sys.setswitchinterval(settings.switch_interval_ms / 1000)
        self._current: LoadedModel | None = None
        self.last_error: dict[str, Any] | None = None
        self.reloads = 0
        self.swapped_at: float | None = None
        self._failed: dict[str, float] = {}  # version path -> its mtime when it failed

    @property
    def current(self) -> LoadedModel:
        if self._current is None:
            raise RuntimeError("no model loaded yet")
        return self._current

    def _serves_pmml(self, version: ModelVersion) -> bool:
        """A PMML version gets the PMML handler, unless STREAMAPP_HANDLER names one: so a
        PMML version may replace a BERT version under hot reload, and back."""
        return self.settings.handler is None and version.deploy.model_type == "pmml"

    def _new_handler(self, version: ModelVersion) -> Any:
        if self._serves_pmml(version):
            return PmmlInfer(positive=self.settings.pmml_positive,
                             features=self.settings.pmml_features)
        if self.handler_class is SkuMatchInfer:
            return SkuMatchInfer(max_tokens=self.settings.max_tokens,
                                 output_index=self.settings.torchscript_output,
                                 quantize=self.settings.quantize == "int8",
                                 token_budget=self.settings.token_budget,
                                 compile_mode=(None if self.settings.compile == "none"
                                               else self.settings.compile))
        return self.handler_class()

    def _resolve(self) -> ModelVersion:
        return resolve(self.settings.model_dir, pinned=self.settings.model_version,
                       model_type=self.settings.model_type)

    def load(self, version: ModelVersion) -> LoadedModel:
        """Build and initialize a handler on `version` (blocking: call it off the loop)."""
        handler = self._new_handler(version)
        pmml = self._serves_pmml(version)
        try:
            handler.initialize(config_dict(self.settings.model_name, version, self.device,
                                           handler_log))
        except ModelLoadError:
            raise
        except Exception as exc:  # the handler's own code
            raise HandlerError(f"handler {self.handler_spec} failed in initialize() for "
                               f"{version.path}: {type(exc).__name__}: {exc}") from exc
        info = getattr(getattr(handler, "model", None), "info", None)
        name = info.name if info is not None else self.settings.model_name
        if version.version is not None:
            label = version.version
        else:
            label = info.version if info is not None else version.label
        return LoadedModel(handler=handler, name=name, version=label, path=str(version.path),
                           device="cpu" if pmml else str(self.device),
                           dtype=info.dtype if info is not None else "pmml" if pmml else "unknown",
                           batch=PmmlInfer.accepts_batch if pmml else self.batch,
                           handler_spec=PMML_HANDLER if pmml else self.handler_spec)

    def load_initial(self) -> LoadedModel:
        self._current = self.load(self._resolve())
        return self._current

    async def maybe_reload(self) -> bool:
        """Serve the version the model root now points at; True when a new one was swapped in.

        Loads in a thread beside the model thread, so batches go on during the load.
        """
        try:
            target = self._resolve()
        except ModelLoadError as exc:
            self._report(str(exc), None)
            return False
        if str(target.path) == self.current.path:
            return False
        mtime = target.path.stat().st_mtime
        if self._failed.get(str(target.path)) == mtime:
            return False  # failed before and unchanged since: do not retry every tick
        loop = asyncio.get_running_loop()
        try:
            loaded = await loop.run_in_executor(None, self.load, target)
        except (ModelLoadError, HandlerError) as exc:
            self._failed[str(target.path)] = mtime
            self._report(str(exc), target.label)
            return False
        previous = self.current
        self._current = loaded
        self.swapped_at = time.time()
        self.reloads += 1
        self.last_error = None
        log.warning("model swapped: %s version %s -> %s version %s", previous.name,
                    previous.version, loaded.name, loaded.version)
        del previous
        settle_after_start()  # the old version was frozen at start (or at the last swap)
        return True

    def _report(self, error: str, version: str | None) -> None:
        log.error("model reload failed, still serving version %s: %s", self.current.version,
                  error)
        self.last_error = {"version": version, "error": error, "at": time.time()}

    def status(self) -> dict[str, Any]:
        return {
            **self.current.describe(),
            "root": str(self.settings.model_dir),
            "batches_at_once": self.model_threads,
            "reloads": self.reloads,
            "swapped_at": self.swapped_at,
            "last_reload_error": self.last_error,
        }
