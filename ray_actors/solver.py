"""The training solver: one loop for every model kind (tasks/solver.py), on Ray Train workers
(DDP) or in this process when num_workers=0. Deterministic and resumable: every draw of step s
on rank r is seeded by (seed, s, r), rows are ordered by feature ID, and checkpoints (model,
EMA, optimizer, step, history) go through the storage module every K steps, pointer written
last. Rank 0 validates, previews and checkpoints; a worker group that fails restarts from the
last durable checkpoint."""
from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import dataclass

import pyarrow as pa
import torch

from infra.datasets import ShardedDataset
from infra.progress import left_note
from infra.ray_cluster import default_train_workers, enter_worker
from infra.storage import Storage
from schemas.configs import StrictConfig
from schemas.records import TrainRunLayout as L
from schemas.training import SolverConfig, TrainConfig, TrainLogistics
from tasks.builders import CARDS, TRAIN_CONFIGS, build_model, kind_of, load_checkpoint_bytes, make_kind, training_data
from tasks.diffusion.checkpoint import load_train_state, train_state_bytes
from tasks.diffusion.train import autocast_dtype_for, ema_update, lr_at, step_generator
from tasks.diffusion.train_data import FEATURE_COLUMNS, feature_table
from tasks.solver import ModelKind, adamw, settle_optimizer, optimise


def read_dataset_ray(cfg: TrainConfig):
    """The rows through Ray Data, materialised once in the object store: every worker reads all
    of them (and sorts them), so which rows a worker sees never depends on scheduling. Paired
    rows are joined on the driver first (feature_table)."""
    import pyarrow.fs as pafs
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False  # one small read; the loop reports
    if cfg.paired or cfg.labels:  # joined or labelled on the driver
        return ray.data.from_arrow(feature_table(cfg)).materialize()
    ds = ShardedDataset.at(cfg.features_url, "features")
    paths = [ds.storage.path(e.name) for e in ds.manifest().shards]
    fs = None if ds.storage.is_local else pafs.PyFileSystem(pafs.FSSpecHandler(ds.storage.fs))
    rows = ray.data.read_parquet(paths, filesystem=fs, columns=FEATURE_COLUMNS + ["domain", "role"])
    domain, role = cfg.domain, cfg.role
    return rows.filter(lambda r: r["domain"] == domain and r["role"] == role).select_columns(FEATURE_COLUMNS).materialize()


def _rows_from_ray() -> dict[str, list]:
    import ray.train

    tables = list(ray.train.get_dataset_shard("features").iter_batches(batch_format="pyarrow", batch_size=4096))
    return pa.concat_tables(tables).to_pydict() if tables else {c: [] for c in FEATURE_COLUMNS}


def preview_steps(cfg: SolverConfig) -> set[int]:
    """Checkpoint steps that also write previews: `samples_at` of them, spread, the last included."""
    import numpy as np

    ckpts = sorted({min(cfg.steps, s) for s in range(cfg.checkpoint_every, cfg.steps + cfg.checkpoint_every,
                                                      cfg.checkpoint_every)})
    if cfg.samples_at == 0:
        return set()
    picks = np.linspace(len(ckpts) - 1, 0, min(cfg.samples_at, len(ckpts))).round().astype(int)
    return {ckpts[i] for i in picks}


def _world() -> tuple[int, int, int]:
    """(rank, world size, workers on this node)."""
    try:
        import ray.train

        ctx = ray.train.get_context()
        return ctx.get_world_rank(), ctx.get_world_size(), ctx.get_local_world_size()
    except Exception:  # not inside a Ray Train worker: this process is the only one
        return 0, 1, 1


@dataclass
class _Adversary:
    """A kind's discriminators (tasks/solver.AdversarialKind): their own optimizer and loss module
    (DDP-wrapped on its own), stepped after each generator step on that step's audio."""
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    loss: torch.nn.Module | None = None


@dataclass
class _State:
    """What one worker holds during training."""
    cfg: SolverConfig
    card: dict
    run: Storage
    model: torch.nn.Module
    ema: torch.nn.Module
    opt: torch.optim.Optimizer
    start: int
    history: dict
    adversary: _Adversary | None = None


