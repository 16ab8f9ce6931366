"""Long audio: transform a mel of any length by overlapping windows, cross-faded with linear
ramps whose weights sum to one, so there is no seam. With shared noise (DiffTransfer), each
item draws one noise field over its whole length and every window starts from its slice, so
overlapping windows start from the same state."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from schemas.diffusion import WindowConfig
from tasks.diffusion.noise import ItemNoise, item_seed

# transform(guide windows [n, bins, W], start noise [n, bins, W], per-window noise) -> [n, bins, W]
WindowTransform = Callable[[torch.Tensor, torch.Tensor, ItemNoise], torch.Tensor]


def window_starts(num_frames: int, window_frames: int, overlap_frames: int) -> list[int]:
    """Start frames covering [0, num_frames): hop = window - overlap, the last window ends at
    the end (it may overlap its neighbour by more than overlap_frames)."""
    if num_frames <= window_frames:
        return [0]
    hop = window_frames - overlap_frames
    starts = list(range(0, num_frames - window_frames + 1, hop))
    if starts[-1] + window_frames < num_frames:
        starts.append(num_frames - window_frames)
    return starts


def crossfade_weights(starts: Sequence[int], window_frames: int, overlap_frames: int) -> torch.Tensor:
    """[num_windows, window_frames]: ramps over each side that touches a neighbour."""
    w = torch.ones(len(starts), window_frames, dtype=torch.float64)
    if overlap_frames == 0:
        return w
    ramp = (torch.arange(overlap_frames, dtype=torch.float64) + 0.5) / overlap_frames
    for j in range(len(starts)):
        if j > 0:
            w[j, :overlap_frames] = ramp
        if j < len(starts) - 1:
            w[j, -overlap_frames:] = ramp.flip(0)
    return w


@dataclass(frozen=True)
class Window:
    item: int                  # index of its item in the call
    start: int                 # first frame in the (edge-padded) item
    guide: torch.Tensor        # [bins, W]
    start_noise: torch.Tensor  # [bins, W]: its slice of the item's shared noise field, or its own
    seed: int                  # its churn/step noise seed


def item_windows(mels: Sequence[torch.Tensor], item_ids: Sequence[str], cfg: WindowConfig, run_seed: int) -> list[Window]:
    """The windows a transform runs, with their start noise: every window's noise comes from its
    item's ID, so an item's result does not depend on what else is in the call. Items shorter
    than a window are edge-padded. (Shared with the adaptive tau_init search, which previews the
    very start states the run will use.)"""
    W, ov = cfg.window_frames, cfg.overlap_frames
    jobs = []
    for it, (mel, iid) in enumerate(zip(mels, item_ids)):
        t = mel.shape[-1]
        padded = mel if t >= W else torch.nn.functional.pad(mel[None], (0, W - t), mode="replicate")[0]
        shared = ItemNoise([item_seed(run_seed, iid, "field")])(padded[None])[0] if cfg.shared_noise else None
        for k, a in enumerate(window_starts(padded.shape[-1], W, ov)):
            seed = item_seed(run_seed, iid, "window", k)
            eps = shared[:, a:a + W] if shared is not None else ItemNoise([seed])(padded[None, :, :W])[0]
            jobs.append(Window(it, a, padded[:, a:a + W], eps, seed))
    return jobs


def transform_long(transform: WindowTransform, mels: Sequence[torch.Tensor], item_ids: Sequence[str],
                   cfg: WindowConfig, run_seed: int, *, max_batch_windows: int = 16) -> list[torch.Tensor]:
    """Transform items of any length ([bins, frames] each). Windows of all items are batched
    together (tasks.diffusion.windows.item_windows)."""
    W, ov = cfg.window_frames, cfg.overlap_frames
    jobs = item_windows(mels, item_ids, cfg, run_seed)
    outs = []
    for b in range(0, len(jobs), max_batch_windows):
        chunk = jobs[b:b + max_batch_windows]
        y = transform(torch.stack([j.guide for j in chunk]), torch.stack([j.start_noise for j in chunk]),
                      ItemNoise([j.seed for j in chunk]))
        outs.extend(y.unbind(0))
    results = []
    for it, mel in enumerate(mels):
        mine = [(j.start, o) for j, o in zip(jobs, outs) if j.item == it]
        starts = [a for a, _ in mine]
        span = max(mel.shape[-1], W)
        weights = crossfade_weights(starts, W, ov).to(mel.dtype)
        acc = torch.zeros(mel.shape[0], span, dtype=mel.dtype)
        norm = torch.zeros(span, dtype=mel.dtype)
        for (a, o), w in zip(mine, weights):
            acc[:, a:a + W] += o * w
            norm[a:a + W] += w
        results.append((acc / norm)[:, :mel.shape[-1]])
    return results
