"""What scoring a batch gives, per record and per batch: plain data, free of torch, so the
worker's side of a model process (streamapp.serving.process) reads it without loading torch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from streamapp.records import Reason


class ModelStartError(Exception):
    """The model could not be made ready: its message says why (a bad model or handler)."""


@dataclass(frozen=True)
class ModelFailure:
    """The model could not score this record (found alone by bisecting its batch)."""

    error: str
    reason: str = Reason.MODEL_ERROR


@dataclass(frozen=True)
class Scored:
    """A score with the model's own output fields (PMML's, for the result's `outputs`)."""

    score: float
    outputs: dict[str, Any]


Outcome = float | Scored | ModelFailure


def score_of(outcome: float | Scored) -> float:
    return outcome.score if isinstance(outcome, Scored) else outcome


@dataclass
class BatchTiming:
    """Where a batch's model time went; filled in the model thread (bisection adds up)."""

    preprocess_s: float = 0.0
    process_s: float = 0.0
    tokens: int = 0  # real tokens, when the preprocessed batch has an attention mask
    padded_tokens: int = 0  # tokens including padding

    def add_parts(self, parts: Sequence[BatchTiming]) -> None:
        """Add the parts of a batch computed side by side: their tokenizing one after
        another (one tokenizer thread), their model time at once (the longest counts)."""
        self.preprocess_s += sum(part.preprocess_s for part in parts)
        self.process_s += max((part.process_s for part in parts), default=0.0)
        self.tokens += sum(part.tokens for part in parts)
        self.padded_tokens += sum(part.padded_tokens for part in parts)


@dataclass(frozen=True)
class BatchScores:
    """A batch's outcomes, in request order, with the model version that scored all of them
    (a hot swap happens between batches) and where its time went."""

    outcomes: list[Outcome]
    model: dict[str, str]  # {"name": ..., "version": ...}: the result's ModelRef
    timing: BatchTiming
