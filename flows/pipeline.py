"""The Prefect flows (not named jobs.py: Prefect puts an entrypoint's folder on sys.path, where it
would shadow the jobs package): each one a job of jobs/ with Prefect's steps (flows/steps.py), history and
artifacts. Nothing here computes; the deployments users run are in flows/deploy.py."""
from __future__ import annotations

from prefect import flow

from flows.steps import prefect_step, table_artifact
from infra.secrets import redact_log_records
from infra.settings import get_settings
from jobs.compare import compare_job
from jobs.data import augment_job, corpus_job, features_job, ingest_job
from jobs.demo import DEMO_CORPUS, DEMO_LAMS, DEMO_REPRESENTATION, DEMO_SAMPLER, DEMO_SHIPPED, DEMO_T_INITS, demo_job
from jobs.nightly import nightly_job
from jobs.sweep import sweep_job
from jobs.train import train_job
from jobs.transform import transform_job
from schemas.compare import CompareConfig
from schemas.configs import AugmentConfig, CorpusConfig, FeatureConfig, IngestConfig
from schemas.diffusion import SamplerConfig
from schemas.nightly import NightlyConfig, NightlyTarget
from schemas.sweep import SweepConfig
from schemas.training import TrainConfig, TrainLogistics
from schemas.transform import DEFAULT_VOCODER, InputSelection, TransformConfig, TransformLogistics, WholeOutputs
from schemas.autoencoder import AutoencoderTrainConfig
from schemas.vocoder import VocoderTrainConfig

# a deployment's flow runs in a Prefect worker's process, not under the CLI: no URL's password in its logs either
redact_log_records()


@flow(name="corpus-build", log_prints=True)
def corpus_build_flow(dest: str, config: CorpusConfig = CorpusConfig(), workers: int = 2) -> dict:
    """Render the reference corpus (clean clips, MIDI guides, degraded guides) into DEST/clips."""
    result = prefect_step(corpus_job, dest, config, workers)
    table_artifact("corpus-summary", result["summary"], "Reference corpus: pieces, clips, minutes")
    return result


@flow(name="ingest", log_prints=True)
def ingest_flow(src: str, dest: str, config: IngestConfig = IngestConfig(), sidecar: str | None = None) -> dict:
    """Decode, validate, resample, loudness-normalise and clip SRC into DEST/clips."""
    return prefect_step(ingest_job, src, dest, config, sidecar)


@flow(name="augment", log_prints=True)
def augment_flow(clips: str, out: str, config: AugmentConfig = AugmentConfig()) -> dict:
    """Pitch-shift selected clips of CLIPS into the clips dataset OUT."""
    return prefect_step(augment_job, clips, out, config)


@flow(name="features", log_prints=True)
def features_flow(clips: list[str], out: str, config: FeatureConfig = FeatureConfig(),
                  actors: int = 2, local: bool = False) -> dict:
    """Log-mel segments of every clips dataset in CLIPS, on Ray, into OUT/<kind>-<config hash>."""
    return prefect_step(features_job, clips, out, config, actors, local)


@flow(name="train", log_prints=True)
def train_flow(cfg: TrainConfig, logistics: TrainLogistics) -> dict:
    """Train one domain's model with the solver and register it (champion only if better)."""
    return train_job(cfg, logistics, step=prefect_step)


@flow(name="train-vocoder", log_prints=True)
def train_vocoder_flow(cfg: VocoderTrainConfig, logistics: TrainLogistics) -> dict:
    """Train the neural vocoder on clean clips with the solver and register it (champion only if better)."""
    return train_job(cfg, logistics, step=prefect_step)


@flow(name="train-autoencoder", log_prints=True)
def train_autoencoder_flow(cfg: AutoencoderTrainConfig, logistics: TrainLogistics) -> dict:
    """Train the mel autoencoder on clean clips' log-mels with the solver and register it (champion only if better)."""
    return train_job(cfg, logistics, step=prefect_step)


