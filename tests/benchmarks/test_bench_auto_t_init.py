"""`make bench`: what `--t-init auto` costs. The same ten-second violin clips through the shipped
model of six instruments (target flute) with its shipped decoder and vocoder, in this process with
the workers kept, side by side in one run: a fixed tau_init at the default operating point (0.6,
lambda 0) and auto (the probe's bisection over the default candidates, then the run at each clip's
choice). Goal: auto within 2x the fixed run's wall time."""
import os
import time

import pytest

from infra.settings import cpu_flags
from tests.benchmarks import violin_bench_corpus

CLIPS = int(os.environ.get("BENCH_TRANSFORM_CLIPS", "24"))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench-auto")
    return tmp, violin_bench_corpus(tmp, CLIPS)


def test_auto_t_init_costs_at_most_twice_a_fixed_t_init(setup):
    from jobs.transform import transform_job
    from ray_actors.pool import keep_workers
    from schemas.diffusion import WarmStartConfig
    from schemas.probe import AutoStart
    from schemas.transform import InputSelection, TransformConfig, TransformLogistics

    tmp, corpus = setup
    sel = InputSelection(domain="violin", role="clean", limit=CLIPS)
    log = TransformLogistics(num_actors=0, clips_per_task=4, out_url=str(tmp / "out"))
    walls = {}
    with keep_workers():
        for label, seed, auto in (("warm-up (models loaded)", 1, None), ("fixed τ_init 0.6", 2, None),
                                  ("auto", 2, AutoStart()), ("fixed τ_init 0.6 again", 3, None)):
            cfg = TransformConfig(model="shipped:instruments-latent", target="flute", seed=seed, auto=auto,
                                  warm=WarmStartConfig(t_init=0.6, lam=0.0))
            t0 = time.perf_counter()
            res = transform_job(corpus.clips_url, sel, cfg, log)
            walls[label] = (time.perf_counter() - t0, res["audio_s"])
            assert res["transformed"] == CLIPS and res["failed"] == 0
    fixed = min(walls["fixed τ_init 0.6"][0], walls["fixed τ_init 0.6 again"][0])
    ratio = walls["auto"][0] / fixed
    print(f"\n[auto t_init] CPU flags: {' '.join(cpu_flags()) or 'none'}; {os.cpu_count()} cores; shipped "
          f"instruments-latent -> flute; {CLIPS} ten-second violin clips, in this process, workers kept")
    print("| run | wall s | x real time |\n|---|---|---|")
    for label, (wall, audio_s) in walls.items():
        print(f"| {label} | {wall:.1f} | {audio_s / wall:.1f} |")
    print(f"[auto t_init] auto / fixed = {ratio:.2f} (goal <= 2: {'met' if ratio <= 2 else 'NOT met'})")