def initial_weights(model: torch.nn.Module, init: bytes, cfg: SolverConfig, card: dict) -> None:
    """Load a fine-tuning start (cfg.init_from) into `model`; refuses another kind, a latent model
    of another encoder, or a different architecture by name (a shape mismatch would otherwise
    surface as a bare state-dict error)."""
    start, metadata = load_checkpoint_bytes(init)
    if metadata.get("kind", "denoiser") != kind_of(cfg):
        raise ValueError(f"init_from {cfg.init_from} is a {metadata.get('kind', 'denoiser')} model; this run trains "
                         f"a {kind_of(cfg)} (fine-tune from a model of the same kind)")
    if metadata.get("encoder") != card.get("encoder"):
        raise ValueError(f"init_from {cfg.init_from} models the latents of {metadata.get('encoder') or 'no encoder (log-mel)'}; "
                         f"these features are of {card.get('encoder') or 'no encoder (log-mel)'}")
    # a model may declare parameters it grows (Vocos.growth): a start without them loads, and they
    # keep an initialisation that leaves the start's output unchanged; anything else must match
    current = model.state_dict()
    grown = {k: current[k] for k in (model.growth() if hasattr(model, "growth") else ())}
    try:
        model.load_state_dict({**grown, **start.state_dict()}, strict=True)
    except RuntimeError as e:
        raise ValueError(f"init_from {cfg.init_from} has another architecture than this run's {type(model).__name__}: "
                         f"{' '.join(str(e).split()[6:])[:240]}; use the preset (and overrides) it was trained with") from None


