"""Load a local Hugging Face sequence-pair classifier and score (review, SKU name) pairs."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BatchEncoding,
)

WEIGHTS_FILES = ("model.safetensors", "model.safetensors.index.json")
# transformers 5 silently builds an empty tokenizer when none of these is present.
TOKENIZER_FILES = (
    "tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model",
    "sentencepiece.bpe.model",
)
# Room for [CLS] [SEP] [SEP] plus at least a few tokens of each text.
MIN_TOKENS = 8
# Tokens (with padding) in one forward pass of a packed batch: 32 pairs of 64 tokens. On this
# CPU batches of 8 to 64 ran BERT-base at the same seq/s (../shared/NOTES.md); GPUs want far
# more (STREAMAPP_TOKEN_BUDGET).
DEFAULT_TOKEN_BUDGET = 2048


class ModelLoadError(Exception):
    """The model directory cannot be used; the message names the path and the problem."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"cannot load model from {path}: {problem}")
        self.path = str(path)


@dataclass(frozen=True)
class ModelInfo:
    """What was loaded, for logs, metrics and health endpoints."""

    name: str
    version: str
    path: str
    device: str
    dtype: str
    loaded_at: float
    compiled: str | None = None  # torch.compile's mode, when compiled (STREAMAPP_COMPILE)


# torch.compile's modes (STREAMAPP_COMPILE): "default" fuses the element-wise work between the
# matrix products into fewer kernels; "reduce-overhead" also replays each batch shape as a
# CUDA graph, one launch instead of hundreds (a GPU); "max-autotune" also searches kernel
# configurations (a longer start).
CompileMode = Literal["default", "reduce-overhead", "max-autotune"]


def compile_model(model: Any, mode: CompileMode) -> Any:
    """`model` compiled by torch.compile; the first call with a new kind of shape compiles
    (seconds), so the handler warms it up before serving. Dynamic: batch sizes and sequence
    lengths vary from batch to batch, and one compiled graph serves them all (torch compiles
    a dimension of 1 apart)."""
    return torch.compile(model, mode=mode, dynamic=True)


def resolve_device(path: Path, device: str) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ModelLoadError(path, f"unknown device {device!r}") from exc
    if resolved.type == "cpu":
        return torch.device("cpu")
    if resolved.type != "cuda":
        raise ModelLoadError(path, f"unsupported device {device!r}; use auto, cpu or cuda[:N]")
    if not torch.cuda.is_available():
        raise ModelLoadError(path, f"device {device!r} requested but CUDA is not available")
    index = resolved.index or 0
    if index >= torch.cuda.device_count():
        raise ModelLoadError(
            path, f"device {device!r} requested but only {torch.cuda.device_count()} GPU(s) exist"
        )
    return torch.device("cuda", index)


def _weights_file(path: Path) -> Path:
    for name in WEIGHTS_FILES:
        candidate = path / name
        if candidate.is_file():
            return candidate
    raise ModelLoadError(path, f"no safetensors weights ({' or '.join(WEIGHTS_FILES)})")


def sha256_prefix(file: Path) -> str:
    digest = hashlib.sha256()
    with file.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def _load_config(path: Path) -> Any:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(path, "config.json is missing")
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise ModelLoadError(path, f"config.json is unreadable or invalid ({exc})") from exc
    architectures = getattr(config, "architectures", None) or []
    if architectures and not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise ModelLoadError(
            path, f"not a sequence classifier (architectures: {', '.join(architectures)})"
        )
    if config.num_labels not in (1, 2):
        raise ModelLoadError(
            path, f"num_labels is {config.num_labels}; expected 2 (softmax) or 1 (sigmoid)"
        )
    return config


def load_tokenizer(path: Path, config: Any = None) -> Any:
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise ModelLoadError(path, f"tokenizer is missing (none of {', '.join(TOKENIZER_FILES)})")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, use_fast=True)
    except Exception as exc:  # transformers raises many types for a broken tokenizer
        raise ModelLoadError(path, f"tokenizer is unreadable ({exc})") from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(path, "no fast tokenizer (tokenizer.json) available")
    # Ids beyond the embedding table would only fail later, on the first prediction.
    vocab_size = getattr(config, "vocab_size", None)
    if vocab_size is not None and len(tokenizer) > vocab_size:
        raise ModelLoadError(
            path, f"tokenizer has {len(tokenizer)} tokens, the model only {vocab_size}"
        )
    return tokenizer


@dataclass(frozen=True)
class PackedBatch:
    """One batch as length-sorted sub-batches (PairClassifier.pack); `order[k]` is the input
    position of the k-th pair in sorted order."""

    parts: list[Any]
    order: list[int]
    tokens: int
    padded_tokens: int


