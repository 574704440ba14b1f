"""Real servers on 127.0.0.1, for the end-to-end tests (tests/e2e/conftest.py) and the
benchmarks (bench/harness): `python -m app serve` with its settings from the environment, or
any command that listens on a port, each in a session of its own with its output in a log
file, and ready once a path answers 200."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

PROJECT_ROOT = Path(__file__).resolve().parent.parent
READY_SECONDS = 60.0
STOP_SECONDS = 15.0
LOG_TAIL_LINES = 40


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log()
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:]) or "(server log is empty)"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                # Its own session (start_new_session): the group is uvicorn and its workers.
                with contextlib.suppress(OSError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=STOP_SECONDS)


def serve_environment(
    *, database_url: str, key_file: Path, var_dir: Path, smtp_port: int, **overrides: str
) -> dict[str, str]:
    """This process's environment and the settings `python -m app serve` needs: the production
    profile on this database and key, e-mail to the SMTP sink on `smtp_port`; `overrides`
    (ROAMSIGN_... names) last."""
    return {
        **os.environ,
        "ROAMSIGN_PROFILE": "production",
        "ROAMSIGN_DATABASE_URL": database_url,
        "ROAMSIGN_MASTER_KEY_FILE": str(key_file),
        "ROAMSIGN_VAR_DIR": str(var_dir),
        "ROAMSIGN_SMTP_HOST": "127.0.0.1",
        "ROAMSIGN_SMTP_PORT": str(smtp_port),
        **overrides,
    }


def serve(
    env: dict[str, str], var_dir: Path, workers: int = 1, ready_seconds: float = READY_SECONDS
) -> Server:
    """`python -m app serve --workers N` on a free port, its log in `var_dir`, once ready."""
    port = free_port()
    return launch(
        [sys.executable, "-m", "app", "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
        port=port,
        log_path=var_dir / f"server-{port}.log",
        ready_path="/readyz",
        ready_seconds=ready_seconds,
    )


def launch(
    command: list[str],
    *,
    env: dict[str, str],
    port: int,
    log_path: Path,
    ready_path: str,
    ready_seconds: float = READY_SECONDS,
    host: str = "127.0.0.1",
) -> Server:
    """Start a server (`command`, listening on `host`:`port`, in a session of its own, its
    output to `log_path`) and wait until `ready_path` answers 200; stopped again if it never
    does."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(f"http://{host}:{port}", process, log_path)
    deadline = time.monotonic() + ready_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited ({process.returncode}):\n{server.tail()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{server.url}{ready_path}", timeout=1).status_code == 200:
                return server
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"the server was not ready within {ready_seconds} s:\n{server.tail()}")
