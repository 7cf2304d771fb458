"""Handlers that go wrong in the ways a team's handler can."""

from typing import Any

from streamapp.serving.handlers.builtin import SkuMatchInfer


class FailsToInitialize:
    def initialize(self, configDict: dict[str, Any]) -> None:
        raise RuntimeError("license server unreachable")

    def preprocess(self, reqDict: dict[str, Any], modelSpec: Any) -> Any:
        return reqDict

    def process(self, preprocessed: Any, modelSpec: Any) -> Any:
        return {"result": 0.5}


class Echo:
    """Per record; returns what the review asks for, to exercise score interpretation."""

    def initialize(self, configDict: dict[str, Any]) -> None:
        self.config = configDict

    def preprocess(self, reqDict: dict[str, Any], modelSpec: Any) -> Any:
        return reqDict["input"]

    def process(self, preprocessed: Any, modelSpec: Any) -> Any:
        if preprocessed == "raise":
            raise ValueError("cannot handle this one")
        if preprocessed == "garbage":
            return {"result": "not a number"}
        if preprocessed == "no result":
            return {"score": 0.5}
        return {"result": float(preprocessed)}


class PoisonedSkuMatch(SkuMatchInfer):
    """The built-in BERT handler, raising on any batch that holds a poison review, as a
    model bug triggered by one input would."""

    POISON = "☠"

    def preprocess(self, reqDict: dict[str, Any], modelSpec: Any) -> Any:
        if any(self.POISON in text for text in reqDict["input"]):
            raise RuntimeError("device-side assert triggered")
        return super().preprocess(reqDict, modelSpec)
