"""The commands at the edges: load, send, tail, ask, schemas, sink."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from streamapp.settings import Settings


def _settings() -> Settings:
    """The worker's settings (STREAMAPP_BROKER, topics...), so clients talk to the same Kafka."""
    from streamapp.settings import Settings, SettingsError

    try:
        return Settings.from_env()
    except SettingsError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)


@click.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--dt", metavar="YYYYMMDD", help="load the rows of this partition only")
@click.option("--recall-label", default="unrecall", show_default=True,
              help="load the rows with this recall_label only ('' for every label)")
@click.option("--format", "output_format", type=click.Choice(["json", "delimited"]),
              default="json", show_default=True,
              help="message encoding: the job's serialize=0 (json) or 1 (delimited)")
@click.option("--separator", default=",", show_default=True,
              help="column separator of delimited messages")
@click.option("--error-limit", type=click.FloatRange(0, 100), default=1.0, show_default=True,
              metavar="PERCENT", help="stop (exit 3) when more rows than this are rejected")
@click.option("--topic", help="comment topic [default: STREAMAPP_COMMENTS_TOPIC or comments]")
@click.option("--debug-topic", help="also send a copy of the first records to this topic")
@click.option("--debug-count", type=click.IntRange(0), default=100, show_default=True,
              help="how many records the debug topic gets")
@click.option("--dry-run", is_flag=True, help="read and check everything, send nothing")
@click.option("--map", "mappings", multiple=True, metavar="FIELD=COLUMN",
              help="read FIELD (baseSkuName, reviewBody, categoryFirstName.., dt, "
                   "recall_label) from another source column; repeatable")
@click.option("--input-format", type=click.Choice(["parquet", "orc", "csv", "jsonl"]),
              help="[default: from the extension, else from the content]")
@click.option("--csv-delimiter", default=",", show_default=True, help="of CSV input")
@click.option("--rejects", "rejects_path", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("rejects.jsonl"), show_default=True,
              help="where rejected rows go, with their reasons (JSON lines)")
@click.option("--batch-rows", type=click.IntRange(1), default=10_000, show_default=True,
              help="rows read, checked and sent at a time (bounds memory)")
@click.option("--progress/--no-progress", default=None,
              help="progress bar on stderr [default: when stderr is a terminal]")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
def load(path: Path, dt: str | None, recall_label: str, output_format: str, separator: str,
         error_limit: float, topic: str | None, debug_topic: str | None, debug_count: int,
         dry_run: bool, mappings: tuple[str, ...], input_format: str | None,
         csv_delimiter: str, rejects_path: Path, batch_rows: int, progress: bool | None,
         as_json: bool) -> None:
    """Send an exported comment table to the comment topic, as the seed's hive2mafka job does.

    PATH is a Parquet, ORC, CSV or JSON Lines file (gzip or not) or a directory of part files.
    Exit status: 0 done, 1 unreadable input, 3 over the error limit.
    """
    import orjson

    from streamapp.edges import loader, sources

    settings = _settings()
    if dt is not None and not (len(dt) == 8 and dt.isdigit()):
        raise click.BadParameter("expected YYYYMMDD", param_hint="--dt")
    try:
        options = sources.LoadOptions(
            path=path, topic=topic or settings.comments_topic, dt=dt,
            recall_label=recall_label or None, output_format=output_format,  # type: ignore[arg-type]
            separator=separator, error_limit=error_limit, debug_topic=debug_topic,
            debug_count=debug_count, dry_run=dry_run,
            mapping=sources.parse_mapping(list(mappings)),
            source_format=input_format,  # type: ignore[arg-type]
            csv_delimiter=csv_delimiter, rejects_path=rejects_path, batch_rows=batch_rows,
            max_review_chars=settings.max_review_chars)
        show = sys.stderr.isatty() if progress is None else progress
        report = loader.load(options, settings.broker, progress=show and not as_json)
    except sources.LoadError as exc:
        raise click.ClickException(str(exc)) from None
    except loader.ErrorLimitExceeded as exc:
        if as_json:
            click.echo(orjson.dumps(exc.report.as_dict()).decode())
        click.echo(f"streamapp load: {exc}", err=True)
        sys.exit(3)
    click.echo(orjson.dumps(report.as_dict()).decode() if as_json else report.summary())


