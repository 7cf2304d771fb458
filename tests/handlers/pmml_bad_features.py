"""A PMML feature function that gives the evaluator a value it must reject (a word where the
model wants a number) for comments whose review contains BAD_MARKER: the dead-letter path."""

from __future__ import annotations

from typing import Any

from streamapp.demo.pmml_features import features as demo_features

BAD_MARKER = "坏数据"


def features(reqDict: dict[str, Any]) -> dict[str, Any]:
    extra: dict[str, Any] = demo_features(reqDict)
    if BAD_MARKER in str(reqDict.get("reviewBody")):
        extra["review_chars"] = "many"
    return extra
