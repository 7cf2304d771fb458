"""The committed JSON Schemas are the pydantic models' own, and they accept what streamapp
writes and reject what it would dead-letter. (Real messages from a running worker are
validated against them in test_clients.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from streamapp.demo.synthetic import generate_comments
from streamapp.edges import schemas
from streamapp.records import DeadLetter, ModelRef, SkuMatchResult, Timing


def validator(name: str) -> jsonschema.protocols.Validator:
    schema = schemas.load(name)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_committed_schemas_equal_the_generated_ones() -> None:
    generated = schemas.generate()
    committed = sorted(p.name for p in schemas.SCHEMA_DIR.glob("*.schema.json"))
    assert committed == sorted(generated)
    for name, schema in generated.items():
        assert schemas.load(name) == schema, f"{name} is stale: run `streamapp schemas`"
    assert schemas.stale() == []


def test_schemas_accept_streamapps_messages_and_reject_broken_ones() -> None:
    comment = validator("comment.schema.json")
    for row in generate_comments(20, seed=1):
        row.pop("label")
        comment.validate(row)
    comment.validate({"baseSkuName": "可乐", "reviewBody": "气很足"})  # categories optional
    for broken in ({"baseSkuName": "可乐"}, {"baseSkuName": "可乐", "reviewBody": 42},
                   {"baseSkuName": "", "reviewBody": "x"}):
        with pytest.raises(jsonschema.ValidationError):
            comment.validate(broken)

    result = SkuMatchResult(
        id="comments:0:1", match=True, score=0.9, model=ModelRef(name="m", version="1"),
        baseSkuName="可乐", categories=["酒水饮料"], categoryPath="酒水饮料",
        timing=Timing(source_ts=None, queued_ms=1.0, compute_ms=2.0, batch_size=1,
                      predicted_at=1))
    results = validator("sku-match-result.schema.json")
    results.validate(json.loads(result.model_dump_json()))
    with pytest.raises(jsonschema.ValidationError):
        results.validate({**json.loads(result.model_dump_json()), "score": 1.5})

    letter = DeadLetter(id="comments:0:2", reason="invalid_json", error="not JSON",
                        value="{x", failed_at=1)
    letters = validator("dead-letter.schema.json")
    letters.validate(json.loads(letter.model_dump_json()))
    with pytest.raises(jsonschema.ValidationError):
        letters.validate({"id": "comments:0:2", "reason": "invalid_json"})


def test_schemas_command_writes_and_checks(tmp_path: Path) -> None:
    run = [sys.executable, "-m", "streamapp.cli", "schemas", "--out", str(tmp_path)]
    assert subprocess.run(run, capture_output=True, timeout=60).returncode == 0
    assert subprocess.run([*run, "--check"], capture_output=True, timeout=60).returncode == 0
    (tmp_path / "comment.schema.json").write_text("{}")
    stale = subprocess.run([*run, "--check"], capture_output=True, text=True, timeout=60)
    assert stale.returncode == 1 and "comment.schema.json" in stale.stderr
