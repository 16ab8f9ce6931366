"""Set-level metrics the jobs share: FAD of one set against another, pitch JD of paired items
(same relative path or clip ID on both sides), and every metric of one transformed set
(`point_rows`: realism, faithfulness, and enhancement quality where the clean clip is known)."""
from __future__ import annotations

import os
from dataclasses import dataclass

import librosa
import numpy as np
import torch

from infra.progress import progress
from infra.shipped import probe_bytes
from infra.storage import Storage
from schemas.configs import MelConfig
from schemas.probe import SHIPPED_PROBE
from tasks.features import LogMel
from tasks.metrics.embeddings import Embedding
from tasks.metrics.fad import FadResult, cached_reference_stats, embed_set, fad
from tasks.metrics.frechet import GaussianStats, gaussian_stats
from tasks.metrics.pitch import DEFAULT_THRESHOLD, BasicPitch
from tasks.metrics.sources import AudioItem, audio_items, content_key
from tasks.probe import InstrumentProbe
from tasks.metrics.table import (ENHANCEMENT_METRICS, PITCH_METRICS, GridPoint, aggregate, enhancement_item_values,
                                 fad_rows, pitch_item_values)


@dataclass(frozen=True)
class SetSpec:
    url: str
    domain: str | None = None
    role: str | None = None
    split: str | None = None
    limit: int | None = None
    label: str | None = None     # shown on the progress line while the set is read

    def items(self):
        it = audio_items(self.url, domain=self.domain, role=self.role, split=self.split, limit=self.limit)
        return progress(it, self.limit, self.label) if self.label else it

    def describe(self) -> str:
        filt = ",".join(f"{k}={v}" for k, v in (("domain", self.domain), ("role", self.role), ("split", self.split)) if v)
        return f"{self.url}" + (f"[{filt}]" if filt else "")


def fad_between(evaluated: SetSpec, reference: SetSpec, embedding: Embedding, *, cache_url: str | None = None,
                reference_domain: str | None = None, n_boot: int = 200, seed: int = 0,
                ) -> tuple[FadResult, bool]:
    """FAD of `evaluated` against `reference`; the reference's statistics come from the cache
    when `cache_url` is given and they were computed before. Returns (result, reference_cached)."""
    ref_items = list(reference.items())
    if not ref_items:
        raise ValueError(f"the reference set {reference.describe()} is empty")
    build = lambda: embed_set(ref_items, embedding)  # noqa: E731
    if cache_url:
        stats, cached = cached_reference_stats(Storage(cache_url), reference_domain or reference.domain or "any",
                                               embedding.name, [content_key(i) for i in ref_items], build)
    else:
        stats, cached = gaussian_stats(build().embeddings), False
    return fad(embed_set(evaluated.items(), embedding), stats, embedding.name,
               n_boot=n_boot, seed=seed), cached


def _key(item: AudioItem) -> str:
    return os.path.splitext(item.item_id)[0]


def paired(a: SetSpec, b: SetSpec) -> list[tuple[AudioItem, AudioItem]]:
    """Items present on both sides (matched by relative path without extension, or clip ID)."""
    left = {_key(i): i for i in a.items()}
    right = {_key(i): i for i in b.items()}
    common = sorted(set(left) & set(right))
    if not common:
        raise ValueError(f"no item of {a.describe()} has a counterpart in {b.describe()} (pairs are matched by "
                         f"relative path without extension); e.g. {sorted(left)[:2]} vs {sorted(right)[:2]}")
    return [(left[k], right[k]) for k in common]


def jd_between(a: SetSpec, b: SetSpec, tracker: BasicPitch, *, threshold: float = DEFAULT_THRESHOLD,
               point: GridPoint | None = None) -> tuple[list[dict], list[dict]]:
    """Per-pair values and the aggregated metrics rows (JD, melody JD; vs MIDI where known)."""
    pairs = paired(a, b)
    values = pitch_item_values(pairs, tracker, threshold)
    rows = aggregate(point or GridPoint(run_id="adhoc", method="reference", task="compare"), values,
                     PITCH_METRICS, reference="guide", detail=f"basic-pitch threshold={threshold}")
    return values, rows


def fad_table_rows(result: FadResult, reference: SetSpec, point: GridPoint | None = None,
                   domain: str | None = None) -> list[dict]:
    domain = domain or reference.domain
    return fad_rows(point or GridPoint(run_id="adhoc", method="reference", task="compare"), result,
                    reference=f"domain:{domain}" if domain else reference.describe())


def point_rows(point: GridPoint, outputs: list[AudioItem], guides: dict[str, AudioItem],
               references: dict[str, tuple[GaussianStats, str]], embedding: Embedding, tracker: BasicPitch, *,
               threshold: float = DEFAULT_THRESHOLD, clean: dict[str, AudioItem] | None = None, seed: int = 0,
               probe: tuple[InstrumentProbe, str, str] | None = None) -> list[dict]:
    """The metrics rows of one set of outputs: FAD against each reference's statistics (metric name
    -> (statistics, label); the outputs are embedded once), JD/melody JD (and F1/JD against the
    MIDI where a guide has one) against the guide of the same clip ID, SI-SDR/LSD/mel-L1
    against the clean clip when `clean` maps clip IDs to it, and the share of outputs the
    instrument probe hears as the target (`probe`: see target_probe)."""
    embedded = embed_set(outputs, embedding) if references else None
    rows = [r for metric, (stats, label) in references.items()
            for r in fad_rows(point, fad(embedded, stats, embedding.name, seed=seed), label, metric)]
    pairs = [(o, guides[o.item_id]) for o in outputs if o.item_id in guides]
    rows += aggregate(point, pitch_item_values(pairs, tracker, threshold), PITCH_METRICS, reference="guide",
                      detail=f"basic-pitch threshold={threshold}")
    if clean is not None:
        epairs = [(o, clean[o.item_id]) for o in outputs if o.item_id in clean]
        rows += aggregate(point, enhancement_item_values(epairs), ENHANCEMENT_METRICS, reference="clean")
    if probe is not None:
        rows += aggregate(point, target_hits(outputs, *probe), ("target_accuracy",), reference=f"probe:{probe[1]}",
                          seed=seed, detail=probe[2])
    return rows


def target_probe(target: str | None, uri: str = SHIPPED_PROBE) -> tuple[InstrumentProbe, str, str] | None:
    """(the instrument probe, the target, its pinned URI) for the tables' target accuracy; None when
    there is no target instrument or the probe was not trained on it (nothing it could say)."""
    if not target:
        return None
    try:
        pinned, data = probe_bytes(uri)
    except (ValueError, OSError):
        return None
    probe = InstrumentProbe.from_bytes(data)
    return (probe, target, pinned) if target in probe.labels else None


def target_hits(outputs: list[AudioItem], probe: InstrumentProbe, target: str, _pinned: str = "") -> list[dict]:
    """Per output: 1 where the probe's most probable instrument is the target, else 0 (its mean is
    the share of outputs that sound like the target: "target accuracy")."""
    front, rate = LogMel(MelConfig()), MelConfig().sample_rate_hz
    out = []
    for o in outputs:
        x = o.audio if o.sample_rate_hz == rate else librosa.resample(o.audio, orig_sr=o.sample_rate_hz, target_sr=rate,
                                                                      res_type="soxr_hq")
        with torch.no_grad():
            k = int(probe(front(torch.from_numpy(np.ascontiguousarray(x, np.float32))[None])).argmax())
        out.append({"target_accuracy": float(probe.labels[k] == target)})
    return out
