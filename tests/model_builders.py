"""Model directories in the layouts teams deploy: versions, TorchScript, deploy configs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification


class SeedRunner(torch.nn.Module):
    """What the seed's deployer returns: called with (ids, mask, types), 1-D for one text or
    2-D for a batch, returning (logits, probabilities)."""

    def __init__(self, traced: torch.nn.Module) -> None:
        super().__init__()
        self.traced = traced

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if input_ids.dim() == 1:
            input_ids = input_ids.unsqueeze(0)
            attention_mask = attention_mask.unsqueeze(0)
            token_type_ids = token_type_ids.unsqueeze(0)
        logits = self.traced(input_ids.long(), attention_mask.long(), token_type_ids.long())
        return logits, torch.softmax(logits, dim=-1)


class _LogitsOnly(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).logits


def torchscript_version(hf_dir: Path, out_dir: Path, *, deploy_config: bool = True) -> Path:
    """A version directory holding model.pt (scripted SeedRunner) and the tokenizer files."""
    out_dir.mkdir(parents=True)
    model = AutoModelForSequenceClassification.from_pretrained(hf_dir, local_files_only=True)
    model.eval()
    example = torch.ones(2, 16, dtype=torch.long)
    traced = torch.jit.trace(_LogitsOnly(model), (example, example, torch.zeros_like(example)),
                             check_trace=False, strict=False)
    torch.jit.script(SeedRunner(traced)).save(str(out_dir / "model.pt"))
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt",
                 "special_tokens_map.json"):
        if (hf_dir / name).exists():
            shutil.copy(hf_dir / name, out_dir / name)
    if deploy_config:
        (out_dir / "deploy_config.json").write_text(json.dumps(
            {"model_type": "torchscript", "model_file": "model.pt", "tokenizer": ".",
             "output_index": 1}))
    return out_dir


def hf_version(hf_dir: Path, out_dir: Path) -> Path:
    shutil.copytree(hf_dir, out_dir)
    return out_dir
