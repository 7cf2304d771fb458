"""The `streamapp` command: broker, worker, demo-model, demo."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """SKU-match predictions for grocery reviews, streamed with Faust and Kafka."""


@main.command()
@click.option("--port", default=9092, show_default=True, help="port on 127.0.0.1")
def broker(port: int) -> None:
    """Run the embedded Kafka-compatible broker (memory only) in the foreground."""
    from streamapp.broker import run_broker_foreground

    sys.exit(run_broker_foreground(port))


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Run a worker: the same as `faust -A streamapp worker` (extra options pass through)."""
    from streamapp.processes import FAUST_LOG_LEVELS

    args = [sys.executable, "-m", "faust", "-A", "streamapp", "worker", *ctx.args]
    if not any(a.startswith(("-l", "--loglevel")) for a in ctx.args):
        level = os.environ.get("STREAMAPP_LOG_LEVEL", "info")
        args += ["-l", FAUST_LOG_LEVELS.get(level, level)]
    os.execv(sys.executable, args)


@main.command("demo-model")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True,
              help="directory to write the model into")
@click.option("--train-size", default=6000, show_default=True)
@click.option("--seed", default=0, show_default=True)
def demo_model(out_dir: Path, train_size: int, seed: int) -> None:
    """Train the demo SKU-match model on synthetic comments (about a minute on 2 cores)."""
    from streamapp.model.demo import build_demo_model

    report = build_demo_model(out_dir, train_size=train_size, seed=seed)
    click.echo(f"demo model written to {report.path}: held-out accuracy "
               f"{report.accuracy:.3f} on {report.test_size} comments it never saw "
               f"({report.seconds:.0f}s)")


@main.command()
@click.option("--port", default=9092, show_default=True, help="broker port on 127.0.0.1")
@click.option("--rate", default=20.0, show_default=True, help="demo comments per second")
def demo(port: int, rate: float) -> None:
    """`make run`: broker + demo model + worker + a feed of demo comments, until Ctrl-C."""
    from streamapp.quickstart import run_quickstart

    sys.exit(run_quickstart(port=port, rate=rate))


# Commands below: loader, clients, sink and schemas.
from typing import TYPE_CHECKING  # noqa: E402

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


@main.command()
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
@click.option("--input-format", type=click.Choice(["parquet", "csv", "jsonl"]),
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

    PATH is a Parquet, CSV or JSON Lines file (gzip or not) or a directory of part files.
    Exit status: 0 done, 1 unreadable input, 3 over the error limit.
    """
    import orjson

    from streamapp import loader

    settings = _settings()
    if dt is not None and not (len(dt) == 8 and dt.isdigit()):
        raise click.BadParameter("expected YYYYMMDD", param_hint="--dt")
    try:
        options = loader.LoadOptions(
            path=path, topic=topic or settings.comments_topic, dt=dt,
            recall_label=recall_label or None, output_format=output_format,  # type: ignore[arg-type]
            separator=separator, error_limit=error_limit, debug_topic=debug_topic,
            debug_count=debug_count, dry_run=dry_run,
            mapping=loader.parse_mapping(list(mappings)),
            source_format=input_format,  # type: ignore[arg-type]
            csv_delimiter=csv_delimiter, rejects_path=rejects_path, batch_rows=batch_rows,
            max_review_chars=settings.max_review_chars)
        show = sys.stderr.isatty() if progress is None else progress
        report = loader.load(options, settings.broker, progress=show and not as_json)
    except loader.LoadError as exc:
        raise click.ClickException(str(exc)) from None
    except loader.ErrorLimitExceeded as exc:
        if as_json:
            click.echo(orjson.dumps(exc.report.as_dict()).decode())
        click.echo(f"streamapp load: {exc}", err=True)
        sys.exit(3)
    click.echo(orjson.dumps(report.as_dict()).decode() if as_json else report.summary())


if __name__ == "__main__":
    main()
