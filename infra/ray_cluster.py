"""Local Ray by default, listening on 127.0.0.1 only; any cluster via RAY_ADDRESS / REINSTRUMENT_RAY_ADDRESS.

Workers reach the same storage and tracking as the driver, but no secret (infra/secrets.py: a
variable named like one, any prefix, or a URL with a password in it) ever enters Ray's
runtime_env (Ray writes it in clear to its runtime-env agent log, mode 0644) nor the environment
the local Ray's processes inherit (/proc/<pid>/environ):
- plain settings (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION, MLFLOW_TRACKING_URI, REINSTRUMENT_*) travel
  in runtime_env, as Ray intends, unless their value holds a password;
- secrets of the forwarded prefixes (AWS_, MLFLOW_, REINSTRUMENT_) travel in two in-memory files
  of the driver (Linux memfd, never on disk, gone with the driver however it dies, kill -9
  included; a worker opens them as /proc/<driver pid>/fd/<n>, which only this user may): an AWS
  shared-credentials file, which boto, s3fs and pyarrow read by themselves (so Ray Data's own
  tasks find it), and an environment file that the product's actors and training workers apply
  (`apply_worker_env`). Each job rewrites them, so credentials set after Ray started still reach
  its workers. Where memfd is missing (not Linux) they are 0600 files in a 0700 folder removed at
  exit, and a later start removes any such folder whose driver is gone;
- any other secret (GITHUB_TOKEN, DB_PASSWORD, ...) reaches no Ray process at all.
On a remote cluster the in-memory files are on the driver's machine only: nodes there resolve
credentials themselves (instance profile, their own environment), as Ray recommends.
"""
from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from contextlib import contextmanager

from infra.allocator import keep_freed_memory
from infra.secrets import is_secret
from infra.settings import get_settings

FORWARDED_PREFIXES = ("AWS_", "REINSTRUMENT_", "MLFLOW_")
WORKER_ENV_VAR = "REINSTRUMENT_WORKER_ENV_FILE"
# Ray's own credential: its processes need it to talk to each other (token authentication).
RAY_OWN = frozenset({"RAY_AUTH_TOKEN"})
_FILES: dict[str, "_PrivateFile"] = {}
_FALLBACK_PREFIX = "reinstrument-secrets-"


def forwarded_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_PREFIXES)}


def kept_from_ray(name: str, value: str) -> bool:
    """Variables no Ray process may inherit and runtime_env may not carry."""
    return is_secret(name, value) and name not in RAY_OWN


class _PrivateFile:
    """A file only this user can read, rewritten in place. In memory where the kernel allows
    (memfd: a worker reads it through /proc/<driver pid>/fd/<n>; nothing on disk, nothing left
    behind when the driver dies), else a 0600 file in a 0700 folder removed at exit."""

    def __init__(self, name: str):
        self.fd = None
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create(f"reinstrument-{name}", os.MFD_CLOEXEC)
            path = f"/proc/{os.getpid()}/fd/{fd}"
            if os.path.exists(path):
                self.fd, self.path = fd, path
                return
            os.close(fd)
        self.path = os.path.join(_fallback_dir(), name)

    def write(self, text: str) -> str:
        data = text.encode()
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, data, 0)
            return self.path
        tmp = f"{self.path}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, self.path)
        return self.path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_secret_dirs() -> list[str]:
    """Fallback folders (no memfd) whose driver is gone: a kill -9 skips atexit; the next start
    removes them. Only this user's folders, named by their driver's PID."""
    removed = []
    tmp = tempfile.gettempdir()
    for name in os.listdir(tmp):
        if not name.startswith(_FALLBACK_PREFIX):
            continue
        path = os.path.join(tmp, name)
        try:
            st = os.lstat(path)
            pid = int(name.removeprefix(_FALLBACK_PREFIX).split("-")[0])
        except (OSError, ValueError):
            continue
        if st.st_uid == os.getuid() and not os.path.islink(path) and not _pid_alive(pid):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _fallback_dir() -> str:
    if "dir" not in _FILES:
        remove_stale_secret_dirs()
        d = tempfile.mkdtemp(prefix=f"{_FALLBACK_PREFIX}{os.getpid()}-")  # mode 0700, owner only
        atexit.register(shutil.rmtree, d, True)
        _FILES["dir"] = d  # type: ignore[assignment]
    return _FILES["dir"]  # type: ignore[return-value]


def _private(name: str) -> _PrivateFile:
    if name not in _FILES:
        _FILES[name] = _PrivateFile(name)
    return _FILES[name]


