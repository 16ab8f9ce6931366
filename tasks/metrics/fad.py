"""FAD of a set of clips against a reference set of the target domain (docs/design.md): both sets
loudness-normalised first (a 6 dB gain change alone moves musicnn FAD by 3-5), embedded with one
named embedding, pooled over every patch, compared as Gaussians in float64 (frechet.py).
Reference statistics are cached per (domain, embedding, feature config, reference clips)."""
from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from infra.storage import Storage
from tasks.audio import check_audio, normalise_loudness, peak_dbfs
from tasks.metrics.embeddings import Embedding
from tasks.metrics.frechet import GaussianStats, bootstrap_ci, fad_inf, frechet_distance, gaussian_stats
from tasks.metrics.sources import AudioItem

TARGET_LUFS = -23.0
PEAK_CEILING_DBFS = -1.0
SILENCE_DBFS = -70.0


@dataclass(frozen=True)
class EmbeddedSet:
    embeddings: np.ndarray      # [patches, d] float32, pooled over clips
    clip_ids: list[str]
    silent_clips: int           # embedded as they are (silence is a failure FAD should see), counted
    short_clips: int = 0        # shorter than one embedding patch: skipped and counted


@dataclass(frozen=True)
class FadResult:
    embedding: str
    fad: float
    ci_low: float
    ci_high: float
    fad_inf: float | None       # None when the set is too small to extrapolate
    n_clips: int
    n_embeddings: int
    n_reference: int
    silent_clips: int
    short_clips: int = 0


def embed_set(items: Iterable[AudioItem], embedding: Embedding, *, target_lufs: float = TARGET_LUFS,
              on_item: Callable[[], None] | None = None) -> EmbeddedSet:
    """Loudness-normalise and embed every clip. A clip shorter than one embedding patch (e.g. a
    corpus's tail clip) is skipped and counted; a broken clip (NaN, not mono) raises with its ID."""
    chunks, ids, silent, short = [], [], 0, 0
    for item in items:
        try:
            x = check_audio(item.audio, item.item_id)
            if len(x) < embedding.min_seconds * item.sample_rate_hz:
                short += 1
                continue
            if peak_dbfs(x) < SILENCE_DBFS:
                silent += 1
            else:
                x, _, _ = normalise_loudness(x, item.sample_rate_hz, target_lufs, PEAK_CEILING_DBFS)
            chunks.append(embedding.embed(x, item.sample_rate_hz))
        except ValueError as e:
            raise ValueError(f"clip {item.item_id}: {e}") from e
        ids.append(item.item_id)
        if on_item:
            on_item()
    if not chunks:
        raise ValueError(f"the set has no clip of at least {embedding.min_seconds:.2f} s ({short} shorter ones "
                         f"skipped): FAD needs embeddable clips on both sides")
    return EmbeddedSet(np.concatenate(chunks).astype(np.float32), ids, silent, short)


def fad(evaluated: EmbeddedSet, reference: GaussianStats, embedding_name: str, *, n_boot: int = 200,
        seed: int = 0) -> FadResult:
    e = evaluated.embeddings
    if len(e) < 2:
        raise ValueError(f"FAD needs at least 2 embeddings in the evaluated set, got {len(e)}")
    lo, hi = bootstrap_ci(e, reference, n_boot=n_boot, seed=seed)
    try:
        inf = fad_inf(e, reference, seed=seed)
    except ValueError:
        inf = None  # fewer embeddings than the extrapolation needs: reported as absent, not guessed
    return FadResult(embedding_name, frechet_distance(gaussian_stats(e), reference), lo, hi, inf,
                     len(evaluated.clip_ids), len(e), reference.n, evaluated.silent_clips, evaluated.short_clips)


def reference_key(domain: str, embedding_name: str, clip_ids: Iterable[str], feature_config: dict) -> str:
    payload = json.dumps({"domain": domain, "embedding": embedding_name, "config": feature_config,
                          "clips": sorted(clip_ids)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def cached_reference_stats(cache: Storage, domain: str, embedding_name: str, clip_ids: list[str],
                           build: Callable[[], EmbeddedSet], feature_config: dict | None = None
                           ) -> tuple[GaussianStats, bool]:
    """Reference Gaussian for (domain, embedding, config, clip set): read from the cache or built
    and stored (atomically, through the storage module). Returns (stats, was_cached)."""
    config = {"target_lufs": TARGET_LUFS, **(feature_config or {})}
    rel = f"{domain}/{embedding_name}-{reference_key(domain, embedding_name, clip_ids, config)}.npz"
    if cache.exists(rel):
        with np.load(io.BytesIO(cache.read_bytes(rel))) as z:
            return GaussianStats(z["mu"], z["sigma"], int(z["n"])), True
    stats = gaussian_stats(build().embeddings)
    buf = io.BytesIO()
    np.savez(buf, mu=stats.mu, sigma=stats.sigma, n=stats.n)
    cache.write_bytes(rel, buf.getvalue())
    return stats, False