class PairClassifier:
    """Tokenizes (review, SKU name) pairs as the seed does and scores them with a model.

    Subclasses hold the model (a Hugging Face module, a TorchScript module) and say how its
    output becomes probabilities; tokenization, batching and devices are shared here.
    """

    def __init__(self, tokenizer: Any, device: torch.device, info: ModelInfo,
                 max_tokens: int) -> None:
        self._tokenizer = tokenizer
        self._device = device
        self.info = info
        self.max_tokens = max_tokens
        # pack()'s tokenizer: a copy of the fast tokenizer's Rust one, truncating as the seed
        # does. Called directly it encodes a batch without the GIL and leaves padding to
        # numpy: on the H200 the transformers call (Python lists, padding in Python) took
        # about 65 of the 83 ms of a 512-comment batch, the forward pass 16.
        self._rust = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        self._rust.no_padding()
        self._rust.enable_truncation(max_tokens, strategy="longest_first")

    def tokenize(self, reviews: Sequence[str], sku_names: Sequence[str],
                 pad_to_max: bool = False) -> Any:
        """The seed's tokenizer call, padded to the longest pair instead of max_tokens: the
        attention mask hides padding, so scores are the same with less work (`pad_to_max`
        pads as the seed does, for comparison)."""
        return self._to_device(self._encode(reviews, sku_names,
                                            padding="max_length" if pad_to_max else "longest",
                                            return_tensors="pt"))

    def _encode(self, reviews: Sequence[str], sku_names: Sequence[str], **kwargs: Any) -> Any:
        """The seed's tokenizer settings: pairs, at most max_tokens, longest text cut first."""
        if len(reviews) != len(sku_names):
            raise ValueError(f"{len(reviews)} reviews but {len(sku_names)} SKU names")
        return self._tokenizer(list(reviews), list(sku_names), max_length=self.max_tokens,
                               truncation="longest_first", **kwargs)

    def _to_device(self, batch: Any) -> Any:
        if self._device.type == "cuda":
            # Pinned host memory lets the copy run asynchronously with the GPU's work.
            for name, tensor in batch.items():
                batch[name] = tensor.pin_memory().to(self._device, non_blocking=True)
            return batch
        return batch.to(self._device)

    def pack(self, reviews: Sequence[str], sku_names: Sequence[str],
             token_budget: int) -> PackedBatch:
        """Tokenize a batch into sub-batches of similar length: pairs sorted by length, each
        sub-batch padded to its own longest and holding at most `token_budget` tokens with
        the padding (at least one pair). Padding is compute thrown away: in batches of 64
        comments padded to their longest, 36% of the tokens at 128 tokens are padding;
        sorted sub-batches within 2048 tokens cut that to 16% (at 64 tokens most comments
        reach the limit, and padding stays at 8%)."""
        if len(reviews) != len(sku_names):
            raise ValueError(f"{len(reviews)} reviews but {len(sku_names)} SKU names")
        encodings = self._rust.encode_batch(list(zip(reviews, sku_names, strict=True)))
        lengths = [len(e) for e in encodings]
        order = sorted(range(len(lengths)), key=lengths.__getitem__)
        groups: list[list[int]] = [[]]
        for index in order:  # ascending: the pair added is the longest of its group
            if groups[-1] and (len(groups[-1]) + 1) * lengths[index] > token_budget:
                groups.append([])
            groups[-1].append(index)
        parts = [self._to_device(self._padded([encodings[i] for i in group]))
                 for group in groups]
        return PackedBatch(parts=parts, order=order, tokens=sum(lengths),
                           padded_tokens=sum(len(g) * lengths[g[-1]] for g in groups))

    def _padded(self, encodings: Sequence[Any]) -> BatchEncoding:
        """Encodings padded on the right to the longest, as the tokenizer's `pad` does."""
        lengths = np.array([len(e) for e in encodings])
        mask = np.arange(lengths.max()) < lengths[:, None]  # row-major: each row's first tokens
        count = int(lengths.sum())
        columns = {"input_ids": ("ids", self._tokenizer.pad_token_id or 0),
                   "token_type_ids": ("type_ids", self._tokenizer.pad_token_type_id)}
        batch = {}
        for name, (field, pad) in columns.items():
            if name not in self._tokenizer.model_input_names:
                continue
            array = np.full(mask.shape, pad, dtype=np.int64)
            array[mask] = np.fromiter(chain.from_iterable(getattr(e, field) for e in encodings),
                                      dtype=np.int64, count=count)
            batch[name] = torch.from_numpy(array)
        if "attention_mask" in self._tokenizer.model_input_names:
            batch["attention_mask"] = torch.from_numpy(mask.astype(np.int64))
        return BatchEncoding(batch)

    def packed_probabilities(self, packed: PackedBatch) -> torch.Tensor:
        """Match probabilities for a packed batch, in the order of the pairs given to pack."""
        sorted_scores = torch.cat([self.probabilities(part).float() for part in packed.parts])
        scores = torch.empty_like(sorted_scores)
        scores[torch.tensor(packed.order, device=scores.device)] = sorted_scores
        return scores

    def probabilities(self, batch: Any) -> torch.Tensor:
        """Match probabilities for a tokenized batch, shape (n,)."""
        raise NotImplementedError

    def predict(self, reviews: Sequence[str], sku_names: Sequence[str],
                token_budget: int | None = DEFAULT_TOKEN_BUDGET) -> list[float]:
        """Match probability (0..1) for each (review, SKU name) pair, in input order: packed
        as the handler does, or with `token_budget=None` one batch padded to its longest."""
        if not reviews and not sku_names:
            return []
        with torch.inference_mode():
            if token_budget is None:
                scores = self.probabilities(self.tokenize(reviews, sku_names))
            else:
                scores = self.packed_probabilities(self.pack(reviews, sku_names, token_budget))
        return [float(x) for x in scores.float().cpu().tolist()]


