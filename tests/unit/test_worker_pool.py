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


def test_griffin_lim_on_several_threads_gives_each_seed_its_own_output():
    """The in-process transform vocodes chunks on threads at once; torchaudio draws Griffin-Lim's
    initial phase from torch's global generator, so without the lock in GriffinLimVocoder the
    seeds and draws of two threads interleave and outputs depend on timing."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import torch

    from schemas.configs import MelConfig
    from tasks.diffusion.vocoder import GriffinLimVocoder

    cfg = MelConfig()
    mel = np.random.default_rng(0).normal(-4, 1, (cfg.n_mels, 40)).astype(np.float32)
    vocoders = [GriffinLimVocoder(cfg, n_iter=2, seed=s) for s in (1, 2)]
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as the threads run (float sums may differ between thread counts)
    try:
        alone = [v(mel) for v in vocoders]
        with ThreadPoolExecutor(2) as ex:
            together = list(ex.map(lambda i: vocoders[i % 2](mel), range(60)))
    finally:
        torch.set_num_threads(before)
    assert all(np.array_equal(y, alone[i % 2]) for i, y in enumerate(together))
