"""Corpus-scale transformation on Ray: a pool of actors (one GPU each, bf16, when the cluster has
them) that load the pinned models once and transform, vocode, encode and store chunks of the
pending clips; the driver commits the outputs table batch by batch, manifest last, so a killed
run resumes where it stopped. Inside ray_actors/pool.keep_workers() the actors stay up for the
next run with the same models (a sweep's grid points, a nightly's targets).

Exactly once: an output's key hashes (clip, model version, method, settings); a key already in
the committed table is never recomputed; audio is written atomically to audio/<key>.flac before
its row is committed, and a recomputation after a crash rewrites the same bytes (per-clip
seeds), so table rows and objects stay one-to-one."""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from infra.datasets import ShardBuffer, ShardedDataset
from infra.ray_cluster import enter_worker
from infra.storage import Storage
from schemas.transform import TransformConfig, TransformLogistics
from tasks.audio import decode_audio_bytes, encode_flac, normalise_loudness, peak_dbfs
from tasks.errors import clean_reason
from infra.tracking import model_checkpoint
from ray_actors.pool import ActorWorkers, LocalWorker, pooled
from schemas.records import RunLayout
from tasks.builders import LoadedModel, decoder_of, load_autoencoder, load_model, load_vocoder
from infra.shipped import probe_bytes
from tasks.probe import InstrumentProbe
from tasks.transform import ClipOutput, Transformer, output_key

OUTPUT_LUFS, OUTPUT_PEAK_DBFS = -23.0, -1.0  # outputs as loud as the corpus's clips, never clipped


def load_models(pinned: dict[str, str]) -> tuple[LoadedModel, LoadedModel | None]:
    """The run's pinned versions, read from the registry as checkpoint files (tasks/builders)."""
    target = load_model(model_checkpoint(pinned["model_uri"]), pinned["model"])
    source = (load_model(model_checkpoint(pinned["source_uri"]), pinned["source_model"])
              if pinned.get("source_uri") else None)
    return target, source


@dataclass(frozen=True)
class _Call:
    """What one call of a ClipTransformer works under: the run's config, its Transformer, the run
    folder and the run ID."""
    cfg: TransformConfig
    transformer: Transformer
    run: Storage
    run_id: str


