"""A handler that does no work: constant scores. It measures the pipeline around the model
(`make bench`'s pipeline ceiling) and checks a deployment end to end without a model."""

from __future__ import annotations

from typing import Any

CONSTANT_SCORE = 0.5


class ConstantInfer:
    accepts_batch = True

    def initialize(self, configDict: dict[str, Any]) -> None:
        self.logger = configDict["logger"]

    def preprocess(self, reqDict: dict[str, Any], modelSpec: Any) -> int:
        return len(reqDict["input"])

    def process(self, preprocessed: int, modelSpec: Any) -> dict[str, Any]:
        return {"result": [CONSTANT_SCORE] * preprocessed}
