"""Feature extraction on Ray Data: one actor per CPU slot holds the front end; each call turns
one clips shard into one features shard (written atomically through the storage module).
The driver names the shards after its writer ID and publishes them in one commit, last."""
from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa

from infra.datasets import ShardBuffer, ShardedDataset, new_writer_id
from infra.ray_cluster import apply_worker_env
from infra.storage import Storage
from schemas.configs import FeatureConfig
from schemas.manifest import ShardEntry
from tasks.builders import load_autoencoder
from tasks.features import CLIP_COLUMNS_FOR_FEATURES, BinStats, LogMel, feature_rows, features_table


# One work item: a clips shard (its dataset URL and manifest entry) and its output shard name.
ITEM_KEYS = ("key", "clips_url", "entry", "name")


class FeatureShardWorker:
    def __init__(self, cfg_json: str, out_url: str, torch_threads: int = 1, encoder_checkpoint: bytes | None = None):
        import torch

        apply_worker_env()
        torch.set_num_threads(torch_threads)
        self.cfg = FeatureConfig.model_validate_json(cfg_json)
        self.front_end = LogMel(self.cfg.mel)
        # latent features: the pinned encoder, from the bytes the driver read once (a worker on
        # another node has no registry access of its own to rely on)
        self.encoder = (load_autoencoder(encoder_checkpoint, str(self.cfg.encoder), self.cfg.mel).model
                        if encoder_checkpoint is not None else None)
        self.out = ShardedDataset.at(out_url, "features")

    def compute(self, item: dict) -> tuple[pa.Table, dict, list]:
        """One clips shard -> its features table, per-domain statistics and quarantine rows."""
        clips = ShardedDataset.at(str(item["clips_url"]), "clips")
        table = clips.read_shard(ShardEntry.model_validate_json(str(item["entry"])), CLIP_COLUMNS_FOR_FEATURES)
        rows, stats, bad = feature_rows(table, self.cfg, self.front_end, self.encoder)
        return features_table(rows, self.cfg.dtype), stats, bad

    def write(self, item: dict, table: pa.Table, stats: dict, bad: list) -> dict:
        entry = self.out.write_shard(str(item["name"]), table, self.cfg.config_hash())
        return {"key": str(item["key"]), "entry": entry.model_dump_json(),
                "stats": json.dumps({k: v.to_dict() for k, v in stats.items()}), "bad": json.dumps(bad)}

    def __call__(self, batch: dict) -> dict:
        out: dict[str, list] = {"key": [], "entry": [], "stats": [], "bad": []}
        for values in zip(*(batch[k] for k in ITEM_KEYS)):
            item = dict(zip(ITEM_KEYS, values))
            for k, v in self.write(item, *self.compute(item)).items():
                out[k].append(v)
        return out


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
            key = f"{url.rstrip('/')}#{e.sha256}"
            if key not in done:
                todo.append({"key": key, "clips_url": url, "entry": e.model_dump_json(),
                             "name": f"part-{writer}-{len(todo):05d}"})
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


def _run_local(todo: list[dict], cfg: FeatureConfig, out_url: str, encoder_checkpoint: bytes | None) -> list[dict]:
    """In-process, two stages: shard k is serialised, hashed and written (single-threaded
    Parquet + sha256 + fsync) on a writer thread while shard k+1 is decoded and transformed."""
    from infra.progress import progress

    worker = FeatureShardWorker(cfg.model_dump_json(), out_url, torch_threads=os.cpu_count() or 1,
                                encoder_checkpoint=encoder_checkpoint)
    results: list[dict] = []
    with ThreadPoolExecutor(1) as writer:
        pending = None
        for item in progress(todo, len(todo), "features"):
            computed = worker.compute(item)
            if pending is not None:
                results.append(pending.result())
            pending = writer.submit(worker.write, item, *computed)
        if pending is not None:
            results.append(pending.result())
    return results


def _run_ray(todo: list[dict], cfg: FeatureConfig, out_url: str, num_actors: int,
             encoder_checkpoint: bytes | None) -> list[dict]:
    import ray
    from ray.data import ActorPoolStrategy

    from infra.ray_cluster import ensure_ray
    from infra.settings import get_settings

    ensure_ray()
    ray.data.DataContext.get_current().enable_progress_bars = get_settings().progress
    cpus = int(ray.available_resources().get("CPU", 1))
    threads = max(1, cpus // max(num_actors, 1))
    ds = ray.data.from_items(todo, override_num_blocks=len(todo)).map_batches(
        FeatureShardWorker, fn_constructor_kwargs={"cfg_json": cfg.model_dump_json(), "out_url": out_url,
                                                   "torch_threads": threads, "encoder_checkpoint": encoder_checkpoint},
        batch_size=1, compute=ActorPoolStrategy(size=num_actors), num_cpus=threads)
    return list(ds.take_all())
