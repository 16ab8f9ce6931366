"""`reinstrument metrics copy-synthesis`: how much a decoder alone costs. Held-out clips of each
domain go through the project's log-mel and back through each decoder (Griffin-Lim, and the
trained vocoder when named); the real clips themselves are the floor. Per (domain, decoder):
FAD against the *real* train clips of the same domain (musicnn-msd), log-spectral distance and
multi-resolution STFT distance to the original, pitch JD against the original (Basic Pitch: does
the decoder add or lose notes? a frame-rate buzz is heard as a low note), and decoding speed
(audio seconds per second). With an autoencoder named, one more decoder: the log-mel through the
autoencoder (encode, decode) and then the vocoder, the latent path's floor."""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from infra.settings import get_settings
from infra.tracking import model_checkpoint, resolve_model
from schemas.configs import MelConfig
from tasks.builders import load_autoencoder, load_vocoder, make_embedding, make_vocoder
from tasks.diffusion.vocoder import Vocoder
from tasks.autoencoder.model import reconstruct
from tasks.features import LogMel
from tasks.metrics.enhancement import log_spectral_distance_db
from tasks.metrics.fad import embed_set, fad
from tasks.metrics.frechet import gaussian_stats
from tasks.metrics.pitch import DEFAULT_THRESHOLD, BasicPitch
from tasks.metrics.pitch_sets import active_sets, jaccard_distance
from tasks.metrics.sources import AudioItem, audio_items
from tasks.vocoder.losses import multi_resolution_stft


@dataclass
class CopySynthesisRow:
    domain: str
    decoder: str
    clips: int
    fad: float
    fad_ci: tuple[float, float]
    lsd_db: float | None
    mr_stft: float | None
    jd: float | None              # mean pitch Jaccard distance to the original clip (docs/design.md, JD)
    realtime: float | None        # audio seconds decoded per wall second (None for the real clips)


def _decode(items: list[AudioItem], decoder: Vocoder, mel: MelConfig) -> tuple[list[AudioItem], float]:
    front, out, spent = LogMel(mel), [], 0.0

    def logmel(audio: np.ndarray) -> np.ndarray:
        return front(torch.from_numpy(np.ascontiguousarray(audio, np.float32))[None])[0].numpy()

    def decode(it: AudioItem, logmel: np.ndarray) -> np.ndarray:
        try:
            return np.asarray(decoder(logmel), np.float32)
        except ValueError as e:
            raise ValueError(f"clip {it.item_id}: {e}") from None

    if items:  # warm-up, untimed: a first call's compilation (PGHI's numba) and allocations are not speed
        decode(items[0], logmel(items[0].audio[:16000]))
    for it in items:
        features = logmel(it.audio)
        t0 = time.perf_counter()
        y = decode(it, features)
        spent += time.perf_counter() - t0
        out.append(AudioItem(it.item_id, np.pad(y, (0, max(0, len(it.audio) - len(y))))[:len(it.audio)], it.sample_rate_hz))
    return out, spent


def _mean_jd(decoded: list[np.ndarray], originals: list[np.ndarray]) -> float | None:
    """Mean JD over the clips where it is defined (a clip silent on both sides has none)."""
    values = [jaccard_distance(d, o).distance for d, o in zip(decoded, originals) if d.any() or o.any()]
    return float(np.mean(values)) if values else None


def copy_synthesis_job(clips_url: str, domains: list[str], *, vocoders: Sequence[str] = (), phases: Sequence[str] = (),
                       split: str = "test", reference_split: str = "train", limit: int | None = None,
                       griffin_lim_iters: int = 32, embedding: str = "musicnn", seed: int = 0,
                       autoencoder: str | None = None) -> list[CopySynthesisRow]:
    """`vocoders`: trained vocoders, each a decoder of its own, side by side; `phases`: decode each
    of them with these phases instead of its own setting ("head", "pghi": the same weights)."""
    mel = MelConfig()
    emb = make_embedding(embedding, get_settings().weights_dir)
    tracker = BasicPitch(get_settings().weights_dir)
    decoders: dict[str, Vocoder] = {f"griffin-lim ({griffin_lim_iters} it.)": make_vocoder("griffin-lim", mel, n_iter=griffin_lim_iters)}
    for vocoder in vocoders:
        uri, name = resolve_model(vocoder)
        loaded = load_vocoder(model_checkpoint(uri), name, mel)
        for phase in phases or (None,):  # one set of weights, shared by every phase
            decoders[name if phase is None else f"{name} ({phase} phase)"] = loaded if phase is None else loaded.with_phase(phase)
    if autoencoder:
        uri, ae_name = resolve_model(autoencoder)
        ae = load_autoencoder(model_checkpoint(uri), ae_name, mel).model
        last = list(decoders)[-1]  # the last named vocoder, else Griffin-Lim
        decoders[f"{ae_name} + {last}"] = lambda logmel, v=decoders[last]: v(reconstruct(ae, logmel))
    rows = []
    for domain in domains:
        held = list(audio_items(clips_url, domain=domain, role="clean", split=split, limit=limit))
        reference = gaussian_stats(embed_set(audio_items(clips_url, domain=domain, role="clean", split=reference_split),
                                             emb).embeddings)
        if len(held) < 2:
            raise ValueError(f"{len(held)} {split} clips of {domain!r} in {clips_url}: FAD needs at least 2")
        r = fad(embed_set(held, emb), reference, emb.name, seed=seed)
        rows.append(CopySynthesisRow(domain, "real clips", len(held), r.fad, (r.ci_low, r.ci_high), None, None, None, None))
        notes = [active_sets(tracker.notes(h.audio, h.sample_rate_hz), DEFAULT_THRESHOLD) for h in held]
        seconds = sum(len(i.audio) / i.sample_rate_hz for i in held)
        for label, dec in decoders.items():
            decoded, spent = _decode(held, dec, mel)
            r = fad(embed_set(decoded, emb), reference, emb.name, seed=seed)
            lsd = float(np.mean([log_spectral_distance_db(d.audio, h.audio) for d, h in zip(decoded, held)]))
            mr = float(np.mean([float(multi_resolution_stft(torch.from_numpy(d.audio)[None], torch.from_numpy(h.audio)[None]))
                                for d, h in zip(decoded, held)]))
            jd = _mean_jd([active_sets(tracker.notes(d.audio, d.sample_rate_hz), DEFAULT_THRESHOLD) for d in decoded], notes)
            rows.append(CopySynthesisRow(domain, label, len(held), r.fad, (r.ci_low, r.ci_high), lsd, mr, jd,
                                         seconds / spent))
    return rows