class ClipTransformer:
    """Heavy state in __init__ (the pinned models, vocoder, autoencoder); a call is one batch of
    clips of one run, under that run's TransformConfig. The config is an argument, not state, so
    one worker serves every grid point of a sweep and every target of a nightly that share the
    pinned models (keep_workers) instead of reloading them per run."""

    def __init__(self, logistics: TransformLogistics, pinned: dict[str, str]):
        import torch

        # The driver's storage/MLflow variables as they are now: a long-lived Ray cluster was
        # started with whatever they were then (runtime_env is fixed at ray.init).
        enter_worker()  # and freed memory kept: each batch reuses the last one's pages

        self.logistics = logistics
        self.gpu = self.logistics.use_gpu and torch.cuda.is_available()
        self.device_name = "cuda" if self.gpu else "cpu"
        if not self.gpu:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, self.logistics.num_actors)))
        self.target, self.source = load_models(pinned)
        self.vocoder = (load_vocoder(model_checkpoint(pinned["vocoder_uri"]), pinned["vocoder"], self.target.card.mel,
                                     "cuda" if self.gpu else "cpu") if pinned.get("vocoder_uri") else None)
        # a latent model's own autoencoder, as its card pins it, or a decoder fine-tuned from it
        card = self.target.card
        self.autoencoder = (load_autoencoder(model_checkpoint(card.encoder), card.encoder, card.mel)
                            if card.encoder else None)
        if pinned.get("decoder_uri"):
            if self.autoencoder is None:
                raise ValueError(f"{pinned['model']} models log-mels; a decoder is for a latent model")
            self.autoencoder = decoder_of(self.autoencoder, load_autoencoder(
                model_checkpoint(pinned["decoder_uri"]), pinned["decoder"], card.mel))
        self.probe = (InstrumentProbe.from_bytes(probe_bytes(pinned["probe_uri"])[1]).to(self.device_name)
                      if pinned.get("probe_uri") else None)
        self.pinned = pinned
        self._transformers: dict[str, Transformer] = {}

    def _for(self, cfg: TransformConfig, run_url: str, run_id: str) -> _Call:
        """This call's run: its config's Transformer (built once per config: cheap, but it holds
        the method's compiled grid), its storage, its ID. Returned, not stored: in-process, threads
        share one worker, and a call must never see another call's run."""
        key = cfg.config_hash()
        if key not in self._transformers:  # a race builds it twice; both are the same
            self._transformers[key] = Transformer(
                cfg, self.target, self.source if cfg.method == "ddib" else None,
                batch_windows=self.logistics.batch_windows, device="cuda" if self.gpu else "cpu", bf16=self.gpu,
                vocoder=self.vocoder, autoencoder=self.autoencoder,
                probe=self.probe if cfg.auto_rule() == "probe" else None)
        return _Call(cfg, self._transformers[key], Storage(run_url), run_id)

    @staticmethod
    def _maybe_crash(fault_marker: str | None) -> None:
        # Fault injection for the tests: the first call that finds the marker removes it and
        # kills this actor's process outright (no exception, no cleanup), like an OOM kill.
        if fault_marker and os.path.exists(fault_marker):
            os.remove(fault_marker)
            os._exit(1)

    def __call__(self, batch: dict, cfg: TransformConfig, run_url: str, run_id: str,
                 fault_marker: str | None = None) -> dict:
        call = self._for(cfg, run_url, run_id)
        self._maybe_crash(fault_marker)
        return self._transform_batch(batch, call)

    call = __call__  # the name a Ray actor's method is called by

    def _transform_batch(self, batch: dict, call: _Call) -> dict:
        # Strings only ("" = none): an all-null column comes back from Arrow blocks as float NaN.
        rows = {"output_key": [], "row": [], "error": []}
        items = []
        for i, key in enumerate(batch["output_key"]):
            try:
                audio, sr = decode_audio_bytes(bytes(batch["audio_flac"][i]))
                items.append((i, key, audio, sr))
            except Exception as e:  # noqa: BLE001 - a bad input is a quarantine row, not a failed run
                rows["output_key"].append(key)
                rows["row"].append("")
                rows["error"].append(f"undecodable guide audio ({type(e).__name__}: {e})")
        ok = items  # the decodable ones
        try:  # the batch at once; clip by clip only when some clip in it is bad
            outs = call.transformer.transform([batch["clip_id"][i] for i, *_ in ok], [a for *_, a, _ in ok],
                                              [s for *_, s in ok])
        except ValueError:
            outs = []
            for it in ok:
                try:
                    outs += call.transformer.transform([batch["clip_id"][it[0]]], [it[2]], [it[3]])
                except ValueError as e:
                    outs.append(e)
        for (i, key, _, _), out in zip(ok, outs):
            rows["output_key"].append(key)
            if isinstance(out, Exception):
                rows["row"].append("")
                rows["error"].append(str(out))
                continue
            t0 = time.perf_counter()
            y, _, _ = normalise_loudness(out.audio, out.sample_rate_hz, OUTPUT_LUFS, OUTPUT_PEAK_DBFS)
            rel = RunLayout.audio(key)
            flac = encode_flac(y, out.sample_rate_hz)
            call.run.write_bytes(rel, flac)
            row = self._row(call, batch, i, key, rel, y, out, out.seconds_spent + time.perf_counter() - t0)
            rows["row"].append(json.dumps(row | {"sha256": hashlib.sha256(flac).hexdigest()}))
            rows["error"].append("")
        return rows

    def _row(self, call: _Call, batch: dict, i: int, key: str, rel: str, y: np.ndarray, out: ClipOutput,
             seconds: float) -> dict:
        c, tr, sr = call.cfg, call.transformer, out.sample_rate_hz
        # Nulls may arrive as None or, from an all-null Arrow column, as float NaN.
        opt = lambda v: None if v is None or (isinstance(v, float) and v != v) else str(v)  # noqa: E731
        get = lambda col: batch[col][i] if col in batch else None  # noqa: E731 - provenance, where the inputs know it
        return {"output_key": key, "run_id": call.run_id, "clip_id": str(batch["clip_id"][i]),
                "clean_id": opt(batch["clean_id"][i]), "input_domain": opt(batch["domain"][i]),
                "target_domain": c.target or tr.target.card.domain, "model": self.pinned["model"],
                "source_model": self.pinned.get("source_model"), "method": c.method, "task": c.task,
                "t_init": out.choice.t_init if out.choice else c.warm.t_init,
                "sigma_start": tr._sigma_of(out.choice.t_init) if out.choice else tr.sigma_start, "lam": c.warm.lam,
                # auto: the probe's rule (P(target | x̂0) recorded), auto-noise: the input's degradation level
                "t_init_rule": ("given" if not out.choice else "auto" if c.auto_rule() == "probe" else "auto-noise"),
                "p_target": out.choice.p_target if out.choice and c.auto_rule() == "probe" else None,
                "steps": c.sampler.steps, "sampler": c.sampler.name, "seed": c.seed,
                "vocoder": self.pinned.get("vocoder") or f"griffin-lim ({c.vocoder_iters} it.)",
                "output_uri": call.run.uri(rel), "sample_rate_hz": sr, "duration_s": len(y) / sr,
                "seconds_spent": seconds, "config_hash": c.config_hash(), "source_uri": opt(get("source_uri")),
                "source_id": opt(get("source_id")), "start_s": None if opt(get("start_s")) is None else float(get("start_s")),
                "piece": opt(get("piece")), "peak_dbfs": peak_dbfs(y)}


