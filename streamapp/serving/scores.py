"""Turn whatever a model or handler returns into match probabilities in 0..1.

The seed's handlers return `{"result": x}` where x may be a probability, a logit, a pair of
class scores (probabilities or logits), a one-element tensor, or a list/tensor of those for a
batch. A value already in 0..1 is taken as a probability; anything else is squashed (sigmoid
for one number, softmax over a pair). What cannot be read raises ScoreError.
"""

from __future__ import annotations

import math
from typing import Any

import torch

PAIR_SUM_TOLERANCE = 1e-3


class ScoreError(ValueError):
    """The output cannot be read as one match probability per input."""


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().float().cpu().tolist()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _sigmoid(value: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(min(value, 60.0), -60.0)))


def _row(row: Any) -> float | tuple[float, float]:
    """One input's output: a number, or a (no, yes) pair of class scores."""
    if _is_number(row):
        value = float(row)
        if math.isnan(value):
            raise ScoreError("the model returned NaN")
        return value
    if isinstance(row, list) and len(row) == 1:
        return _row(row[0])
    if isinstance(row, list) and len(row) == 2 and all(_is_number(v) for v in row):
        no, yes = float(row[0]), float(row[1])
        if math.isnan(no) or math.isnan(yes):
            raise ScoreError("the model returned NaN")
        return no, yes
    raise ScoreError(f"cannot read {repr(row)[:80]} as a match score (a number, or a pair of "
                     "class scores)")


def _is_probability_pair(pair: tuple[float, float]) -> bool:
    no, yes = pair
    return 0.0 <= no <= 1.0 and 0.0 <= yes <= 1.0 and abs(no + yes - 1.0) < PAIR_SUM_TOLERANCE


def to_scores(result: Any, count: int) -> list[float]:
    """`count` probabilities from a model's output for `count` inputs, in input order.

    Decided for the whole output at once, so one batch is never read two ways: numbers are
    probabilities when all lie in 0..1, else logits; pairs likewise.
    """
    data = _plain(result)
    if count == 1 and not (isinstance(data, list) and len(data) == 1):
        data = [data]
    if not isinstance(data, list) or len(data) != count:
        size = len(data) if isinstance(data, list) else "one value"
        raise ScoreError(f"expected {count} scores, got {size}")
    rows = [_row(r) for r in data]
    numbers = [r for r in rows if isinstance(r, float)]
    pairs = [r for r in rows if isinstance(r, tuple)]
    if numbers and pairs:
        raise ScoreError("the output mixes single scores and pairs of class scores")
    if numbers:
        if all(0.0 <= v <= 1.0 for v in numbers):
            return numbers
        return [_sigmoid(v) for v in numbers]
    if all(_is_probability_pair(p) for p in pairs):
        return [yes for _, yes in pairs]
    return [_sigmoid(yes - no) for no, yes in pairs]  # softmax over two classes
