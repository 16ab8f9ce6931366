"""Feature extraction on Ray actors (or in-process): a worker holds the front end and the pinned
encoder; each call turns a run of parts of clips shards into features shards (each written atomically
through the storage module). The driver names the shards after its writer ID and publishes them
in one commit, last. Inside ray_actors/pool.keep_workers() the workers are kept for the next
extraction with the same front end and encoder."""
from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa

from infra.datasets import ShardBuffer, ShardedDataset, new_writer_id
from infra.progress import progress
from infra.ray_cluster import enter_worker
from infra.storage import Storage
from schemas.configs import FeatureConfig
from schemas.manifest import ShardEntry
from ray_actors.pool import ActorWorkers, LocalWorker, pooled
from tasks.builders import load_autoencoder
from tasks.features import CLIP_COLUMNS_FOR_FEATURES, BinStats, LogMel, feature_rows, features_table


# The unit of work and of output: at most this many clips of one clips shard make one features
# shard. Clips shards hold up to 256 clips, so a corpus of an hour is a handful of shards; whole
# shards left one of two actors idle while the other took 95 % of a 45-minute corpus (measured).
# A constant, never derived from the actors: it is part of each input's key, so re-runs with any
# number of actors agree on what is done.
PART_CLIPS = 64


class FeatureShardWorker:
    """Holds what an extraction's calls share (the front end, the pinned encoder); the config and
    the output set travel with each call, so kept workers (ray_actors/pool.keep_workers) serve the
    next extraction with the same front end and encoder too."""

    def __init__(self, cfg_json: str, torch_threads: int = 1, encoder_checkpoint: bytes | None = None):
        import torch

        enter_worker()  # the driver's variables, and freed memory kept: each part reuses the last one's pages
        torch.set_num_threads(torch_threads)
        cfg = FeatureConfig.model_validate_json(cfg_json)
        self.holds = (cfg.mel, cfg.encoder)
        self._read: tuple[str, pa.Table] | None = None  # the last clips shard read: its parts come in a row
        self.front_end = LogMel(cfg.mel)
        # latent features: the pinned encoder, from the bytes the driver read once (a worker on
        # another node has no registry access of its own to rely on)
        self.encoder = (load_autoencoder(encoder_checkpoint, str(cfg.encoder), cfg.mel).model
                        if encoder_checkpoint is not None else None)

    def compute(self, item: dict, cfg: FeatureConfig) -> tuple[pa.Table, dict, list]:
        """One part of a clips shard -> its features table, per-domain statistics and quarantine rows."""
        entry = ShardEntry.model_validate_json(str(item["entry"]))
        source = f"{item['clips_url']}#{entry.sha256}"
        if self._read is None or self._read[0] != source:
            clips = ShardedDataset.at(str(item["clips_url"]), "clips")
            self._read = (source, clips.read_shard(entry, CLIP_COLUMNS_FOR_FEATURES))
        start, stop = int(item["start"]), int(item["stop"])
        rows, stats, bad = feature_rows(self._read[1].slice(start, stop - start), cfg, self.front_end, self.encoder)
        return features_table(rows, cfg.dtype), stats, bad

    @staticmethod
    def write(out: ShardedDataset, cfg: FeatureConfig, item: dict, table: pa.Table, stats: dict, bad: list) -> dict:
        entry = out.write_shard(str(item["name"]), table, cfg.config_hash())
        return {"key": str(item["key"]), "entry": entry.model_dump_json(),
                "stats": json.dumps({k: v.to_dict() for k, v in stats.items()}), "bad": json.dumps(bad)}

    def run(self, items: list[dict], cfg_json: str, out_url: str, progress_desc: str | None = None) -> list[dict]:
        """Parts in two stages: part k is serialised, hashed and written (single-threaded Parquet
        + sha256 + fsync) on a writer thread while part k+1 is decoded and transformed."""
        cfg = FeatureConfig.model_validate_json(cfg_json)
        if (cfg.mel, cfg.encoder) != self.holds:  # a pool is keyed by them; this guards the key
            raise ValueError(f"this feature worker holds mel {self.holds[0]} and encoder {self.holds[1]}; "
                             f"the extraction asks for mel {cfg.mel} and encoder {cfg.encoder}")
        out = ShardedDataset.at(out_url, "features")
        results: list[dict] = []
        with ThreadPoolExecutor(1) as writer:
            pending = None
            for item in progress(items, len(items), progress_desc) if progress_desc else items:
                computed = self.compute(item, cfg)
                if pending is not None:
                    results.append(pending.result())
                pending = writer.submit(self.write, out, cfg, item, *computed)
            if pending is not None:
                results.append(pending.result())
        self._read = None  # a kept worker does not hold a clips shard between extractions
        return results


def feature_set_url(out_root_url: str, cfg: FeatureConfig) -> str:
    """The feature-config hash is part of the dataset path: two configs never mix."""
    return f"{out_root_url.rstrip('/')}/{cfg.kind}-{cfg.config_hash()}"


