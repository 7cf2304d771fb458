"""A worker as a child process: how `make run`, the tests and the benchmarks start one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from pydantic import TypeAdapter

from streamapp.broker import HOST

# Faust's -l takes its own names.
FAUST_LOG_LEVELS = {"warning": "warn", "critical": "crit"}


class WorkerProcess:
    """`faust -A streamapp worker` with the given STREAMAPP_* settings, output to a log file."""

    def __init__(self, settings: dict[str, str], log_path: Path, *,
                 log_level: str = "info", command: Sequence[str] | None = None) -> None:
        self.env = dict(os.environ)
        self.env.update({f"STREAMAPP_{k.upper()}": str(v) for k, v in settings.items()})
        self.web_port = int(self.env.get("STREAMAPP_WEB_PORT", "6066"))
        self.log_path = log_path
        self.log_level = log_level
        # The command line before `-l LEVEL`: Faust's by default, or e.g. `streamapp worker`.
        self.command = list(command or [sys.executable, "-m", "faust", "-A", "streamapp",
                                        "worker"])
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log_file:
            self.proc = subprocess.Popen(
                [*self.command, "-l", FAUST_LOG_LEVELS.get(self.log_level, self.log_level)],
                env=self.env, stdout=log_file, stderr=subprocess.STDOUT,
                # Stopped by its parent, in order (streamapp.broker): not by the terminal's
                # Ctrl-C, which would reach it and the broker at once.
                process_group=0)
        return self

    @property
    def source_topic(self) -> str:
        """The topic its inference reads: the internal one with fan-out, else the comments."""
        app_id = self.env.get("STREAMAPP_APP_ID", "streamapp")
        if not TypeAdapter(bool).validate_python(self.env.get("STREAMAPP_FANOUT", "true")):
            return self.env.get("STREAMAPP_COMMENTS_TOPIC", "comments")
        return f"{app_id}-inference"

    @property
    def stats_url(self) -> str:
        return f"http://{HOST}:{self.web_port}/api/stats/"

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.stats_url, timeout=5) as response:
            return dict(json.loads(response.read()))

    def wait_ready(self, timeout: float = 120.0, topic: str | None = None) -> dict[str, Any]:
        """Wait until the web view answers and the worker holds partitions (of `topic`)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}; see "
                                   f"{self.log_path}:\n{self.log_tail()}")
            try:
                stats = self.stats()
            except OSError:
                stats = None
            if stats is not None:
                held = stats["assigned_partitions"]
                if held and (topic is None or any(p.startswith(f"{topic}:") for p in held)):
                    return stats
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker not ready after {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(0.25)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
