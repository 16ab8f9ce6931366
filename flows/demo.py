"""`make demo`: the main job on the embedded defaults (local folder, local Ray, MLflow on sqlite,
Prefect in-process). Renders a small reference corpus, extracts log-mel features, trains the
`cpu-demo` flute model, and sweeps tau_init for violin->flute timbre transfer on the held-out
(test-split) chorales. Every stage is keyed on its inputs, so a second run reuses the first's
corpus, features, model and sweep."""
from __future__ import annotations

from prefect import flow, task

from flows.data import corpus_build_flow, corpus_job, features_flow, features_job
from flows.sweep import sweep_job, sweep_t_init
from flows.train import train_model
from schemas.configs import CorpusConfig, FeatureConfig
from schemas.diffusion import SamplerConfig
from schemas.sweep import SweepConfig
from schemas.training import TRAIN_PRESETS, TrainConfig, TrainLogistics

# Monophonic soprano lines, the simplest material for a network trained for minutes on a CPU
# (clean roles only: the demo trains one unconditional model). 32 chorales hold 3 out for the sweep.
DEMO_CORPUS = CorpusConfig(collection="bach", max_pieces=32, instruments=("flute", "violin"),
                           soundfonts=("fluidr3",), voices=("soprano",))
# Coarser than the production default (DEFAULT_T_INITS): 7 points keep the demo within 30 min.
# lambda 0 (the ODE from the guide itself): with the cpu-demo model its FAD-JD front dominates
# lambda 1's (measured: FAD 27.6 -> 16.8 at JD 0.057 with lambda 0; lambda 1 needed JD 0.73 to
# reach 17.7), and its trade-off happens between tau_init 0.8 and 0.4 (sigma 0.06 -> 5.3).
DEMO_T_INITS = (1.0, 0.8, 0.7, 0.65, 0.6, 0.5, 0.4)
DEMO_LAMS = (0.0,)
# Churn (EDM Algorithm 2, gamma = 7/35 = 0.2) only at sigma >= 0.5. A lambda-0 start is the bare
# guide at sigma_start: far too little noise once sigma_start exceeds the data's scale, and the
# ODE then shrinks every output towards the mean (even with an exact denoiser; see
# tests/unit/test_warm_and_bridges.py), so FAD rose again below tau_init 0.65 (18.3 at 0.6, 23.4
# at 0.5). Churn there supplies the missing noise (16.7, 15.8, 12.6 at 0.6, 0.5, 0.4); below
# sigma 0.5 (tau_init >= 0.65) the sampler stays the deterministic ODE, the sharpest knee measured.
DEMO_SAMPLER = SamplerConfig(churn=7.0, churn_sigma_min=0.5)
# The cpu-demo preset with 5,000 steps: ~16 min in bf16 on an AMX CPU (2 cores), where the
# preset's 3,500 fp32 steps took 14.5 (validation loss 0.248 vs 0.283).
DEMO_TRAIN_STEPS = 5000


def train_cpu_demo(features_url: str, root: str, steps: int, workers: int) -> dict:
    preset = TRAIN_PRESETS["cpu-demo"] | {"steps": steps}
    return train_model(TrainConfig(features_url=features_url, domain="flute", **preset),
                       TrainLogistics(num_workers=workers, out_url=f"{root}/training"))


train_task = task(name="train-cpu-demo")(train_cpu_demo)


def demo_job(root: str, corpus: CorpusConfig = DEMO_CORPUS, features: FeatureConfig = FeatureConfig(roles=("clean",)),
             workers: int = 2, actors: int = 2, train_steps: int = DEMO_TRAIN_STEPS, train_workers: int = 0,
             t_inits: tuple[float, ...] = DEMO_T_INITS, lams: tuple[float, ...] = DEMO_LAMS,
             sampler: SamplerConfig = DEMO_SAMPLER, *, prefect: bool = False) -> dict:
    """The demo's four steps; as Prefect subflows and tasks, or (prefect=False) as plain jobs."""
    corpus_build, featurise, train, sweep = ((corpus_build_flow, features_flow, train_task, sweep_t_init) if prefect
                                             else (corpus_job, features_job, train_cpu_demo, sweep_job))
    print("[demo] 1/4 reference corpus")
    built = corpus_build(dest=f"{root}/corpus", config=corpus, workers=workers)
    print("[demo] 2/4 log-mel features")
    feats = featurise(clips=[built["clips_url"]], out=f"{root}/features", config=features, actors=actors, local=False)
    print("[demo] 3/4 train the cpu-demo flute model")
    trained = train(feats["features_url"], root, train_steps, train_workers)
    model = f"models:/reinstrument-flute/{trained['model_version']}"
    print(f"[demo] 4/4 sweep-t-init: violin -> flute with {model} on the held-out chorales")
    swept = sweep(inputs=built["clips_url"], model=model, domain="violin", split="test",
                  config=SweepConfig(model=model, t_inits=t_inits, lams=lams, sampler=sampler, reference_split="train"),
                  out=root, actors=actors)
    return {"corpus": built, "features": feats, "trained": trained, "sweep": swept}


@flow(name="demo", log_prints=True)
def demo_flow(root: str, corpus: CorpusConfig = DEMO_CORPUS, features: FeatureConfig = FeatureConfig(roles=("clean",)),
              workers: int = 2, actors: int = 2, train_steps: int = DEMO_TRAIN_STEPS, train_workers: int = 0,
              t_inits: tuple[float, ...] = DEMO_T_INITS, lams: tuple[float, ...] = DEMO_LAMS,
              sampler: SamplerConfig = DEMO_SAMPLER) -> dict:
    return demo_job(root, corpus, features, workers, actors, train_steps, train_workers, t_inits, lams, sampler,
                    prefect=True)
