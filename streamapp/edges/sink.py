"""`streamapp sink`: predictions from the results topic into a database table.

A plain aiokafka consumer in its own consumer group. Each batch is upserted in one database
transaction and only then are its offsets committed to Kafka, so a crash replays at most the
last batch; the upsert on the comment id (INSERT ... ON CONFLICT (id) DO UPDATE) makes a
replay update rows, never duplicate them. SQLite (stdlib) by default, PostgreSQL by URL.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import CommitFailedError
from aiokafka.structs import TopicPartition
from pydantic import ValidationError

from streamapp.edges.clients import connection, started
from streamapp.records import SkuMatchResult

log = logging.getLogger(__name__)

DEFAULT_DB = "sqlite:///var/results.db"
DEFAULT_TABLE = "sku_matches"
DEFAULT_GROUP = "streamapp-sink"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

# (column, SQLite type, PostgreSQL type): one row per prediction, keyed by the comment id.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("id", "TEXT PRIMARY KEY", "TEXT PRIMARY KEY"),
    ("match", "INTEGER NOT NULL", "BOOLEAN NOT NULL"),
    ("score", "REAL NOT NULL", "DOUBLE PRECISION NOT NULL"),
    ("model_name", "TEXT NOT NULL", "TEXT NOT NULL"),
    ("model_version", "TEXT NOT NULL", "TEXT NOT NULL"),
    ("base_sku_name", "TEXT NOT NULL", "TEXT NOT NULL"),
    ("category_path", "TEXT NOT NULL", "TEXT NOT NULL"),
    ("categories", "TEXT NOT NULL", "JSONB NOT NULL"),
    ("source_ts", "INTEGER", "BIGINT"),
    ("predicted_at", "INTEGER NOT NULL", "BIGINT NOT NULL"),
    ("queued_ms", "REAL NOT NULL", "DOUBLE PRECISION NOT NULL"),
    ("compute_ms", "REAL NOT NULL", "DOUBLE PRECISION NOT NULL"),
    ("batch_size", "INTEGER NOT NULL", "INTEGER NOT NULL"),
    ("result_offset", "TEXT NOT NULL", "TEXT NOT NULL"),
)
COLUMN_NAMES = tuple(c[0] for c in COLUMNS)


def row_of(result: SkuMatchResult, result_offset: str) -> tuple[Any, ...]:
    """A result as a table row (in COLUMN_NAMES order)."""
    return (result.id, result.match, result.score, result.model.name, result.model.version,
            result.baseSkuName, result.categoryPath, orjson.dumps(result.categories).decode(),
            result.timing.source_ts, result.timing.predicted_at, result.timing.queued_ms,
            result.timing.compute_ms, result.timing.batch_size, result_offset)


class Database(Protocol):
    def upsert(self, rows: Sequence[tuple[Any, ...]]) -> None: ...
    def count(self) -> int: ...
    def close(self) -> None: ...


def _upsert_sql(table: str, placeholder: str) -> str:
    names = ", ".join(COLUMN_NAMES)
    values = ", ".join([placeholder] * len(COLUMN_NAMES))
    updates = ", ".join(f"{c} = excluded.{c}" for c in COLUMN_NAMES[1:])
    return (f"INSERT INTO {table} ({names}) VALUES ({values}) "
            f"ON CONFLICT (id) DO UPDATE SET {updates}")


def _create_sql(table: str, dialect_index: int) -> str:
    columns = ", ".join(f"{c[0]} {c[dialect_index]}" for c in COLUMNS)
    return f"CREATE TABLE IF NOT EXISTS {table} ({columns})"


class SqliteDatabase:
    def __init__(self, path: str, table: str) -> None:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Writes run in a worker thread (off the event loop), one at a time.
        self.conn = sqlite3.connect(path, check_same_thread=False)
        self.table = table
        with self.conn:
            self.conn.execute(_create_sql(table, 1))
        self.sql = _upsert_sql(table, "?")

    def upsert(self, rows: Sequence[tuple[Any, ...]]) -> None:
        with self.conn:  # one transaction: committed on success, rolled back on error
            self.conn.executemany(self.sql, rows)

    def count(self) -> int:
        return int(self.conn.execute(f"SELECT count(*) FROM {self.table}").fetchone()[0])

    def close(self) -> None:
        self.conn.close()


class PostgresDatabase:
    def __init__(self, url: str, table: str) -> None:
        import psycopg

        # Autocommit: each transaction() block is then a real transaction, and reads (count)
        # leave none open that would turn the next block into an uncommitted savepoint.
        self.conn = psycopg.connect(url, autocommit=True)
        self.table = table
        with self.conn.transaction():
            self.conn.execute(_create_sql(table, 2))  # type: ignore[arg-type]
        self.sql = _upsert_sql(table, "%s")

    def upsert(self, rows: Sequence[tuple[Any, ...]]) -> None:
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.executemany(self.sql, rows)  # type: ignore[arg-type]

    def count(self) -> int:
        row = self.conn.execute(f"SELECT count(*) FROM {self.table}").fetchone()  # type: ignore[arg-type]
        return int(row[0]) if row else 0

    def close(self) -> None:
        self.conn.close()


def open_database(url: str, table: str = DEFAULT_TABLE) -> Database:
    """`sqlite:///relative.db`, `sqlite:////absolute.db` (or a bare path), or
    `postgresql://user@host:port/db`; the table is created when missing."""
    if not _IDENTIFIER.match(table):
        raise ValueError(f"table name {table!r}: letters, digits and _ only")
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresDatabase(url, table)
    # SQLAlchemy's form: sqlite:///relative.db, sqlite:////absolute.db
    path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else url
    return SqliteDatabase(path or ":memory:", table)


@dataclass
class SinkStats:
    written: int = 0
    skipped: int = 0  # not a result (unparsable): logged, committed past
    batches: int = 0


async def run_sink(broker: str, db: Database, *, topic: str, group: str = DEFAULT_GROUP,
                   batch_size: int = 500, idle_timeout: float | None = None,
                   session_timeout: float = 10.0,
                   stop: Callable[[], bool] | None = None,
                   on_batch: Callable[[SinkStats], None] | None = None) -> SinkStats:
    """Consume `topic` into `db` until `stop()`, or `idle_timeout` seconds without records."""
    consumer = AIOKafkaConsumer(
        topic, **connection(broker), group_id=group,
        enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=200,
        max_poll_records=batch_size,
        # The broker holds a join for about half the session timeout (STREAMAPP_SESSION_TIMEOUT_S)
        session_timeout_ms=int(session_timeout * 1000),
        heartbeat_interval_ms=max(100, int(session_timeout * 1000) // 5))
    stats = SinkStats()
    async with started(consumer):
        last = time.monotonic()
        while not (stop is not None and stop()):
            batch = await consumer.getmany(timeout_ms=500, max_records=batch_size)
            if not batch:
                if idle_timeout is not None and time.monotonic() - last > idle_timeout:
                    break
                continue
            last = time.monotonic()
            rows, offsets = [], {}
            for tp, records in batch.items():
                for record in records:
                    try:
                        result = SkuMatchResult.model_validate_json(record.value or b"")
                    except ValidationError as exc:
                        stats.skipped += 1
                        if stats.skipped > 100 and stats.skipped % 10_000:
                            continue  # a wrong topic: say so, without a line per record
                        log.warning("skipped %s:%d:%d, not a result: %s", tp.topic,
                                    tp.partition, record.offset, exc.errors()[0]["msg"])
                        continue
                    rows.append(row_of(result, f"{tp.topic}:{tp.partition}:{record.offset}"))
                offsets[tp] = records[-1].offset + 1
            # The database first: offsets are committed only for rows that are stored.
            await asyncio.to_thread(db.upsert, rows)
            await _commit(consumer, offsets)
            stats.written += len(rows)
            stats.batches += 1
            if on_batch is not None:
                on_batch(stats)
    return stats


async def _commit(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
    try:
        await consumer.commit(offsets)
    except CommitFailedError as exc:
        # A rebalance took the partitions away; their new owner replays the batch, which the
        # upsert turns into updates.
        log.warning("offsets not committed (the batch will be replayed): %s", exc)
