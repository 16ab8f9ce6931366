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


def test_one_worker_serving_two_runs_at_once_keeps_each_call_in_its_own_run(tmp_path):
    """In-process, threads share one ClipTransformer (a sweep's grid points, compare's methods):
    a call's config, run folder and run ID travel with the call and are never left on the worker,
    so a call cannot write into, or label its rows with, another run."""
    import json
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from ray_actors.transform import ClipTransformer
    from schemas.diffusion import WarmStartConfig
    from schemas.transform import TransformConfig, TransformLogistics
    from tasks.audio import encode_flac

    pinned = {"model_uri": "shipped:flute-latent", "model": "shipped:flute-latent"}
    worker = ClipTransformer(TransformLogistics(num_actors=0, out_url=str(tmp_path)), pinned)
    t = np.arange(16000) / 16000
    flac = encode_flac((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    batch = {"output_key": ["k"], "audio_flac": [flac], "clip_id": ["c"], "clean_id": [None], "domain": ["violin"]}
    runs = {f"run{k}": TransformConfig(model="shipped:flute-latent", warm=WarmStartConfig(t_init=t_init, lam=0.0),
                                       vocoder="griffin-lim", vocoder_iters=2)
            for k, t_init in enumerate((1.0, 0.9, 1.0, 0.9))}

    def one(run_id: str) -> dict:
        return worker(batch, runs[run_id], str(tmp_path / run_id), run_id)

    with ThreadPoolExecutor(2) as ex:
        results = dict(zip(runs, ex.map(one, runs)))
    for run_id, out in results.items():
        row = json.loads(out["row"][0])
        assert row["run_id"] == run_id and row["t_init"] == runs[run_id].warm.t_init
        assert row["output_uri"].startswith(str(tmp_path / run_id)) and (tmp_path / run_id).is_dir()
    assert not {"cfg", "run", "run_id", "transformer"} & set(vars(worker)), "per-call state left on the worker"