def _comment_options(command: Callable[..., None]) -> Callable[..., None]:
    """The options `send` and `ask` share: the comment, from fields or from stdin."""
    for option in reversed([
        click.option("--sku", help="baseSkuName (else the comment is read from stdin)"),
        click.option("--review", help="reviewBody"),
        click.option("--category", "categories", multiple=True,
                     help="category levels, top first; repeatable (at most 5)"),
        click.option("--format", "output_format", type=click.Choice(["json", "delimited"]),
                     default="json", show_default=True, help="encoding of a comment from fields"),
        click.option("--separator",
                     help="column separator of delimited comments "
                          "[default: STREAMAPP_SEPARATOR, as the worker reads them, or ,]"),
        click.option("--raw", is_flag=True,
                     help="send as given, unchecked (to see a dead letter on purpose)"),
        click.option("--topic", help="[default: STREAMAPP_COMMENTS_TOPIC or comments]"),
    ]):
        command = option(command)
    return command


def _read_comment(settings: Settings, sku: str | None, review: str | None,
                  categories: tuple[str, ...], output_format: str, separator: str | None,
                  raw: bool) -> bytes:
    from streamapp.edges.clients import comment_value
    from streamapp.records import RejectedRecord

    if (sku is None) != (review is None):
        raise click.UsageError("give both --sku and --review, or neither (then stdin)")
    text = None
    if sku is None:
        if sys.stdin.isatty():
            click.echo("reading one comment (JSON or delimited) from stdin; Ctrl-D ends it",
                       err=True)
        text = sys.stdin.read()
    try:
        return comment_value(sku=sku, review=review, categories=categories, text=text,
                             output_format=output_format,
                             separator=separator or settings.separator,
                             input_format=settings.input_format, check=not raw,
                             max_review_chars=settings.max_review_chars)
    except (RejectedRecord, ValueError) as exc:
        reason = getattr(exc, "reason", "invalid")
        click.echo(f"not sent: {reason}: {exc} (--raw sends it anyway)", err=True)
        sys.exit(2)


@click.command()
@_comment_options
def send(sku: str | None, review: str | None, categories: tuple[str, ...], output_format: str,
         separator: str | None, raw: bool, topic: str | None) -> None:
    """Send one comment; prints its id (topic:partition:offset), the key of its prediction.

    \b
    streamapp send --sku "海南香蕉 3斤" --review "香蕉熟得刚好" --category 生鲜 --category 水果
    echo '{"baseSkuName": "...", "reviewBody": "..."}' | streamapp send
    """
    import asyncio

    from streamapp.edges.clients import produce
    from streamapp.records import comment_id

    settings = _settings()
    value = _read_comment(settings, sku, review, categories, output_format, separator, raw)
    [meta] = asyncio.run(produce(settings.broker, topic or settings.comments_topic, [value]))
    click.echo(comment_id(meta.topic, meta.partition, meta.offset))


@click.command()
@click.option("--dead-letters", is_flag=True, help="also follow the dead-letter topic")
@click.option("--category", help="only results with this category level, or path prefix (a/b)")
@click.option("--match/--no-match", "match", default=None,
              help="only matches / only non-matches")
@click.option("--from-beginning", is_flag=True, help="start at the oldest record, not now")
@click.option("--json/--pretty", "as_json", default=None,
              help="JSON lines (one message each) or lines for people "
                   "[default: pretty on a terminal, JSON into a pipe]")
@click.option("--limit", type=click.IntRange(1), help="stop after this many records")
@click.option("--idle-timeout", type=float, help="stop after this many seconds without records")
def tail(dead_letters: bool, category: str | None, match: bool | None, from_beginning: bool,
         as_json: bool | None, limit: int | None, idle_timeout: float | None) -> None:
    """Follow the predictions (and dead letters) as they arrive, until Ctrl-C."""
    import asyncio
    import contextlib

    import orjson

    from streamapp.edges.clients import follow, format_output, wanted

    settings = _settings()
    topics = [settings.results_topic] + ([settings.dlq_topic] if dead_letters else [])
    pretty = sys.stdout.isatty() if as_json is None else not as_json

    async def run() -> None:
        shown = 0
        async for record in follow(settings.broker, topics, from_beginning=from_beginning,
                                   idle_timeout=idle_timeout):
            try:
                value = orjson.loads(record.value)
            except orjson.JSONDecodeError:
                continue  # not streamapp's: nothing to show
            if not isinstance(value, dict) or not wanted(value, category=category,
                                                         match=match):
                continue
            line = (format_output(value, color=sys.stdout.isatty()) if pretty
                    else orjson.dumps(value).decode())
            click.echo(line)
            shown += 1
            if limit is not None and shown >= limit:
                return

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


