"""streamapp's own handler: the BERT pair classifier, written to the seed's contract so that
the built-in model and a team's own handler take the same path through the worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from streamapp.serving.formats.huggingface import (
    DEFAULT_TOKEN_BUDGET,
    CompileMode,
    PairClassifier,
    SkuMatchClassifier,
)
from streamapp.serving.formats.torchscript import SEED_OUTPUT_INDEX, TorchScriptPairClassifier
from streamapp.serving.repository import read_deploy_config


class SkuMatchInfer:
    """(review, SKU name) -> match probability; Hugging Face or TorchScript models."""

    accepts_batch = True
    # Two batches may run at once (STREAMAPP_MODEL_THREADS): inference reads the weights only.
    concurrent_batches = True

    def __init__(self, max_tokens: int = 64, output_index: int = SEED_OUTPUT_INDEX,
                 quantize: bool = False, token_budget: int = DEFAULT_TOKEN_BUDGET,
                 compile_mode: CompileMode | None = None) -> None:
        self.max_tokens = max_tokens
        self.token_budget = token_budget
        self.output_index = output_index
        self.quantize = quantize
        self.compile_mode = compile_mode
        if compile_mode == "reduce-overhead":
            # CUDA graph trees are recorded and replayed per thread: one batch at a time.
            self.concurrent_batches = False
        self.model: PairClassifier | None = None

    def initialize(self, configDict: dict[str, Any]) -> None:
        [path_text] = configDict["modelNameToPath"].values()
        path = Path(path_text)
        device = str(configDict["device"])
        model_type = configDict["model_type"]
        if model_type == "pytorch":
            self.model = SkuMatchClassifier.load(path, device=device, max_tokens=self.max_tokens,
                                                 quantize=self.quantize,
                                                 compile_mode=self.compile_mode)
        elif model_type == "torchscript":
            if self.compile_mode is not None:
                raise ValueError("STREAMAPP_COMPILE is for pytorch models; a TorchScript "
                                 "module is compiled already")
            deploy = read_deploy_config(path, model_type)
            if deploy.model_file is None:
                raise ValueError(f"no TorchScript file in {path}: name it in deploy_config.json")
            index = deploy.output_index if deploy.output_index is not None else self.output_index
            self.model = TorchScriptPairClassifier.load(
                path / deploy.model_file, path / deploy.tokenizer, device=device,
                max_tokens=self.max_tokens, output_index=index)
        else:
            raise ValueError(f"the built-in handler serves pytorch and torchscript models, not "
                             f"{model_type!r}: set STREAMAPP_HANDLER to a handler for it")
        # A batch at start, through preprocess and process as the worker calls them: CUDA
        # context, kernels and allocator warmed before real traffic; a compiled model
        # compiles here (a batch of one apart, as torch specializes it). Not through
        # predict(): its tensors are made in inference mode, the worker's are not, and a
        # compiled model then compiled again on the first real batch (5 s each here).
        for size in (2, 1) if self.compile_mode is not None else (2,):
            warm = {"input": ["预热"] * size, "baseSkuName": ["预热"] * size}
            self.process(self.preprocess(warm, None), None)
        configDict["logger"].info("built-in handler loaded %s", self.model.info)

    def _loaded(self) -> PairClassifier:
        if self.model is None:
            raise RuntimeError("initialize() was not called")
        return self.model

    def preprocess(self, reqDict: dict[str, Any], modelSpec: Any) -> Any:
        return self._loaded().pack(reqDict["input"], reqDict["baseSkuName"], self.token_budget)

    def process(self, preprocessed: Any, modelSpec: Any) -> dict[str, Any]:
        with torch.inference_mode():
            return {"result": self._loaded().packed_probabilities(preprocessed)}
