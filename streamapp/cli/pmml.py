"""`streamapp pmml check FILE`: what a PMML file is, whether it can be served here, and a
PMML 4.3 copy for evaluators that read only 4.3 (refused, naming what 4.3 lacks)."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.group()
def pmml() -> None:
    """PMML models: check a file, write a 4.3 copy."""


@pmml.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--to", "to_version", type=click.Choice(["4.3"]), default=None,
              help="write a copy in this PMML version (with --out)")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="where the copy goes")
@click.option("--features", default=None,
              help="module:function (or file.py:function beside FILE) giving extra input "
                   "fields [default: deploy_config.json beside FILE, else "
                   "STREAMAPP_PMML_FEATURES]")
@click.option("--positive", default="1", show_default=True,
              help="the target value whose probability is the score")
def check(file: Path, to_version: str | None, out_file: Path | None, features: str | None,
          positive: str) -> None:
    """Version, model type, inputs, outputs of FILE; whether it can be served here and why
    not. Exit code 1 when it cannot be served or the copy is refused."""
    import os

    from streamapp.serving.formats.huggingface import ModelLoadError
    from streamapp.serving.formats.pmml_schema import PmmlFormatError, inspect_pmml, to_pmml_4_3
    from streamapp.serving.handlers.pmml import PmmlInfer

    if (to_version is None) != (out_file is None):
        raise click.UsageError("--to and --out go together")
    try:
        report = inspect_pmml(file)
    except PmmlFormatError as exc:
        click.echo(f"servable: no: {exc}")
        sys.exit(1)
    click.echo(f"file: {file}")
    click.echo(f"PMML version: {report.version} (namespace PMML-{report.namespace_version})")
    click.echo(f"model: {', '.join(report.model_types) or 'none'}")
    click.echo("uses what PMML 4.3 lacks: " + ("; ".join(report.uses_4_4) or "nothing"))
    if report.inert_4_4:
        click.echo("4.4 markup that changes nothing here (no segment can predict a missing "
                   "value; left out of a 4.3 copy): " + "; ".join(report.inert_4_4))
    if report.extensions:
        click.echo("extension attributes (kept): " + ", ".join(report.extensions))
    handler = PmmlInfer(positive=positive,
                        features=features or os.environ.get("STREAMAPP_PMML_FEATURES"))
    servable = True
    try:
        handler.load(file)
    except ModelLoadError as exc:
        servable = False
        click.echo(f"servable: no: {exc}")
    if handler.model is not None:
        model = handler.model
        click.echo(f"evaluator: {model.evaluator}")
        click.echo("inputs: " + ", ".join(f"{f.name} ({f.data_type})" for f in model.inputs))
        click.echo("targets: " + ", ".join(f"{f.name} ({f.data_type})" for f in model.targets))
        click.echo("outputs: " + ", ".join(f"{f.name} ({f.data_type})" for f in model.outputs))
    if servable:
        click.echo(f"servable: yes: score = {handler.model.score_field if handler.model else ''}"
                   f", features: {handler.features_spec or 'none'}")
    if to_version is not None and out_file is not None:
        try:
            to_pmml_4_3(file, out_file)
        except ValueError as exc:
            click.echo(f"refused: no 4.3 copy: {exc}")
            sys.exit(1)
        click.echo(f"wrote {out_file}: PMML 4.3")
    sys.exit(0 if servable else 1)
