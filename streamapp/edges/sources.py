"""Reading an exported comment table: Parquet, ORC, CSV or JSON Lines (gzip or not), one file
or a directory of part files with Hive partition directories (`dt=20260101/`), in bounded
batches of raw rows. What the rows become is `streamapp.edges.loader`'s business."""

from __future__ import annotations

import csv
import gzip
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.dataset as pa_ds
import pyarrow.orc as pa_orc
import pyarrow.parquet as pq

from streamapp.records import (
    CATEGORY_FIELDS,
    Reason,
    RejectedRecord,
)

SourceFormat = Literal["parquet", "orc", "csv", "jsonl"]
OutputFormat = Literal["json", "delimited"]

# The job's SELECT: record field <- source column; `dt` and `recall_label` feed its WHERE.
DEFAULT_MAPPING: dict[str, str] = {
    "baseSkuName": "base_sku_name",
    "reviewBody": "review_body",
    **{name: f"category{i}_name" for i, name in enumerate(CATEGORY_FIELDS, start=1)},
    "dt": "dt",
    "recall_label": "recall_label",
}
MAPPABLE = tuple(DEFAULT_MAPPING)
REQUIRED_FIELDS = ("baseSkuName", "reviewBody")

_EXTENSIONS: dict[str, SourceFormat] = {
    ".parquet": "parquet", ".pq": "parquet",
    ".orc": "orc",
    ".csv": "csv",
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
}
_GZIP_MAGIC = b"\x1f\x8b"
_PARTITION_DIR = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
class LoadError(Exception):
    """The input cannot be loaded at all (missing file or column, unreadable format)."""


@dataclass
class LoadOptions:
    path: Path
    topic: str = "comments"
    dt: str | None = None
    recall_label: str | None = "unrecall"
    output_format: OutputFormat = "json"
    separator: str = ","
    error_limit: float = 1.0
    debug_topic: str | None = None
    debug_count: int = 0
    dry_run: bool = False
    mapping: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_MAPPING))
    source_format: SourceFormat | None = None  # None: from the extension or the content
    csv_delimiter: str = ","
    rejects_path: Path = Path("rejects.jsonl")
    batch_rows: int = 10_000
    max_review_chars: int = 20_000


# One raw row: its 1-based number in its file and either its source columns or why it could
# not even be parsed.
RawRow = tuple[int, dict[str, Any] | RejectedRecord]


@dataclass
class Chunk:
    file: Path
    rows: list[RawRow]


def parse_mapping(pairs: list[str]) -> dict[str, str]:
    """`FIELD=COLUMN` overrides on top of the job's mapping."""
    mapping = dict(DEFAULT_MAPPING)
    for pair in pairs:
        name, sep, column = pair.partition("=")
        if not sep or not column or name not in MAPPABLE:
            raise LoadError(f"--map {pair!r}: expected FIELD=COLUMN with FIELD one of "
                            f"{', '.join(MAPPABLE)}")
        mapping[name] = column
    return mapping


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == _GZIP_MAGIC


def _open_text_source(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")


def detect_format(path: Path) -> SourceFormat:
    """From the extension (`.csv.gz` too), else from the content: Hive part files have none."""
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in (".gz", ".gzip")]
    if suffixes and suffixes[-1] in _EXTENSIONS:
        return _EXTENSIONS[suffixes[-1]]
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head == b"PAR1":
        return "parquet"
    if head[:3] == b"ORC":  # Hive's ORC part files (000000_0) start with it
        return "orc"
    with _open_text_source(path) as fh:
        start = fh.read(4096).lstrip()
    if start.startswith(b"{"):
        return "jsonl"
    if start:
        return "csv"
    raise LoadError(f"{path}: cannot tell its format (empty?); pass --input-format")