def write_worker_files(extra: dict[str, str] | None = None) -> dict[str, str]:
    """(Re)write the private files from the current environment (plus `extra`, e.g. the resolved
    MLflow URI); returns the variables that point workers at them (paths only, no secret)."""
    env = forwarded_env() | (extra or {})
    creds = ""
    if env.get("AWS_ACCESS_KEY_ID"):
        creds = "[default]\n" + "".join(f"{k.lower()} = {env[k]}\n" for k in
                                        ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN") if env.get(k))
    else:  # a user's own credentials file (profiles) keeps working
        own = os.environ.get("AWS_SHARED_CREDENTIALS_FILE", os.path.expanduser("~/.aws/credentials"))
        if os.path.isfile(own) and own != _private("aws-credentials").path:
            with open(own) as f:
                creds = f.read()
    return {"AWS_SHARED_CREDENTIALS_FILE": _private("aws-credentials").write(creds),
            WORKER_ENV_VAR: _private("worker-env.json").write(json.dumps(env))}


def apply_worker_env() -> None:
    """In a Ray worker: take the driver's current storage/MLflow variables (secrets included) from
    the private file the job wrote. A no-op where there is none (remote clusters, plain processes)."""
    path = os.environ.get(WORKER_ENV_VAR)
    if path and os.path.isfile(path):
        with open(path) as f:
            os.environ.update(json.load(f))


def enter_worker() -> str:
    """What a compute process (training worker, transform or feature worker; in-process too) does
    first: the driver's variables, then the allocator setting, which may come from them. Returns
    the allocator's state, for the log."""
    apply_worker_env()
    return keep_freed_memory()


@contextmanager
def _without_secrets():
    """The local Ray's processes inherit this process's environment at start: keep secrets out."""
    saved = {k: os.environ.pop(k) for k, v in list(os.environ.items()) if kept_from_ray(k, v)}
    try:
        yield
    finally:
        os.environ.update(saved)


def _bind_local(host: str) -> dict:
    """ray.init arguments that make a local Ray listen on `host` only. Ray maps 127.0.0.1 to the
    machine's outward address unless it runs in its single-machine mode, which is what
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 selects (GCS, raylet, workers and agents then all bind
    loopback; measured with psutil, tests/integration/test_secrets_and_sockets.py)."""
    import ray._private.ray_constants as rc

    if host in ("127.0.0.1", "localhost", "::1"):
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # for Ray's child processes
        rc.ENABLE_RAY_CLUSTER = False                          # for this process (read at import)
        return {}
    return {"_node_ip_address": host}


def _ray_address() -> str | None:
    return get_settings().ray_address or os.environ.get("RAY_ADDRESS") or None


def ray_is_local() -> bool:
    """Whether a job here starts its own Ray on this machine (no cluster address, or "local")."""
    return _ray_address() in (None, "local")


def default_train_workers(use_gpu: bool) -> int:
    """Ray Train workers when a command is not told: in this process on one machine's CPUs, where
    DDP over gloo only splits the same cores and pays for its all-reduce (the `cpu-demo` loop
    1.30x faster in-process here, README "CPU training throughput"); one per visible GPU on this
    machine (two cannot be placed on a one-GPU machine: Ray Train waits for a second GPU); 2 on a
    cluster, whose devices this process cannot count, as before."""
    if not ray_is_local():
        return 2
    if use_gpu:
        import torch

        return max(1, torch.cuda.device_count())
    return 0


def ensure_ray(extra_env: dict[str, str] | None = None) -> None:
    """Start (or join) Ray once per process; every call (one per job) refreshes the workers'
    private files with the current variables and `extra_env`."""
    import ray

    files = write_worker_files(extra_env)
    if ray.is_initialized():
        return
    s = get_settings()
    address = _ray_address()
    local = ray_is_local()  # "local": a new local cluster, even when one is running
    plain = {k: v for k, v in forwarded_env().items() if not kept_from_ray(k, v)}
    # The private files exist on this machine only: a remote cluster's nodes keep their own
    # credential resolution (pointing them at a missing file would hide their ~/.aws).
    kwargs: dict = {"runtime_env": {"env_vars": plain | (files if local else {})}, "log_to_driver": False}
    with _without_secrets():
        if local:
            ray.init(address=address, num_cpus=s.ray_num_cpus or os.cpu_count(), include_dashboard=False,
                     **_bind_local(s.ray_host), **kwargs)
        else:
            ray.init(address=address, **kwargs)
