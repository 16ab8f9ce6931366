"""How a job runs its steps. A job calls `step(fn, *args)` for each unit worth seeing on its own
(a Prefect task when the job runs under a flow: flows/steps.py); `inline` just calls it."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

R = TypeVar("R")


class Step(Protocol):
    def __call__(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> R: ...


def inline(fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
    return fn(*args, **kwargs)