@click.command()
@_comment_options
@click.option("--timeout", type=click.FloatRange(0, min_open=True), default=30.0,
              show_default=True, help="seconds to wait for the prediction")
@click.option("--json", "as_json", is_flag=True, help="print the message as JSON")
def ask(sku: str | None, review: str | None, categories: tuple[str, ...], output_format: str,
        separator: str | None, raw: bool, topic: str | None, timeout: float,
        as_json: bool) -> None:
    """Send one comment and print its prediction (or its dead letter) when it comes.

    Exit status: 0 predicted, 1 dead-lettered, 2 not sent (invalid), 3 no answer in time.
    """
    import asyncio

    import orjson

    from streamapp.edges.clients import ask as ask_worker
    from streamapp.edges.clients import format_output

    settings = _settings()
    value = _read_comment(settings, sku, review, categories, output_format, separator, raw)
    record_id, record = asyncio.run(ask_worker(
        settings.broker, topic or settings.comments_topic, value,
        [settings.results_topic, settings.dlq_topic], timeout))
    if record is None:
        click.echo(f"no prediction for {record_id} within {timeout:g} s: is a worker running "
                   f"on {settings.broker}, reading {topic or settings.comments_topic}? "
                   "(the comment stays on the topic and will be predicted when one runs)",
                   err=True)
        sys.exit(3)
    message = orjson.loads(record.value)
    click.echo(orjson.dumps(message).decode() if as_json else format_output(message))
    sys.exit(1 if record.topic == settings.dlq_topic else 0)


@click.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="directory [default: schemas/ of the repository]")
@click.option("--check", is_flag=True, help="write nothing; exit 1 when a file is stale")
def schemas(out_dir: Path | None, check: bool) -> None:
    """Write the JSON Schemas of the comment, result and dead-letter messages."""
    from streamapp.edges import schemas as generator

    directory = out_dir or generator.SCHEMA_DIR
    if check:
        stale = generator.stale(directory)
        if stale:
            click.echo(f"stale in {directory}: {', '.join(stale)} (run `streamapp schemas`)",
                       err=True)
            sys.exit(1)
        click.echo(f"{directory}: up to date")
        return
    for path in generator.write(directory):
        click.echo(f"wrote {path}")


@click.command()
@click.option("--db", "db_url", default="sqlite:///var/results.db", show_default=True,
              help="sqlite:///relative.db, sqlite:////absolute.db or postgresql://user@host/db")
@click.option("--table", default="sku_matches", show_default=True,
              help="created when missing")
@click.option("--group", default="streamapp-sink", show_default=True,
              help="Kafka consumer group (its committed offsets say where to resume)")
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=500, show_default=True,
              help="most results in one database transaction")
@click.option("--idle-timeout", type=float,
              help="stop after this many seconds without results [default: run until Ctrl-C]")
def sink(db_url: str, table: str, group: str, batch_size: int,
         idle_timeout: float | None) -> None:
    """Write the predictions of the results topic into a database table, idempotently."""
    import asyncio
    import contextlib
    import re
    import signal

    from streamapp.edges.sink import open_database, run_sink

    settings = _settings()
    try:
        db = open_database(db_url, table)
    except Exception as exc:  # a bad URL, an unreachable server: say which, no traceback
        raise click.ClickException(f"cannot open {db_url}: {exc}") from None
    stopping: list[int] = []

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            # Stop between batches: the one in hand is stored and committed first.
            loop.add_signal_handler(signum, stopping.append, signum)
        stats = await run_sink(settings.broker, db, topic=settings.results_topic, group=group,
                               batch_size=batch_size, idle_timeout=idle_timeout,
                               session_timeout=settings.session_timeout_s,
                               stop=lambda: bool(stopping))
        click.echo(f"wrote {stats.written} results to {table} in {stats.batches} batches"
                   f" (skipped {stats.skipped} that were not results)")

    shown_url = re.sub(r"://([^:/@]+):[^@]*@", r"://\\1:***@", db_url)  # no password in logs
    click.echo(f"sink: {settings.results_topic} -> {table} at {shown_url} (group {group})",
               err=True)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run())
    finally:
        db.close()


