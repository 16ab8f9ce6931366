"""`reinstrument warm-probe` (probe_job): how far warm initialization moves guides toward a model's domain,
per tau_init, measured with the timbre probe (tasks.timbre_probe). A quick check of a trained
model, not the paper metrics (FAD/JD come with the metrics stage)."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import torch

from infra.datasets import ShardedDataset
from infra.tracking import model_checkpoint, resolve_model
from schemas.diffusion import SamplerConfig, WarmStartConfig
from schemas.records import FeatureSetExtra
from tasks.builders import load_model
from tasks.diffusion.noise import ItemNoise, item_seed
from tasks.diffusion.train_data import denormalise, normalise
from tasks.diffusion.warm import warm_transform
from tasks.feature_values import decode_values_column
from tasks.timbre_probe import fit_probe, p_target


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
    probe = fit_probe(_segments(features_url, target, ("train",))[0],
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
        rows.append({"t_init": t, f"P({target})": float(p_target(probe, logmel).mean()),
                     "mean |out - guide| (normalised)": float((out - g).abs().mean())})
    return rows
