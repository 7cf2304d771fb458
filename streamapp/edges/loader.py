"""`streamapp load`: the seed's Hive-to-Kafka job (hive2mafka) as a command.

Reads an exported comment table (Parquet, ORC, CSV or JSON Lines, gzip or not, one file or a
directory of part files) in bounded batches, keeps the rows of the job's WHERE clause
(`dt`, `recall_label='unrecall'`), maps the source columns as its SELECT does, and sends each row
as a comment (JSON or delimited). Every value sent has passed the worker's own decoder
(`decode_comment`), so a row the loader accepts is a row the worker predicts; the others go to
a rejects file with the same reason codes the dead-letter topic uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt_
import gc
import resource
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from streamapp.decoding import (
    decode_comment,
    encode_delimited,
    separator_in_review,
    validate_comment,
)
from streamapp.edges.sources import (
    Chunk,
    LoadOptions,
    list_files,
    partition_values,
    read_chunks,
    total_rows,
)
from streamapp.records import (
    CATEGORY_FIELDS,
    COLUMNS,
    DATA_TYPE,
    Reason,
    RejectedRecord,
    original_value,
)

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer

# The error limit is judged once this many rows were checked (and always at the end), so that
# one bad row among the first few does not stop a large load.
ERROR_LIMIT_MIN_ROWS = 1000
# Bigger batches than the clients default: fewer requests for the same rows in a bulk load.
BATCH_BYTES = 1 << 20


class ErrorLimitExceeded(Exception):
    """More rows were rejected than the error limit allows; the load stopped."""

    def __init__(self, report: LoadReport, limit: float) -> None:
        reasons = ", ".join(f"{r} {n}" for r, n in report.reasons.most_common())
        super().__init__(
            f"stopped: {report.rejected} of {report.checked} rows rejected "
            f"({report.reject_percent:.2f}%), over the error limit of {limit:g}% "
            f"({reasons}); every reject and its reason is in {report.rejects_path}")
        self.report = report


@dataclass
class LoadReport:
    files: int = 0
    read: int = 0
    filtered: int = 0
    rejected: int = 0
    sent: int = 0
    debug_sent: int = 0
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    topic: str = ""
    dry_run: bool = False
    rejects_path: str = ""
    reasons: Counter[str] = field(default_factory=Counter)
    # Delimited output: rows whose reviewBody holds the separator (sent; the worker rejoins
    # them); a separator in another column rejects the row (bad_column_count).
    separator_in_review: int = 0

    @property
    def checked(self) -> int:
        """Rows that passed the filters: the base of the error-limit percentage."""
        return self.read - self.filtered

    @property
    def reject_percent(self) -> float:
        return 100.0 * self.rejected / self.checked if self.checked else 0.0

    @property
    def rows_per_second(self) -> float:
        return self.read / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["reasons"] = dict(self.reasons)
        data["rows_per_second"] = round(self.rows_per_second, 1)
        data["seconds"] = round(self.seconds, 3)
        return data

    def summary(self) -> str:
        verb = "would send" if self.dry_run else "sent"
        text = (f"read {self.read:,} rows from {self.files} file(s): filtered out "
                f"{self.filtered:,}, {verb} {self.sent:,} to {self.topic}, rejected "
                f"{self.rejected:,} ({self.reject_percent:.2f}%) in {self.seconds:.1f} s "
                f"({self.rows_per_second:,.0f} rows/s, peak RSS {self.peak_rss_mb:.0f} MB)")
        if self.reasons:
            text += "\n  rejects: " + ", ".join(f"{r} {n}" for r, n in
                                                self.reasons.most_common())
            text += f" (see {self.rejects_path})"
        if self.separator_in_review:
            text += (f"\n  {self.separator_in_review:,} rows hold the separator in reviewBody: "
                     f"delimited records are ambiguous there; the worker joins the extra "
                     f"columns back into the review (results marked recovered). --format "
                     f"json avoids it")
        if self.debug_sent:
            text += f"\n  a copy of the first {self.debug_sent} on the debug topic"
        return text


def _partition_text(value: object) -> str:
    """`dt` as Hive writes it (YYYYMMDD), whether the export typed it as text, int or date."""
    if isinstance(value, dt_.date):
        return value.strftime("%Y%m%d")
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _text(value: object, column: str) -> object:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RejectedRecord(Reason.INVALID_UTF8,
                                 f"the column {column!r} is not UTF-8: {exc}") from None
    return value


class RowEncoder:
    """Source row -> the bytes the job would send, checked by the worker's own decoder."""

    def __init__(self, options: LoadOptions) -> None:
        self.options = options
        self.fields = [(name, options.mapping[name]) for name in COLUMNS[1:]]
        self.separator_in_review = 0  # delimited rows sent that the worker has to rejoin

    def keep(self, row: Mapping[str, Any], partitions: Mapping[str, str]) -> bool:
        """The job's WHERE clause."""
        mapping, options = self.options.mapping, self.options
        if options.dt is not None:
            value = row.get(mapping["dt"], partitions.get(mapping["dt"]))
            if value is None or _partition_text(value) != options.dt:
                return False
        if options.recall_label:
            value = row.get(mapping["recall_label"], partitions.get(mapping["recall_label"]))
            if value is None or _partition_text(value) != options.recall_label:
                return False
        return True

    def encode(self, row: Mapping[str, Any]) -> bytes:
        """The comment's bytes; RejectedRecord (with the worker's reason code) when invalid."""
        record: dict[str, object] = {"dataType": DATA_TYPE}
        for name, column in self.fields:
            value = row.get(column)
            if value.__class__ is not str:  # the common case first: this runs per cell
                if value is None:
                    if name in CATEGORY_FIELDS:
                        record[name] = ""  # NULL: no such level, as the worker reads it
                    continue
                value = _text(value, column)
            record[name] = value
        options = self.options
        # JSON is checked first even for delimited output: it keeps the types, which
        # joining columns into text would hide (42 would become "42").
        validate_comment(record, max_review_chars=options.max_review_chars)
        if options.output_format == "json":
            return orjson.dumps(record)
        # A separator in reviewBody is rejoined by the worker; in another column it is not.
        in_review = separator_in_review(record, options.separator)
        value_text = encode_delimited(record, options.separator).encode()
        decode_comment(value_text, input_format="delimited", separator=options.separator,
                       max_review_chars=options.max_review_chars)
        self.separator_in_review += in_review
        return value_text


