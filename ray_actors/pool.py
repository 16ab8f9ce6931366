"""Workers that outlive one run. A sweep transforms the same inputs with the same pinned models at
every grid point, and a nightly with every target that shares them; starting Ray actors and
loading the models again per run costs seconds each time, which at tens of times real time is a
large share of a point (issue 22). Inside `keep_workers()` a pool made for one run is kept, keyed
by what the workers hold (the pinned models and how they run), and handed to the next run that
needs the same; a run that needs other workers releases it first (one pool at a time: actors
reserve CPUs); when the outermost scope closes, every kept actor is released. Outside a scope a
run's workers are made for it and released when it ends, as before, so nothing holds CPUs that a
later features or training stage of the same driver would wait for."""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_LOCK = threading.Lock()
_scopes = 0
_kept: dict[str, Any] = {}


class ActorWorkers:
    """Ray actors of one pool; one call in flight per actor, results as they finish."""

    def __init__(self, actors: list):
        self.actors = actors

    def map_unordered(self, fn: Callable, items: list) -> Iterator:
        from ray.util import ActorPool

        return ActorPool(self.actors).map_unordered(fn, items)

    def release(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a)


class LocalWorker:
    """The in-process worker (num_actors 0): its models stay loaded while the scope is open."""

    def __init__(self, fn: Callable):
        self.fn = fn

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def release(self) -> None:
        self.fn = None


@contextmanager
def keep_workers() -> Iterator[None]:
    """Keep the workers of the runs inside this block for the next run that needs the same."""
    global _scopes
    with _LOCK:
        _scopes += 1
    try:
        yield
    finally:
        with _LOCK:
            _scopes -= 1
            released = list(_kept.values()) if _scopes == 0 else []
            if _scopes == 0:
                _kept.clear()
        for w in released:
            w.release()


@contextmanager
def pooled(key: str, make: Callable[[], Any]) -> Iterator[Any]:
    """The kept workers for `key`, else new ones (kept when a scope is open, else released after)."""
    with _LOCK:
        w, keep = _kept.get(key), _scopes > 0
        # at most one pool kept: a second one would wait for the CPUs (or GPUs) the first holds
        evicted = [_kept.pop(k) for k in list(_kept) if k != key]
    for old in evicted:
        old.release()
    if w is None:
        w = make()
        if keep:
            with _LOCK:
                _kept[key] = w
    try:
        yield w
    finally:
        if not keep:
            w.release()


def kept_count() -> int:
    """How many pools are kept now."""
    with _LOCK:
        return len(_kept)
