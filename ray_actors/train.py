"""Training: the per-worker loop (Ray Train `TorchTrainer` with DDP, or the same loop in this
process when num_workers=0). Deterministic and resumable: every draw of step s on rank r is
seeded by (seed, s, r), rows are ordered by feature ID, and checkpoints (model, EMA,
optimizer, step, history) go through the storage module every K steps, pointer written last."""
from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from infra.datasets import ShardedDataset
from infra.ray_cluster import apply_worker_env
from infra.storage import Storage
from schemas.configs import MelConfig
from schemas.training import TrainConfig, TrainLogistics
from tasks.audio import encode_audio
from tasks.diffusion.conditional import conditioned
from tasks.diffusion.checkpoint import ModelConfig, build_model, load_train_state, train_state_bytes
from tasks.diffusion.noise import ItemNoise, item_seed
from tasks.diffusion.precond import EDMLoss
from tasks.diffusion.samplers import heun, karras_sigmas
from tasks.diffusion.train import (autocast_dtype_for, crop_batch, ema_update, lr_at, step_generator,
                                   train_step, validation_loss)
from tasks.diffusion.train_data import denormalise, segments_tensor
from tasks.diffusion.vocoder import GriffinLimVocoder
from tasks.plots import spectrograms_png

FEATURE_COLUMNS = ["feature_id", "values", "num_bins", "num_frames", "num_valid_frames", "split"]
LATEST = "latest.json"
RESULT = "result.json"
PROGRESS = "progress.json"


@dataclass
class TrainData:
    train_x: torch.Tensor
    train_valid: torch.Tensor
    val_x: torch.Tensor
    val_valid: torch.Tensor
    val_split: str
    val_ids: list[str]
    train_c: torch.Tensor | None = None   # paired source segments (conditional baseline)
    val_c: torch.Tensor | None = None


