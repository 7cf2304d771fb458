"""End to end: a real broker process, real `faust -A streamapp worker` processes."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest

from streamapp.broker import EmbeddedBroker, free_port
from streamapp.decoding import encode_delimited
from streamapp.processes import WorkerProcess
from streamapp.records import DeadLetter, SkuMatchResult
from tests.conftest import (
    StartWorker,
    collect_outputs,
    comma_rows,
    demo_rows,
    run_failing_worker,
    send,
    wait_until,
)

pytestmark = pytest.mark.integration

RESULTS, DLQ = "sku-matches", "comments-dlq"

# Broken records beside the valid ones, with the reason each must be dead-lettered for.
BROKEN: list[tuple[bytes, str]] = [
    (b"{not json", "invalid_json"),
    (b"\xff\xfe\xfa broken bytes", "invalid_utf8"),
    (b"[1, 2, 3]", "not_an_object"),
    (b"", "empty_value"),
    (b'{"baseSkuName": "cola"}', "missing_field"),
    (b'{"baseSkuName": "cola", "reviewBody": 42}', "wrong_type"),
    (b"COMMENT_LONG_TEXT,only,three", "bad_column_count"),
]


def category_totals(workers: list[WorkerProcess]) -> Counter[str]:
    """Predicted comments per first-level category, summed over the workers' tables."""
    totals: Counter[str] = Counter()
    for worker in workers:
        for name, counts in worker.stats()["categories"].items():
            totals[name] += counts["seen"]
    return totals


@pytest.mark.parametrize("fanout", ["true", "false"])
def test_every_comment_gets_one_result_or_one_dead_letter(
    broker: EmbeddedBroker, start_worker: StartWorker, fanout: str
) -> None:
    source = "streamapp-inference" if fanout == "true" else "comments"
    worker = start_worker(fanout=fanout, ready_topic=source)
    # The last 30 are delimited with commas in their reviews: joined back, marked recovered.
    rows = demo_rows(160, seed=11) + comma_rows(30, seed=13)
    json_rows, delimited_rows = rows[:120], rows[120:]
    values = [orjson.dumps(r) for r in json_rows] + [
        encode_delimited(r).encode() for r in delimited_rows
    ]
    values += [raw for raw, _ in BROKEN]
    ids = send(broker, values)
    by_id = dict(zip(ids, values, strict=True))
    expected_reason = {ids[len(rows) + i]: reason for i, (_, reason) in enumerate(BROKEN)}

    outputs = collect_outputs(broker.url, [RESULTS, DLQ], set(ids))

    assert set(outputs) == set(ids), f"missing: {sorted(set(ids) - set(outputs))[:10]}"
    for record_id, produced in outputs.items():
        assert len(produced) == 1, f"{record_id} has {len(produced)} outputs: {produced}"
        topic, value = produced[0]
        if record_id in expected_reason:
            assert topic == DLQ
            letter = DeadLetter.model_validate(value)
            assert letter.reason == expected_reason[record_id]
            assert letter.error
            raw = by_id[record_id]
            if letter.value_base64:
                import base64

                assert base64.b64decode(letter.value or "") == raw
            else:
                assert (letter.value or "").encode() == raw
        else:
            assert topic == RESULTS, value
            result = SkuMatchResult.model_validate(value)
            recovered = ids.index(record_id) >= 160
            assert result.recovered == ("separator_in_review" if recovered else None)
            assert ("recovered" in value) == recovered  # the key only where it says something
            assert result.match == (result.score >= 0.5)
            assert result.model.name == "streamapp-demo-sku-match"
            assert result.timing.batch_size >= 1
    rows_by_id = dict(zip(ids, rows, strict=False))
    for record_id, row in rows_by_id.items():
        value = outputs[record_id][0][1]
        assert value["baseSkuName"] == row["baseSkuName"]
        assert value["categoryPath"] == "/".join(
            str(row[f"category{n}Name"]) for n in ("First", "Second", "Third", "Fourth", "Fifth")
            if row[f"category{n}Name"])

    # The tables count what was sent, per first-level category, and every dead letter.
    expected = Counter(str(r["categoryFirstName"]) for r in rows)
    wait_until(lambda: category_totals([worker]) == expected, 30, "table counts")
    # Recoveries are counted like dead letters, in the tables: maybe another stats partition.
    wait_until(lambda: worker.stats()["recovered"] == {"separator_in_review": 30}, 30,
               "the recovered count")
    stats = worker.stats()
    assert stats["dead_letters"] == Counter(reason for _, reason in BROKEN)
    assert stats["totals"]["recovered"] == stats["agents"]["recovered"] == 30
    assert stats["agents"]["records"] == len(rows)
    assert stats["agents"]["mean_batch_size"] > 1


@pytest.mark.slow
def test_two_workers_share_the_partitions_and_count_each_comment_once(
    broker: EmbeddedBroker, start_worker: StartWorker
) -> None:
    first = start_worker()
    second = start_worker()
    # Both in the group and holding partitions before the comments arrive.
    wait_until(lambda: all(
        any(p.startswith("streamapp-inference:") for p in w.stats()["assigned_partitions"])
        for w in (first, second)), 60, "both workers to hold inference partitions")
    rows = demo_rows(400, seed=12)
    ids = send(broker, [orjson.dumps(r) for r in rows])
    assert len({i.split(":")[1] for i in ids}) > 1, "comments should span partitions"

    outputs = collect_outputs(broker.url, [RESULTS, DLQ], set(ids))

    assert set(outputs) == set(ids)
    assert all(len(v) == 1 and v[0][0] == RESULTS for v in outputs.values())
    held = [set(w.stats()["assigned_partitions"]) for w in (first, second)]
    assert not held[0] & held[1], "a partition is held by both workers"
    assert all(w.stats()["agents"]["records"] > 0 for w in (first, second)), \
        "both workers should have predicted comments"
    expected = Counter(str(r["categoryFirstName"]) for r in rows)
    wait_until(lambda: category_totals([first, second]) == expected, 30, "table counts")


def test_worker_with_a_missing_model_stops_at_start_naming_the_path(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-model"
    code, log = run_failing_worker(
        {"broker": broker.url, "model": str(missing), "web_port": str(free_port()),
         "datadir": str(tmp_path / "data")}, tmp_path)
    assert code != 0
    assert str(missing) in log
    assert "Traceback" not in log


def test_worker_with_a_bad_setting_stops_with_the_variable_named(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "faust", "-A", "streamapp", "worker"],
        env={"STREAMAPP_BATCH_SIZE": "lots", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 2
    assert "STREAMAPP_BATCH_SIZE='lots'" in result.stderr
    assert "Traceback" not in result.stderr
