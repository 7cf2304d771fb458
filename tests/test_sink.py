"""The database sink: results topic -> SQLite and the real PostgreSQL, idempotent on replay."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamapp.broker import EmbeddedBroker
from streamapp.edges.clients import open_producer, send_all
from streamapp.edges.sink import Database, open_database, run_sink
from streamapp.records import ModelRef, SkuMatchResult, Timing

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
RESULTS = "sku-matches"


def results(count: int, score: float = 0.25) -> list[SkuMatchResult]:
    return [SkuMatchResult(
        id=f"comments:{i % 4}:{i}", match=score >= 0.5, score=score,
        model=ModelRef(name="streamapp-demo-sku-match", version="1"),
        baseSkuName=f"sku {i}", categories=["生鲜", "水果"], categoryPath="生鲜/水果",
        timing=Timing(source_ts=1_700_000_000_000 + i, queued_ms=3.5, compute_ms=12.0,
                      batch_size=8, predicted_at=1_700_000_000_100 + i))
        for i in range(count)]


def send_results(broker: EmbeddedBroker, items: Sequence[SkuMatchResult],
                 extra: Sequence[bytes] = ()) -> None:
    """Keyed by the comment id, as the worker sends them: a replay lands on the same
    partition, after the first result."""
    async def run() -> None:
        async with open_producer(broker.url) as producer:
            for result in items:
                await send_all(producer, RESULTS, [result.model_dump_json().encode()],
                               key=result.id.encode())
            await send_all(producer, RESULTS, extra)

    asyncio.run(run())


def sink(broker: EmbeddedBroker, db: Database, group: str = "sink-test") -> Any:
    return asyncio.run(run_sink(broker.url, db, topic=RESULTS, group=group, batch_size=50,
                                idle_timeout=1.0, session_timeout=2.0))


@pytest.fixture
def pg_table() -> Iterator[str]:
    psycopg = pytest.importorskip("psycopg")
    table = f"sink_test_{uuid.uuid4().hex[:12]}"
    yield table
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")


def db_rows(url: str, table: str) -> dict[str, tuple[Any, ...]]:
    if url.startswith("postgresql"):
        import psycopg

        with psycopg.connect(url) as conn:
            found = conn.execute(f"SELECT id, score, match, categories FROM {table}").fetchall()
    else:
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            found = conn.execute(f"SELECT id, score, match, categories FROM {table}").fetchall()
    return {row[0]: row[1:] for row in found}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_sink_writes_each_result_once_and_a_replay_updates_in_place(
    broker: EmbeddedBroker, tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        url, table = f"sqlite:///{tmp_path}/results.db", "sku_matches"
    else:
        url, table = PG_URL, request.getfixturevalue("pg_table")
    first = results(230)
    send_results(broker, first, extra=[b"not a result"])

    db = open_database(url, table)
    try:
        stats = sink(broker, db)
        assert (stats.written, stats.skipped) == (230, 1)
        assert stats.batches >= 5  # batched: 50 at most each
        assert db.count() == 230

        # The worker replays results (a restart, a rebalance): same ids, a new score. The
        # group's committed offsets make it resume after the first 231.
        send_results(broker, results(100, score=0.75))
        assert sink(broker, db).written == 100
        # A new group reads the whole topic again: updates only, never duplicates.
        assert sink(broker, db, group="another").written == 330
        assert db.count() == 230
    finally:
        db.close()
    rows = db_rows(url, table)
    assert len(rows) == 230
    assert rows["comments:1:5"][0] == 0.75 and bool(rows["comments:1:5"][1]) is True
    assert rows["comments:2:150"][0] == 0.25 and bool(rows["comments:2:150"][1]) is False
    categories = rows["comments:0:0"][2]
    assert (orjson.loads(categories) if isinstance(categories, str) else categories) == \
        ["生鲜", "水果"]


class FailingOnce:
    """A database whose first write fails, as a lost connection would."""

    def __init__(self, inner: Database) -> None:
        self.inner = inner
        self.failed = False

    def upsert(self, rows: Sequence[tuple[Any, ...]]) -> None:
        if not self.failed:
            self.failed = True
            raise RuntimeError("connection lost")
        self.inner.upsert(rows)

    def count(self) -> int:
        return self.inner.count()

    def close(self) -> None:
        self.inner.close()


def test_offsets_are_committed_only_after_the_rows_are_stored(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    send_results(broker, results(120))
    db = FailingOnce(open_database(f"sqlite:///{tmp_path}/r.db"))
    with pytest.raises(RuntimeError, match="connection lost"):
        sink(broker, db)
    assert db.count() == 0
    # Nothing was committed for the failed batch: the group starts again from the start.
    assert sink(broker, db).written == 120
    assert db.count() == 120
    db.close()


def test_sink_command_against_postgres(broker: EmbeddedBroker, pg_table: str) -> None:
    send_results(broker, results(40))
    env = {**os.environ, "STREAMAPP_BROKER": broker.url, "STREAMAPP_SESSION_TIMEOUT_S": "2"}
    done = subprocess.run(
        [sys.executable, "-m", "streamapp.cli", "sink", "--db", PG_URL, "--table", pg_table,
         "--idle-timeout", "2"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "wrote 40 results" in done.stdout
    assert len(db_rows(PG_URL, pg_table)) == 40
    bad = subprocess.run(
        [sys.executable, "-m", "streamapp.cli", "sink", "--table", "no such; table"],
        env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "letters, digits and _ only" in bad.stderr
