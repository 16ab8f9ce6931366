"""`make bench`: the transform at its floor (issue 22), on the models the repository ships (the
latent flute denoiser, its autoencoder, the vocoder), at the recommended operating point with the
recommended sampler (schemas.diffusion.RECOMMENDED_SAMPLER), end to end through jobs/transform
(guide FLAC -> encode -> warm start -> decode -> vocoder -> loudness -> FLAC -> storage -> committed
table): in this process and on 2 Ray actors, each first with its start-up (models loaded, actors
started) and then with the workers kept from the run before (ray_actors/pool.keep_workers, what a
sweep's grid points and a nightly's targets get), and the previous default (Heun on the N grid)
side by side. Quality at this setting: README, "Quality per model evaluation"."""
import os
import time

import pytest

from jobs.ship import cpu_flags
from tests.benchmarks import violin_bench_corpus

CLIPS = int(os.environ.get("BENCH_TRANSFORM_CLIPS", "24"))
T_INIT = float(os.environ.get("BENCH_T_INIT", "0.6"))  # the demo sweep's recommendation for the shipped model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench-floor")
    corpus = violin_bench_corpus(tmp, CLIPS)
    from jobs.ship import register_shipped_job

    shipped = register_shipped_job(("autoencoder", "vocoder", "flute-latent"))
    return tmp, corpus, f"models:/{shipped['flute-latent']['name']}/{shipped['flute-latent']['version']}"


def test_transform_end_to_end_at_the_recommended_setting_in_process_and_on_ray(setup):
    from jobs.transform import transform_job
    from ray_actors.pool import keep_workers
    from schemas.diffusion import WarmStartConfig
    from schemas.transform import InputSelection, TransformConfig, TransformLogistics

    tmp, corpus, model = setup
    sel = InputSelection(domain="violin", role="clean", limit=CLIPS)
    runs = []

    def run(label: str, actors: int, seed: int, sampler: dict | None = None) -> float:
        cfg = TransformConfig(model=model, warm=WarmStartConfig(t_init=T_INIT, lam=0.0), seed=seed, sampler=sampler)
        log = TransformLogistics(num_actors=actors, clips_per_task=4, out_url=str(tmp / "out"))
        t0 = time.perf_counter()
        res = transform_job(corpus.clips_url, sel, cfg, log)
        wall = time.perf_counter() - t0
        assert res["transformed"] == CLIPS and res["failed"] == 0
        runs.append((label, cfg.sampler, res["audio_s"], wall))
        return res["audio_s"] / wall

    from infra.ray_cluster import ensure_ray

    ensure_ray()  # a running cluster is infrastructure; its start-up is not the job's
    with keep_workers():
        run("in-process, with model loading", 0, 1)
        inproc = run("in-process, workers kept", 0, 2)
        heun = run("in-process, workers kept, Heun on the N grid (the default before issue 22)", 0, 3, {"name": "heun"})
    with keep_workers():
        run("2 Ray actors, with actor start-up", 2, 4)
        ray2 = run("2 Ray actors, actors kept (a sweep's next grid point)", 2, 5)
    print(f"\n[transform floor] CPU flags: {' '.join(cpu_flags()) or 'none'}; {os.cpu_count()} cores; shipped "
          f"{model}; tau_init {T_INIT}, lambda 0; {CLIPS} ten-second violin clips")
    print("| run | sampler | evaluations per window | audio-s | wall s | x real time |\n|---|---|---|---|---|---|")
    from tasks.diffusion.samplers import model_evaluations
    from schemas.diffusion import EDMConfig
    from tasks.diffusion.warm import warm_sigmas

    for label, s, audio_s, wall in runs:
        nfe = model_evaluations(s.name, warm_sigmas(s, EDMConfig(), WarmStartConfig(t_init=T_INIT)))
        print(f"| {label} | {s.name} N {s.steps}{f' K {s.solver_steps}' if s.solver_steps else ''} | {nfe} | "
              f"{audio_s:.0f} | {wall:.1f} | {audio_s / wall:.1f} |")
    print(f"[transform floor] in-process {inproc:.1f}x real time (goal >= 30x: {'met' if inproc >= 30 else 'NOT met'}); "
          f"2 actors {ray2 / inproc:.0%} of in-process (goal >= 90 %: {'met' if ray2 >= 0.9 * inproc else 'NOT met'}); "
          f"recommended sampler {inproc / heun:.2f}x the Heun N-grid run")