class RejectsFile:
    """JSON lines: file, row number, reason code, message and the source columns."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.fh = open(path, "wb")  # noqa: SIM115 -- closed by close()

    def write(self, file: Path, number: int, rejected: RejectedRecord,
              row: Mapping[str, Any] | None) -> None:
        source = None if row is None else {k: _jsonable(v) for k, v in row.items()}
        self.fh.write(orjson.dumps({"file": str(file), "row": number, "reason": rejected.reason,
                                    "error": rejected.error, "source": source}) + b"\n")

    def close(self) -> None:
        self.fh.close()


def _jsonable(value: object) -> object:
    if isinstance(value, bytes):
        text, is_base64 = original_value(value)
        return {"base64": text} if is_base64 else text
    if isinstance(value, dt_.date | dt_.datetime):
        return value.isoformat()
    return value


def peak_rss_mb() -> float:
    """This process's own peak RSS. VmHWM belongs to the process's memory map, new at exec;
    ru_maxrss survives exec on Linux and would report a larger parent's peak instead."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # KiB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


class Progress:
    """A tqdm bar on stderr (rows, rows/s); nothing when off."""

    def __init__(self, enabled: bool, total: int | None) -> None:
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit=" rows", unit_scale=True, smoothing=0.1,
                            dynamic_ncols=True, desc="load")

    def update(self, report: LoadReport, rows: int) -> None:
        if self.bar is not None:
            self.bar.update(rows)
            self.bar.set_postfix(rejected=report.rejected, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _check_chunk(chunk: Chunk, encoder: RowEncoder, partitions: Mapping[str, str],
                 report: LoadReport, rejects: RejectsFile) -> list[bytes]:
    """The values to send from one chunk; counts the filtered rows and writes the rejects."""
    values: list[bytes] = []
    for number, row in chunk.rows:
        report.read += 1
        if isinstance(row, RejectedRecord):
            # Unparsable: there are no columns to filter on, so it counts as a reject.
            rejected, source = row, None
        elif not encoder.keep(row, partitions):
            report.filtered += 1
            continue
        else:
            try:
                values.append(encoder.encode(row))
                continue
            except RejectedRecord as exc:
                rejected, source = exc, row
        report.rejected += 1
        report.reasons[rejected.reason] += 1
        rejects.write(chunk.file, number, rejected, source)
    return values


def _checked_chunks(options: LoadOptions, report: LoadReport,
                    rejects: RejectsFile) -> Iterator[tuple[list[bytes], int]]:
    """(values to send, rows read) a chunk at a time."""
    encoder = RowEncoder(options)
    partitions_by_file: dict[Path, dict[str, str]] = {}
    for chunk in read_chunks(options):
        partitions = partitions_by_file.get(chunk.file)
        if partitions is None:
            partitions = partitions_by_file[chunk.file] = partition_values(chunk.file)
        values = _check_chunk(chunk, encoder, partitions, report, rejects)
        report.separator_in_review = encoder.separator_in_review
        yield values, len(chunk.rows)


class _Sender:
    """Sends checked values to the topic (and the first ones to the debug topic) with at most
    two chunks in flight, so memory stays bounded whatever the input size."""

    def __init__(self, producer: AIOKafkaProducer | None, options: LoadOptions,
                 report: LoadReport) -> None:
        self.producer, self.options, self.report = producer, options, report
        self.pending: list[asyncio.Future[Any]] = []

    async def send(self, values: list[bytes]) -> None:
        from streamapp.edges.clients import send_batched

        options, report = self.options, self.report
        if self.producer is not None and values:
            debug = options.debug_count - report.debug_sent
            if options.debug_topic and debug > 0:
                self.pending += await send_batched(self.producer, options.debug_topic,
                                                   values[:debug])
                report.debug_sent += min(debug, len(values))
            futures = await send_batched(self.producer, options.topic, values)
            await asyncio.gather(*self.pending)
            self.pending = futures
        report.sent += len(values)

    async def flush(self) -> None:
        await asyncio.gather(*self.pending)


async def _load(options: LoadOptions, broker: str, report: LoadReport,
                progress: Progress) -> None:
    from streamapp.edges.clients import open_producer

    async with contextlib.AsyncExitStack() as stack:
        rejects = RejectsFile(options.rejects_path)
        stack.callback(rejects.close)
        producer = None
        if not options.dry_run:
            producer = await stack.enter_async_context(open_producer(
                broker, max_batch_size=BATCH_BYTES, max_request_size=2 * BATCH_BYTES))
        sender = _Sender(producer, options, report)
        chunks = _checked_chunks(options, report, rejects)
        # Nothing is sent before the error limit can be judged, so an input that is bad from
        # the start (a small file, a wrong export) sends nothing at all.
        held: list[bytes] = []
        while True:
            # Reading and checking run in a thread so that the producer keeps writing the
            # previous chunk to the broker meanwhile (pyarrow and the sockets release the GIL).
            item = await asyncio.to_thread(next, chunks, None)
            if item is None:
                break
            values, rows = item
            held += values
            progress.update(report, rows)
            if report.checked >= ERROR_LIMIT_MIN_ROWS:
                if report.reject_percent > options.error_limit:
                    raise ErrorLimitExceeded(report, options.error_limit)
                await sender.send(held)
                held = []
        if report.reject_percent > options.error_limit:
            raise ErrorLimitExceeded(report, options.error_limit)
        await sender.send(held)
        await sender.flush()


def load(options: LoadOptions, broker: str, *, progress: bool = False) -> LoadReport:
    """Run the load; ErrorLimitExceeded or LoadError stop it (the report rides on the first)."""
    report = LoadReport(files=len(list_files(options.path)), topic=options.topic,
                        dry_run=options.dry_run, rejects_path=str(options.rejects_path))
    started = time.monotonic()
    bar = Progress(progress, total_rows(options) if progress else None)
    # Rows make millions of short-lived, acyclic objects that reference counting frees; the
    # cycle collector's default cadence would walk them all the time (about 10% of a load).
    thresholds = gc.get_threshold()
    gc.set_threshold(100_000, *thresholds[1:])
    try:
        asyncio.run(_load(options, broker, report, bar))
    finally:
        gc.set_threshold(*thresholds)
        bar.close()
        report.seconds = time.monotonic() - started
        report.peak_rss_mb = peak_rss_mb()
    return report
