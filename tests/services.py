"""Servers the cluster and e2e tests start as teams run them, each on 127.0.0.1 with a throwaway
data directory: PostgreSQL (Debian's `postgresql`), and an `mlflow server` whose backend store is
that PostgreSQL and whose artifacts go to S3. Context managers: a server never outlives its test."""
from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_ok(url: str) -> bool:
    try:
        return urllib.request.urlopen(url, timeout=2).status == 200
    except OSError:
        return False


def wait_until(ready, what: str, proc: subprocess.Popen, log: Path, timeout_s: float = 120) -> None:
    """Poll `ready()` until it holds; fail with the server's log if its process exits or time runs out."""
    deadline = time.time() + timeout_s
    while not ready():
        if proc.poll() is not None or time.time() > deadline:
            tail = log.read_text()[-3000:] if log.exists() else ""
            raise RuntimeError(f"{what} did not come up in {timeout_s:.0f} s (exit {proc.poll()}):\n{tail}")
        time.sleep(0.3)


@dataclass(frozen=True)
class Postgres:
    port: int
    user: str
    password: str

    def url(self, database: str, driver: str) -> str:
        """A SQLAlchemy URL: `asyncpg` for the Prefect server, `pg8000` for MLflow."""
        return f"postgresql+{driver}://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres"):
        import pg8000.native

        return pg8000.native.Connection(self.user, password=self.password, host="127.0.0.1", port=self.port,
                                        database=database)

    def create_database(self, name: str) -> None:
        con = self.connect()
        try:
            con.run(f'CREATE DATABASE "{name}"')
        finally:
            con.close()

    def count(self, database: str, sql: str) -> int:
        con = self.connect(database)
        try:
            return int(con.run(sql)[0][0])
        finally:
            con.close()


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise RuntimeError(f"PostgreSQL's {name} not found: install Debian's `postgresql` (make setup does)")
    return found


@contextlib.contextmanager
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL server on 127.0.0.1 only (no Unix socket outside its data directory), with
    password (SCRAM) authentication, in a data directory removed afterwards. As root it runs as the
    `postgres` user, since PostgreSQL refuses to run as root."""
    base = Path(tempfile.mkdtemp(prefix="ri-pg-", dir="/tmp"))
    data, log = base / "data", base / "server.log"
    pw, user = secrets.token_hex(12), "reinstrument"
    (base / "pw").write_text(pw)
    as_user: list[str] = []
    if os.geteuid() == 0:
        import pwd

        owner = pwd.getpwnam("postgres")
        for p in (base, base / "pw"):
            os.chown(p, owner.pw_uid, owner.pw_gid)
        as_user = ["setpriv", f"--reuid={owner.pw_uid}", f"--regid={owner.pw_gid}", "--init-groups"]
    r = subprocess.run([*as_user, _pg_bin("initdb"), "-D", str(data), "-U", user, f"--pwfile={base / 'pw'}",
                        "--auth=scram-sha-256", "-E", "UTF8", "--no-sync"], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"initdb failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    port = free_port()
    proc = subprocess.Popen([*as_user, _pg_bin("postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port),
                             "-k", str(base), "-c", "fsync=off", "-c", "max_connections=200"],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    server = Postgres(port, user, pw)

    def ready() -> bool:
        try:
            server.connect().close()
            return True
        except Exception:  # noqa: BLE001 - starting up
            return False

    try:
        wait_until(ready, "PostgreSQL", proc, log)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGINT)  # "fast shutdown": disconnect clients, stop
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def mlflow_server(backend_store_uri: str, artifact_root: str, workdir: Path) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1; clients write artifacts straight to `artifact_root` (S3).
    Yields the tracking URI."""
    port = free_port()
    log = workdir / "mlflow-server.log"
    proc = subprocess.Popen([str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", backend_store_uri, "--default-artifact-root", artifact_root,
                             "--workers", "1"],
                            cwd=workdir, start_new_session=True, stdout=open(log, "w"), stderr=subprocess.STDOUT)

    try:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/health"), "mlflow server", proc, log, timeout_s=180)
        yield f"http://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
