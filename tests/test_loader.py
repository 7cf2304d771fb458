"""`streamapp load`: files of every format into a real broker, filters, mapping, error limit."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest

from bench.loader import export_rows, write_export
from streamapp.broker import EmbeddedBroker
from streamapp.decoding import decode_comment
from streamapp.edges.clients import follow
from streamapp.edges.loader import ErrorLimitExceeded, LoadReport, load
from streamapp.edges.sources import (
    DEFAULT_MAPPING,
    LoadError,
    LoadOptions,
    parse_mapping,
    read_chunks,
)
from streamapp.records import Comment


def read_topic(broker_url: str, topic: str, count: int, timeout: float = 20) -> list[bytes]:
    """The values of `topic`, once `count` have arrived (or after a short settle, for extras)."""
    values: list[bytes] = []
    deadline = time.monotonic() + timeout
    full_at: list[float] = []

    def stop() -> bool:
        now = time.monotonic()
        if len(values) >= count and not full_at:
            full_at.append(now)
        return now > deadline or bool(full_at and now - full_at[0] > 0.5)

    async def run() -> None:
        async for record in follow(broker_url, [topic], stop=stop):
            values.append(record.value)

    asyncio.run(run())
    return values


def expected_comment(row: dict[str, Any], mapping: dict[str, str] = DEFAULT_MAPPING) -> Comment:
    return Comment.model_validate({name: row[column] or "" for name, column in mapping.items()
                                   if name not in ("dt", "recall_label")})


def options(tmp_path: Path, path: Path, **kwargs: Any) -> LoadOptions:
    return LoadOptions(path=path, rejects_path=tmp_path / "rejects.jsonl", **kwargs)


def rejects(tmp_path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in (tmp_path / "rejects.jsonl").read_bytes().splitlines()]


@pytest.mark.parametrize("suffix", ["parquet", "orc", "csv", "csv.gz", "jsonl", "jsonl.gz"])
def test_every_format_sends_each_row_as_the_jobs_json_comment(
    broker: EmbeddedBroker, tmp_path: Path, suffix: str
) -> None:
    rows = list(export_rows(60, seed=3))
    path = write_export(tmp_path / f"export.{suffix}", rows)

    report = load(options(tmp_path, path, topic="comments"), broker.url)

    assert (report.read, report.filtered, report.rejected, report.sent) == (60, 0, 0, 60)
    assert report.files == 1 and report.peak_rss_mb > 0
    values = read_topic(broker.url, "comments", 60)
    assert len(values) == 60
    sent = sorted((orjson.loads(v) for v in values), key=lambda c: c["reviewBody"])
    want = sorted((expected_comment(r).model_dump() for r in rows),
                  key=lambda c: c["reviewBody"])
    assert sent == want  # all eight columns of the job, dataType included
    assert all(decode_comment(v) for v in values)


def test_dt_and_recall_label_filters_and_hive_partition_directories(tmp_path: Path) -> None:
    rows = [*export_rows(30, seed=4, dt="20240101"),
            *export_rows(20, seed=5, dt="20240102"),
            *export_rows(10, seed=6, dt="20240101", recall_label="recall")]
    path = write_export(tmp_path / "export.parquet", rows)

    report = load(options(tmp_path, path, dt="20240101", dry_run=True), "unused")
    assert (report.read, report.filtered, report.sent) == (60, 30, 30)
    every_label = load(options(tmp_path, path, dt="20240101", recall_label=None,
                               dry_run=True), "unused")
    assert (every_label.filtered, every_label.sent) == (20, 40)
    every_dt = load(options(tmp_path, path, dry_run=True), "unused")
    assert (every_dt.filtered, every_dt.sent) == (10, 50)

    # Hive lays partitions out as directories: dt comes from the path when no column has it.
    table = tmp_path / "table"
    for day in ("20240101", "20240102"):
        (table / f"dt={day}").mkdir(parents=True)
        day_rows = [{k: v for k, v in r.items() if k != "dt"}
                    for r in export_rows(15, seed=int(day[-1]))]
        write_export(table / f"dt={day}" / "000000_0.jsonl", day_rows)
    by_dir = load(options(tmp_path, table, dt="20240102", dry_run=True), "unused")
    assert (by_dir.files, by_dir.read, by_dir.filtered, by_dir.sent) == (2, 30, 15, 15)

    no_label = write_export(tmp_path / "nolabel.csv",
                            [{k: v for k, v in r.items() if k != "recall_label"} for r in rows])
    with pytest.raises(LoadError, match=r"'recall_label'.*--recall-label ''"):
        load(options(tmp_path, no_label, dry_run=True), "unused")


def test_column_mapping_can_be_overridden_for_other_exports(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    mapping = parse_mapping(["baseSkuName=sku", "reviewBody=text", "categoryFirstName=cat",
                             "dt=ds"])
    source = [{"sku": r["base_sku_name"], "text": r["review_body"],
               "cat": r["category1_name"], "ds": r["dt"], "recall_label": "unrecall"}
              for r in export_rows(25, seed=7)]
    path = write_export(tmp_path / "other.jsonl", source)

    report = load(options(tmp_path, path, mapping=mapping, dt="20240101", topic="c"),
                  broker.url)

    assert report.sent == 25
    got = {orjson.loads(v)["reviewBody"]: orjson.loads(v) for v in read_topic(broker.url, "c", 25)}
    for row in source:
        comment = got[row["text"]]
        assert (comment["baseSkuName"], comment["categoryFirstName"]) == (row["sku"], row["cat"])
        assert comment["categorySecondName"] == ""  # a column the export lacks: no such level
    with pytest.raises(LoadError, match="expected FIELD=COLUMN with FIELD one of"):
        parse_mapping(["reviewbody=text"])
    # The default mapping does not fit this export: stopped at once, naming the column.
    with pytest.raises(LoadError, match="'base_sku_name'"):
        load(options(tmp_path, write_export(tmp_path / "other.parquet", source),
                     dry_run=True), "unused")


def test_delimited_output_sends_reviews_holding_the_separator_and_says_how_many(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    rows = list(export_rows(40, seed=8))
    rows[5]["review_body"] = "好吃|下次还买"  # the worker joins its extra columns back
    rows[9]["review_body"] = "|甜|脆|"
    rows[7]["base_sku_name"] = "红富士|5斤装"  # no reader could tell where the SKU name ends
    path = write_export(tmp_path / "export.csv", rows)

    report = load(options(tmp_path, path, output_format="delimited", separator="|",
                          error_limit=5, topic="d"), broker.url)

    assert (report.sent, report.rejected, report.separator_in_review) == (39, 1, 2)
    assert report.reasons == {"bad_column_count": 1}
    [refused] = rejects(tmp_path)
    assert refused["row"] == 8 and "'baseSkuName' holds the separator '|'" in refused["error"]
    assert "2 rows hold the separator in reviewBody" in report.summary()
    assert "--format json avoids it" in report.summary()
    assert report.as_dict()["separator_in_review"] == 2
    values = read_topic(broker.url, "d", 39)
    decoded = {decode_comment(v, input_format="delimited", separator="|") for v in values}
    assert {c.model_dump_json() for c in decoded} == {
        expected_comment(r).model_dump_json() for i, r in enumerate(rows) if i != 7}
    assert {c.reviewBody for c in decoded if c.recovered} == {"好吃|下次还买", "|甜|脆|"}
    assert all(v.startswith(b"COMMENT_LONG_TEXT|") for v in values)
    # JSON output has no separator to hold: the same file goes out whole, nothing counted.
    as_json = load(options(tmp_path, path, dry_run=True), "unused")
    assert (as_json.sent, as_json.separator_in_review) == (40, 0)
    assert "separator" not in as_json.summary()


def write_with_bad_rows(tmp_path: Path, good: int) -> tuple[Path, Path, dict[str, int]]:
    """A JSON lines and a CSV export, each with bad rows of known reasons among `good` rows."""
    rows = list(export_rows(good, seed=9))
    bad_json = [
        {**rows[0], "review_body": None},  # missing text
        {**rows[0], "base_sku_name": "  "},  # blank SKU
        {**rows[0], "review_body": 42},  # wrong type
    ]
    jsonl = write_export(tmp_path / "bad.jsonl", rows[:good // 2] + bad_json)
    with open(jsonl, "ab") as fh:
        fh.write(b'{"base_sku_name": "cola", "review_body": \n')  # undecodable
        fh.write(b"[1, 2]\n")
    csv_path = write_export(tmp_path / "bad.csv", rows[good // 2:])
    with open(csv_path, "ab") as fh:
        fh.write(b"cola,\xff\xfe broken,a,b,c,d,e,20240101,unrecall\n")  # not UTF-8
        fh.write(b"cola,too,few\n")
    reasons = {"missing_field": 1, "blank_text": 1, "wrong_type": 1, "invalid_json": 1,
               "not_an_object": 1, "invalid_utf8": 1, "bad_column_count": 1}
    return jsonl, csv_path, reasons


def test_error_limit_under_sends_the_good_rows_and_writes_every_reject(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    jsonl, csv_path, reasons = write_with_bad_rows(tmp_path, good=1000)
    folder = tmp_path / "export"
    folder.mkdir()
    jsonl.rename(folder / "part-0.jsonl")
    csv_path.rename(folder / "part-1.csv")

    report = load(options(tmp_path, folder, topic="comments"), broker.url)  # 7 of 1007: 0.7%

    assert (report.read, report.sent, report.rejected) == (1007, 1000, 7)
    assert report.reasons == reasons
    written = rejects(tmp_path)
    assert {r["reason"] for r in written} == set(reasons)
    assert all(r["error"] and r["file"] and r["row"] for r in written)
    wrong_type = next(r for r in written if r["reason"] == "wrong_type")
    assert wrong_type["source"]["review_body"] == 42 and wrong_type["file"].endswith(".jsonl")
    assert len(read_topic(broker.url, "comments", 1000)) == 1000


def test_error_limit_over_stops_with_a_non_zero_exit_saying_how_many_and_why(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    jsonl, _, _ = write_with_bad_rows(tmp_path, good=100)  # 5 bad of 55: 9%
    with pytest.raises(ErrorLimitExceeded) as stopped:
        load(options(tmp_path, jsonl, dry_run=True), "unused")
    assert stopped.value.report.rejected == 5
    assert "5 of 55 rows rejected (9.09%), over the error limit of 1%" in str(stopped.value)

    env = {**os.environ, "STREAMAPP_BROKER": broker.url}
    done = subprocess.run(
        [sys.executable, "-m", "streamapp.cli", "load", str(jsonl), "--rejects",
         str(tmp_path / "r.jsonl"), "--error-limit", "5"],
        env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    assert "5 of 55 rows rejected" in done.stderr
    assert "missing_field 1" in done.stderr and "invalid_json 1" in done.stderr
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 5

    # Raised enough, the same file loads; the summary says what happened.
    done = subprocess.run(
        [sys.executable, "-m", "streamapp.cli", "load", str(jsonl), "--rejects",
         str(tmp_path / "r.jsonl"), "--error-limit", "10", "--debug-topic", "debug",
         "--debug-count", "3"],
        env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "read 55 rows from 1 file(s): filtered out 0, sent 50 to comments, rejected 5" \
        in done.stdout
    assert "rows/s" in done.stdout
    assert "first 3 on the debug topic" in done.stdout
    main = read_topic(broker.url, "comments", 50)
    debug = read_topic(broker.url, "debug", 3)
    assert len(main) == 50 and len(debug) == 3  # the stopped load sent nothing
    first = [orjson.dumps(expected_comment(r).model_dump())
             for r in export_rows(3, seed=9)]
    assert sorted(debug) == sorted(first)  # a copy of the first records, as the job does


def test_reads_in_bounded_batches_and_sniffs_part_files_without_extensions(
    tmp_path: Path
) -> None:
    folder = tmp_path / "table"
    folder.mkdir()
    write_export(folder / "p0.parquet", export_rows(2500, seed=10))
    (folder / "p0.parquet").rename(folder / "000000_0")  # Hive's part names: no extension
    write_export(folder / "p1.jsonl.gz", export_rows(1500, seed=11))
    (folder / "p1.jsonl.gz").rename(folder / "000001_0")
    (folder / "_SUCCESS").write_text("")
    (folder / ".000000_0.crc").write_text("junk")

    chunks = list(read_chunks(options(tmp_path, folder, batch_rows=1000)))

    assert [len(c.rows) for c in chunks] == [1000, 1000, 500, 1000, 500]
    assert [c.file.name for c in chunks] == ["000000_0"] * 3 + ["000001_0"] * 2
    report = load(options(tmp_path, folder, batch_rows=1000, dry_run=True), "unused")
    assert (report.files, report.read, report.sent) == (2, 4000, 4000)


def test_orc_hive_partition_directories_read_in_even_batches(tmp_path: Path) -> None:
    """Hive's ORC table layout: partition directories, part files without an extension, and
    stripes whose ends do not fall on batch boundaries."""
    table = tmp_path / "longcomment_extract_api_unrecall"
    for day, label, count in (("20240101", "unrecall", 2500), ("20240102", "unrecall", 700),
                              ("20240101", "recall", 300)):
        folder = table / f"dt={day}" / f"recall_label={label}"
        folder.mkdir(parents=True)
        rows = [{k: v for k, v in r.items() if k not in ("dt", "recall_label")}
                for r in export_rows(count, seed=int(day[-1]) + len(label))]
        write_export(folder / "000000_0.orc", rows, orc_stripe_bytes=64 << 10)
        (folder / "000000_0.orc").rename(folder / "000000_0")
    (table / "dt=20240101" / "_SUCCESS").write_text("")
    import pyarrow.orc as pa_orc

    assert pa_orc.ORCFile(table / "dt=20240101" / "recall_label=unrecall" / "000000_0") \
        .nstripes > 1, "the test needs several stripes"

    chunks = list(read_chunks(options(tmp_path, table, batch_rows=1000)))

    assert [len(c.rows) for c in chunks] == [300, 1000, 1000, 500, 700]
    assert [n for c in chunks[1:4] for n, _ in c.rows] == list(range(1, 2501))
    report = load(options(tmp_path, table, dt="20240101", batch_rows=1000, dry_run=True),
                  "unused")
    assert (report.files, report.read, report.filtered, report.sent) == (3, 3500, 1000, 2500)
    first = next(row for _, row in chunks[1].rows)
    assert "dt" not in first, "dt comes from the directory, not a column"
    broken = tmp_path / "broken" / "000000_0"
    broken.parent.mkdir()
    broken.write_bytes(b"ORC but cut short")
    with pytest.raises(LoadError, match="cannot read it as orc"):
        load(options(tmp_path, broken.parent, dry_run=True), "unused")


def test_typed_parquet_columns_dates_and_ints(tmp_path: Path) -> None:
    """Hive exports type dt as int or date, and a bad export can type a text column as int."""
    import datetime

    rows = list(export_rows(50, seed=12))
    for i, row in enumerate(rows):
        row["dt"] = datetime.date(2024, 1, 1 + i % 2)
        row["category5_name"] = None
    schema = pa.schema([(c, pa.string()) for c in DEFAULT_MAPPING.values()]).set(
        7, pa.field("dt", pa.date32()))
    path = write_export(tmp_path / "typed.parquet", rows, schema=schema)
    report = load(options(tmp_path, path, dt="20240102", dry_run=True), "unused")
    assert (report.filtered, report.sent) == (25, 25)

    ints = [{**r, "review_body": i, "dt": "20240101"} for i, r in enumerate(rows[:3])]
    bad = write_export(tmp_path / "ints.parquet", ints)
    with pytest.raises(ErrorLimitExceeded):
        load(options(tmp_path, bad, dry_run=True), "unused")
    assert {r["reason"] for r in rejects(tmp_path)} == {"wrong_type"}


def test_report_summary_and_dict() -> None:
    report = LoadReport(files=1, read=10, filtered=2, rejected=1, sent=7, seconds=2.0,
                        topic="comments", rejects_path="r.jsonl")
    report.reasons["blank_text"] = 1
    assert report.checked == 8 and report.reject_percent == 12.5
    assert report.as_dict()["rows_per_second"] == 5.0
    assert "rejects: blank_text 1 (see r.jsonl)" in report.summary()