def pending_inputs(clips: list[dict], cfg: TransformConfig, pinned: dict[str, str], done: set[str]) -> list[dict]:
    for row in clips:
        row["output_key"] = output_key(row["clip_id"], pinned["model"], pinned.get("source_model"), cfg,
                                       pinned.get("vocoder"), pinned.get("decoder"), pinned.get("probe_uri"))
    return [r for r in clips if r["output_key"] not in done]


@contextmanager
def workers(logistics: TransformLogistics, pinned: dict[str, str]) -> Iterator:
    """ClipTransformers for these pinned models: kept ones (ray_actors/pool.keep_workers), else new."""
    # what a worker holds and how it runs; the run's own settings (out_url, run_id) are per call
    key = json.dumps([pinned, logistics.num_actors, logistics.use_gpu, logistics.batch_windows], sort_keys=True)
    if logistics.num_actors == 0:
        with pooled(key, lambda: LocalWorker(ClipTransformer(logistics, pinned))) as w:
            yield w
        return
    import ray

    from infra.ray_cluster import ensure_ray
    from infra.tracking import tracking_uri

    ensure_ray({"MLFLOW_TRACKING_URI": tracking_uri()})
    n = logistics.num_actors
    cls = ray.remote(ClipTransformer).options(
        max_restarts=-1, max_task_retries=0, num_gpus=1 if logistics.use_gpu else 0,
        num_cpus=0 if logistics.use_gpu else max(1, (os.cpu_count() or 1) // n))
    # a kept pool belongs to the Ray session it was made in (a restarted cluster has new actors)
    with pooled(key + ray.get_runtime_context().get_job_id(),
                lambda: ActorWorkers([cls.remote(logistics, pinned) for _ in range(n)])) as w:
        yield w


def in_process(worker, chunks: list[dict], call: tuple, gpu: bool) -> Iterator[dict]:
    """Chunks in this process, in order. On CPU one chunk per core at once, one torch thread each:
    torch's intra-op threads scale poorly on these small convolutions (one process used ~1.15 of
    its 2 cores; two 1-thread Ray actors did not have that problem), and torch releases the GIL
    inside its kernels, so threads give what actors give without starting any."""
    import torch

    if gpu:
        for chunk in chunks:
            yield worker(chunk, *call)
        return
    # one torch thread per chunk however many chunks there are: float sums can differ between
    # thread counts, and a re-run of a run's last chunk must give the bytes the first run gave
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    ex = ThreadPoolExecutor(max(1, min(len(chunks), os.cpu_count() or 1)))
    try:
        yield from ex.map(lambda chunk: worker(chunk, *call), chunks)
    finally:
        # a consumer that stops (a failed commit) must not wait for every queued chunk to run
        ex.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(before)


def run_batches(pending: list[dict], cfg: TransformConfig, logistics: TransformLogistics, pinned: dict[str, str],
                run_url: str, run_id: str) -> Iterator[dict]:
    """Result batches as they finish: on Ray actors, or in this process when num_actors == 0. The
    workers come from the pool of keep_workers() when one is open (a sweep, a nightly), else they
    are made for this run and released when it ends."""
    n = logistics.clips_per_task
    chunks = [{c: [r[c] for r in pending[k:k + n]] for c in pending[k]} for k in range(0, len(pending), n)]
    call = (cfg, run_url, run_id, os.environ.get("REINSTRUMENT_FAULT_ONCE"))
    with workers(logistics, pinned) as pool:
        if logistics.num_actors == 0:
            yield from in_process(pool, chunks, call, logistics.use_gpu)
            return
        # one call in flight per actor; a finished actor gets the next chunk at once. A dead actor
        # is restarted by Ray (max_restarts=-1: its models reloaded) and its call goes to the next
        # ready actor (ActorWorkers.map_unordered), the restarted one included once it is up.
        yield from pool.map_unordered(lambda actor, chunk: actor.call.remote(chunk, *call), chunks)


def commit_batch(outputs: ShardedDataset, quarantine: ShardedDataset, batch: dict, config_hash: str,
                 run_id: str) -> tuple[int, int]:
    """One shard of output rows (and of quarantine rows), manifests last. Returns (ok, failed)."""
    good = [json.loads(r) for r, e in zip(batch["row"], batch["error"]) if not e]
    bad = [{"source_uri": f"output_key:{k}", "source_id": k, "stage": "transform", "reason": clean_reason(e),
            "detail": run_id, "config_hash": config_hash}
           for k, e in zip(batch["output_key"], batch["error"]) if e]
    for ds, rows in ((outputs, good), (quarantine, bad)):
        if rows:
            buf = ShardBuffer(ds, config_hash, shard_rows=len(rows))
            for r in rows:
                buf.add(r)
            buf.commit()
    return len(good), len(bad)
