"""The demo PMML model's features, computed from one comment (the seed's reqDict).

PMML cannot compare two strings character by character, so these features are computed in
Python and handed to the evaluator beside the comment's own fields. The demo model's
version directory holds a copy of this file and names it in deploy_config.json
(`"features": "pmml_features.py:features"`): the model and the code that feeds it travel
together. Standard library only, so the copy runs wherever the worker runs.
"""

from __future__ import annotations

from typing import Any

LONGEST_MATCH_CAP = 8
FEATURE_NAMES = ("char_overlap", "bigram_overlap", "longest_match", "tail_match", "review_chars")


def _cjk(text: str) -> str:
    """The CJK characters of `text`: the SKU's words, without pack sizes and punctuation."""
    return "".join(c for c in text if "\u3400" <= c <= "\u9fff" or "\uf900" <= c <= "\ufaff")


def _longest_match(name: str, review: str) -> int:
    """Length of the longest piece of `name` that occurs in `review` (capped)."""
    best = 0
    for start in range(len(name)):
        length = best + 1
        while (start + length <= len(name) and length <= LONGEST_MATCH_CAP
               and name[start:start + length] in review):
            best = length
            length += 1
    return best


def features(reqDict: dict[str, Any]) -> dict[str, float]:
    """One comment's model inputs beyond its own fields (all numbers)."""
    review = str(reqDict.get("reviewBody") or "")
    name = _cjk(str(reqDict.get("baseSkuName") or ""))
    chars = set(name)
    bigrams = {name[i:i + 2] for i in range(len(name) - 1)}
    return {
        "char_overlap": sum(c in review for c in chars) / len(chars) if chars else 0.0,
        "bigram_overlap": sum(b in review for b in bigrams) / len(bigrams) if bigrams else 0.0,
        "longest_match": float(_longest_match(name, review)),
        "tail_match": float(len(name) >= 2 and name[-2:] in review),
        "review_chars": float(len(review)),
    }
