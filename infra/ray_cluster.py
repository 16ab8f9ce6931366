"""Local Ray by default; any cluster via RAY_ADDRESS / REINSTRUMENT_RAY_ADDRESS. Workers get
the AWS_* and REINSTRUMENT_* variables so they reach the same storage as the driver."""
from __future__ import annotations

import os

from infra.settings import get_settings

FORWARDED_PREFIXES = ("AWS_", "REINSTRUMENT_", "MLFLOW_")


def forwarded_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_PREFIXES)}


def ensure_ray() -> None:
    import ray

    if ray.is_initialized():
        return
    s = get_settings()
    address = s.ray_address or os.environ.get("RAY_ADDRESS")
    kwargs: dict = {"runtime_env": {"env_vars": forwarded_env()}, "log_to_driver": False}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=s.ray_num_cpus or os.cpu_count(), include_dashboard=False, **kwargs)