def extract_features(clips_urls: list[str], out_root_url: str, cfg: FeatureConfig,
                     num_actors: int = 2, local: bool = False, encoder_checkpoint: bytes | None = None) -> dict:
    """Featurise every manifest-listed clips shard not yet featurised. Returns a summary.
    `local=True` runs the same worker in-process (no Ray): for debugging and tiny inputs.
    kind=latent: `encoder_checkpoint` holds the bytes of the autoencoder `cfg.encoder` pins."""
    if (cfg.kind == "latent") != (encoder_checkpoint is not None):
        raise ValueError("latent features need the encoder's checkpoint bytes, and only they do")
    out_url = feature_set_url(out_root_url, cfg)
    out = ShardedDataset.at(out_url, "features")
    manifest = out.manifest()
    done: dict = manifest.extra.get("inputs", {})
    writer = new_writer_id()
    todo = []
    for url in clips_urls:
        clips = ShardedDataset.at(url, "clips")
        if not clips.exists():
            raise ValueError(f"{url} is not a clips dataset (no commits under {url.rstrip('/')}/_commits); "
                             "expected the clips folder written by `reinstrument ingest` or `corpus build`")
        for e in clips.manifest().shards:
            whole = f"{url.rstrip('/')}#{e.sha256}"
            if whole in done:  # featurised whole (a shard of one part, or a set made before parts)
                continue
            for start in range(0, e.num_rows, PART_CLIPS):
                stop = min(e.num_rows, start + PART_CLIPS)
                key = whole if (start, stop) == (0, e.num_rows) else f"{whole}:{start}-{stop}"
                if key not in done:
                    todo.append({"key": key, "clips_url": url, "entry": e.model_dump_json(), "start": start,
                                 "stop": stop, "name": f"part-{writer}-{len(todo):05d}"})
    if not todo and not manifest.shards:
        raise ValueError(f"no clips to featurise in {', '.join(clips_urls)}: the datasets hold no shards; "
                         "expected clips from `reinstrument ingest` or `corpus build`")
    if not todo:
        return {"features_url": out_url, "shards_added": 0, "rows": manifest.num_rows, "skipped": len(done)}
    results = (_run_local(todo, cfg, out_url, encoder_checkpoint) if local
               else _run_ray(todo, cfg, out_url, num_actors, encoder_checkpoint))
    for r in results:  # parse each returned entry once
        r["entry"] = ShardEntry.model_validate_json(r["entry"])
    results.sort(key=lambda r: r["entry"].name)
    stats: dict[str, BinStats] = {}
    bad: list[dict] = []
    for r in results:
        for k, d in json.loads(r["stats"]).items():
            stats.setdefault(k, BinStats(len(d["sum"]))).merge(BinStats.from_dict(d))
        bad += json.loads(r["bad"])
    if bad:
        q = ShardBuffer(ShardedDataset(Storage(out_root_url).child("quarantine"), "quarantine"),
                        cfg.config_hash(), 10_000)
        for row in bad:
            q.add(row)
        q.commit()
    entries = [r["entry"] for r in results]
    # Only this writer's additions: its inputs and its statistics (keyed by writer, summed at read
    # by total_stats), so a concurrent extraction into the same set loses neither.
    m = out.commit(entries, {"inputs": {r["key"]: r["entry"].name for r in results},
                             "config": cfg.model_dump(mode="json"),
                             "stats": {writer: {k: v.to_sums() for k, v in sorted(stats.items())}}}, writer)
    return {"features_url": out_url, "shards_added": len(entries), "rows": m.num_rows,
            "skipped": len(done), "quarantined": len(bad)}


def _workers_key(cfg: FeatureConfig, n: int, threads: int) -> str:
    """What a feature worker holds and how it runs: extractions that agree share kept workers."""
    return json.dumps(["features", cfg.mel.model_dump(mode="json"), cfg.encoder, n, threads])


def _run_local(todo: list[dict], cfg: FeatureConfig, out_url: str, encoder_checkpoint: bytes | None) -> list[dict]:
    threads = os.cpu_count() or 1
    with pooled(_workers_key(cfg, 0, threads),
                lambda: LocalWorker(FeatureShardWorker(cfg.model_dump_json(), threads, encoder_checkpoint).run)) as run:
        return run(todo, cfg.model_dump_json(), out_url, progress_desc="features")


def _run_ray(todo: list[dict], cfg: FeatureConfig, out_url: str, num_actors: int,
             encoder_checkpoint: bytes | None) -> list[dict]:
    """Plain Ray actors (not Ray Data: its per-extraction planning and actor-pool start cost ~6.5 s
    here with no-op actors, against 1.6 s of work for 45 audio-minutes in-process). Each call
    takes a run of parts through the same two-stage pipeline as in-process. A call whose actor
    dies goes to another actor (ray_actors/pool.ActorWorkers): it rewrites the same shard names,
    and nothing is visible before the driver's one commit, so a restarted actor loses nothing."""
    import ray

    from infra.ray_cluster import ensure_ray

    ensure_ray()
    n = max(1, num_actors)
    threads = max(1, int(ray.cluster_resources().get("CPU", 1)) // n)
    cls = ray.remote(FeatureShardWorker).options(max_restarts=-1, max_task_retries=0, num_cpus=threads)
    # runs of consecutive parts: an actor reads a clips shard once for them and writes one part while
    # it computes the next. Two runs per actor measured best on 45 audio-minutes (5 parts: 0.8 s
    # against 1.0 s with one part per run, 0.95 s with three runs per actor); at most 8 parts per
    # run on big corpora, so a slow or restarted actor holds back little
    per = min(8, max(1, -(-len(todo) // (2 * n))))
    runs = [todo[k:k + per] for k in range(0, len(todo), per)]
    cfg_json = cfg.model_dump_json()
    # the checkpoint goes into the object store once, not once per actor
    ckpt = ray.put(encoder_checkpoint) if encoder_checkpoint is not None else None
    # a kept pool belongs to the Ray session it was made in (a restarted cluster has new actors)
    key = _workers_key(cfg, n, threads) + ray.get_runtime_context().get_job_id()
    results: list[dict] = []
    with pooled(key, lambda: ActorWorkers([cls.remote(cfg_json, threads, ckpt) for _ in range(n)])) as w:
        done = w.map_unordered(lambda a, run: a.run.remote(run, cfg_json, out_url), runs)
        for out in progress(done, len(runs), "features"):
            results += out
    return results
