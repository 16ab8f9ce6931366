"""ray_actors/pool: which workers a run gets inside and outside keep_workers() (no Ray needed:
the rules are the same for in-process workers and actor pools)."""
from ray_actors.pool import LocalWorker, keep_workers, kept_count, pooled


class Made:
    def __init__(self):
        self.made, self.released = [], []

    def __call__(self, name: str):
        def make():
            w = LocalWorker(lambda: name)
            real_release = w.release
            w.release = lambda: (self.released.append(name), real_release())
            self.made.append(name)
            return w
        return make


def test_outside_a_scope_every_run_gets_new_workers_released_after():
    m = Made()
    for _ in range(2):
        with pooled("a", m("a")) as w:
            assert w() == "a"
    assert m.made == ["a", "a"] and m.released == ["a", "a"] and kept_count() == 0


def test_inside_a_scope_runs_with_the_same_key_share_workers_until_the_scope_ends():
    m = Made()
    with keep_workers():
        for _ in range(3):
            with pooled("a", m("a")) as w:
                assert w() == "a"
        assert m.made == ["a"] and m.released == [] and kept_count() == 1
        with keep_workers():  # nested scopes (a sweep inside a demo) keep the same pool
            with pooled("a", m("a")):
                pass
        assert m.made == ["a"] and kept_count() == 1
    assert m.released == ["a"] and kept_count() == 0


def test_another_key_releases_the_kept_pool_first():
    """Actors reserve CPUs: a second pool next to a kept one would wait for them forever."""
    m = Made()
    with keep_workers():
        with pooled("a", m("a")):
            pass
        with pooled("b", m("b")):
            assert m.released == ["a"]  # before b's workers were used
        with pooled("b", m("b")):
            pass
        assert m.made == ["a", "b"] and kept_count() == 1
    assert m.released == ["a", "b"]
