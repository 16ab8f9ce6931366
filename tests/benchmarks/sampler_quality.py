"""Quality per model evaluation (issue 22): a shipped or registered flute model warm-started on the
held-out chorales of heldout_sweep.py, with each sampler at several step counts N and several
τ_init; FAD against the real flute train clips and JD against the guide (95 % intervals), and the
model evaluations each warm start actually made (counted by wrapping the sampler's denoiser, not
computed from a formula). Prints one JSON line per point, then a table.
Not collected by pytest; run it by hand (about 1 min per point on 2 cores for 35 clips):

    LAM=0 .venv/bin/python tests/benchmarks/sampler_quality.py ./reinstrument-data/demo \\
        shipped:flute-latent 0.65,0.6,0.5 [EVAL_DIR]

SAMPLERS (default "heun:35:7,heun:35:0,heun:20:0,heun:10:0,dpmpp_2m:20,dpmpp_2m:10,dpmpp_2m:6,euler:20,euler:10")
lists name:N[:S_churn] (churn only at σ ≥ 0.5, the demo's setting)."""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import torch  # noqa: E402

import tasks.diffusion.samplers as samplers  # noqa: E402
from schemas.diffusion import SamplerConfig, WarmStartConfig  # noqa: E402
from tests.benchmarks.heldout_sweep import held_out  # noqa: E402

DEFAULT = "heun:35:7,heun:35:0,heun:20:0,heun:10:0,dpmpp_2m:20,dpmpp_2m:10,dpmpp_2m:6,euler:20,euler:10"


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


def parse(spec: str) -> SamplerConfig:
    name, steps, *churn = spec.split(":")
    s_churn = float(churn[0]) if churn else 0.0
    return SamplerConfig(name=name, steps=int(steps), S_churn=s_churn, S_tmin=0.5 if s_churn else 0.0)


def main():
    torch.set_num_threads(2)
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    t_inits = [float(x) for x in sys.argv[3].split(",")]
    lam = float(os.environ.get("LAM", "0"))
    configs = [parse(s) for s in os.environ.get("SAMPLERS", DEFAULT).split(",")]
    h = held_out(sys.argv[1], sys.argv[2], sys.argv[4] if len(sys.argv) > 4 else "./reinstrument-data/heldout40")
    calls: list[int] = []
    counting(calls)
    rows = []
    for ti in t_inits:
        for cfg in configs:
            calls.clear()
            t0 = time.time()
            outs = h.transform(h.guides, WarmStartConfig(t_init=ti, lam=lam), cfg)
            nfe = max(calls) if calls else 0
            rows.append({"t_init": ti, "sampler": cfg.name, "steps": cfg.steps, "S_churn": cfg.S_churn, "nfe": nfe}
                        | h.score(outs) | {"s": round(time.time() - t0, 1)})
            print(json.dumps(rows[-1]), flush=True)
    print("\n| τ_init | sampler | N | S_churn | evaluations | FAD (95 % CI) | JD (95 % CI) | s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['t_init']} | {r['sampler']} | {r['steps']} | {r['S_churn']:g} | {r['nfe']} | {r['fad'][0]} "
              f"({r['fad'][1]}–{r['fad'][2]}) | {r['jd'][0]} ({r['jd'][1]}–{r['jd'][2]}) | {r['s']} |")


if __name__ == "__main__":
    main()