def _restore(kind: ModelKind, cfg: SolverConfig, card: dict, run: Storage, init: bytes | None = None) -> _State:
    """A fresh model from the seed (or from `init`, the fine-tuning start), or the state of the
    last durable checkpoint (a resumed fine-tune continues from its own checkpoint)."""
    torch.manual_seed(cfg.seed)
    model = build_model(kind.architecture())
    if init is not None and not run.exists(L.LATEST):
        initial_weights(model, init, cfg, card)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = adamw(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = _State(cfg, card, run, model, ema, opt, 0, {"step": [], "loss": [], "lr": [], "val_step": [], "val_loss": []})
    arch = kind.discriminator_architecture() if hasattr(kind, "discriminator_architecture") else None
    if arch is not None:
        disc = build_model(arch)
        # HiFi-GAN's and Vocos' betas: a short memory of the moments suits the moving target of a GAN
        state.adversary = _Adversary(disc, adamw(disc.parameters(), lr=cfg.lr, betas=(0.8, 0.99),
                                                  weight_decay=cfg.weight_decay))
        state.history["d_loss"] = []
    if run.exists(L.LATEST):
        saved = load_train_state(run.read_bytes(json.loads(run.read_bytes(L.LATEST))["checkpoint"]))
        model.load_state_dict(saved["model"])
        ema.load_state_dict(saved["ema"])
        opt.load_state_dict(saved["optimizer"])
        state.start, state.history = saved["step"], saved["history"]
        if state.adversary is not None:
            if "discriminator" not in saved:
                raise ValueError(f"the checkpoint in {run.url} was saved without discriminators; this run trains "
                                 "with them (resume it with its own config, or start a new run)")
            state.adversary.model.load_state_dict(saved["discriminator"])
            state.adversary.opt.load_state_dict(saved["discriminator_optimizer"])
    return state


def _save(s: _State, step: int) -> None:
    name = L.checkpoint(step)
    extra = {} if s.adversary is None else {"discriminator": s.adversary.model.state_dict(),
                                            "discriminator_optimizer": s.adversary.opt.state_dict()}
    s.run.write_bytes(name, train_state_bytes(s.model, s.ema, s.opt, step, s.history, s.card, extra))
    previous = json.loads(s.run.read_bytes(L.LATEST)) if s.run.exists(L.LATEST) else None
    s.run.write_bytes(L.LATEST, json.dumps({"step": step, "checkpoint": name}).encode())  # the commit point
    if previous and previous["checkpoint"] != name:
        s.run.delete(previous["checkpoint"])  # keep one: the pointer never names a deleted file


def _report(s: _State, done: int, loss: float, lr: float, rate: float, eta_s: float, logger,
            d_loss: float | None) -> None:
    d = "" if d_loss is None else f" discriminator {d_loss:.4f}"
    print(f"[train {s.cfg.domain}] step {done}/{s.cfg.steps} loss {loss:.4f}{d} lr {lr:.2e} {rate:.1f} samples/s"
          f"{left_note(eta_s, done, s.cfg.steps)}", flush=True)
    if logger:
        logger.log({"loss": loss, "lr": lr, "samples_per_s": rate, **({} if d_loss is None else {"d_loss": d_loss})}, done)
    # Worker stdout does not reach the driver's console; the driver polls this file.
    s.run.write_bytes(L.PROGRESS, json.dumps({"step": done, "steps": s.cfg.steps, "loss": loss,
                                              "samples_per_s": rate, "eta_s": eta_s}).encode())


def _checkpoint(s: _State, kind: ModelKind, done: int, logger) -> None:
    """Rank 0: validate the EMA model (on its device), maybe preview, then the durable checkpoint."""
    val = kind.validate(s.ema)
    s.history["val_step"].append(done)
    s.history["val_loss"].append(val)
    if done in preview_steps(s.cfg):
        for name, data in kind.preview(s.ema, done).items():
            s.run.write_bytes(f"{L.SAMPLES}/{name}", data)
    _save(s, done)
    if logger:
        logger.log({"val_loss": val}, done)


def train_loop(loop: dict) -> None:
    """Per-worker body. `loop`: the model kind, config/logistics JSON, run folder URL, the model
    card, MLflow tracking URI and run ID; in-process callers also pass `data`."""
    # the driver's current storage/MLflow variables (private file; no-op in-process), then freed
    # memory kept: a step's activations reuse the last step's pages (~1.17x on CPU)
    allocator = enter_worker()
    cfg = TRAIN_CONFIGS[loop["kind"]].model_validate_json(loop["config"])
    logistics = TrainLogistics.model_validate_json(loop["logistics"])
    card = CARDS[loop["kind"]].model_validate(loop["card"])
    rank, world, local_world = _world()
    # Workers on one node share its cores: oversubscribed intra-op threads stall DDP (measured
    # >10x slower with 2 workers x 2 threads on 2 cores).
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    if cfg.batch_size % world:
        raise ValueError(f"batch_size={cfg.batch_size} is not divisible by {world} workers")
    data = loop.get("data") or training_data(cfg, card, _rows_from_ray() if isinstance(cfg, TrainConfig) else None)
    kind = make_kind(cfg, card, data, loop.get("encoder_weights"))
    device = torch.device("cpu")
    if logistics.use_gpu:
        import ray.train.torch

        device = ray.train.torch.get_device()
    amp_dtype = autocast_dtype_for(logistics.precision, device.type)
    if rank == 0:
        where = f"{world} Ray Train workers (DDP)" if logistics.num_workers else "this process"
        print(f"[train {cfg.domain}] {device.type}, {'bf16 autocast' if amp_dtype else 'fp32'} "
              f"(precision={logistics.precision}), {where}, freed memory {allocator}", flush=True)
    s = _restore(kind, cfg, loop["card"], Storage(loop["run_url"]), loop.get("init_weights"))
    s.model.to(device)
    s.ema.to(device)
    settle_optimizer(s.opt)  # a resumed run's optimizer state follows its parameters to the device
    adv = s.adversary
    if adv is not None:
        adv.model.to(device)
        settle_optimizer(adv.opt)
        loss_module, adv.loss = kind.loss_module(s.model, adv.model), kind.discriminator_loss_module(adv.model)
    else:
        loss_module = kind.loss_module(s.model)
    if world > 1:
        import ray.train.torch

        # Gradients as views of DDP's all-reduce buckets: no copy between them each step (the
        # cpu-demo step over gloo, 2 processes: 1.035x in three paired runs, parameters bit for bit
        # the same after 24 steps; README, "DDP's gradients as bucket views").
        ddp = {"gradient_as_bucket_view": True}
        loss_module = ray.train.torch.prepare_model(loss_module, move_to_device=False, parallel_strategy_kwargs=ddp)
        if adv is not None:
            adv.loss = ray.train.torch.prepare_model(adv.loss, move_to_device=False, parallel_strategy_kwargs=ddp)
    logger = None
    if rank == 0 and loop.get("mlflow_run_id"):
        from infra.tracking import MetricLogger

        logger = MetricLogger(loop["mlflow_tracking_uri"], loop["mlflow_run_id"])
    per_worker = cfg.batch_size // world
    log_every = max(1, min(50, cfg.steps // 20))
    t_last, step_last = time.perf_counter(), s.start
    t_start = t_last  # the ETA's rate: every step this process ran, checkpoints and validation included
    for step in range(s.start, cfg.steps):
        batch = {k: v.to(device) for k, v in kind.batch(step_generator(cfg.seed, step, rank), per_worker).items()}
        lr = lr_at(step, cfg.lr, cfg.warmup_steps, cfg.steps, cfg.schedule)
        for group in s.opt.param_groups + (adv.opt.param_groups if adv else []):
            group["lr"] = lr
        if adv is not None:
            kind.begin_step(step)
        loss = optimise(loss_module, s.opt, batch, max_grad_norm=cfg.grad_clip, autocast_dtype=amp_dtype)
        if adv is not None:  # on this step's decoded audio, after the generator's update (HiFi-GAN alternates)
            s.history["d_loss"].append(optimise(adv.loss, adv.opt, kind.discriminator_batch(),
                                                max_grad_norm=cfg.grad_clip, autocast_dtype=amp_dtype))
        if world > 1:
            t = torch.tensor([loss], device=device)
            torch.distributed.all_reduce(t)
            loss = float(t) / world
        ema_update(s.ema, s.model, cfg.ema_decay)
        done = step + 1
        for k, v in (("step", done), ("loss", loss), ("lr", lr)):
            s.history[k].append(v)
        if rank == 0 and (done % log_every == 0 or done == cfg.steps):
            now = time.perf_counter()
            rate = cfg.batch_size * (done - step_last) / max(1e-9, now - t_last)
            eta_s = (now - t_start) / (done - s.start) * (cfg.steps - done)
            t_last, step_last = now, done
            _report(s, done, loss, lr, rate, eta_s, logger, s.history["d_loss"][-1] if adv else None)
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            if rank == 0:
                _checkpoint(s, kind, done, logger)
            if world > 1:
                torch.distributed.barrier()  # no rank runs ahead of the last durable checkpoint
    if rank == 0:
        s.run.write_bytes(L.RESULT, json.dumps({"step": cfg.steps, "val_loss": s.history["val_loss"][-1],
                                                "val_split": data.val_split}).encode())


def settle_workers(logistics: TrainLogistics) -> TrainLogistics:
    """`num_workers` left to the job (None) made a count, by the one rule of
    infra.ray_cluster.default_train_workers."""
    if logistics.num_workers is not None:
        return logistics
    return logistics.model_copy(update={"num_workers": default_train_workers(logistics.use_gpu)})


def fit(cfg: SolverConfig, logistics: TrainLogistics, run_url: str, card: StrictConfig,
        mlflow_tracking_uri: str | None, mlflow_run_id: str | None) -> None:
    """Run `train_loop` on Ray Train workers (DDP), or in this process when num_workers=0."""
    from infra import secrets, tracking

    logistics = settle_workers(logistics)
    loop = {"kind": kind_of(cfg), "config": cfg.model_dump_json(), "logistics": logistics.model_dump_json(),
            "run_url": run_url, "card": card.model_dump(mode="json"), "mlflow_run_id": mlflow_run_id,
            # Ray Train keeps its config: a URI with a password goes by the workers' private file only
            "mlflow_tracking_uri": None if secrets.has_userinfo(mlflow_tracking_uri or "") else mlflow_tracking_uri,
            # read here, once: workers on other nodes need not reach the registry
            "init_weights": tracking.model_checkpoint(cfg.init_from) if cfg.init_from else None,
            "encoder_weights": tracking.model_checkpoint(card.encoder) if getattr(card, "encoder", None) else None}
    if logistics.num_workers == 0:
        train_loop({**loop, "data": training_data(cfg, card)})
        return
    from infra.ray_cluster import ensure_ray

    ensure_ray({"MLFLOW_TRACKING_URI": mlflow_tracking_uri} if mlflow_tracking_uri else None)
    # rank 0's own lines stay in Ray's logs (log_to_driver off): say here where the run goes
    print(f"[train {cfg.domain}] {logistics.num_workers} Ray Train workers (DDP, "
          f"{'nccl' if logistics.use_gpu else 'gloo'}); --workers 0 trains in this process", flush=True)
    with ProgressPoller(Storage(run_url), cfg.domain):
        _trainer(cfg, logistics, loop).fit()


def _trainer(cfg: SolverConfig, logistics: TrainLogistics, loop: dict):
    from ray.train import DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from infra.tracking import local_root

    return TorchTrainer(
        train_loop, train_loop_config=loop,
        scaling_config=ScalingConfig(num_workers=logistics.num_workers, use_gpu=logistics.use_gpu),
        torch_config=TorchConfig(backend="nccl" if logistics.use_gpu else "gloo"),
        # denoisers: every worker gets all feature rows (see read_dataset_ray); vocoders read their clips
        datasets={"features": read_dataset_ray(cfg)} if isinstance(cfg, TrainConfig) else None,
        dataset_config=DataConfig(datasets_to_split=[]),
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
                p = json.loads(self.run.read_bytes(L.PROGRESS)) if self.run.exists(L.PROGRESS) else None
            except Exception:  # a poll racing a write: try again next time
                continue
            if p and p != last and get_settings().progress:
                # a run resumed from before ETAs has none in its file until its next report
                print(f"[train {self.domain}] step {p['step']}/{p['steps']} loss {p['loss']:.4f} "
                      f"{p['samples_per_s']:.1f} samples/s{left_note(p.get('eta_s'), p['step'], p['steps'])}",
                      flush=True)
                last = p

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
