"""`make demo`: the main job on the embedded defaults (local folder, local Ray, MLflow on sqlite,
Prefect in-process). Renders Irish fiddle tunes no shipped model heard (O'Neill's collection, a
held-out set of the general models), registers the models the repository ships (vocoder,
autoencoder, the model of six instruments) in the demo's MLflow and sweeps tau_init for
violin->flute timbre transfer on half of the tunes, scored against real flute renders of the
other half: a reference of the same repertoire, so realism is not rewarded for turning the tunes
into something else. With `train`, it extracts features and trains a flute denoiser on the
other half itself instead (log-mel or latent). Every stage is keyed on its inputs, so a second
run reuses the first's corpus, features, model and sweep."""
from __future__ import annotations

import io
from typing import Literal

import pyarrow.parquet as pq

from infra.storage import Storage
from infra.tracking import registered_name
from jobs.data import corpus_job, features_job
from jobs.ship import register_shipped_job
from jobs.steps import Step, inline
from jobs.sweep import ANCHOR_NAMES as ANCHORS, sweep_job
from jobs.train import train_job
from schemas.configs import CorpusConfig, FeatureConfig, PerformanceConfig
from schemas.diffusion import RECOMMENDED_SAMPLER, SamplerConfig
from schemas.sweep import SweepConfig
from schemas.training import TRAIN_PRESETS, TrainConfig, TrainLogistics
from schemas.transform import InputSelection, TransformLogistics
from tasks.tradeoff import fad_trend

Representation = Literal["logmel", "latent"]
# The first 24 tunes of each of the first two books of O'Neill's "Music of Ireland" (1850; the
# held-out set of the general models' evaluation, FluidR3), performed as recordings are (tempo,
# dynamics, articulation, vibrato, a room: what the shipped model and its decoder learned, see
# docs/general-models.md); each tune is a split of its own by hash (half `train`: the flute
# reference and `--train`'s data; half `test`: the sweep's guides).
DEMO_CORPUS = CorpusConfig(collections=("oneills1850",), max_pieces=2, tunes_per_file=24,
                           instruments=("flute", "violin"), soundfonts=("fluidr3",), voices=("parts",),
                           max_out_of_range=0.05, max_voice_s=45, performance=PerformanceConfig(),
                           roles=("clean",), split_fractions=(0.5, 0.0, 0.5))
# The shipped model the demo sweeps (weights/<folder>/) and the instrument it turns violin into;
# the representation `--train` trains: the better trade-off measured at equal training time
# (docs/pipeline.md, "Mel autoencoder and latent diffusion").
DEMO_SHIPPED = "instruments-latent"
DEMO_GUIDES = 24  # violin clips the sweep transforms at each grid point (the first by clip ID)
DEMO_TARGET = "flute"
DEMO_REPRESENTATION: Representation = "latent"
# Coarser than the production default (DEFAULT_T_INITS): 7 points, dense where the trade-off
# happens. lambda 0 (the ODE from the guide itself): with the cpu-demo model its FAD-JD front
# dominates lambda 1's (measured: FAD 27.6 -> 16.8 at JD 0.057 with lambda 0; lambda 1 needed JD
# 0.73 to reach 17.7), and its trade-off happens between tau_init 0.8 and 0.4 (sigma 0.06 -> 5.3).
DEMO_T_INITS = (1.0, 0.8, 0.7, 0.65, 0.6, 0.5, 0.4)
DEMO_LAMS = (0.0,)
# The product's default sampler (DPM-Solver++(2M), 6 steps from sigma_start), as the general
# models' held-out evaluation ran (docs/general-models.md). With the chorale model the demo ran
# Heun 35 with churn (S_churn 7 at sigma >= 0.5: a lambda-0 start below tau_init 0.65 otherwise
# shrank outputs towards the mean); `--S_churn`/`--S_tmin` still select that sampler.
DEMO_SAMPLER = RECOMMENDED_SAMPLER
# `--train`: the preset and steps per representation. cpu-demo's 5,000 steps: ~16 min in bf16 on
# an AMX CPU (2 cores), ~36 min in fp32 on AVX2 only; cpu-latent's steps take the same time.
DEMO_PRESETS: dict[str, str] = {"logmel": "cpu-demo", "latent": "cpu-latent"}
DEMO_TRAIN_STEPS: dict[str, int] = {"logmel": 5000, "latent": 9500}