def list_files(path: Path) -> list[Path]:
    """The file, or the part files of a directory (sorted; markers like _SUCCESS skipped)."""
    if not path.exists():
        raise LoadError(f"{path}: no such file or directory")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and not any(
        part.startswith((".", "_")) for part in p.relative_to(path).parts) and p.stat().st_size)
    if not files:
        raise LoadError(f"{path}: no data files in the directory")
    return files


def partition_values(path: Path) -> dict[str, str]:
    """Hive partition directories (`.../dt=20240101/part-0`) give columns a file lacks."""
    values = {}
    for part in path.parent.parts:
        match = _PARTITION_DIR.match(part)
        if match:
            values[match.group(1)] = match.group(2)
    return values


def _check_columns(path: Path, columns: list[str], options: LoadOptions,
                   partitions: Mapping[str, str]) -> list[str]:
    """The source columns to read; the load stops when a needed one is missing."""
    mapping = options.mapping
    needed = [mapping[f] for f in REQUIRED_FIELDS]
    if options.dt is not None:
        needed.append(mapping["dt"])
    if options.recall_label:
        needed.append(mapping["recall_label"])
    missing = [c for c in needed if c not in columns and c not in partitions]
    if missing:
        hint = (" (pass --recall-label '' to load every label)"
                if mapping["recall_label"] in missing else "")
        raise LoadError(f"{path}: no column {', '.join(map(repr, missing))} among "
                        f"{', '.join(columns)}; map other names with --map FIELD=COLUMN{hint}")
    return [c for c in dict.fromkeys(mapping.values()) if c in columns]


def _read_parquet(path: Path, options: LoadOptions,
                  partitions: Mapping[str, str]) -> Iterator[list[RawRow]]:
    source = pq.ParquetFile(path)
    columns = _check_columns(path, source.schema_arrow.names, options, partitions)
    yield from _numbered(source.iter_batches(batch_size=options.batch_rows, columns=columns),
                         options.batch_rows)


def _read_orc(path: Path, options: LoadOptions,
              partitions: Mapping[str, str]) -> Iterator[list[RawRow]]:
    # The dataset scanner reads a stripe at a time and cuts it into batches (ORCFile.read
    # would read the whole file); its batches end at stripe ends, so _numbered evens them.
    columns = _check_columns(path, pa_orc.ORCFile(path).schema.names, options, partitions)
    scanner = pa_ds.dataset(path, format="orc").scanner(
        columns=columns, batch_size=options.batch_rows, use_threads=False, batch_readahead=2)
    yield from _numbered(scanner.to_batches(), options.batch_rows)


def _numbered(batches: Iterable[pa.RecordBatch], size: int) -> Iterator[list[RawRow]]:
    """Numbered rows, `size` at a time (the last fewer), whatever sizes the batches have."""
    pending: list[dict[str, Any]] = []
    number = 0
    for batch in batches:
        pending += _batch_rows(batch)
        while len(pending) >= size:
            yield [(number + i, row) for i, row in enumerate(pending[:size], start=1)]
            number += size
            del pending[:size]
    if pending:
        yield [(number + i, row) for i, row in enumerate(pending, start=1)]


def _batch_rows(batch: pa.RecordBatch) -> list[dict[str, Any]]:
    """Rows as dicts; a third faster than RecordBatch.to_pylist (this runs per row)."""
    names = batch.schema.names
    return [dict(zip(names, values, strict=True))
            for values in zip(*(column.to_pylist() for column in batch.columns), strict=True)]


