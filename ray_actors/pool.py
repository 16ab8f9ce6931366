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


# How long a pool waits on its calls before asking Ray whether their actors are still alive.
STALL_CHECK_S = 5.0


def _restarting_or_dead(actor) -> bool:
    """Ray's actor table says the actor is restarting or dead. A call sent to an actor that dies
    before it ever ran the call (a node lost while the actor was still being created) does not
    fail: Ray holds it until the restart, which never comes when no node has room (seen: the
    multi-node test's transform hung under CI load after a node kill)."""
    import ray

    try:
        return ray._private.state.actors(actor._actor_id.hex())["State"] in ("RESTARTING", "DEAD")
    except Exception:  # noqa: BLE001 - no actor table (an older Ray): only the failed calls tell
        return False


def _cancel(ref) -> None:
    """Drop a call that was handed to another actor (best effort: calls are idempotent)."""
    import ray

    try:
        ray.cancel(ref)
    except Exception:  # noqa: BLE001 - already finished, or not cancellable: it reruns harmlessly
        pass


def init_error(e: BaseException) -> BaseException:
    """The exception an actor's __init__ raised, out of Ray's ActorDiedError (which carries the
    creation task's RayTaskError, whose `cause` is the original exception); `e` itself if none."""
    task_error = e.args[0] if e.args else None
    cause = getattr(task_error, "cause", None)
    return cause if isinstance(cause, BaseException) else e


class ActorWorkers:
    """Ray actors of one pool (made with max_restarts=-1 and max_task_retries=0); one call in
    flight per actor, results as they finish.

    A call whose actor dies goes back to the queue for the next ready actor, and the actor rejoins
    once Ray has restarted it. Ray's own task retries (max_task_retries=-1) would instead wait for
    that restart, which never comes when the restarted actor has no room: a lost node's actor on
    the surviving nodes whose CPUs the other actors hold (seen: the multi-node test's transform hung
    after a node was killed mid-call). A call held for an actor that Ray reports restarting or dead
    (checked after STALL_CHECK_S without a result) is handed over the same way. Calls must be
    idempotent, as every call here is: a rerun rewrites the same keys with the same bytes, and
    nothing is visible before the driver commits."""

    def __init__(self, actors: list):
        self.actors = actors

    def map_unordered(self, fn: Callable, items: list) -> Iterator:
        import ray
        from ray.exceptions import RayActorError

        queue, idle = deque(items), list(self.actors)
        running: dict = {}  # call's ref -> (actor, item)
        waking: dict = {}   # restarted actor's ready ref -> actor
        init_failed: list[BaseException] = []  # why actors died in __init__ (a wrong model, a bad file)

        def note(e: RayActorError) -> None:
            if getattr(e, "actor_init_failed", False):
                init_failed.append(e)

        def hand_over(ref) -> None:
            """The call's item to the next ready actor; its actor waits to rejoin."""
            actor, item = running.pop(ref)
            queue.appendleft(item)
            # resolves once Ray has restarted it (retried until then), fails if it never will
            waking[actor.__ray_ready__.options(max_task_retries=-1).remote()] = actor

        while queue or running:
            while queue and idle:
                actor, item = idle.pop(), queue.popleft()
                running[fn(actor, item)] = (actor, item)
            if not running and not waking:
                if init_failed:  # the reason itself, as the in-process path raises it
                    raise init_error(init_failed[0]) from None
                raise RuntimeError(f"every actor of the pool died for good; {len(queue)} calls left undone")
            ready, _ = ray.wait([*running, *waking], num_returns=1, timeout=STALL_CHECK_S)
            if not ready:
                for ref in [r for r, (actor, _) in running.items() if _restarting_or_dead(actor)]:
                    hand_over(ref)
                    _cancel(ref)
                continue
            (ref,) = ready
            if ref in waking:
                actor = waking.pop(ref)
                try:
                    ray.get(ref)
                    idle.append(actor)
                except RayActorError as e:
                    note(e)  # dead for good (killed without restart, or its __init__ raised): the others carry on
                continue
            try:
                result = ray.get(ref)
            except RayActorError as e:
                note(e)
                hand_over(ref)
                continue
            idle.append(running.pop(ref)[0])
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
