"""`reinstrument warm-probe` (probe_job): how far warm initialization moves guides toward a model's domain,
per tau_init, measured with the timbre probe (tasks.timbre_probe). A quick check of a trained
model, not the paper metrics (FAD/JD come with the metrics stage).

`reinstrument train-probe` (train_probe_job): the instrument probe that `--t-init auto` and the
sweep and compare tables' target accuracy use (tasks/probe.py)."""
from __future__ import annotations

import hashlib
import json
import platform
import time

import librosa
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from infra.datasets import ShardedDataset
from infra.settings import cpu_flags
from infra.shipped import PROBE_FILE
from infra.storage import Storage
from infra.tracking import model_checkpoint, resolve_model
from schemas.configs import MelConfig
from schemas.probe import ProbeCard, ProbeConfig, ProbeScoreRow
from tasks.audio import decode_audio_bytes
from schemas.diffusion import SamplerConfig, WarmStartConfig
from schemas.records import FeatureSetExtra
from tasks.builders import load_model
from tasks.diffusion.noise import ItemNoise, item_seed
from tasks.diffusion.train_data import denormalise, normalise
from tasks.diffusion.warm import warm_transform
from tasks.feature_values import decode_values_column
from tasks.features import LogMel
from tasks.probe import accuracy_by_group, descriptors, fit_probe
from tasks import timbre_probe


def _segments(url: str, domain: str, splits: tuple[str, ...], limit: int | None = None):
    t = ShardedDataset.at(url, "features").read(["feature_id", "values", "values_dtype", "num_bins",
                                                  "num_frames", "domain", "role", "split"])
    t = t.filter(pc.and_(pc.and_(pc.equal(t["domain"], domain), pc.equal(t["role"], "clean")),
                         pc.is_in(t["split"], value_set=pa.array(list(splits)))))
    t = t.sort_by("feature_id")
    if limit:
        t = t.slice(0, limit)
    if t.num_rows == 0:
        raise ValueError(f"no clean {domain!r} segments in splits {splits} of {url}")
    return decode_values_column(t), t.column("feature_id").to_pylist()


def probe_job(model_uri: str, features_url: str, guide_domain: str, t_inits: list[float], *,
              steps: int | None = None, sampler: str = "heun", lam: float = 1.0, segments: int = 32,
              seed: int = 0) -> list[dict]:
    pinned, name = resolve_model(model_uri)
    loaded = load_model(model_checkpoint(pinned), name)
    model, card = loaded.model, loaded.card
    features = FeatureSetExtra.of(ShardedDataset.at(features_url, "features").manifest().extra, features_url).config
    if features.encoder != card.encoder:  # a latent model reads only its own encoder's latents
        raise ValueError(f"{name} models {f'the latents of {card.encoder}' if card.encoder else 'log-mels'}; "
                         f"{features_url} holds {f'the latents of {features.encoder}' if features.encoder else 'log-mels'}")
    target = card.domain
    probe = timbre_probe.fit_probe(_segments(features_url, target, ("train",))[0],
                      _segments(features_url, guide_domain, ("train",))[0], seed)
    guides, ids = _segments(features_url, guide_domain, ("valid", "test"), segments)
    g = normalise(torch.from_numpy(guides), card.mean, card.std)
    rows = []
    for t in t_inits:
        noise = ItemNoise([item_seed(seed, i) for i in ids])
        with torch.no_grad():
            out = warm_transform(model, g, SamplerConfig(name=sampler, **({"steps": steps} if steps else {})), model.cfg,
                                 WarmStartConfig(t_init=t, lam=lam), noise)
        logmel = denormalise(out, card.mean, card.std).numpy()
        rows.append({"t_init": t, f"P({target})": float(timbre_probe.p_target(probe, logmel).mean()),
                     "mean |out - guide| (normalised)": float((out - g).abs().mean())})
    return rows


