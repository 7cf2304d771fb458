"""The model as the data path sees it: score a batch, reload, say what is served.

Two ways to hold it, one interface (`ModelService`):

- `ModelProcess` (streamapp.serving.process, the default, STREAMAPP_MODEL_PROCESS=true): the
  handler, its engine (bisection, out-of-memory halving) and hot reload live in a child process
  of the worker. Every torch op gives the GIL up for its kernel and must take it back; inside
  the worker the event loop (Kafka, decoding, results) holds it up to the switch interval each
  time, which cut the demo model from ~1,740 to 57 seq/s in a probe (issue 14). In its own
  process the model has an interpreter to itself, as TorchServe's workers and Triton's Python
  backend do.
- `InProcessModels` (STREAMAPP_MODEL_PROCESS=false): the same engine on threads of the worker,
  for a debugger, or a handler that cannot run in a child process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from streamapp.serving.outcomes import BatchScores, BatchTiming, ModelStartError
from streamapp.serving.process import Blobs, Frame
from streamapp.settings import Settings

if TYPE_CHECKING:
    from streamapp.serving.engine import InferenceEngine
    from streamapp.serving.manager import ModelManager

log = logging.getLogger(__name__)


# What runs beside the model on a "work" frame: given how to score a batch of the seed's
# reqDicts (InProcessModels.score), the settings, and the frame's header and values, the
# reply's. The data path's: streamapp.pipeline.batchwork.answer_work. It must not raise.
Score = Callable[[Sequence[dict[str, Any]]], Awaitable[BatchScores]]
Job = Callable[[Score, Settings, dict[str, Any], Blobs], Awaitable[Frame]]


class ModelService(Protocol):
    handler_spec: str

    async def work(self, header: dict[str, Any], blobs: Blobs) -> Frame:
        """The job's reply to a frame. Raises only when the model is gone (its process
        died): the caller must then stop without committing."""
        ...

    async def maybe_reload(self) -> bool: ...

    def status(self) -> dict[str, Any]:
        """What is served: name, version, path, device, dtype, handler, reloads, ..."""
        ...

    def engine_state(self) -> dict[str, Any]:
        """The batch limit now (it halves on out-of-memory, then recovers)."""
        ...

    def close(self) -> None: ...


def load_manager(settings: Settings, log: logging.Logger = log) -> ModelManager:
    """Blocking: build the demo model when it is missing, initialize the handler once.
    Raises ModelLoadError or HandlerError with a message for the operator."""
    from transformers.utils import logging as transformers_logging

    from streamapp.serving.manager import ModelManager

    # Its progress bars reach the worker's log as WARNING lines ("Loading weights: 100%").
    transformers_logging.disable_progress_bar()
    if settings.uses_demo_model and not (settings.model_dir / "config.json").exists():
        from streamapp.demo.model import build_demo_model

        log.warning("no model configured and no demo model at %s: building it (about a "
                    "minute)", settings.model_dir)
        build_demo_model(settings.model_dir, log=log.info)
    manager = ModelManager(settings)
    manager.load_initial()
    return manager


class InProcessModels:
    """The model on two threads of this process (streamapp.serving.engine)."""

    def __init__(self, manager: ModelManager, engine: InferenceEngine, settings: Settings,
                 job: Job) -> None:
        self.manager = manager
        self.engine = engine
        self.settings = settings
        self.job = job
        self.handler_spec = manager.handler_spec

    @classmethod
    def load(cls, settings: Settings, job: Job, log: logging.Logger = log) -> InProcessModels:
        """Blocking; raises ModelStartError."""
        from streamapp.serving.engine import InferenceEngine
        from streamapp.serving.formats.huggingface import ModelLoadError
        from streamapp.serving.handlers.contract import HandlerError

        try:
            manager = load_manager(settings, log)
        except (ModelLoadError, HandlerError) as exc:
            raise ModelStartError(str(exc)) from None
        return cls(manager, InferenceEngine(max_batch=settings.batch_size,
                                            model_threads=manager.model_threads),
                   settings, job)

    async def work(self, header: dict[str, Any], blobs: Blobs) -> Frame:
        return await self.job(self.score, self.settings, header, blobs)

    async def score(self, requests: Sequence[dict[str, Any]]) -> BatchScores:
        """An outcome per request, in order, all from one model version; never raises."""
        model = self.manager.current  # one version for the whole batch, even across a swap
        timing = BatchTiming()
        outcomes = await self.engine.score(model, requests, timing)
        return BatchScores(outcomes, model.spec, timing)

    async def maybe_reload(self) -> bool:
        return await self.manager.maybe_reload()

    def status(self) -> dict[str, Any]:
        return self.manager.status()

    def engine_state(self) -> dict[str, Any]:
        return {"batch_limit": self.engine.limit, "out_of_memory": self.engine.out_of_memory}

    def close(self) -> None:
        self.engine.close()


async def start_model_service(settings: Settings, job: Job, program: str) -> ModelService:
    """The model, loaded and ready to work; raises ModelStartError. `program`: the module
    the model process runs (its `main` runs streamapp.serving.child with `job`)."""
    if settings.model_process:
        from streamapp.serving.process import ModelProcess

        return await ModelProcess.start(settings, program)
    return await asyncio.get_running_loop().run_in_executor(None, InProcessModels.load,
                                                            settings, job)
