"""`streamapp send`, `ask`, `tail`, `load` and `sink` against a real broker and a real worker;
every message of the run is checked against the committed JSON Schemas."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from bench.loader import export_rows, write_export
from streamapp.broker import EmbeddedBroker
from streamapp.decoding import decode_comment
from streamapp.edges import schemas
from streamapp.edges.clients import comment_value, follow, format_output, wanted
from streamapp.edges.sink import open_database, run_sink
from streamapp.records import RejectedRecord
from tests.conftest import StartWorker, collect_outputs

RESULTS, DLQ = "sku-matches", "comments-dlq"


def cli(broker: EmbeddedBroker, *args: str, stdin: str | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STREAMAPP_BROKER": broker.url, "STREAMAPP_SESSION_TIMEOUT_S": "2"}
    return subprocess.run([sys.executable, "-m", "streamapp.cli", *args], input=stdin,
                          env=env, capture_output=True, text=True, timeout=timeout)


def topic_values(broker: EmbeddedBroker, topic: str) -> list[bytes]:
    async def run() -> list[bytes]:
        return [r.value async for r in follow(broker.url, [topic], idle_timeout=1.5)]

    return asyncio.run(run())


@pytest.mark.integration
def test_clients_against_a_running_worker(
    broker: EmbeddedBroker, start_worker: StartWorker, tmp_path: Path
) -> None:
    start_worker()

    # load: a small export, delimited like the job's serialize=1
    export = write_export(tmp_path / "export.csv", export_rows(30, seed=21))
    loaded = cli(broker, "load", str(export), "--format", "delimited", "--rejects",
                 str(tmp_path / "rejects.jsonl"))
    assert loaded.returncode == 0, loaded.stderr
    assert "sent 30 to comments" in loaded.stdout

    # send: from arguments, and delimited from stdin; each prints the comment id
    sent = cli(broker, "send", "--sku", "海南香蕉 3斤", "--review", "香蕉熟得刚好，很甜",
               "--category", "生鲜", "--category", "水果")
    assert sent.returncode == 0, sent.stderr
    by_args = sent.stdout.strip()
    piped = cli(broker, "send",
                stdin="COMMENT_LONG_TEXT,可口可乐 330ml*24罐,气很足,酒水饮料,饮料,,,\n")
    assert piped.returncode == 0, piped.stderr
    by_stdin = piped.stdout.strip()
    assert by_args.startswith("comments:") and by_stdin.startswith("comments:")
    refused = cli(broker, "send", stdin='{"baseSkuName": "cola"}')
    assert refused.returncode == 2 and "missing_field" in refused.stderr
    # the worker reads "," (STREAMAPP_SEPARATOR): another separator is refused before sending
    other = cli(broker, "send", stdin="COMMENT_LONG_TEXT|可乐|气很足|||||")
    assert other.returncode == 2 and "bad_column_count" in other.stderr

    # ask: waits for its own prediction; a broken record (--raw) gets its dead letter
    asked = cli(broker, "ask", "--sku", "阳光玫瑰青提 500g", "--review", "青提粒粒饱满，有玫瑰香味",
                "--json", "--timeout", "60")
    assert asked.returncode == 0, asked.stderr
    answer = orjson.loads(asked.stdout)
    assert answer["baseSkuName"] == "阳光玫瑰青提 500g" and 0 <= answer["score"] <= 1
    dead = cli(broker, "ask", "--raw", "--timeout", "60", stdin="{not json")
    assert dead.returncode == 1, dead.stderr
    assert dead.stdout.startswith("DEAD LETTER invalid_json")

    outputs = collect_outputs(broker.url, [RESULTS, DLQ], {by_args, by_stdin, answer["id"]})
    assert outputs[by_stdin][0][1]["categoryPath"] == "酒水饮料/饮料"
    assert outputs[by_args][0][1]["categories"] == ["生鲜", "水果"]

    # tail: JSON lines into a pipe, with the dead letters; filters
    tailed = cli(broker, "tail", "--from-beginning", "--dead-letters", "--idle-timeout", "3")
    assert tailed.returncode == 0, tailed.stderr
    lines = [orjson.loads(line) for line in tailed.stdout.splitlines()]
    results = [m for m in lines if "match" in m]
    letters = [m for m in lines if "reason" in m]
    assert len(results) == 33 and len(letters) == 1
    fruit = cli(broker, "tail", "--from-beginning", "--category", "生鲜/水果", "--match",
                "--idle-timeout", "3", "--json")
    fruit_lines = [orjson.loads(line) for line in fruit.stdout.splitlines()]
    want = [m for m in results if m["categories"][:2] == ["生鲜", "水果"] and m["match"]]
    assert want  # the demo export has fruit matches: the filter has work to do
    assert sorted(fruit_lines, key=lambda m: m["id"]) == sorted(want, key=lambda m: m["id"])
    pretty = cli(broker, "tail", "--from-beginning", "--pretty", "--limit", "2")
    assert len(pretty.stdout.splitlines()) == 2
    assert all("[comments:" in line for line in pretty.stdout.splitlines())

    # every message of the run fits its committed schema
    check = {name: jsonschema.Draft202012Validator(schemas.load(name))
             for name in ("comment.schema.json", "sku-match-result.schema.json",
                          "dead-letter.schema.json")}
    for message in results:
        check["sku-match-result.schema.json"].validate(message)
    for message in letters:
        check["dead-letter.schema.json"].validate(message)
    comments = [v for v in topic_values(broker, "comments")
                if v.startswith(b"{") and v != b"{not json"]
    assert len(comments) >= 2  # the JSON ones: by arguments and by ask
    for value in comments:
        check["comment.schema.json"].validate(orjson.loads(value))

    # sink: the real results into SQLite, once each
    db = open_database(f"sqlite:///{tmp_path}/results.db")
    stats = asyncio.run(run_sink(broker.url, db, topic=RESULTS, group="test-sink",
                                 idle_timeout=1.0, session_timeout=2.0))
    assert stats.written == 33 and db.count() == 33
    db.close()


def test_ask_without_a_worker_times_out_with_a_clear_message(broker: EmbeddedBroker) -> None:
    asked = cli(broker, "ask", "--sku", "可乐", "--review", "气很足", "--timeout", "1.5")
    assert asked.returncode == 3
    assert "no prediction for comments:" in asked.stderr
    assert "within 1.5 s: is a worker running" in asked.stderr
    values = topic_values(broker, "comments")
    assert len(values) == 1 and decode_comment(values[0]).baseSkuName == "可乐"


def test_comment_value_filters_and_lines() -> None:
    value = comment_value(sku="可乐", review="气很足", categories=["酒水饮料", "饮料"],
                          output_format="delimited", separator="|")
    assert value == "COMMENT_LONG_TEXT|可乐|气很足|酒水饮料|饮料|||".encode()
    with pytest.raises(RejectedRecord, match="blank"):
        comment_value(sku="可乐", review="   ")
    assert comment_value(text=" {broken ", check=False) == b"{broken"
    # Delimited: a separator in the review is rejoined by the worker, in the SKU name it is not.
    assert comment_value(sku="可乐", review="气很足|很好喝", output_format="delimited",
                         separator="|") == "COMMENT_LONG_TEXT|可乐|气很足|很好喝|||||".encode()
    with pytest.raises(RejectedRecord, match="'baseSkuName' holds the separator"):
        comment_value(sku="可乐|330ml", review="气很足", output_format="delimited",
                      separator="|")

    result: dict[str, Any] = {"id": "comments:0:1", "match": True, "score": 0.91,
                              "baseSkuName": "可乐", "categories": ["酒水饮料", "饮料"],
                              "categoryPath": "酒水饮料/饮料"}
    letter = {"id": "comments:0:2", "reason": "invalid_json", "error": "not JSON"}
    assert wanted(result, category="饮料") and wanted(result, category="酒水饮料/饮料")
    assert not wanted(result, category="饮料/酒水饮料") and not wanted(result, match=False)
    assert not wanted(letter, category="饮料") and wanted(letter)
    assert format_output(result).startswith("MATCH    0.91  可乐")
    assert format_output(letter) == "DEAD LETTER invalid_json: not JSON [comments:0:2]"
