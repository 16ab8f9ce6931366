"""The data jobs: render the reference corpus, ingest a folder or prefix, pitch-augment, extract
features (Ray actors, or in-process), and the two that look inside a dataset (`inspect_job`'s
per-column breakdown, `mel2audio_job`'s decoding of one feature segment into audio)."""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from infra import tracking
from infra.datasets import ShardedDataset
from infra.settings import get_settings
from infra.storage import Storage
from schemas.configs import AugmentConfig, CorpusConfig, FeatureConfig, IngestConfig
from schemas.records import FeatureSetExtra
from tasks.audio import encode_audio
from tasks.augment import run_augment
from tasks.builders import load_autoencoder
from jobs.decoders import load_decoder, resolve_autoencoder
from schemas.transform import DEFAULT_VOCODER
from tasks.corpus import run_corpus
from tasks.feature_values import decode_values
from tasks.ingest import run_ingest

# What `inspect` groups a table's rows by.
INSPECT_GROUPS = {"clips": ["role", "domain", "split"], "features": ["role", "domain", "split"],
                  "quarantine": ["stage", "reason"], "outputs": ["target_domain", "method", "t_init"],
                  "metrics": ["metric", "reference"]}


def corpus_job(dest: str, config: CorpusConfig, workers: int) -> dict:
    return dataclasses.asdict(run_corpus(config, dest, shard_rows=get_settings().shard_rows, workers=workers))


def ingest_job(src: str, dest: str, config: IngestConfig, sidecar: str | None) -> dict:
    return dataclasses.asdict(run_ingest(src, dest, config, sidecar, shard_rows=get_settings().shard_rows))


def augment_job(clips: str, out: str, config: AugmentConfig) -> dict:
    return dataclasses.asdict(run_augment(clips, out, config, shard_rows=get_settings().shard_rows))


def features_job(clips: list[str], out: str, config: FeatureConfig, actors: int, local: bool) -> dict:
    """Log-mel or latent segments of the clips datasets. A latent set's encoder is pinned first (an
    alias resolved once, a shipped file by its checksum): the pinned URI is part of the set's
    identity, so the latents of two encoder versions never share a set."""
    from ray_actors.features import extract_features

    checkpoint = None
    if config.kind == "latent":
        uri, name = resolve_autoencoder(str(config.encoder))
        checkpoint = tracking.model_checkpoint(uri)
        load_autoencoder(checkpoint, name, config.mel)  # a wrong kind or front end fails here, before any work
        config = config.model_copy(update={"encoder": uri})
        print(f"[features] latent features of {name}")
    return extract_features(clips, out, config, num_actors=actors, local=local, encoder_checkpoint=checkpoint)


def inspect_job(url: str) -> tuple[dict, list[dict]]:
    """(what the manifest says, row counts per group of the table's grouping columns)."""
    ds = ShardedDataset.detect(url)
    m = ds.manifest()
    about = {"table": m.table, "schema_version": m.schema_version, "commits": len(m.commits), "shards": len(m.shards),
             "rows": m.num_rows, "updated_at": m.updated_at, "extra_keys": sorted(m.extra)}
    group = INSPECT_GROUPS[m.table]
    counts: dict[tuple, int] = {}
    for r in ds.read(group).to_pylist():
        k = tuple(r[c] for c in group)
        counts[k] = counts.get(k, 0) + 1
    return about, [dict(zip(group, k), rows=n) for k, n in sorted(counts.items(), key=lambda kv: tuple(map(str, kv[0])))]


def mel2audio_job(features_url: str, out_url: str, feature_id: str | None = None, n_iter: int = 32,
                  vocoder_spec: str = DEFAULT_VOCODER) -> tuple[str, float, str]:
    """One segment's log-mel (the first, unless named) decoded into a WAV at `out_url` (local path
    or s3://) by the vocoder the spec names (default: the champion or shipped one, else
    Griffin-Lim). Returns (the segment's feature ID, seconds written, the decoder's name)."""
    ds = ShardedDataset.at(features_url, "features")
    config = FeatureSetExtra.of(ds.manifest().extra, features_url).config
    mel = config.mel
    vocoder, decoder = load_decoder(vocoder_spec, mel, n_iter=n_iter)
    ae = None
    if config.kind == "latent":  # the set's own (pinned) encoder decodes its latents back to log-mel
        ae = load_autoencoder(tracking.model_checkpoint(str(config.encoder)), str(config.encoder), mel).model
        decoder = f"{resolve_autoencoder(str(config.encoder))[1]} decoder + {decoder}"
    for _, t in ds.iter_shards():
        for r in t.to_pylist():
            if feature_id in (None, r["feature_id"]):
                x = decode_values(r["values"], r["values_dtype"], r["num_bins"], r["num_frames"])[:, : r["num_valid_frames"]]
                if ae is not None:
                    with torch.inference_mode():
                        x = ae.decode(torch.from_numpy(x)[None])[0].numpy()
                y = vocoder(x)
                parent, name = out_url.rsplit("/", 1) if "/" in out_url else (".", out_url)
                Storage(parent).write_bytes(name, encode_audio(y / max(1e-6, float(np.abs(y).max())) * 0.9,
                                                               mel.sample_rate_hz))
                return r["feature_id"], y.size / mel.sample_rate_hz, decoder
    raise ValueError(f"feature {feature_id} not found in {features_url}")
