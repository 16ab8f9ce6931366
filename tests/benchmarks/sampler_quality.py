"""Quality per model evaluation (issue 22): a shipped or registered flute model warm-started on the
held-out chorales of heldout_sweep.py, with each sampler at several step counts and several
τ_init; FAD against the real flute train clips and JD against the guide (95 % intervals), and the
model evaluations each warm start actually made (counted by wrapping the sampler's denoiser, not
computed from a formula). Prints one JSON line per point, then a table.

Every sampler starts at the same noise level: σ_start of the reference (Heun, N = 35) at that
τ_init, and runs K steps of a Karras grid from there (WarmStartConfig.sigma_start). Comparing at
one τ_init across different N would not: round(τ·N) moves σ_start with N, and near the knee FAD
moves with σ_start far more than with the solver (measured: at τ_init 0.65, Heun N = 10 starts
at a lower σ and scores FAD 18.3 where N = 35 scores 5.2). The reference is Heun with K = 35 −
round(0.65·35) = 12 steps, the same grid as the N = 35 run.
Not collected by pytest; run it by hand (about 1 min per point on 2 cores for 35 clips):

    .venv/bin/python tests/benchmarks/sampler_quality.py ./reinstrument-data/demo \\
        shipped:flute-latent 0.65,0.6,0.5 [EVAL_DIR]

SAMPLERS (default below) lists name:K[:S_churn], K the steps run from σ_start (churn only at σ ≥ 0.5,
the demo's setting: at these τ_init σ_start is below 0.5, so churn never acts)."""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import torch  # noqa: E402

import tasks.diffusion.samplers as samplers  # noqa: E402
from schemas.diffusion import SamplerConfig, WarmStartConfig  # noqa: E402
from tasks.diffusion.warm import start_index, warm_sigmas  # noqa: E402
from tests.benchmarks.heldout_sweep import held_out  # noqa: E402

DEFAULT = "heun:ref,heun:8,heun:6,heun:4,heun:3,dpmpp_2m:ref,dpmpp_2m:8,dpmpp_2m:6,dpmpp_2m:4,dpmpp_2m:3,euler:8,euler:6"
REFERENCE = SamplerConfig(name="heun", steps=35)


def counting(calls: list[int]):
    """Wrap every sampler so that each run appends the number of denoiser calls it made."""
    for name, fn in list(samplers.SAMPLERS.items()):
        def wrapped(denoiser, x, sigmas, *args, _fn=fn, **kwargs):
            n = [0]

            def counted(*a, **k):
                n[0] += 1
                return denoiser(*a, **k)
            out = _fn(counted, x, sigmas, *args, **kwargs)
            calls.append(n[0])
            return out
        samplers.SAMPLERS[name] = wrapped


def parse(spec: str, t_init: float) -> SamplerConfig:
    """name:K[:S_churn]; K "ref" is the reference's own step count at this τ_init."""
    name, steps, *churn = spec.split(":")
    k = REFERENCE.steps - start_index(t_init, REFERENCE.steps) if steps == "ref" else int(steps)
    s_churn = float(churn[0]) if churn else 0.0
    return SamplerConfig(name=name, steps=k, S_churn=s_churn, S_tmin=0.5 if s_churn else 0.0)


def main():
    torch.set_num_threads(2)
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    t_inits = [float(x) for x in sys.argv[3].split(",")]
    lam = float(os.environ.get("LAM", "0"))
    specs = os.environ.get("SAMPLERS", DEFAULT).split(",")
    h = held_out(sys.argv[1], sys.argv[2], sys.argv[4] if len(sys.argv) > 4 else "./reinstrument-data/heldout40")
    calls: list[int] = []
    counting(calls)
    rows = []
    for ti in t_inits:
        sigma_start = float(warm_sigmas(REFERENCE, h.loaded.model.cfg, WarmStartConfig(t_init=ti))[0])
        for cfg in (parse(s, ti) for s in specs):
            calls.clear()
            t0 = time.time()
            outs = h.transform(h.guides, WarmStartConfig(sigma_start=sigma_start, lam=lam), cfg)
            nfe = max(calls) if calls else 0
            rows.append({"t_init": ti, "sigma_start": round(sigma_start, 4), "sampler": cfg.name, "steps": cfg.steps,
                         "S_churn": cfg.S_churn, "nfe": nfe}
                        | h.score(outs) | {"s": round(time.time() - t0, 1)})
            print(json.dumps(rows[-1]), flush=True)
    print("\n| τ_init (σ_start) | sampler | K steps | S_churn | evaluations | FAD (95 % CI) | JD (95 % CI) | s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['t_init']} ({r['sigma_start']}) | {r['sampler']} | {r['steps']} | {r['S_churn']:g} | {r['nfe']} | {r['fad'][0]} "
              f"({r['fad'][1]}–{r['fad'][2]}) | {r['jd'][0]} ({r['jd'][1]}–{r['jd'][2]}) | {r['s']} |")


if __name__ == "__main__":
    main()
