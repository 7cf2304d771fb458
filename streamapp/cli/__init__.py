"""The `streamapp` command: broker, worker, demo-model, demo here; the edges' commands
(load, send, tail, ask, schemas, sink) in `edges`, bench and reliability in `tools`, the
`pmml` commands in `pmml`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from streamapp.cli import edges, pmml, tools

# sysexits.h EX_UNAVAILABLE: a service the command needs is not there.
EXIT_BROKER_UNREACHABLE = 69


class _Commands(click.Group):
    """Every command that talks to Kafka ends the same way when the broker is not there: one
    line naming STREAMAPP_BROKER and its address, exit status 69, no traceback."""

    def invoke(self, ctx: click.Context) -> object:
        from streamapp.connect import is_unreachable, quiet_bootstrap, unreachable

        try:
            with quiet_bootstrap():
                return super().invoke(ctx)
        except Exception as exc:
            from streamapp.settings import Settings

            if not is_unreachable(exc):
                raise
            broker = Settings.from_env().broker  # valid: the command read it before
            click.echo(f"streamapp {ctx.invoked_subcommand}: {unreachable(broker, exc)}",
                       err=True)
            sys.exit(EXIT_BROKER_UNREACHABLE)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
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
@click.option("--train-size", type=int, default=None,
              help="synthetic training comments [default: the builder's]")
@click.option("--seed", default=0, show_default=True)
@click.option("--kind", type=click.Choice(["bert", "pmml"]), default="bert", show_default=True,
              help="bert: the BERT cross-encoder; pmml: XGBoost converted to PMML")
@click.option("--pmml-version", type=click.Choice(["4.4", "4.3"]), default="4.4",
              show_default=True, help="the PMML version the converter writes (--kind pmml)")
def demo_model(out_dir: Path, train_size: int | None, seed: int, kind: str,
               pmml_version: str) -> None:
    """Train a demo SKU-match model on synthetic comments (BERT: about a minute on 2 cores;
    PMML: seconds)."""
    if kind == "pmml":
        from streamapp.demo.pmml_model import PMML_TRAIN_EXAMPLES, build_pmml_demo_model

        report = build_pmml_demo_model(out_dir, train_size=train_size or PMML_TRAIN_EXAMPLES,
                                       seed=seed, pmml_version=pmml_version)
    else:
        from streamapp.demo.model import TRAIN_EXAMPLES, build_demo_model

        report = build_demo_model(out_dir, train_size=train_size or TRAIN_EXAMPLES, seed=seed)
    click.echo(f"demo model written to {report.path}: held-out accuracy "
               f"{report.accuracy:.3f} on {report.test_size} comments it never saw "
               f"({report.seconds:.0f}s)")


@main.command()
@click.option("--port", default=9092, show_default=True, help="broker port on 127.0.0.1")
@click.option("--rate", default=20.0, show_default=True, help="demo comments per second")
def demo(port: int, rate: float) -> None:
    """`make run`: broker + demo model + worker + a feed of demo comments, until Ctrl-C."""
    from streamapp.demo.quickstart import run_quickstart

    sys.exit(run_quickstart(port=port, rate=rate))


# The commands at the edges and the checkout's tools, in their own modules.
main.add_command(edges.load)
main.add_command(edges.send)
main.add_command(edges.tail)
main.add_command(edges.ask)
main.add_command(edges.schemas)
main.add_command(edges.sink)
main.add_command(tools.bench)
main.add_command(tools.reliability)
main.add_command(pmml.pmml)


if __name__ == "__main__":
    main()
