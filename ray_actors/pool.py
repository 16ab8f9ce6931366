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
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_LOCK = threading.Lock()
_scopes = 0
_kept: dict[str, Any] = {}


class ActorWorkers:
    """Ray actors of one pool (made with max_restarts=-1 and max_task_retries=0); one call in
    flight per actor, results as they finish.

    A call whose actor dies goes back to the queue for the next ready actor, and the actor rejoins
    once Ray has restarted it. Ray's own task retries (max_task_retries=-1) would instead wait for
    that restart, which never comes when the restarted actor has no room: a lost node's actor on
    the surviving nodes whose CPUs the other actors hold (seen: the multi-node test's transform hung
    after a node was killed mid-call). Calls must be idempotent, as every call here is: a rerun
    rewrites the same keys with the same bytes, and nothing is visible before the driver commits."""

    def __init__(self, actors: list):
        self.actors = actors

    def map_unordered(self, fn: Callable, items: list) -> Iterator:
        import ray
        from ray.exceptions import RayActorError

        queue, idle = deque(items), list(self.actors)
        running: dict = {}  # call's ref -> (actor, item)
        waking: dict = {}   # restarted actor's ready ref -> actor
        while queue or running:
            while queue and idle:
                actor, item = idle.pop(), queue.popleft()
                running[fn(actor, item)] = (actor, item)
            if not running and not waking:
                raise RuntimeError(f"every actor of the pool died for good; {len(queue)} calls left undone")
            (ref,), _ = ray.wait([*running, *waking], num_returns=1)
            if ref in waking:
                actor = waking.pop(ref)
                try:
                    ray.get(ref)
                    idle.append(actor)
                except RayActorError:
                    pass  # dead for good (killed without restart): the others carry on
                continue
            actor, item = running.pop(ref)
            try:
                result = ray.get(ref)
            except RayActorError:
                queue.appendleft(item)
                # resolves once Ray has restarted it (retried until then), fails if it never will
                waking[actor.__ray_ready__.options(max_task_retries=-1).remote()] = actor
                continue
            idle.append(actor)
            yield result

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
