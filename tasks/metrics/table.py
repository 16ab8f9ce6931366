"""Per-item metric values and their aggregation into the `metrics` table: one row per
run x method x task x tau_init/sigma_start x lambda x metric, with n, mean and a bootstrap CI.
Every row names what it was measured against (`reference`) and, for FAD, the embedding."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import librosa
import numpy as np

from tasks.metrics.enhancement import log_spectral_distance_db, mel_l1_db, si_sdr_db
from tasks.metrics.fad import FadResult
from tasks.metrics.pitch import DEFAULT_THRESHOLD, BasicPitch, active_sets, compare_pitches, midi_roll, score_against_midi
from tasks.metrics.sources import AudioItem
from tasks.midi import parse_midi

PITCH_METRICS = ("jd", "jd_melody", "jd_midi", "f1_midi")
ENHANCEMENT_METRICS = ("si_sdr_db", "lsd_db", "mel_l1_db")


@dataclass(frozen=True)
class GridPoint:
    run_id: str
    method: str = "warm_init"
    task: str = "timbre"
    t_init: float | None = None
    sigma_start: float | None = None
    lam: float | None = None


def mean_ci(values: Iterable[float], n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap CI of the mean over items."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        raise ValueError("no values to aggregate")
    if not np.isfinite(v).all():
        raise ValueError("a per-item metric is NaN or infinite; refusing to aggregate it silently")
    if v.size == 1:
        return float(v[0]), float(v[0]), float(v[0])
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, (n_boot, v.size))].mean(axis=1)
    lo, hi = np.percentile(means, [50 * (1 - level), 50 * (1 + level)])
    return float(v.mean()), float(lo), float(hi)


def row(point: GridPoint, metric: str, n: int, mean: float, ci_low: float | None, ci_high: float | None, *,
        reference: str, embedding: str | None = None, detail: str | None = None) -> dict:
    return {"run_id": point.run_id, "method": point.method, "task": point.task, "t_init": point.t_init,
            "sigma_start": point.sigma_start, "lam": point.lam, "metric": metric, "embedding": embedding,
            "reference": reference, "n": int(n), "mean": float(mean), "ci_low": ci_low, "ci_high": ci_high,
            "detail": detail}


def fad_rows(point: GridPoint, result: FadResult, reference: str, metric: str = "fad") -> list[dict]:
    detail = f"clips={result.n_clips} embeddings={result.n_embeddings} reference_embeddings={result.n_reference} silent={result.silent_clips} too_short={result.short_clips}"
    rows = [row(point, metric, result.n_clips, result.fad, result.ci_low, result.ci_high, reference=reference,
                embedding=result.embedding, detail=detail)]
    if result.fad_inf is not None:
        rows.append(row(point, f"{metric}_inf", result.n_clips, result.fad_inf, None, None, reference=reference,
                        embedding=result.embedding, detail=detail))
    return rows


def pitch_item_values(pairs: Iterable[tuple[AudioItem, AudioItem]], tracker: BasicPitch,
                      threshold: float = DEFAULT_THRESHOLD) -> list[dict]:
    """Per (output, guide) pair: JD and its melody variant; against the MIDI too when the guide
    (or the output) carries one. A pair whose JD is undefined (both silent) raises with its ID."""
    out = []
    for a, b in pairs:
        try:
            na, nb = tracker.notes(a.audio, a.sample_rate_hz), tracker.notes(b.audio, b.sample_rate_hz)
            cmp = compare_pitches(na, nb, threshold)
            values = {"item_id": a.item_id, "jd": cmp.poly.distance, "jd_melody": cmp.melody.distance}
            midi = b.midi or a.midi
            if midi:
                score = score_against_midi(active_sets(na, threshold), midi_roll(parse_midi(midi), len(na)))
                values.update(jd_midi=score.jaccard, f1_midi=score.f1)
        except ValueError as e:
            raise ValueError(f"pair {a.item_id} / {b.item_id}: {e}") from e
        out.append(values)
    return out


def enhancement_item_values(pairs: Iterable[tuple[AudioItem, AudioItem]]) -> list[dict]:
    """Per (enhanced, clean reference) pair; the estimate is resampled to the reference's rate."""
    out = []
    for est, ref in pairs:
        e = est.audio if est.sample_rate_hz == ref.sample_rate_hz else librosa.resample(
            est.audio, orig_sr=est.sample_rate_hz, target_sr=ref.sample_rate_hz, res_type="soxr_hq")
        try:
            out.append({"item_id": est.item_id, "si_sdr_db": si_sdr_db(e, ref.audio),
                        "lsd_db": log_spectral_distance_db(e, ref.audio),
                        "mel_l1_db": mel_l1_db(e, ref.audio, ref.sample_rate_hz)})
        except ValueError as e:
            raise ValueError(f"pair {est.item_id} / {ref.item_id}: {e}") from e
    return out


MIDI_METRICS = ("jd_midi", "f1_midi")  # measured against the MIDI, whatever the other rows' reference


def aggregate(point: GridPoint, items: list[dict], metrics: Iterable[str], reference: str, seed: int = 0,
              detail: str | None = None) -> list[dict]:
    rows = []
    for m in metrics:
        vals = [v[m] for v in items if m in v]
        if vals:
            mean, lo, hi = mean_ci(vals, seed=seed)
            rows.append(row(point, m, len(vals), mean, lo, hi, reference="midi" if m in MIDI_METRICS else reference,
                            detail=detail))
    return rows
