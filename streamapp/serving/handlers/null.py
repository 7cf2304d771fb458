"""A handler that does no work: constant scores. It measures the pipeline around the model
(`make bench`'s pipeline ceiling) and checks a deployment end to end without a model."""

from __future__ import annotations

import os
import time
from typing import Any

CONSTANT_SCORE = 0.5


class ConstantInfer:
    accepts_batch = True
    concurrent_batches = True

    def initialize(self, configDict: dict[str, Any]) -> None:
        self.logger = configDict["logger"]

    def preprocess(self, reqDict: dict[str, Any], modelSpec: Any) -> int:
        return len(reqDict["input"])

    def process(self, preprocessed: int, modelSpec: Any) -> dict[str, Any]:
        return {"result": [CONSTANT_SCORE] * preprocessed}


class SlowInfer(ConstantInfer):
    """ConstantInfer that sleeps before each `process` call: a model slow enough to bring one
    batch near the group session timeout (STREAMAPP_SESSION_TIMEOUT_S), for fault injection.

    The delay, in seconds per call (per batch when the handler takes batches), comes from the
    environment variable `SLOW_INFER_DELAY_S` (default 1.0), read at `initialize`. It is not a
    STREAMAPP_* name on purpose: worker settings reject unknown STREAMAPP_* variables.

        SLOW_INFER_DELAY_S=7 STREAMAPP_HANDLER=streamapp.serving.handlers.null:SlowInfer \\
            STREAMAPP_BATCH_SIZE=16 streamapp worker
    """

    concurrent_batches = False  # one slow batch after another, as the faults are sized for
    DELAY_ENV = "SLOW_INFER_DELAY_S"
    DEFAULT_DELAY_S = 1.0

    def initialize(self, configDict: dict[str, Any]) -> None:
        super().initialize(configDict)
        raw = os.environ.get(self.DELAY_ENV, "").strip()
        try:
            self.delay_s = float(raw) if raw else self.DEFAULT_DELAY_S
        except ValueError:
            raise ValueError(f"{self.DELAY_ENV}={raw!r} is not a number of seconds") from None
        if not 0 <= self.delay_s <= 3600:
            raise ValueError(f"{self.DELAY_ENV}={raw!r} must be between 0 and 3600 seconds")

    def process(self, preprocessed: int, modelSpec: Any) -> dict[str, Any]:
        time.sleep(self.delay_s)  # the model thread: the event loop goes on meanwhile
        return super().process(preprocessed, modelSpec)