def _read_csv(path: Path, options: LoadOptions,
              partitions: Mapping[str, str]) -> Iterator[list[RawRow]]:
    with _open_text_source(path) as fh:
        header_line = fh.readline().decode("utf-8-sig", errors="replace")
    header = next(csv.reader([header_line], delimiter=options.csv_delimiter), [])
    columns = _check_columns(path, header, options, partitions)
    bad_rows: list[RawRow] = []

    def invalid_row(row: pa_csv.InvalidRow) -> str:
        # A row with the wrong number of cells is rejected alone; the file goes on.
        bad_rows.append((row.number or 0, RejectedRecord(
            Reason.BAD_COLUMN_COUNT,
            f"the CSV row has {row.actual_columns} cells, the header {row.expected_columns}")))
        return "skip"

    # Binary cells: a cell that is not UTF-8 rejects its row, not the whole file.
    reader = pa_csv.open_csv(
        pa.input_stream(str(path), compression="gzip" if _is_gzip(path) else None),
        read_options=pa_csv.ReadOptions(block_size=4 << 20, use_threads=False),
        parse_options=pa_csv.ParseOptions(delimiter=options.csv_delimiter,
                                          newlines_in_values=True,
                                          invalid_row_handler=invalid_row),
        convert_options=pa_csv.ConvertOptions(
            include_columns=columns, column_types={c: pa.binary() for c in columns},
            strings_can_be_null=False, quoted_strings_can_be_null=False))
    number = 0
    try:
        for batch in reader:
            rows: list[RawRow] = list(bad_rows)
            bad_rows.clear()
            for row in _batch_rows(batch):
                number += 1
                rows.append((number, row))
            yield rows
    except pa.ArrowInvalid as exc:
        raise LoadError(f"{path}: not a readable CSV file after row {number}: {exc}") from None
    if bad_rows:
        yield list(bad_rows)


def _parse_json_line(line: bytes) -> dict[str, Any] | RejectedRecord:
    try:
        parsed = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as utf8_error:
            return RejectedRecord(Reason.INVALID_UTF8, f"the line is not UTF-8: {utf8_error}")
        return RejectedRecord(Reason.INVALID_JSON, f"the line is not JSON: {exc}")
    if not isinstance(parsed, dict):
        return RejectedRecord(Reason.NOT_AN_OBJECT,
                              f"the line is JSON {type(parsed).__name__}, not an object")
    return parsed


def _read_jsonl(path: Path, options: LoadOptions,
                partitions: Mapping[str, str]) -> Iterator[list[RawRow]]:
    with _open_text_source(path) as fh:
        rows: list[RawRow] = []
        checked = False
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            row = _parse_json_line(line)
            if not checked and isinstance(row, dict):
                # JSON lines have no header: the first object's keys stand for it, so that a
                # file without the filter columns stops here instead of all being filtered out.
                _check_columns(path, list(row), options, partitions)
                checked = True
            rows.append((number, row))
            if len(rows) >= options.batch_rows:
                yield rows
                rows = []
        if rows:
            yield rows


_READERS: dict[SourceFormat, Callable[[Path, LoadOptions, Mapping[str, str]],
                                      Iterator[list[RawRow]]]] = {
    "parquet": _read_parquet, "orc": _read_orc, "csv": _read_csv, "jsonl": _read_jsonl,
}


def read_chunks(options: LoadOptions) -> Iterator[Chunk]:
    """Every raw row of every file, a bounded batch at a time."""
    for path in list_files(options.path):
        fmt = options.source_format or detect_format(path)
        partitions = partition_values(path)
        try:
            for rows in _READERS[fmt](path, options, partitions):
                yield Chunk(path, rows)
        except (pa.ArrowInvalid, OSError, EOFError, gzip.BadGzipFile) as exc:
            raise LoadError(f"{path}: cannot read it as {fmt}: {exc}") from None


_COUNTERS: dict[str, Callable[[Path], int]] = {
    "parquet": lambda path: pq.ParquetFile(path).metadata.num_rows,
    "orc": lambda path: pa_orc.ORCFile(path).nrows,
}


def total_rows(options: LoadOptions) -> int | None:
    """Known up front for Parquet and ORC (from the footers); None otherwise."""
    files = list_files(options.path)
    formats = [options.source_format or detect_format(p) for p in files]
    if any(fmt not in _COUNTERS for fmt in formats):
        return None
    return sum(_COUNTERS[fmt](path) for fmt, path in zip(formats, files, strict=True))
