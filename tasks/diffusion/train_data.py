"""Feature rows -> training tensors (the data preparation of the diffusion kinds, tasks/diffusion/kind.py): normalised with the feature set's train statistics and
sorted by feature ID, so a row's index (and hence every seeded draw) never depends on the order
in which shards or Ray blocks arrived."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from infra.datasets import ShardedDataset
from schemas.records import ModelCard
from schemas.training import TrainConfig
from tasks.feature_values import decode_values

FEATURE_COLUMNS = ["feature_id", "values", "values_dtype", "num_bins", "num_frames", "num_valid_frames", "split"]


def segments_tensor(feature_ids: Sequence[str], values: Sequence[np.ndarray], num_bins: Sequence[int],
                    num_frames: Sequence[int], num_valid_frames: Sequence[int],
                    mean: np.ndarray, std: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(segments [N, bins, frames] float32 normalised, valid frames [N], sorted feature IDs)."""
    if not len(feature_ids):
        raise ValueError("no feature rows matched (domain, role, split): nothing to train or validate on")
    order = np.argsort(np.asarray(feature_ids))
    bins, frames = int(num_bins[0]), int(num_frames[0])
    x = np.empty((len(order), bins, frames), np.float32)
    for j, i in enumerate(order):
        if int(num_bins[i]) != bins or int(num_frames[i]) != frames:
            raise ValueError(f"feature {feature_ids[i]} is {num_bins[i]}x{num_frames[i]}; "
                             f"expected {bins}x{frames} like the others")
        x[j] = np.asarray(values[i], np.float32).reshape(bins, frames)
    x = (x - mean[None, :, None]) / std[None, :, None]
    valid = torch.as_tensor(np.asarray(num_valid_frames)[order].astype(np.int64))
    return torch.from_numpy(x), valid, [feature_ids[i] for i in order]


