"""A temporary Prefect API for one command, when PREFECT_API_URL is not set.

Prefect's own ephemeral server outlives a command killed with SIGKILL (its uvicorn child is not
told). This one is started the same way (uvicorn with Prefect's app factory, on 127.0.0.1 only)
but asks the kernel to kill it when its parent dies (Linux PR_SET_PDEATHSIG), and is stopped on
a normal exit."""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

HOST = "127.0.0.1"
PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
    """Runs in the child between fork and exec."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # not Linux: the atexit stop below still applies
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the temporary Prefect API exited with code {proc.returncode}; "
                               "run with --no-prefect, or set PREFECT_API_URL to a running server")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"the temporary Prefect API did not answer within {timeout_s:.0f} s")


def _flush_queued(timeout_s: float = 10.0) -> None:
    """Send the log lines and events Prefect still queues (it batches them every few seconds) while
    the server is up: otherwise its background sender retries after the server is gone and prints
    '--- Error logging to API --- All connection attempts failed' at the end of every command."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for service in (APILogWorker, EventsWorker):
        service.drain_all(timeout=timeout_s, at_exit=False)


@contextmanager
def prefect_api(timeout_s: float = 120.0) -> Iterator[str | None]:
    """PREFECT_API_URL's server if set; else a temporary one for the duration of the block."""
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    import prefect
    from prefect.settings import PREFECT_API_URL, temporary_settings

    port = _free_port()
    parent = os.getpid()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent), "--factory",
         "prefect.server.api.server:create_app", "--host", HOST, "--port", str(port), "--log-level", "error",
         "--lifespan", "on"],
        env=dict(os.environ, PREFECT_UI_ENABLED="0"), preexec_fn=lambda: _die_with_parent(parent))
    url = f"http://{HOST}:{port}/api"
    try:
        _wait_healthy(url, proc, timeout_s)
        with temporary_settings({PREFECT_API_URL: url}):
            try:
                yield url
            finally:
                _flush_queued()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