def train_data_from_columns(cols: dict[str, list], cfg: TrainConfig, meta: dict) -> TrainData:
    """Split rows into train and a fixed validation set (split 'valid', else 'test', else a held-
    out tail of train, which the run's val_split says). Paired rows also give the source
    segments, normalised with the source domain's statistics, in the same order."""
    def subset(split: str, values: str, stats: str):
        idx = [i for i, s in enumerate(cols["split"]) if s == split]
        if not idx:
            return None
        pick = lambda c: [cols[c][i] for i in idx]  # noqa: E731
        mean, std = (np.asarray(meta[f"{stats}{k}"], np.float32) for k in ("mean", "std"))
        return segments_tensor(pick("feature_id"), pick(values), pick("num_bins"), pick("num_frames"),
                               pick("num_valid_frames"), mean, std)

    def split_data(split: str):
        t = subset(split, "values", "")
        if t is None:
            return None
        return t[0], t[1], t[2], (subset(split, "cond_values", "cond_")[0] if cfg.paired else None)

    train = split_data("train")
    if train is None:
        raise ValueError(f"no train rows for domain={cfg.domain!r} role={cfg.role!r}"
                         + (f" paired with {cfg.cond_domain!r}" if cfg.paired else "") + f" in {cfg.features_url}")
    for val_split in ("valid", "test"):
        val = split_data(val_split)
        if val is not None:
            break
    else:
        n, val_split = max(1, min(cfg.validation_segments, train[0].shape[0] // 5)), "train-heldout"
        val = tuple(None if t is None else t[-n:] for t in train)
        train = tuple(None if t is None else t[:-n] for t in train)
    k = cfg.validation_segments
    return TrainData(train[0], train[1], val[0][:k], val[1][:k], val_split, list(val[2][:k]),
                     train[3], None if val[3] is None else val[3][:k])


def feature_paths(cfg: TrainConfig) -> tuple[Storage, list[str]]:
    ds = ShardedDataset.at(cfg.features_url, "features")
    return ds.storage, [ds.storage.path(e.name) for e in ds.manifest().shards]


def _domain_rows(t: pa.Table, domain: str, role: str) -> pa.Table:
    return t.filter(pc.and_(pc.equal(t["domain"], domain), pc.equal(t["role"], role)))


def feature_table(cfg: TrainConfig) -> pa.Table:
    """The rows training reads. Paired (conditional baseline): each target segment with the source
    segment cut from the same MIDI segment (source_id) at the same position; the first by feature
    ID when there are several (e.g. soundfonts)."""
    ds = ShardedDataset.at(cfg.features_url, "features")
    t = ds.read(FEATURE_COLUMNS + ["domain", "role"] + (["clip_id", "segment_index"] if cfg.paired else []))
    target = _domain_rows(t, cfg.domain, cfg.role)
    if not cfg.paired:
        return target.select(FEATURE_COLUMNS)
    source_of = _clip_sources(ds)
    source = _domain_rows(t, cfg.cond_domain, cfg.cond_role).sort_by("feature_id")  # type: ignore[arg-type]
    first: dict[tuple, int] = {}
    for j, (clip, seg) in enumerate(zip(source["clip_id"].to_pylist(), source["segment_index"].to_pylist())):
        first.setdefault((source_of.get(clip), seg), j)
    keep, take = [], []
    for i, (clip, seg) in enumerate(zip(target["clip_id"].to_pylist(), target["segment_index"].to_pylist())):
        j = first.get((source_of.get(clip), seg)) if source_of.get(clip) is not None else None
        if j is not None:
            keep.append(i)
            take.append(j)
    target, source = target.take(keep), source.take(take)
    valid = pc.min_element_wise(target["num_valid_frames"], source["num_valid_frames"])
    out = target.select(FEATURE_COLUMNS)
    out = out.set_column(FEATURE_COLUMNS.index("num_valid_frames"), "num_valid_frames", valid)
    return out.append_column("cond_values", source["values"])


def _clip_sources(features: ShardedDataset) -> dict[str, str]:
    """clip_id -> source_id, from the clips datasets the feature set was made from (its manifest)."""
    urls = {k.rsplit("#", 1)[0] for k in features.manifest().extra.get("inputs", {})}
    out: dict[str, str] = {}
    for url in sorted(urls):
        t = ShardedDataset.at(url, "clips").read(["clip_id", "source_id"])
        out.update(zip(t["clip_id"].to_pylist(), t["source_id"].to_pylist()))
    return out


def read_columns_local(cfg: TrainConfig) -> dict[str, list]:
    return feature_table(cfg).to_pydict()


def read_dataset_ray(cfg: TrainConfig):
    """The rows through Ray Data, materialised once in the object store: every worker reads all
    of them (and sorts them), so which rows a worker sees never depends on scheduling. Paired
    rows are joined on the driver first (feature_table)."""
    import pyarrow.fs as pafs
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False  # one small read; the loop reports
    if cfg.paired:
        return ray.data.from_arrow(feature_table(cfg)).materialize()
    storage, paths = feature_paths(cfg)
    fs = None if storage.is_local else pafs.PyFileSystem(pafs.FSSpecHandler(storage.fs))
    ds = ray.data.read_parquet(paths, filesystem=fs, columns=FEATURE_COLUMNS + ["domain", "role"])
    domain, role = cfg.domain, cfg.role
    return ds.filter(lambda r: r["domain"] == domain and r["role"] == role).select_columns(FEATURE_COLUMNS).materialize()


def _columns_from_ray_shard(shard) -> dict[str, list]:
    tables = list(shard.iter_batches(batch_format="pyarrow", batch_size=4096))
    return pa.concat_tables(tables).to_pydict() if tables else {c: [] for c in FEATURE_COLUMNS}


def sample_steps(cfg: TrainConfig) -> set[int]:
    """Checkpoint steps that also log audio samples: `samples_at` of them, spread, the last included."""
    ckpts = sorted({min(cfg.steps, s) for s in range(cfg.checkpoint_every, cfg.steps + cfg.checkpoint_every,
                                                      cfg.checkpoint_every)})
    if cfg.samples_at == 0:
        return set()
    picks = np.linspace(len(ckpts) - 1, 0, min(cfg.samples_at, len(ckpts))).round().astype(int)
    return {ckpts[i] for i in picks}


def write_samples(ema, cfg: TrainConfig, meta: dict, run: Storage, step: int, n: int = 2,
                  cond: torch.Tensor | None = None) -> None:
    """Samples of the EMA model from noise (conditioned on the first validation sources for the
    conditional baseline): spectrogram PNG and Griffin-Lim WAVs."""
    mel = MelConfig.model_validate(meta["mel"])
    frames = cfg.crop_frames * max(1, 128 // cfg.crop_frames)
    if cond is not None:
        n, frames = min(n, cond.shape[0]), min(frames, cond.shape[-1])
        cond = cond[:n, :, :frames]
    dev = next(ema.parameters()).device
    seeds = [item_seed(cfg.seed, "sample", k) for k in range(n)]
    x = cfg.edm.sigma_max * ItemNoise(seeds)(torch.zeros(n, ema.net.cfg.n_mels, frames))
    denoiser = ema.eval() if cond is None else conditioned(ema.eval(), cond.to(dev))
    with torch.no_grad():
        y = heun(denoiser, x.to(dev), karras_sigmas(18, cfg.edm.sigma_min, cfg.edm.sigma_max)).cpu()
    logmels = [denormalise(s, meta["mean"], meta["std"]).numpy() for s in y]
    titles = [f"{cfg.domain} sample {k}, step {step}" for k in range(n)]
    shown = list(logmels)
    if cond is not None:
        shown += [denormalise(c, meta["cond_mean"], meta["cond_std"]).numpy() for c in cond]
        titles += [f"source {k} ({cfg.cond_domain})" for k in range(n)]
    run.write_bytes(f"samples/step-{step:06d}.png", spectrograms_png(
        shown, titles, frame_rate_hz=mel.sample_rate_hz / mel.hop_length_samples, f_max_hz=mel.f_max_hz))
    vocoder = GriffinLimVocoder(mel)
    for k, m in enumerate(logmels):
        audio = vocoder(m)
        run.write_bytes(f"samples/step-{step:06d}-{k}.wav",
                        encode_audio(0.9 * audio / max(1e-6, float(np.abs(audio).max())), mel.sample_rate_hz))


def _world() -> tuple[int, int, int]:
    """(rank, world size, workers on this node)."""
    try:
        import ray.train

        ctx = ray.train.get_context()
        return ctx.get_world_rank(), ctx.get_world_size(), ctx.get_local_world_size()
    except Exception:  # not inside a Ray Train worker: this process is the only one
        return 0, 1, 1


def _save(run: Storage, model, ema, opt, step: int, history: dict, meta: dict) -> None:
    name = f"checkpoints/step-{step:06d}.pt"
    run.write_bytes(name, train_state_bytes(model, ema, opt, step, history, meta))
    previous = json.loads(run.read_bytes(LATEST)) if run.exists(LATEST) else None
    run.write_bytes(LATEST, json.dumps({"step": step, "checkpoint": name}).encode())  # the commit point
    if previous and previous["checkpoint"] != name:
        run.delete(previous["checkpoint"])  # keep one: the pointer never names a deleted file


@dataclass
class _Run:
    """What one worker holds during training."""
    cfg: TrainConfig
    meta: dict
    run: Storage
    model: torch.nn.Module
    ema: torch.nn.Module
    opt: torch.optim.Optimizer
    start: int
    history: dict


def _restore(cfg: TrainConfig, meta: dict, run: Storage) -> _Run:
    """A fresh model from the seed, or the state of the last durable checkpoint."""
    torch.manual_seed(cfg.seed)
    model = build_model(ModelConfig(unet=cfg.unet_config(meta["n_mels"]), edm=cfg.edm))
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = _Run(cfg, meta, run, model, ema, opt, 0, {"step": [], "loss": [], "lr": [], "val_step": [], "val_loss": []})
    if run.exists(LATEST):
        saved = load_train_state(run.read_bytes(json.loads(run.read_bytes(LATEST))["checkpoint"]))
        model.load_state_dict(saved["model"])
        ema.load_state_dict(saved["ema"])
        opt.load_state_dict(saved["optimizer"])
        state.start, state.history = saved["step"], saved["history"]
    return state


def _report(r: _Run, done: int, loss: float, lr: float, rate: float, logger) -> None:
    print(f"[train {r.cfg.domain}] step {done}/{r.cfg.steps} loss {loss:.4f} lr {lr:.2e} {rate:.1f} samples/s",
          flush=True)
    if logger:
        logger.log({"loss": loss, "lr": lr, "samples_per_s": rate}, done)
    # Worker stdout does not reach the driver's console; the driver polls this file.
    r.run.write_bytes(PROGRESS, json.dumps({"step": done, "steps": r.cfg.steps, "loss": loss,
                                            "samples_per_s": rate}).encode())


def _checkpoint(r: _Run, data: TrainData, done: int, logger) -> None:
    """Rank 0: validate the EMA model (on its device), maybe write samples, then the durable
    checkpoint."""
    val = validation_loss(r.ema, data.val_x, data.val_valid, r.cfg.crop_frames, cond=data.val_c)
    r.history["val_step"].append(done)
    r.history["val_loss"].append(val)
    if done in sample_steps(r.cfg):
        write_samples(r.ema, r.cfg, r.meta, r.run, done, cond=data.val_c)
    _save(r.run, r.model, r.ema, r.opt, done, r.history, r.meta)
    if logger:
        logger.log({"val_loss": val}, done)


def _rows_from_ray() -> dict[str, list]:
    import ray.train

    return _columns_from_ray_shard(ray.train.get_dataset_shard("features"))


def train_loop(loop: dict) -> None:
    """Per-worker body. `loop`: config/logistics JSON, run folder URL, metadata (normalisation,
    mel config), MLflow tracking URI and run ID; in-process callers also pass `data`."""
    apply_worker_env()  # the driver's current storage/MLflow variables (private file; no-op in-process)
    cfg = TrainConfig.model_validate_json(loop["config"])
    logistics = TrainLogistics.model_validate_json(loop["logistics"])
    rank, world, local_world = _world()
    # Workers on one node share its cores: oversubscribed intra-op threads stall DDP (measured
    # >10x slower with 2 workers x 2 threads on 2 cores).
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    if cfg.batch_size % world:
        raise ValueError(f"batch_size={cfg.batch_size} is not divisible by {world} workers")
    data: TrainData = loop.get("data") or train_data_from_columns(_rows_from_ray(), cfg, loop["metadata"])
    device = torch.device("cpu")
    if logistics.use_gpu:
        import ray.train.torch

        device = ray.train.torch.get_device()
    amp_dtype = autocast_dtype_for(logistics.precision, device.type)
    if rank == 0:
        print(f"[train {cfg.domain}] {device.type}, {'bf16 autocast' if amp_dtype else 'fp32'} "
              f"(precision={logistics.precision})", flush=True)
    r = _restore(cfg, loop["metadata"], Storage(loop["run_url"]))
    r.model.to(device)
    r.ema.to(device)
    loss_fn = EDMLoss(r.model)
    if world > 1:
        import ray.train.torch

        loss_fn = ray.train.torch.prepare_model(loss_fn, move_to_device=False)
    logger = None
    if rank == 0 and loop.get("mlflow_run_id"):
        from infra.tracking import MetricLogger

        logger = MetricLogger(loop["mlflow_tracking_uri"], loop["mlflow_run_id"])
    per_worker, n = cfg.batch_size // world, data.train_x.shape[0]
    log_every = max(1, min(50, cfg.steps // 20))
    t_last, step_last = time.perf_counter(), r.start
    for step in range(r.start, cfg.steps):
        g = step_generator(cfg.seed, step, rank)
        idx = torch.randint(n, (per_worker,), generator=g)
        x, mask, cond = crop_batch(data.train_x, data.train_valid, idx, cfg.crop_frames, g, data.train_c)
        sigma, noise = r.model.sample_sigma(per_worker, g), torch.randn(x.shape, generator=g)
        lr = lr_at(step, cfg.lr, cfg.warmup_steps, cfg.steps, cfg.schedule)
        for group in r.opt.param_groups:
            group["lr"] = lr
        loss = train_step(loss_fn, r.opt, x.to(device), sigma=sigma.to(device), noise=noise.to(device),
                          mask=mask.to(device), cond=None if cond is None else cond.to(device),
                          max_grad_norm=cfg.grad_clip, autocast_dtype=amp_dtype)
        if world > 1:
            t = torch.tensor([loss], device=device)
            torch.distributed.all_reduce(t)
            loss = float(t) / world
        ema_update(r.ema, r.model, cfg.ema_decay)
        done = step + 1
        for k, v in (("step", done), ("loss", loss), ("lr", lr)):
            r.history[k].append(v)
        if rank == 0 and (done % log_every == 0 or done == cfg.steps):
            rate = cfg.batch_size * (done - step_last) / max(1e-9, time.perf_counter() - t_last)
            t_last, step_last = time.perf_counter(), done
            _report(r, done, loss, lr, rate, logger)
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            if rank == 0:
                _checkpoint(r, data, done, logger)
            if world > 1:
                torch.distributed.barrier()  # no rank runs ahead of the last durable checkpoint
    if rank == 0:
        r.run.write_bytes(RESULT, json.dumps({"step": cfg.steps, "val_loss": r.history["val_loss"][-1],
                                              "val_split": data.val_split}).encode())


def fit(cfg: TrainConfig, logistics: TrainLogistics, run_url: str, metadata: dict,
        mlflow_tracking_uri: str | None, mlflow_run_id: str | None) -> None:
    """Run `train_loop` on Ray Train workers (DDP), or in this process when num_workers=0."""
    loop = {"config": cfg.model_dump_json(), "logistics": logistics.model_dump_json(), "run_url": run_url,
            "metadata": metadata, "mlflow_tracking_uri": mlflow_tracking_uri, "mlflow_run_id": mlflow_run_id}
    if logistics.num_workers == 0:
        train_loop({**loop, "data": train_data_from_columns(read_columns_local(cfg), cfg, metadata)})
        return
    from infra.ray_cluster import ensure_ray

    ensure_ray()
    with ProgressPoller(Storage(run_url), cfg.domain):
        _trainer(cfg, logistics, loop).fit()


def _trainer(cfg: TrainConfig, logistics: TrainLogistics, loop: dict):
    from ray.train import DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from infra.tracking import local_root

    return TorchTrainer(
        train_loop, train_loop_config=loop,
        scaling_config=ScalingConfig(num_workers=logistics.num_workers, use_gpu=logistics.use_gpu),
        torch_config=TorchConfig(backend="nccl" if logistics.use_gpu else "gloo"),
        datasets={"features": read_dataset_ray(cfg)},
        dataset_config=DataConfig(datasets_to_split=[]),  # every worker gets all rows (see read_dataset_ray)
        # A failed worker group restarts and resumes from the last checkpoint (train_loop reads it).
        run_config=RunConfig(name=f"{cfg.domain}-{cfg.config_hash()}", storage_path=str(local_root() / "ray_train"),
                             failure_config=FailureConfig(max_failures=2)))


class ProgressPoller:
    """Prints rank 0's progress file while Ray Train runs (every few seconds, on change)."""

    def __init__(self, run: Storage, domain: str, every_s: float = 3.0):
        import threading

        self.run, self.domain, self.every_s = run, domain, every_s
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        from infra.settings import get_settings

        last = None
        while not self.stop.wait(self.every_s):
            try:
                self.run.refresh()
                p = json.loads(self.run.read_bytes(PROGRESS)) if self.run.exists(PROGRESS) else None
            except Exception:  # a poll racing a write: try again next time
                continue
            if p and p != last and get_settings().progress:
                print(f"[train {self.domain}] step {p['step']}/{p['steps']} loss {p['loss']:.4f} "
                      f"{p['samples_per_s']:.1f} samples/s", flush=True)
                last = p

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
