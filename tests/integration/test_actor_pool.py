"""ray_actors/pool.ActorWorkers on local Ray: a call whose actor dies goes to another actor, even
when the dead actor's restart never comes up (a lost node's actor with no room left on the
others: Ray's own task retry waited for it forever and the multi-node test's transform hung)."""
from __future__ import annotations

import os
import time

import pytest
import ray

from ray_actors.pool import ActorWorkers, _restarting_or_dead


@ray.remote(max_restarts=-1, max_task_retries=0, num_cpus=0)
class _Doubler:
    def __init__(self, died: str):
        if os.path.exists(died):  # a restart after the crash below never becomes ready
            time.sleep(3600)

    def call(self, x: int, died: str) -> int:
        if x == 0 and not os.path.exists(died):  # the first call of item 0 kills its process
            open(died, "w").close()
            os._exit(1)
        return 2 * x


def test_a_call_whose_actor_dies_is_served_by_another_actor_while_the_restart_never_comes(ray_local, tmp_path):
    died = str(tmp_path / "died")
    actors = [_Doubler.remote(died) for _ in range(2)]
    # both constructed before the fault: a constructor that runs after it sleeps (seen in CI: the
    # second actor started after the first had crashed, and its call waited for it)
    ray.get([a.__ray_ready__.remote() for a in actors])
    pool = ActorWorkers(actors)
    try:
        out = list(pool.map_unordered(lambda a, x: a.call.remote(x, died), list(range(6))))
    finally:
        pool.release()
    assert os.path.exists(died), "the fault was never injected"
    assert sorted(out) == [0, 2, 4, 6, 8, 10]


def _wait_dead(actor, timeout_s: float = 60.0) -> None:
    """ray.kill only sends the kill: a call made right after it may still be served (seen in CI)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.get(actor.__ray_ready__.remote(), timeout=10)
        except ray.exceptions.RayActorError:
            return
        time.sleep(0.1)
    raise AssertionError("the killed actor still answers")


def test_an_actor_dead_for_good_leaves_the_work_to_the_others_and_none_left_is_an_error(ray_local, tmp_path):
    died = str(tmp_path / "never")
    a, b = (_Doubler.remote(died) for _ in range(2))
    ray.get([a.__ray_ready__.remote(), b.__ray_ready__.remote()])
    ray.kill(a, no_restart=True)
    _wait_dead(a)
    out = list(ActorWorkers([a, b]).map_unordered(lambda actor, x: actor.call.remote(x + 1, died), list(range(4))))
    assert sorted(out) == [2, 4, 6, 8]
    ray.kill(b, no_restart=True)
    _wait_dead(b)
    with pytest.raises(RuntimeError, match="every actor of the pool died"):
        list(ActorWorkers([a, b]).map_unordered(lambda actor, x: actor.call.remote(x + 1, died), [1]))


def test_the_pool_reads_from_rays_actor_table_whether_an_actor_is_gone(ray_local, tmp_path):
    """What the pool checks when its calls stall: a call Ray holds for a restart that never comes
    is handed to another actor only if this says the actor is restarting or dead."""
    died = str(tmp_path / "never")
    a = _Doubler.remote(died)
    assert ray.get(a.call.remote(3, died)) == 6
    assert not _restarting_or_dead(a)
    ray.kill(a, no_restart=True)
    _wait_dead(a)
    assert _restarting_or_dead(a)


@ray.remote(max_restarts=-1, max_task_retries=0, num_cpus=0)
class _Refuses:
    def __init__(self, model: str):
        raise ValueError(f"{model} is not a denoiser but a vocoder model; expected a denoiser [sic]")

    def call(self, x: int) -> int:
        return x


def test_an_actor_whose_init_raises_gives_that_reason_not_a_dead_pool(ray_local):
    """Issue 44, defect 6: the reason ('not a denoiser') was lost in 'every actor of the pool died
    for good' and a 100-line traceback; the in-process path printed it in one line."""
    from tasks.errors import describe, user_error

    pool = ActorWorkers([_Refuses.remote("shipped:vocoder") for _ in range(2)])
    try:
        with pytest.raises(ValueError) as e:
            list(pool.map_unordered(lambda a, x: a.call.remote(x), list(range(4))))
    finally:
        pool.release()
    assert type(e.value) is ValueError  # the exception itself, not Ray's wrapper
    assert describe(user_error(e.value)) == ("ValueError: shipped:vocoder is not a denoiser but a vocoder model; "
                                             "expected a denoiser [sic]")
