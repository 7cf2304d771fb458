"""GPU utilisation while bench-gpu's workers run: `nvidia-smi` sampled in a child process."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from typing import Any


class GpuSampler:
    """`nvidia-smi` every 500 ms in a child process: (time, utilisation %, memory MiB)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float, float]] = []
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def __enter__(self) -> GpuSampler:
        smi = shutil.which("nvidia-smi")
        if smi is None:
            return self
        self._proc = subprocess.Popen(
            [smi, "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits",
             "-lms", "500"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                util, memory = (float(x) for x in line.split(",")[:2])
            except ValueError:
                continue
            self.samples.append((time.time(), util, memory))

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(5)
        if self._reader is not None:
            self._reader.join(5)

    def summary(self, start: float, end: float) -> dict[str, Any] | None:
        window = [s for s in self.samples if start <= s[0] <= end]
        if not window:
            return None
        utils = [u for _, u, _ in window]
        return {"samples": len(window), "util_mean_pct": round(sum(utils) / len(utils), 1),
                "util_max_pct": max(utils), "memory_max_mib": max(m for _, _, m in window)}