class SkuMatchClassifier(PairClassifier):
    """A Hugging Face sequence-pair classifier directory (config, tokenizer, safetensors)."""

    def __init__(self, model: Any, tokenizer: Any, info: ModelInfo, max_tokens: int) -> None:
        super().__init__(tokenizer, next(model.parameters()).device, info, max_tokens)
        self._model = model
        self._sigmoid = model.config.num_labels == 1

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        device: str = "auto",
        max_tokens: int = 64,
        num_threads: int | None = None,
        quantize: bool = False,
        dtype: torch.dtype | None = None,
        compile_mode: CompileMode | None = None,
    ) -> SkuMatchClassifier:
        """Load tokenizer and model from a local directory; raise ModelLoadError if unusable."""
        path = Path(path)
        if not path.is_dir():
            raise ModelLoadError(path, "directory does not exist")
        if max_tokens < MIN_TOKENS:
            raise ModelLoadError(path, f"max_tokens must be >= {MIN_TOKENS}, got {max_tokens}")
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        target = resolve_device(path, device)
        config = _load_config(path)
        limit = getattr(config, "max_position_embeddings", None)
        if limit is not None and max_tokens > limit:
            raise ModelLoadError(
                path, f"max_tokens {max_tokens} exceeds the model's {limit} positions"
            )
        weights = _weights_file(path)
        # Half precision only pays off (and is only well supported) on GPUs; `dtype` chooses
        # another (bfloat16, say) for measuring.
        if dtype is None:
            dtype = torch.float16 if target.type == "cuda" else torch.float32
        tokenizer = load_tokenizer(path, config)
        try:
            model, loading = AutoModelForSequenceClassification.from_pretrained(
                path,
                config=config,
                use_safetensors=True,
                local_files_only=True,
                dtype=dtype,
                attn_implementation="sdpa",  # fused attention kernels (flash / mem-efficient)
                output_loading_info=True,
            )
        except Exception as exc:  # safetensors/torch/transformers errors vary by corruption
            raise ModelLoadError(path, f"weights are unreadable ({exc})") from exc
        # A base model saved without a classification head would load with a random head.
        missing = loading.get("missing_keys") or []
        if missing:
            raise ModelLoadError(
                path, f"weights lack parameters ({', '.join(sorted(missing)[:5])})"
            )
        try:
            model.to(target)
        except RuntimeError as exc:
            raise ModelLoadError(path, f"cannot move the model to {target} ({exc})") from exc
        model.eval()
        if quantize and compile_mode is not None:
            raise ModelLoadError(path, "int8 quantization and torch.compile are not offered "
                                       "together; choose one")
        if quantize:
            if target.type != "cpu":
                raise ModelLoadError(path, "int8 quantization is for CPUs; GPUs run float16")
            # Dynamic int8 for the linear layers, where BERT spends nearly all its time.
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear},
                                                           dtype=torch.qint8)
            dtype = torch.qint8
        if compile_mode is not None:
            model = compile_model(model, compile_mode)
        info = ModelInfo(
            name=str(getattr(config, "streamapp_model_name", None) or path.resolve().name),
            version=str(
                getattr(config, "streamapp_model_version", None) or sha256_prefix(weights)
            ),
            path=str(path),
            device=str(target),
            dtype=str(dtype).removeprefix("torch."),
            loaded_at=time.time(),
            compiled=compile_mode,
        )
        return cls(model, tokenizer, info, max_tokens)

    def probabilities(self, batch: Any) -> torch.Tensor:
        logits = self._model(**batch).logits.float()
        if self._sigmoid:
            return torch.sigmoid(logits[:, 0])
        return torch.softmax(logits, dim=-1)[:, 1]