@flow(name="transform", log_prints=True)
def transform_flow(inputs: str, selection: InputSelection, cfg: TransformConfig, logistics: TransformLogistics,
                   whole: WholeOutputs | None = None) -> dict:
    """Transform INPUTS (a clips dataset, or a folder/S3 prefix of audio or MIDI) with the model;
    with WHOLE, each source recording also comes back as one file named after it."""
    result = transform_job(inputs, selection, cfg, logistics, whole=whole, step=prefect_step)
    table_artifact("transform-summary", [result], f"transform run {result['run_id']}")
    return result


@flow(name="sweep-t-init", log_prints=True)
def sweep_t_init(inputs: str, model: str, task_name: str = "timbre", domain: str | None = None,
                 split: str | None = "test", limit: int | None = None, config: SweepConfig | None = None,
                 out: str | None = None, actors: int = 2) -> dict:
    """Trace realism (FAD) against faithfulness (JD) over a tau_init x lambda grid and recommend a tau_init."""
    cfg = config or SweepConfig(model=model, task=task_name)
    log = TransformLogistics(num_actors=actors, out_url=out or get_settings().data_root)
    result = sweep_job(inputs, InputSelection(domain=domain, split=split, limit=limit), cfg, log, step=prefect_step)
    table = [{k: r[k] for k in ("t_init", "sigma_start", "lam", "metric", "n", "mean", "ci_low", "ci_high")}
             for r in result["rows"]]
    table_artifact("sweep-metrics", table, f"sweep {result['sweep_id']}: metrics per grid point")
    return {k: v for k, v in result.items() if k != "rows"}


@flow(name="compare-methods", log_prints=True)
def compare_methods(inputs: str, model: str, config: dict | CompareConfig | None = None, out: str | None = None,
                    actors: int = 2) -> dict:
    """Every method of every task on the same held-out inputs: tables with 95 % intervals, a FAD-vs-JD
    plot and a listening page; warm init runs at the newest sweep's operating point for MODEL (per task).
    CONFIG: CompareConfig's fields (`reinstrument config show compare`) but the model, given apart."""
    if isinstance(config, CompareConfig):
        config = config.model_dump(mode="json")
    cfg = CompareConfig.model_validate({**(config or {}), "model": model})
    res = compare_job(inputs, cfg, TransformLogistics(num_actors=actors, out_url=out or get_settings().data_root),
                      step=prefect_step)
    table_artifact("compare-methods", res["summary"], f"compare {res['compare_id']}: every method, every task")
    return res


@flow(name="reinstrument-nightly", log_prints=True)
def nightly_flow(inputs: str, targets: list[NightlyTarget], out: str | None = None, vocoder: str = DEFAULT_VOCODER,
                 seed: int = 0, steps: int | None = None, actors: int = 2, clips_per_task: int = 4) -> dict:
    """Transform what arrived under INPUTS since the last success, for each target
    {model, target?, t_init?, lam?, vocoder?}: NightlyConfig's fields (`reinstrument config show nightly`)."""
    cfg = NightlyConfig(inputs=inputs, targets=tuple(targets), out=out, vocoder=vocoder, seed=seed, steps=steps,
                        actors=actors, clips_per_task=clips_per_task)
    res = nightly_job(cfg, step=prefect_step)
    table_artifact("nightly-summary", res["runs"] or [{"note": "nothing new"}], "reinstrument-nightly")
    return res


@flow(name="demo", log_prints=True)
def demo_flow(root: str, corpus: CorpusConfig = DEMO_CORPUS, train: bool = False,
              representation: str = DEMO_REPRESENTATION, shipped: str = DEMO_SHIPPED, workers: int = 2, actors: int = 2,
              train_steps: int | None = None, train_workers: int = 0, t_inits: tuple[float, ...] = DEMO_T_INITS,
              lams: tuple[float, ...] = DEMO_LAMS, sampler: SamplerConfig = DEMO_SAMPLER) -> dict:
    return demo_job(root, corpus, train=train, representation=representation, shipped=shipped, workers=workers,
                    actors=actors, train_steps=train_steps, train_workers=train_workers, t_inits=t_inits, lams=lams,
                    sampler=sampler, step=prefect_step)
