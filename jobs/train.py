"""`reinstrument train` / `train-vocoder`: one model per run, of any kind the solver trains (a
domain's denoiser, a conditional baseline, the vocoder). Prepares the run (identity, MLflow run,
the model card), trains with the solver (ray_actors/solver.py: Ray Train or in-process), then
logs artifacts, registers the EMA model (`reinstrument-<domain>`, `reinstrument-vocoder`, ...)
and moves the `champion` alias only to a model that validates better on this run's data."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from infra import tracking
from infra.datasets import ShardedDataset
from infra.settings import get_settings
from infra.storage import Storage
from jobs.steps import Step, inline
from ray_actors.solver import fit, settle_workers
from schemas.configs import StrictConfig
from schemas.autoencoder import AutoencoderTrainConfig
from schemas.records import AutoencoderCard, FeatureSetExtra, ModelCard, VocoderCard
from schemas.records import TrainRunLayout as L
from schemas.results import TrainResult
from schemas.training import ANY_OTHER, SolverConfig, TrainConfig, TrainLogistics
from schemas.vocoder import VocoderTrainConfig
from tasks.builders import (CARDS, kind_of, load_autoencoder, load_checkpoint_bytes, make_embedding, make_kind,
                            training_data)
from tasks.diffusion.checkpoint import ema_checkpoint_bytes, load_train_state
from tasks.feature_reader import normalisation
from tasks.plots import loss_curve_png
from tasks.solver import ModelKind
from tasks.vocoder.kind import VocoderKind

PYFUNC = Path(__file__).with_name("pyfunc.py")
# What the champion rule compares, per kind (jobs.train.selection_score)
SCORE_NAMES = {"denoiser": "val_loss", "vocoder": "copy_synthesis_fad", "autoencoder": "val_loss"}


def run_folder(cfg: SolverConfig, logistics: TrainLogistics) -> Storage:
    """The identity hash names the folder: the same config finds (and resumes) its own run."""
    prefix = "" if isinstance(cfg, TrainConfig) else f"{kind_of(cfg)}-"
    return Storage(Storage(logistics.out_url).absolute_url()).child(f"runs/{prefix}{cfg.domain}-{cfg.config_hash()}")


def model_card(cfg: SolverConfig) -> StrictConfig:
    if isinstance(cfg, VocoderTrainConfig):
        return VocoderCard(mel=cfg.mel, domains=cfg.domains, clips_urls=cfg.clips_urls, train_config=cfg.model_dump(mode="json"))
    if isinstance(cfg, AutoencoderTrainConfig):
        arch = cfg.autoencoder()
        return AutoencoderCard(mel=cfg.mel, latent_channels=arch.latent_channels, time_downsample=arch.time_downsample,
                               domains=cfg.domains, clips_urls=cfg.clips_urls, train_config=cfg.model_dump(mode="json"))
    return denoiser_card(cfg)


def denoiser_card(cfg: TrainConfig) -> ModelCard:
    """What the trained model will carry: its domain, normalisation, front end, training identity."""
    ds = ShardedDataset.at(cfg.features_url, "features")
    manifest = ds.manifest()
    if not manifest.shards:
        raise ValueError(f"{cfg.features_url} is not a feature set (no manifest or no shards)")
    features = FeatureSetExtra.of(manifest.extra, cfg.features_url).config
    mel = features.mel
    # a labelled model reads every instrument through one normalisation: their statistics pooled
    mean, std = normalisation(cfg.features_url, cfg.role, cfg.labels or cfg.domain)
    fingerprint = hashlib.sha256("".join(e.sha256 for e in manifest.shards).encode()).hexdigest()[:16]
    card = dict(domain=cfg.domain, role=cfg.role, mean=mean.tolist(), std=std.tolist(), n_mels=len(mean), mel=mel,
                features_url=cfg.features_url, features_fingerprint=fingerprint, train_config=cfg.model_dump(mode="json"),
                labels=cfg.labels)
    if features.kind == "latent":
        ae = load_autoencoder(tracking.model_checkpoint(str(features.encoder)), str(features.encoder), mel)
        card |= dict(representation="latent", encoder=features.encoder, time_downsample=ae.card.time_downsample)
    if cfg.paired:
        # any -> any (labels): the condition is one of the labelled instruments, read through their pooled statistics
        c_mean, c_std = normalisation(cfg.features_url, cfg.cond_role,
                                      cfg.labels if cfg.cond_domain == ANY_OTHER else cfg.cond_domain)
        card |= dict(cond_domain=cfg.cond_domain, cond_role=cfg.cond_role, cond_mean=c_mean.tolist(), cond_std=c_std.tolist())
    return ModelCard(**card)


def prepare(cfg: SolverConfig, logistics: TrainLogistics) -> tuple[str, StrictConfig, str]:
    run = run_folder(cfg, logistics)
    if not logistics.resume:
        for name in run.find(""):
            run.delete(run.relative(name))
    card = model_card(cfg)
    if logistics.resume and run.exists(L.RECORD):
        return run.url, card, json.loads(run.read_bytes(L.RECORD))["mlflow_run_id"]
    tracked = tracking.TrackedRun.start(
        logistics.experiment, f"train-{cfg.domain}-{cfg.config_hash()}",
        tags={f"logistics.{k}": str(v) for k, v in logistics.model_dump().items()}
        | {"reinstrument.run_folder": run.url, "reinstrument.kind": "train"})
    tracked.params(cfg.model_dump(mode="json") | {"config_hash": cfg.config_hash(), "kind": kind_of(cfg)}
                   | ({"features_fingerprint": card.features_fingerprint} if isinstance(card, ModelCard) else {}))
    run.write_bytes(L.RECORD, json.dumps({"mlflow_run_id": tracked.id}).encode())
    return run.url, card, tracked.id


def train(cfg: SolverConfig, logistics: TrainLogistics, run_url: str, card: StrictConfig, run_id: str) -> None:
    if Storage(run_url).exists(L.RESULT):
        print(f"[train {cfg.domain}] already finished in {run_url}: nothing to train")
        return
    fit(cfg, logistics, run_url, card, tracking.tracking_uri(), run_id)


def register(cfg: SolverConfig, logistics: TrainLogistics, run_url: str, card: StrictConfig, run_id: str) -> TrainResult:
    """Log artifacts, register the EMA model, and move `champion` only if it validates better."""
    run, tracked = Storage(run_url), tracking.TrackedRun(run_id)
    tags = tracked.tags()
    result = json.loads(run.read_bytes(L.RESULT))
    summary = TrainResult(run_folder=run_url, mlflow_run_id=run_id, val_loss=result["val_loss"],
                          val_split=result["val_split"], steps=result["step"])
    if "reinstrument.model_version" in tags:  # a re-run of a finished run: nothing new to register
        return summary | TrainResult(model_version=tags["reinstrument.model_version"],
                                     champion=tags.get("reinstrument.champion"))
    state = load_train_state(run.read_bytes(json.loads(run.read_bytes(L.LATEST))["checkpoint"]))
    h = state["history"]
    tracked.artifact("loss_curve.png", loss_curve_png(h["step"], h["loss"], val_steps=h["val_step"], val_losses=h["val_loss"]))
    tracked.artifact("result.json", run.read_bytes(L.RESULT))
    tracked.artifacts_from(run, L.SAMPLES, "samples")
    if not logistics.register_model:
        tracked.finish()
        return summary
    name = tracking.registered_name_of(card.model_dump())
    version = tracking.log_model(tracked, ema_checkpoint_bytes(state), code=PYFUNC, artifact=kind_of(cfg),
                                 n_bins=card.mel.n_mels, conditional=isinstance(cfg, TrainConfig) and cfg.paired,
                                 registered_name=name)
    tracking.tag_model_version(name, version, "val_loss", str(result["val_loss"]))
    checkpoint = ema_checkpoint_bytes(state)
    promoted, new_score, champ_score = promote(cfg, card, name, version, checkpoint)
    rule = SCORE_NAMES[kind_of(cfg)]
    tracking.tag_model_version(name, version, rule, str(new_score))
    tracked.tag("reinstrument.model_version", version)
    tracked.tag("reinstrument.champion", str(promoted))
    tracked.metrics({rule: new_score, f"previous_champion_{rule}": champ_score})
    tracked.finish()
    print(f"[train {cfg.domain}] {name}/{version}: {rule} {new_score:.4g}"
          + (f" vs champion's {champ_score:.4g}" if champ_score is not None else "")
          + (" -> champion" if promoted else " (champion unchanged)"))
    return summary | TrainResult(model_version=version, champion=promoted, previous_champion_score=champ_score,
                                 selection_score=new_score)


def selection_score(kind: ModelKind, model: torch.nn.Module) -> float:
    """The champion rule's score, lower wins: a vocoder's copy-synthesis FAD on the validation
    clips (musicnn, against real train clips: realism, which a spectral loss does not measure);
    any other kind's validation loss."""
    if isinstance(kind, VocoderKind):
        return kind.copy_synthesis_fad(model, make_embedding("musicnn", get_settings().weights_dir))
    return kind.validate(model)