def demo_job(root: str, corpus: CorpusConfig = DEMO_CORPUS, *, train: bool = False,
             representation: Representation = DEMO_REPRESENTATION, shipped: str = DEMO_SHIPPED,
             workers: int = 2, actors: int = 2, train_steps: int | None = None, train_workers: int = 0,
             t_inits: tuple[float, ...] = DEMO_T_INITS, lams: tuple[float, ...] = DEMO_LAMS,
             sampler: SamplerConfig = DEMO_SAMPLER, step: Step = inline) -> dict:
    """The demo's steps, each a job of its own (their steps are Prefect tasks under the flow)."""
    n = 4 if train else 3
    print(f"[demo] 1/{n} reference corpus")
    built = step(corpus_job, f"{root}/corpus", corpus, workers)
    feats = trained = None
    if train:
        print(f"[demo] 2/4 {representation} features")
        features = FeatureConfig(roles=("clean",), kind=representation,
                                 encoder="auto" if representation == "latent" else None)
        feats = step(features_job, [built["clips_url"]], f"{root}/features", features, actors, False)
        preset = DEMO_PRESETS[representation]
        print(f"[demo] 3/4 train the {preset} flute model")
        steps = train_steps or DEMO_TRAIN_STEPS[representation]
        trained = train_job(TrainConfig(features_url=feats["features_url"], domain="flute",
                                        **TRAIN_PRESETS[preset] | {"steps": steps}),
                            TrainLogistics(num_workers=train_workers, out_url=f"{root}/training"), step=step)
        model = f"models:/{registered_name('flute', latent=representation == 'latent')}/{trained['model_version']}"
    else:
        print("[demo] 2/3 register the shipped models (weights/) in MLflow")
        registered = step(register_shipped_job)
        if shipped not in registered:
            raise ValueError(f"no shipped model {shipped!r} in weights/ (shipped: {', '.join(registered) or 'none'}); "
                             "run `reinstrument demo --train` to train one")
        model = f"models:/{registered[shipped]['name']}/{registered[shipped]['version']}"
    target = DEMO_TARGET if not train and shipped == DEMO_SHIPPED else None  # a model of several instruments
    print(f"[demo] {n}/{n} sweep-t-init: violin -> flute with {model} on the held-out tunes")
    swept = sweep_job(built["clips_url"], InputSelection(domain="violin", split="test", limit=DEMO_GUIDES),
                      SweepConfig(model=model, target=target, t_inits=t_inits, lams=lams, sampler=sampler,
                                  reference_domain="flute", reference_split="train"),
                      TransformLogistics(num_actors=actors, out_url=root), step=step)
    return {"corpus": built, "features": feats, "trained": trained, "model": model, "sweep": swept}


def sweep_table(metrics_url: str) -> tuple[list[dict], list[str]]:
    """The sweep's metrics as a person reads them: a row per grid point (tau_init, lambda when
    there are several) with each metric's mean and 95 % interval, and the FAD trend notes."""
    folder, name = metrics_url.rsplit("/", 1)
    rows = pq.read_table(io.BytesIO(Storage(folder).read_bytes(name))).to_pylist()
    by: dict = {}
    anchors: dict = {}
    for r in rows:
        if r["method"] in ANCHORS:  # plain generation and the true target: rows of their own, last
            anchors.setdefault(r["method"], {})[r["metric"]] = r
        else:
            by.setdefault((r["lam"], r["t_init"]), {})[r["metric"]] = r

    def ci(m: dict, k: str, digits: int) -> str:
        return f"{m[k]['mean']:.{digits}f} ({m[k]['ci_low']:.{digits}f}–{m[k]['ci_high']:.{digits}f})" if k in m else "-"

    several = len({k[0] for k in by}) > 1
    cells = lambda m: {"JD vs guide": ci(m, "jd", 3), "FAD vs flute": ci(m, "fad", 1),  # noqa: E731
                       "F1 vs MIDI": ci(m, "f1_midi", 3)}
    table = [{"tau_init": f"{t_init:g}"} | ({"lambda": f"{lam:g}"} if several else {}) | cells(m)
             for (lam, t_init), m in sorted(by.items(), key=lambda kv: (kv[0][0], -kv[0][1]))]
    table += [{"tau_init": ANCHORS[k]} | ({"lambda": ""} if several else {}) | cells(anchors[k])
              for k in ANCHORS if k in anchors]
    notes = [fad_trend({t: m["fad"]["mean"] for (lm, t), m in by.items() if lm == lam and "fad" in m})
             for lam in sorted({k[0] for k in by})]
    return table, [n for n in notes if n]
