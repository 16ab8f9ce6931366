"""`reinstrument train`: one model per target domain. Prepares the run (identity, MLflow run,
normalisation), trains on Ray Train (ray_actors.train), then logs artifacts, registers the EMA
model as `reinstrument-<domain>` and moves the `champion` alias only to a better model."""
from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

from prefect import flow, task

from infra import tracking
from infra.datasets import ShardedDataset
from infra.storage import Storage
from ray_actors.train import LATEST, RESULT, fit, read_columns_local, train_data_from_columns
from schemas.training import TrainConfig, TrainLogistics
from tasks.diffusion.checkpoint import ema_checkpoint_bytes, load_train_state
from tasks.diffusion.train import validation_loss
from tasks.feature_reader import normalisation
from tasks.plots import loss_curve_png

RUN_JSON = "run.json"


def run_folder(cfg: TrainConfig, logistics: TrainLogistics) -> Storage:
    """The identity hash names the folder: the same config finds (and resumes) its own run."""
    return Storage(Storage(logistics.out_url).absolute_url()).child(f"runs/{cfg.domain}-{cfg.config_hash()}")


def run_metadata(cfg: TrainConfig) -> dict:
    manifest = ShardedDataset.at(cfg.features_url, "features").manifest()
    if not manifest.shards:
        raise ValueError(f"{cfg.features_url} is not a feature set (no manifest or no shards)")
    mean, std = normalisation(cfg.features_url, cfg.role, cfg.domain)
    mel = manifest.extra["config"]["mel"]
    fingerprint = hashlib.sha256("".join(e.sha256 for e in manifest.shards).encode()).hexdigest()[:16]
    meta = {"mean": mean.tolist(), "std": std.tolist(), "n_mels": int(mel["n_mels"]), "mel": mel,
            "domain": cfg.domain, "role": cfg.role, "features_url": cfg.features_url,
            "features_fingerprint": fingerprint, "train_config": cfg.model_dump(mode="json")}
    if cfg.paired:
        c_mean, c_std = normalisation(cfg.features_url, cfg.cond_role, cfg.cond_domain)
        meta |= {"cond_mean": c_mean.tolist(), "cond_std": c_std.tolist(), "cond_domain": cfg.cond_domain,
                 "cond_role": cfg.cond_role}
    return meta


def _mlflow_run(cfg: TrainConfig, logistics: TrainLogistics, run: Storage, meta: dict) -> str:
    if logistics.resume and run.exists(RUN_JSON):
        return json.loads(run.read_bytes(RUN_JSON))["mlflow_run_id"]
    c = tracking.client()
    r = c.create_run(tracking.experiment_id(logistics.experiment), run_name=f"train-{cfg.domain}-{cfg.config_hash()}",
                     tags={f"logistics.{k}": str(v) for k, v in logistics.model_dump().items()} |
                     {"reinstrument.run_folder": run.url, "reinstrument.kind": "train"})
    for k, v in (tracking.flatten(cfg.model_dump(mode="json")) |
                 {"features_fingerprint": meta["features_fingerprint"], "config_hash": cfg.config_hash()}).items():
        c.log_param(r.info.run_id, k, v[:6000])
    run.write_bytes(RUN_JSON, json.dumps({"mlflow_run_id": r.info.run_id}).encode())
    return r.info.run_id


@task(name="prepare-training-run")
def prepare(cfg: TrainConfig, logistics: TrainLogistics) -> tuple[str, dict, str]:
    run = run_folder(cfg, logistics)
    if not logistics.resume:
        for name in run.find(""):
            run.delete(run.relative(name))
    meta = run_metadata(cfg)
    return run.url, meta, _mlflow_run(cfg, logistics, run, meta)


@task(name="fit")
def fit_task(cfg: TrainConfig, logistics: TrainLogistics, run_url: str, meta: dict, run_id: str) -> None:
    if Storage(run_url).exists(RESULT):
        print(f"[train {cfg.domain}] already finished in {run_url}: nothing to train")
        return
    fit(cfg, logistics, run_url, meta, tracking.tracking_uri(), run_id)


