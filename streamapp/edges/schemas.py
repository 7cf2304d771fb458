"""JSON Schemas of the messages, generated from the pydantic models in records.py.

The models are the one source of truth; `schemas/*.schema.json` are their published form for
clients in other languages (`streamapp schemas` rewrites them, `--check` fails when stale).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from streamapp.records import Comment, DeadLetter, SkuMatchResult

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
DIALECT = "https://json-schema.org/draft/2020-12/schema"

# file stem -> (model, mode, what the message is). Comments are validated on the way in,
# results and dead letters are serialized on the way out.
MESSAGES: dict[str, tuple[type[BaseModel], str, str]] = {
    "comment": (Comment, "validation",
                "A comment on the comment topic in its JSON form (the seed job's serialize=0). "
                "The delimited form (serialize=1) carries the same fields, in the order of "
                "the properties, joined by the separator. Only dataType COMMENT_LONG_TEXT is "
                "predicted; blank text, control characters and over-long reviews are "
                "dead-lettered."),
    "sku-match-result": (SkuMatchResult, "serialization",
                         "A prediction on the results topic, keyed by the comment id."),
    "dead-letter": (DeadLetter, "serialization",
                    "A record that could not be predicted, on the dead-letter topic, keyed by "
                    "the comment id; `reason` is a stable code."),
}


def generate() -> dict[str, dict[str, Any]]:
    """file name -> schema, for every message."""
    schemas = {}
    for stem, (model, mode, description) in MESSAGES.items():
        schema = model.model_json_schema(mode=mode)  # type: ignore[arg-type]
        schemas[f"{stem}.schema.json"] = {"$schema": DIALECT, **schema,
                                          "description": description}
    return schemas


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def write(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in generate().items():
        path = directory / name
        path.write_text(render(schema), encoding="utf-8")
        written.append(path)
    return written


def stale(directory: Path = SCHEMA_DIR) -> list[str]:
    """Files that differ from what the models generate (or are missing)."""
    out = []
    for name, schema in generate().items():
        path = directory / name
        if not path.exists() or path.read_text(encoding="utf-8") != render(schema):
            out.append(name)
    return out


def load(name: str, directory: Path = SCHEMA_DIR) -> dict[str, Any]:
    return dict(json.loads((directory / name).read_text(encoding="utf-8")))