# -- the instrument probe (tasks/probe.py): fitted on a corpus, scored on collections it never heard --
def _descriptor_rows(url: str, splits: tuple[str, ...] | None, instruments: tuple[str, ...], cfg: ProbeConfig | None,
                     progress: str) -> tuple[torch.Tensor, list[str], list[str]]:
    """Descriptors of the clean clips of a clips dataset (cfg: random crops for training, drawn per
    clip ID; None: whole clips), with each clip's instrument and soundfont. Read shard by shard:
    only descriptors (3 x n_mels floats per crop) are kept."""
    front = LogMel(MelConfig())
    xs, inst, sfs = [], [], []
    ds = ShardedDataset.at(url, "clips")
    done = 0
    for _, t in ds.iter_shards(["clip_id", "instrument", "soundfont", "split", "role", "audio_flac"]):
        for r in t.to_pylist():
            if r["role"] != "clean" or not r["instrument"] or (splits and r["split"] not in splits) \
                    or (instruments and r["instrument"] not in instruments):
                continue
            audio, sr = decode_audio_bytes(r["audio_flac"])
            if sr != front.cfg.sample_rate_hz:
                audio = librosa.resample(audio, orig_sr=sr, target_sr=front.cfg.sample_rate_hz, res_type="soxr_hq")
            m = front(torch.from_numpy(np.ascontiguousarray(audio, np.float32))[None])
            crops = [m]
            if cfg is not None:
                g = np.random.default_rng(item_seed(cfg.seed, r["clip_id"], "probe"))
                room = max(1, m.shape[-1] - cfg.crop_frames)
                crops = [m[..., s:s + cfg.crop_frames] for s in g.integers(0, room, cfg.crops_per_clip)]
            for c in crops:
                xs.append(descriptors(c))
                inst.append(r["instrument"])
                sfs.append(r["soundfont"] or "-")
            done += 1
        print(f"[probe] {progress}: {done} clips", flush=True)
    if not xs:
        raise ValueError(f"no clean clips with an instrument in {url} (splits {list(splits or ['all'])}"
                         f"{', instruments ' + str(list(instruments)) if instruments else ''})")
    return torch.cat(xs), inst, sfs


def train_probe_job(clips_url: str, out: str, cfg: ProbeConfig, heldout: tuple[str, ...] = (),
                    command: str = "") -> ProbeCard:
    """Fit the instrument probe on the train split of `clips_url`, score it on that corpus's
    valid/test clips and on every held-out clips dataset (per instrument and soundfont), and write
    `out`/probe.pt with its card.json (atomically, the card last)."""
    t0 = time.perf_counter()
    x, inst, _ = _descriptor_rows(clips_url, ("train",), cfg.instruments, cfg, "training clips")
    labels = cfg.instruments or tuple(sorted(set(inst)))
    probe = fit_probe(x, torch.tensor([labels.index(i) for i in inst]), labels, l2=cfg.l2)
    fitted_s = time.perf_counter() - t0
    rows = []
    for name, url, splits in [("corpus (valid+test)", clips_url, ("valid", "test"))] + \
            [(url.rstrip("/").rsplit("/", 2)[-2] if url.rstrip("/").endswith("clips") else url, url, None)
             for url in heldout]:
        try:
            hx, hi, hs = _descriptor_rows(url, splits, labels, None, name)
        except ValueError:
            if splits is None:  # a held-out set without the probe's instruments is a mistake
                raise
            continue  # a corpus too small to have valid/test clips: scored on the held-out sets only
        rows += [ProbeScoreRow(collection=name, instrument=g.instrument, soundfont=g.soundfont, clips=g.clips,
                               accuracy=round(g.accuracy, 4)) for g in accuracy_by_group(probe, hx, hi, hs)]
    data = probe.to_bytes()
    card = ProbeCard(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data), labels=labels, config=cfg,
                     corpus=clips_url, training_clips=len(inst) // cfg.crops_per_clip, wall_time_s=round(fitted_s, 1),
                     accuracy=tuple(rows), machine={"cpu": platform.processor() or platform.machine(),
                                                    "flags": cpu_flags()},
                     commands={"training_command": command} if command else {})
    store = Storage(out)
    store.write_bytes(PROBE_FILE, data)
    store.write_bytes("card.json", (json.dumps(card.model_dump(mode="json"), indent=2) + "\n").encode())
    return card