def promote(cfg: SolverConfig, card: StrictConfig, name: str, version: str, checkpoint: bytes
            ) -> tuple[bool, float, float | None]:
    """Move `champion` to `version` if it scores better than the current champion. Both are scored
    now, by *this* run's kind (same data, crops and draws; a denoiser's inputs normalised with each
    model's own statistics), so the comparison holds even when the two runs' validation sets
    differ. A latent champion of another encoder reads other features: no score compares the two,
    and the new model (of the encoder now in use) takes the alias. Returns (promoted, the new
    version's score, the champion's score)."""
    kinds: dict[str, ModelKind] = {}
    encoder = getattr(card, "encoder", None)
    encoder_bytes = tracking.model_checkpoint(encoder) if encoder else None

    def score(model: torch.nn.Module, model_card: StrictConfig) -> float:
        # a denoiser's data is normalised by each model's own card; a vocoder's or an autoencoder's
        # depends on the config alone, so both versions share one kind (one corpus decode, one reference)
        key = model_card.model_dump_json() if isinstance(cfg, TrainConfig) else kind_of(cfg)
        if key not in kinds:
            kinds[key] = make_kind(cfg, model_card, training_data(cfg, model_card), encoder_bytes)
        return selection_score(kinds[key], model)

    def load(data: bytes) -> tuple[torch.nn.Module, StrictConfig]:
        model, metadata = load_checkpoint_bytes(data)
        return model, CARDS[kind_of(cfg)].model_validate(metadata)

    new = score(*load(checkpoint))
    current = tracking.champion_version(name)
    champ = None
    if current is not None and current != version:
        model, champ_card = load(tracking.model_checkpoint(f"models:/{name}/{current}"))
        if getattr(champ_card, "encoder", None) != encoder:
            print(f"[train {cfg.domain}] champion {name}/{current} belongs to the encoder {champ_card.encoder}, "
                  f"this model to {encoder}: not comparable, {name}/{version} becomes champion")
            tracking.set_champion(name, version)
            return True, new, None
        champ = score(model, champ_card)
        if not new < champ:
            return False, new, champ
    tracking.set_champion(name, version)
    return True, new, champ


def pin_init(cfg: SolverConfig) -> SolverConfig:
    """A fine-tune's start pinned to one version (an alias resolved now, a shipped file by its
    checksum): it is part of the run's identity, so a resumed run starts from the same weights."""
    if not cfg.init_from:
        return cfg
    return cfg.model_copy(update={"init_from": tracking.resolve_model(cfg.init_from)[0]})


def train_job(cfg: SolverConfig, logistics: TrainLogistics, *, step: Step = inline) -> TrainResult:
    cfg = pin_init(cfg)
    logistics = settle_workers(logistics)  # before MLflow tags it: the count used, not "unset"
    run_url, card, run_id = step(prepare, cfg, logistics)
    with tracking.TrackedRun(run_id).failed_on_error():  # the run folder stays: its checkpoints resume the run
        step(train, cfg, logistics, run_url, card, run_id)
        return step(register, cfg, logistics, run_url, card, run_id)
