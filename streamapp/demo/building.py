"""What building any demo model shares: its synthetic train and held-out comments, a build
directory that replaces the model's only once complete, and the held-out accuracy report."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from streamapp.demo.synthetic import generate_comments

# Test data come from a seed far from the training seed so the two streams differ.
TEST_SEED_OFFSET = 1_000_003


@dataclass
class DemoModelReport:
    """Where the model went and how it did on held-out synthetic data."""

    path: str
    train_size: int
    test_size: int
    accuracy: float
    seconds: float


@dataclass
class DemoBuild:
    """One build in progress: its comments, its staging directory, its clock."""

    out_dir: Path
    train_rows: list[dict[str, object]]
    test_rows: list[dict[str, object]]
    build_dir: Path
    started: float = field(default_factory=time.monotonic)

    def report(self, scores: Sequence[float | None]) -> DemoModelReport:
        """Accuracy of `scores` (one per held-out comment, None = no score) at 0.5."""
        hits = sum(score is not None and (score >= 0.5) == bool(row["label"])
                   for score, row in zip(scores, self.test_rows, strict=True))
        accuracy = hits / len(self.test_rows) if self.test_rows else 0.0
        return DemoModelReport(str(self.out_dir), len(self.train_rows), len(self.test_rows),
                               accuracy, time.monotonic() - self.started)


@contextlib.contextmanager
def demo_build(out_dir: str | Path, train_size: int, test_size: int,
               seed: int) -> Iterator[DemoBuild]:
    """The comments and a staging directory beside `out_dir`; when the body returns, the
    staged model replaces `out_dir` (readers never see a half-written one); when it raises,
    the staging directory goes."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    train_rows = list(generate_comments(train_size, seed=seed))
    test_rows = list(generate_comments(test_size, seed=seed + TEST_SEED_OFFSET))
    build_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp",
                                      dir=out_dir.parent))
    try:
        yield DemoBuild(out_dir, train_rows, test_rows, build_dir, started)
        _replace_dir(build_dir, out_dir)
    except BaseException:
        shutil.rmtree(build_dir, ignore_errors=True)
        raise


def _replace_dir(built: Path, out_dir: Path) -> None:
    if not out_dir.exists():
        built.rename(out_dir)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
    out_dir.rename(old / out_dir.name)
    built.rename(out_dir)
    shutil.rmtree(old)
