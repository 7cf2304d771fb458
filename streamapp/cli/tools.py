"""The commands that measure the product from a source checkout: bench, reliability."""

from __future__ import annotations

import sys
from pathlib import Path

import click


def _use_checkout_tools() -> None:
    """bench/ and reliability/ measure the product and are not shipped in it: they are
    importable from the source checkout this package is installed from (`pip install -e`)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "bench" / "__init__.py").is_file():
        raise click.ClickException(
            "the benchmark and reliability suites live in the source checkout (bench/, "
            "reliability/); run them there: make bench / make reliability")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))


@click.command()
@click.option("--comments", type=click.Path(path_type=Path), default=Path(
    "../shared/data/comments.jsonl"), show_default=True,
    help="JSON Lines comments to use (the project's generator when absent)")
@click.option("--runs", default=3, show_default=True, help="repeats; medians are reported")
@click.option("--quick", is_flag=True, help="small counts: a smoke test of the suite")
@click.option("--out", type=click.Path(path_type=Path), default=Path("BENCHMARKS.md"),
              show_default=True)
@click.option("--only", type=click.Choice(["pmml"]), default=None,
              help="run only these measures; the other figures stay as bench/results.json has "
                   "them")
def bench(comments: Path, runs: int, quick: bool, out: Path, only: str | None) -> None:
    """Run the benchmark suite; write BENCHMARKS.md and bench/results.json."""
    import json

    _use_checkout_tools()
    from bench.report import write_report
    from bench.suite import pmml_figures, run_all

    log = lambda line: click.echo(line, err=True)  # noqa: E731
    results_file = Path("bench/results.json")
    if only == "pmml":
        results = json.loads(results_file.read_text())
        source = comments if comments.exists() else None
        results["pmml"] = pmml_figures(source, runs, quick, log)
        results["ratios"]["pmml_e2e_over_alone"] = results["pmml"]["e2e_over_alone"]
    else:
        results = run_all(comments=comments, runs=runs, quick=quick, log=log)
    write_report(results, out, results_file)
    click.echo(f"wrote {out} and bench/results.json")


@click.command()
@click.option("--runs", default=3, show_default=True, help="runs per fault (seeds seed, seed+1...)")
@click.option("--records", default=20_000, show_default=True,
              help="comments per run (kill9, kill9_twice, sigterm, join_leave, broker_pause)")
@click.option("--backlog", default=50_000, show_default=True, help="backpressure's backlog")
@click.option("--slow-records", default=600, show_default=True, help="slow_model's comments")
@click.option("--slow-delay-s", default=7.0, show_default=True,
              help="slow_model's seconds per batch (session timeout: 10 s)")
@click.option("--pause-s", default=30.0, show_default=True, help="broker_pause's freeze")
@click.option("--seed", default=0, show_default=True)
@click.option("--fault", "faults", multiple=True, help="only this fault (repeatable)")
@click.option("--model", "model_dir", type=click.Path(path_type=Path),
              default=Path("var/models/demo"), show_default=True,
              help="demo model (built when missing)")
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("var/reliability"),
              show_default=True, help="worker logs, per fault and run")
@click.option("--out", type=click.Path(path_type=Path), default=Path("RELIABILITY.md"),
              show_default=True)
def reliability(runs: int, records: int, backlog: int, slow_records: int, slow_delay_s: float,
                pause_s: float, seed: int, faults: tuple[str, ...], model_dir: Path,
                workdir: Path, out: Path) -> None:
    """Fault-injection suite: real broker and workers, every fault `runs` times; RELIABILITY.md."""
    import shlex

    _use_checkout_tools()
    from reliability.report import SUITE_FAULTS, run_suite, suite_cases
    from reliability.report import write_report as write_reliability
    from reliability.scenarios import demo_model_dir

    unknown = sorted(set(faults) - set(SUITE_FAULTS))
    if unknown:
        raise click.BadParameter(f"unknown {unknown}; known: {', '.join(SUITE_FAULTS)}",
                                 param_hint="--fault")
    options = {"records": records, "backlog": backlog, "slow_records": slow_records,
               "slow_delay_s": slow_delay_s}
    with demo_model_dir(model_dir) as model:
        results = run_suite(model, runs=runs, seed=seed, faults=faults or SUITE_FAULTS,
                            workdir=workdir, pause_s=pause_s,
                            log=lambda line: click.echo(line, err=True), **options)
    command = "streamapp reliability " + shlex.join(sys.argv[2:]) if len(sys.argv) > 2 \
        else "streamapp reliability"
    write_reliability(results, out, command=command.strip(),
                      cases=suite_cases(pause_s=pause_s, **options))
    failed = [r.summary() for reports in results.values() for r in reports if not r.ok]
    click.echo(f"wrote {out}" + (f"; {len(failed)} run(s) failed" if failed else ""))
    if failed:
        sys.exit(1)