def _log_artifacts(run: Storage, run_id: str, history: dict) -> None:
    c = tracking.client()
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / "loss_curve.png").write_bytes(loss_curve_png(history["step"], history["loss"], val_steps=history["val_step"],
                                                          val_losses=history["val_loss"]))
        (t / "result.json").write_bytes(run.read_bytes(RESULT))
        c.log_artifact(run_id, str(t / "loss_curve.png"))
        c.log_artifact(run_id, str(t / "result.json"))
        samples = t / "samples"
        samples.mkdir()
        for name in run.find("samples"):
            rel = run.relative(name)
            (samples / rel.split("/")[-1]).write_bytes(run.read_bytes(rel))
        if any(samples.iterdir()):
            c.log_artifacts(run_id, str(samples), "samples")


@task(name="register-model")
def finalise(cfg: TrainConfig, logistics: TrainLogistics, run_url: str, meta: dict, run_id: str) -> dict:
    """Log artifacts, register the EMA model, and move `champion` only if it validates better."""
    run, c = Storage(run_url), tracking.client()
    tags = c.get_run(run_id).data.tags
    result = json.loads(run.read_bytes(RESULT))
    summary = {"run_folder": run_url, "mlflow_run_id": run_id, "val_loss": result["val_loss"],
               "val_split": result["val_split"], "steps": result["step"]}
    if "reinstrument.model_version" in tags:  # a re-run of a finished run: nothing new to register
        return summary | {"model_version": tags["reinstrument.model_version"], "champion": tags.get("reinstrument.champion")}
    state = load_train_state(run.read_bytes(json.loads(run.read_bytes(LATEST))["checkpoint"]))
    _log_artifacts(run, run_id, state["history"])
    if not logistics.register_model:
        c.set_terminated(run_id)
        return summary
    name = tracking.registered_name(cfg.domain, cfg.cond_domain)
    info = tracking.log_denoiser(run_id, ema_checkpoint_bytes(state), meta["n_mels"], name, cfg.paired)
    version = str(info.registered_model_version)
    c.set_model_version_tag(name, version, "val_loss", str(result["val_loss"]))
    promoted, champ_val = _maybe_promote(cfg, meta, name, version, result["val_loss"])
    c.set_tag(run_id, "reinstrument.model_version", version)
    c.set_tag(run_id, "reinstrument.champion", str(promoted))
    if champ_val is not None:
        c.log_metric(run_id, "previous_champion_val_loss", champ_val)
    c.set_terminated(run_id)
    return summary | {"model_version": version, "champion": promoted, "previous_champion_val_loss": champ_val}


def _maybe_promote(cfg: TrainConfig, meta: dict, name: str, version: str, val: float) -> tuple[bool, float | None]:
    """The current champion is scored on *this* run's validation rows (same crops, sigmas and
    noise; normalised with the champion's own statistics), so the comparison holds even when
    the validation sets of the two runs differ."""
    c = tracking.client()
    current = tracking.champion_version(name)
    champ_val = None
    if current is not None and str(current.version) != version:
        champ, champ_meta = tracking.load_denoiser(f"models:/{name}/{current.version}")
        data = train_data_from_columns(read_columns_local(cfg), cfg, champ_meta)
        champ_val = validation_loss(champ, data.val_x, data.val_valid, cfg.crop_frames, cond=data.val_c)
        if not val < champ_val:
            return False, champ_val
    c.set_registered_model_alias(name, tracking.CHAMPION, version)
    return True, champ_val


def train_model(cfg: TrainConfig, logistics: TrainLogistics) -> dict:
    run_url, meta, run_id = prepare.fn(cfg, logistics)
    with tracking.ends_failed_on_error(run_id):  # the run folder stays: its checkpoints resume the run
        fit_task.fn(cfg, logistics, run_url, meta, run_id)
        return finalise.fn(cfg, logistics, run_url, meta, run_id)


@flow(name="train")
def train_flow(cfg: TrainConfig, logistics: TrainLogistics) -> dict:
    run_url, meta, run_id = prepare(cfg, logistics)
    with tracking.ends_failed_on_error(run_id):
        fit_task(cfg, logistics, run_url, meta, run_id)
        return finalise(cfg, logistics, run_url, meta, run_id)