def denormalise(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Model space -> natural-log mel: the inverse of the normalisation above, [..., bins, frames]."""
    m = torch.as_tensor(mean, dtype=x.dtype)[:, None]
    s = torch.as_tensor(std, dtype=x.dtype)[:, None]
    return x * s + m


def normalise(logmel: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    m = torch.as_tensor(mean, dtype=logmel.dtype)[:, None]
    s = torch.as_tensor(std, dtype=logmel.dtype)[:, None]
    return (logmel - m) / s


@dataclass
class TrainData:
    train_x: torch.Tensor
    train_valid: torch.Tensor
    val_x: torch.Tensor
    val_valid: torch.Tensor
    val_split: str
    val_ids: list[str]
    train_c: torch.Tensor | None = None   # paired source segments (conditional baseline)
    val_c: torch.Tensor | None = None
    train_y: torch.Tensor | None = None   # class labels [N] (label-conditional models)
    val_y: torch.Tensor | None = None


def train_data_from_columns(cols: dict[str, list], cfg: TrainConfig, card: ModelCard) -> TrainData:
    """Split rows into train and a fixed validation set (split 'valid', else 'test', else a held-
    out tail of train, which the run's val_split says). Paired rows also give the source
    segments, normalised with the source domain's statistics, in the same order."""
    def subset(split: str, values: str, source: bool):
        idx = [i for i, s in enumerate(cols["split"]) if s == split]
        if not idx:
            return None
        pick = lambda c: [cols[c][i] for i in idx]  # noqa: E731
        mean, std = (np.asarray(v, np.float32) for v in card.guide_stats(conditional_input=source))
        arrays = [decode_values(*row) for row in zip(pick(values), pick("values_dtype"), pick("num_bins"),
                                                     pick("num_frames"))]
        return segments_tensor(pick("feature_id"), arrays, pick("num_bins"), pick("num_frames"),
                               pick("num_valid_frames"), mean, std)

    label_of = dict(zip(cols["feature_id"], cols["label"])) if cfg.labels else {}

    def split_data(split: str):
        t = subset(split, "values", False)
        if t is None:
            return None
        labels = torch.as_tensor([label_of[i] for i in t[2]], dtype=torch.long) if cfg.labels else None
        return t[0], t[1], t[2], (subset(split, "cond_values", True)[0] if cfg.paired else None), labels

    if cols["num_frames"] and cfg.crop_frames > int(cols["num_frames"][0]):
        raise ValueError(f"crop_frames={cfg.crop_frames} exceeds the segments of {cfg.features_url} "
                         f"({cols['num_frames'][0]} frames; a latent set has segment_frames / time_downsample): "
                         "choose a preset for it (cpu-latent for latent sets) or a smaller crop_frames")
    train = split_data("train")
    if train is None:
        raise ValueError(f"no train rows for domain={cfg.labels or cfg.domain!r} role={cfg.role!r}"
                         + (f" paired with {cfg.cond_domain!r}" if cfg.paired else "") + f" in {cfg.features_url}")
    for val_split in ("valid", "test"):
        val = split_data(val_split)
        if val is not None:
            break
    else:
        n, val_split = max(1, min(cfg.validation_segments, train[0].shape[0] // 5)), "train-heldout"
        val = tuple(None if t is None else t[-n:] for t in train)
        train = tuple(None if t is None else t[:-n] for t in train)
    k = cfg.validation_segments
    return TrainData(train[0], train[1], val[0][:k], val[1][:k], val_split, list(val[2][:k]),
                     train[3], None if val[3] is None else val[3][:k],
                     train[4], None if val[4] is None else val[4][:k])


def _domain_rows(t: pa.Table, domain: str, role: str) -> pa.Table:
    return t.filter(pc.and_(pc.equal(t["domain"], domain), pc.equal(t["role"], role)))


def feature_table(cfg: TrainConfig) -> pa.Table:
    """The rows training reads. Paired (conditional baseline): each target segment with the source
    segment cut from the same MIDI segment (source_id) at the same position; the first by feature
    ID when there are several (e.g. soundfonts)."""
    ds = ShardedDataset.at(cfg.features_url, "features")
    t = ds.read(FEATURE_COLUMNS + ["domain", "role"] + (["clip_id", "segment_index"] if cfg.paired else []))
    if cfg.labels:  # every row of any labelled domain, with its domain's index as the label
        t = t.filter(pc.and_(pc.is_in(t["domain"], pa.array(cfg.labels)), pc.equal(t["role"], cfg.role)))
        t = t.sort_by("feature_id")
        index = {d: i for i, d in enumerate(cfg.labels)}
        if cfg.paired:  # any -> any: each row with the same segment as another instrument plays it
            t = _with_other_instrument(t, _clip_sources(ds))
        return t.select(FEATURE_COLUMNS + (["cond_values"] if cfg.paired else [])).append_column(
            "label", pa.array([index[d] for d in t["domain"].to_pylist()], pa.int64()))
    target = _domain_rows(t, cfg.domain, cfg.role)
    if not cfg.paired:
        return target.select(FEATURE_COLUMNS)
    source_of = _clip_sources(ds)
    source = _domain_rows(t, cfg.cond_domain, cfg.cond_role).sort_by("feature_id")  # type: ignore[arg-type]
    first: dict[tuple, int] = {}
    for j, (clip, seg) in enumerate(zip(source["clip_id"].to_pylist(), source["segment_index"].to_pylist())):
        first.setdefault((source_of.get(clip), seg), j)
    keep, take = [], []
    for i, (clip, seg) in enumerate(zip(target["clip_id"].to_pylist(), target["segment_index"].to_pylist())):
        j = first.get((source_of.get(clip), seg)) if source_of.get(clip) is not None else None
        if j is not None:
            keep.append(i)
            take.append(j)
    target, source = target.take(keep), source.take(take)
    valid = pc.min_element_wise(target["num_valid_frames"], source["num_valid_frames"])
    out = target.select(FEATURE_COLUMNS)
    out = out.set_column(FEATURE_COLUMNS.index("num_valid_frames"), "num_valid_frames", valid)
    return out.append_column("cond_values", source["values"])


def _with_other_instrument(t: pa.Table, source_of: dict[str, str]) -> pa.Table:
    """Rows (sorted by feature ID) that have the same segment (source_id, segment index) in another
    domain, each with the first such row's values as `cond_values` (valid frames: the shorter)."""
    keys = [(source_of.get(c), s) for c, s in zip(t["clip_id"].to_pylist(), t["segment_index"].to_pylist())]
    domains = t["domain"].to_pylist()
    first: dict[tuple, dict[str, int]] = {}
    for j, (k, d) in enumerate(zip(keys, domains)):
        if k[0] is not None:
            first.setdefault(k, {}).setdefault(d, j)
    keep, take = [], []
    for i, (k, d) in enumerate(zip(keys, domains)):
        other = next((j for dom, j in sorted(first.get(k, {}).items()) if dom != d), None) if k[0] is not None else None
        if other is not None:
            keep.append(i)
            take.append(other)
    target, source = t.take(keep), t.take(take)
    valid = pc.min_element_wise(target["num_valid_frames"], source["num_valid_frames"])
    target = target.set_column(target.schema.get_field_index("num_valid_frames"), "num_valid_frames", valid)
    return target.append_column("cond_values", source["values"])


def _clip_sources(features: ShardedDataset) -> dict[str, str]:
    """clip_id -> source_id, from the clips datasets the feature set was made from (its manifest)."""
    urls = {k.rsplit("#", 1)[0] for k in features.manifest().extra.get("inputs", {})}
    out: dict[str, str] = {}
    for url in sorted(urls):
        t = ShardedDataset.at(url, "clips").read(["clip_id", "source_id"])
        out.update(zip(t["clip_id"].to_pylist(), t["source_id"].to_pylist()))
    return out


def read_columns_local(cfg: TrainConfig) -> dict[str, list]:
    return feature_table(cfg).to_pydict()
