"""A scripted or traced pair classifier, called as the seed calls its runner:
`module(input_ids, attention_mask, token_type_ids)`, the score taken from one output."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from streamapp.serving.formats.huggingface import (
    MIN_TOKENS,
    ModelInfo,
    ModelLoadError,
    PairClassifier,
    load_tokenizer,
    resolve_device,
    sha256_prefix,
)
from streamapp.serving.scores import ScoreError, to_scores

# The seed's handler reads `pytensor[1]` from its runner's outputs.
SEED_OUTPUT_INDEX = 1


class TorchScriptPairClassifier(PairClassifier):
    def __init__(self, module: Any, tokenizer: Any, device: torch.device, info: ModelInfo,
                 max_tokens: int, output_index: int) -> None:
        super().__init__(tokenizer, device, info, max_tokens)
        self._module = module
        self.output_index = output_index

    @classmethod
    def load(cls, model_file: Path, tokenizer_dir: Path, *, device: str = "auto",
             max_tokens: int = 64, output_index: int = SEED_OUTPUT_INDEX,
             name: str | None = None, version: str | None = None) -> TorchScriptPairClassifier:
        if not model_file.is_file():
            raise ModelLoadError(model_file, "TorchScript file does not exist")
        if max_tokens < MIN_TOKENS:
            raise ModelLoadError(model_file, f"max_tokens must be >= {MIN_TOKENS}")
        target = resolve_device(model_file, device)
        tokenizer = load_tokenizer(tokenizer_dir)
        try:
            # TorchScript archives hold code and tensors, not pickled Python objects.
            module = torch.jit.load(str(model_file), map_location=target)
        except Exception as exc:  # torch raises RuntimeError or ValueError for bad archives
            raise ModelLoadError(model_file, f"not a loadable TorchScript module ({exc})") from exc
        module.eval()
        dtype = next((p.dtype for p in module.parameters()), torch.float32)
        info = ModelInfo(
            name=name or model_file.parent.name,
            version=version or sha256_prefix(model_file),
            path=str(model_file),
            device=str(target),
            dtype=str(dtype).removeprefix("torch."),
            loaded_at=time.time(),
        )
        return cls(module, tokenizer, target, info, max_tokens, output_index)

    def probabilities(self, batch: Any) -> torch.Tensor:
        outputs = self._module(batch["input_ids"], batch["attention_mask"],
                               batch["token_type_ids"])
        if isinstance(outputs, tuple | list):
            if not -len(outputs) <= self.output_index < len(outputs):
                raise ScoreError(f"the module returned {len(outputs)} outputs; output index "
                                 f"{self.output_index} does not exist")
            outputs = outputs[self.output_index]
        elif isinstance(outputs, dict):
            outputs = outputs.get("logits", outputs.get("result"))
        return torch.tensor(to_scores(outputs, len(batch["input_ids"])))
