"""A worker under py-spy: where its time goes while it works through a backlog.

`python -m bench.profile LABEL` starts a broker and one worker (settings as `name=value`
arguments, the default configuration without), preloads a backlog of comments, records the
worker and its model process with py-spy for `--seconds` and prints the top frames (self
time, and inclusive time of streamapp's, the tokenizer's, the Kafka client's and the model's
frames). `--code DIR` runs the worker on the streamapp of another checkout (an older commit,
say): how BENCHMARKS.md's "Profiles" compares before and after a change.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import time
from pathlib import Path

from bench.measures import comment_values, load_comments, running_pipeline

INCLUSIVE = ("streamapp/", "tokenization_utils", "aiokafka/", "faust/transport",
             "faust/streams", "selector_events", "modeling_bert")


def top_frames(raw: str, label: str, seconds: float, rate: int) -> list[str]:
    """py-spy's raw (collapsed) stacks to the top frames, as lines."""
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        samples = int(count)
        total += samples
        frames = stack.split(";")
        self_time[frames[-1]] += samples
        for frame in set(frames[1:]):
            if any(key in frame for key in INCLUSIVE):
                inclusive[frame] += samples
    lines = [f"{label}: {total} samples over {seconds:.0f} s at {rate} Hz, all threads, "
             "idle excluded", "self time:"]
    lines += [f"  {100 * n / total:5.1f}%  {f[:140]}" for f, n in self_time.most_common(10)]
    lines.append("inclusive (streamapp, tokenizer, Kafka client, model layers):")
    lines += [f"  {100 * n / total:5.1f}%  {f[:140]}" for f, n in inclusive.most_common(14)]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("label")
    parser.add_argument("settings", nargs="*", help="worker settings, name=value")
    parser.add_argument("--model", type=Path, default=Path("var/models/demo"))
    parser.add_argument("--backlog", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rate", type=int, default=50)
    parser.add_argument("--out", type=Path, default=Path("var/profile.txt"),
                        help="py-spy's raw stacks")
    parser.add_argument("--code", type=Path,
                        help="a checkout whose streamapp the worker runs (its working directory)")
    args = parser.parse_args(argv)
    model, out = args.model.resolve(), args.out.resolve()
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        parser.error("py-spy is not installed (pip install py-spy)")
    values = comment_values(load_comments(None, args.backlog))
    settings = dict(item.split("=", 1) for item in args.settings)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.code is not None:
        os.chdir(args.code)  # `python -m faust` puts its working directory first on the path
    with running_pipeline(model, settings, preload=values) as pipe:
        assert pipe.worker.proc is not None
        time.sleep(3)  # past the first batches
        subprocess.run([py_spy, "record", "--pid", str(pipe.worker.proc.pid), "--duration",
                        str(int(args.seconds)), "--rate", str(args.rate), "--format", "raw",
                        "--nonblocking", "--threads", "--subprocesses", "-o", str(out)],
                       check=True, capture_output=True)
        records = pipe.worker.stats()["agents"]["records"]
    print(f"{args.label}: {records} records processed by the end of the recording")
    print("\n".join(top_frames(out.read_text(), args.label, args.seconds, args.rate)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
