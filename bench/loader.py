"""Loader benchmark: rows per second into a running broker and the loader's peak RSS.

`measure_loader(broker_url, rows)` writes a synthetic export of `rows` rows (the columns of the
seed job's source table) and runs `streamapp load` on it in a fresh process, so that the peak
RSS is the loader's alone. Run as a script, it starts an embedded broker itself:

    python -m bench.loader --rows 1000000 --format parquet
    python -m bench.loader --rows 200000 --format parquet --format orc   # side by side
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.orc as pa_orc
import pyarrow.parquet as pq

from streamapp.demo.synthetic import generate_comments
from streamapp.edges.sources import DEFAULT_MAPPING

# Source table columns in the order of the job's SELECT, then its WHERE columns.
SOURCE_COLUMNS = list(DEFAULT_MAPPING.values())
_WRITE_ROWS = 50_000


def export_rows(count: int, *, seed: int = 0, dt: str = "20240101",
                recall_label: str = "unrecall") -> Iterator[dict[str, Any]]:
    """Synthetic rows of the source table (longcomment_extract_api_unrecall)."""
    for comment in generate_comments(count, seed=seed):
        row = {column: comment.get(name) for name, column in DEFAULT_MAPPING.items()}
        row.update(dt=dt, recall_label=recall_label)
        yield row


def _batches(rows: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= _WRITE_ROWS:
            yield batch
            batch = []
    if batch:
        yield batch


def write_export(path: Path, rows: Iterable[dict[str, Any]], schema: pa.Schema | None = None,
                 *, orc_stripe_bytes: int = 64 << 20) -> Path:
    """Write rows as Parquet, ORC, CSV or JSON Lines, by the extension (`.gz` compresses text).
    ORC is written as Hive writes it by default: zlib, 64 MB stripes (or `orc_stripe_bytes`).

    Streams in batches, so a file of millions of rows costs no more memory than a few thousand.
    """
    name = path.name.removesuffix(".gz")
    if name.endswith((".parquet", ".orc")):
        writer: pq.ParquetWriter | pa_orc.ORCWriter | None = None
        for batch in _batches(rows):
            table = pa.Table.from_pylist(batch, schema=schema)
            if writer is None:
                writer = (pq.ParquetWriter(path, table.schema) if name.endswith(".parquet")
                          else pa_orc.ORCWriter(path, stripe_size=orc_stripe_bytes,
                                                compression="zlib"))
            writer.write(table)
        if writer is None:
            raise ValueError("no rows to write")
        writer.close()
        return path
    with (gzip.open(path, "wb") if path.suffix == ".gz" else open(path, "wb")) as fh:
        if name.endswith(".csv"):
            text = _TextOut(fh)
            out: csv.DictWriter[str] | None = None
            for row in rows:
                if out is None:
                    out = csv.DictWriter(text, fieldnames=list(row), lineterminator="\n")
                    out.writeheader()
                out.writerow(row)
        elif name.endswith((".jsonl", ".json", ".ndjson")):
            for row in rows:
                fh.write(orjson.dumps(row) + b"\n")
        else:
            raise ValueError(f"{path}: expected .parquet, .orc, .csv or .jsonl (optionally .gz)")
    return path


class _TextOut:
    """csv.writer wants text; the file is binary so that gzip and plain share one path."""

    def __init__(self, fh: Any) -> None:
        self.fh = fh

    def write(self, text: str) -> int:
        return int(self.fh.write(text.encode("utf-8")))


def measure_loader(broker_url: str, rows: int, *, fmt: str = "parquet",
                   workdir: Path | None = None, output_format: str = "json") -> dict[str, Any]:
    """Load `rows` synthetic rows into the broker at `broker_url`; rows/s and peak RSS."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        path = write_export(Path(tmp) / f"export.{fmt}", export_rows(rows, seed=1))
        topic = f"bench-load-{int(time.time() * 1000)}"
        env = {**os.environ, "STREAMAPP_BROKER": broker_url}
        cmd = [sys.executable, "-m", "streamapp.cli", "load", str(path), "--json",
               "--no-progress", "--topic", topic, "--format", output_format,
               "--rejects", str(Path(tmp) / "rejects.jsonl")]
        started = time.monotonic()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        wall = time.monotonic() - started
        if done.returncode != 0:
            raise RuntimeError(f"streamapp load failed ({done.returncode}): {done.stderr}")
        report = json.loads(done.stdout)
        return {
            "rows": report["read"],
            "sent": report["sent"],
            "format": fmt,
            "output_format": output_format,
            "file_mb": round(path.stat().st_size / 2**20, 1),
            "seconds": report["seconds"],
            "rows_per_s": report["rows_per_second"],
            "peak_rss_mb": round(report["peak_rss_mb"], 1),
            "process_seconds": round(wall, 2),  # with interpreter start and imports
        }


def compare_formats(broker_url: str, rows: int, formats: Iterable[str] = ("parquet", "orc"),
                    **kwargs: Any) -> dict[str, dict[str, Any]]:
    """`measure_loader` for each input format, the same rows: Hive tables are Parquet or ORC."""
    return {fmt: measure_loader(broker_url, rows, fmt=fmt, **kwargs) for fmt in formats}


def main() -> None:
    from streamapp.broker import EmbeddedBroker, free_port

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--format", action="append", dest="formats",
                        choices=["parquet", "orc", "csv", "jsonl", "csv.gz", "jsonl.gz"],
                        help="input format; repeat it to compare (default: parquet)")
    parser.add_argument("--output-format", default="json", choices=["json", "delimited"])
    parser.add_argument("--broker", help="a running broker (default: start an embedded one)")
    args = parser.parse_args()
    formats = args.formats or ["parquet"]
    with contextlib.ExitStack() as stack:
        url = args.broker or stack.enter_context(EmbeddedBroker(free_port())).url
        result = compare_formats(url, args.rows, formats, output_format=args.output_format)
    print(json.dumps(result if len(formats) > 1 else result[formats[0]]))


if __name__ == "__main__":
    main()
