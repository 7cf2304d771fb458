"""`make bench-gpu` in its smoke mode: the same code as on a GPU, a tiny model on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.gpu import main
from bench.report import render_gpu


@pytest.mark.integration
@pytest.mark.slow
def test_smoke_run_measures_every_phase(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    assert main(["--smoke", "--out", str(out), "--work", str(tmp_path / "models")]) == 0

    figures = json.loads(out.read_text())
    alone = figures["alone"]["float32"]["64"]
    assert alone["handler_path_seq_s"] > 0 and alone["forward_only_seq_s"] > 0
    for count in ("1", "2"):
        run = figures["end_to_end"][count]
        assert isinstance(run, dict), run
        # every comment got its result, and each worker computed some of them
        assert sum(run["per_worker_records"]) >= run["records"] == 600
        assert all(n > 0 for n in run["per_worker_records"])
        assert run["records_per_second"] > 0
        assert run["gpu"] is None  # no nvidia-smi here
    assert figures["ratios"]["best_e2e_records_per_second"] > 0
    markdown = "\n".join(render_gpu(figures))
    assert "## GPU" in markdown and "| 2 |" in markdown
