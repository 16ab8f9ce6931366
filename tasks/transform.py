"""Transform clips into a target domain (pure code; the Ray actor and the flow adapt it).

Per clip: log-mel of the guide (a latent model: encoded by its autoencoder, the posterior mean)
-> normalised with the model's statistics -> the method on overlapping windows
(tasks.diffusion.windows, per-item noise from (run seed, clip ID)) -> denormalised (a latent
model: decoded to log-mel) -> vocoded -> trimmed to the guide's duration. Model calls always see a batch of
exactly `batch_windows` windows (short batches are zero-padded): CPU kernels are chosen by
shape, so a fixed shape makes each clip's result independent of what shares its batch."""
from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import librosa
import numpy as np
import torch

from schemas.diffusion import WarmStartConfig
from schemas.transform import TransformConfig
from tasks.auto_t_init import AutoChoice, choose_by_noise, choose_t_init
from tasks.builders import LoadedAutoencoder, LoadedModel, make_method, make_vocoder, target_denoiser
from tasks.probe import InstrumentProbe
from tasks.diffusion.noise import ItemNoise
from tasks.diffusion.vocoder import Vocoder
from tasks.vocoder.vocos import NeuralVocoder
from tasks.diffusion.train_data import denormalise, normalise
from tasks.diffusion.warm import warm_sigmas
from tasks.diffusion.windows import item_windows, transform_long
from tasks.features import LogMel, num_frames_for


@dataclass(frozen=True)
class ClipOutput:
    audio: np.ndarray     # mono float32 at `sample_rate_hz`
    sample_rate_hz: int
    seconds_spent: float
    choice: AutoChoice | None = None  # --t-init auto: the tau_init chosen for this clip, and why


def output_key(clip_id: str, model_name: str, source_model: str | None, cfg: TransformConfig,
               vocoder: str | None = None, decoder: str | None = None, probe: str | None = None) -> str:
    """The content address of one output: input, model version(s), method and settings, the
    trained vocoder's version (Griffin-Lim is named by the config alone), the pinned decoder's and
    (t_init auto) the pinned probe's."""
    key = "|".join([clip_id, model_name, source_model or "", cfg.config_hash()] + ([vocoder] if vocoder else [])
                   + ([f"decoder={decoder}"] if decoder else []) + ([f"probe={probe}"] if probe else []))
    return hashlib.sha256(key.encode()).hexdigest()[:24]


class Transformer:
    def __init__(self, cfg: TransformConfig, target: LoadedModel, source: LoadedModel | None = None, *,
                 batch_windows: int = 8, device: str = "cpu", bf16: bool = False, vocoder: Vocoder | None = None,
                 autoencoder: LoadedAutoencoder | None = None, probe: InstrumentProbe | None = None):
        self.cfg, self.target, self.source = cfg, target, source
        if cfg.auto_rule() == "probe" and probe is None:
            raise ValueError(f"t_init auto needs the instrument probe ({cfg.auto.probe}) loaded (tasks/probe.py)")
        self.probe, self.target_label = probe, cfg.target or target.card.domain
        if cfg.auto_rule() == "probe" and self.target_label not in probe.labels:  # type: ignore[union-attr]
            raise ValueError(f"the instrument probe knows {list(probe.labels)}; it cannot tell {self.target_label!r} "
                             "apart, so t_init auto cannot choose for it (train-probe --instrument ...)")
        self._methods: dict[float, object] = {}
        self.mel = target.card.mel
        self.method = make_method(cfg, target, source)  # checks the models against the method
        self.autoencoder = _check_autoencoder(target, autoencoder)
        # the window counts mel frames (audio time, whatever the model); a latent model sees 1/r of them
        r = target.card.time_downsample
        if cfg.window.window_frames % r or cfg.window.overlap_frames % r:
            raise ValueError(f"window_frames={cfg.window.window_frames} and overlap_frames={cfg.window.overlap_frames} "
                             f"must be multiples of {target.name}'s time_downsample={r} (mel frames per latent frame)")
        self.window = cfg.window.model_copy(update={"window_frames": cfg.window.window_frames // r,
                                                    "overlap_frames": cfg.window.overlap_frames // r})
        self.device = torch.device(device)
        for m in (target, source):
            if m is not None:
                m.model.to(self.device).eval()
        self.batch_windows = batch_windows
        self.autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if bf16 else nullcontext())
        self.front = LogMel(self.mel)
        # `auto` may resolve to Griffin-Lim (nothing trained or shipped); a named model must come loaded
        if vocoder is not None and cfg.vocoder != "griffin-lim":
            self.vocoder = vocoder
        elif cfg.vocoder in ("griffin-lim", "auto"):
            self.vocoder = make_vocoder("griffin-lim", self.mel, n_iter=cfg.vocoder_iters, seed=cfg.seed)
        else:
            raise ValueError(f"the config names the vocoder {cfg.vocoder}; pass it loaded (tasks/builders.load_vocoder)")
        if self.autoencoder is not None and isinstance(self.vocoder, NeuralVocoder):
            # A latent model's mels come out of the autoencoder's decoder, smoother than real ones:
            # there PGHI's phase (integrated from the magnitude's gradients) loses to the head's.
            # Measured with the shipped models, 35 held-out clips, FAD against real flute, PGHI vs
            # head: tau_init 0.65 6.37 vs 5.15, 0.6 3.57 vs 2.4, 0.5 2.83 vs 2.1 (README, Neural vocoder);
            # on real mels PGHI wins (copy-synthesis flute 2.84 vs 4.06). A rule of the model's
            # kind, so an output's key (vocoder file + model) still fixes its decoding.
            self.vocoder = self.vocoder.with_phase("head")
        self.edm = target.model.cfg
        self.sigma_start = float(warm_sigmas(cfg.sampler, self.edm, cfg.warm)[0])
        self.stage_seconds = {"logmel": 0.0, "diffusion": 0.0, "vocoder": 0.0}
        if self.autoencoder is not None:
            self.autoencoder.model.to(self.device).eval()

    # -- one fixed-shape model batch ---------------------------------------------------------
    def _windows(self, guide: torch.Tensor, start_noise: torch.Tensor, noise: ItemNoise, method=None) -> torch.Tensor:
        n, pad = guide.shape[0], self.batch_windows - guide.shape[0]
        if pad < 0:
            raise ValueError(f"{n} windows in one call; at most batch_windows={self.batch_windows}")
        fill = lambda t: torch.cat([t, t.new_zeros((pad, *t.shape[1:]))]).to(self.device)  # noqa: E731
        g, eps = fill(guide), fill(start_noise)
        noise = ItemNoise(noise.seeds + [0] * pad, device=self.device)
        with torch.no_grad(), self.autocast:
            out = (method or self.method)(g, eps, noise)
        return out[:n].float().cpu()

    # -- --t-init auto ----------------------------------------------------------------------
    def _at(self, t_init: float):
        """The warm-init method at one tau_init (the same method a fixed-tau_init run builds)."""
        if t_init not in self._methods:
            warm = WarmStartConfig(t_init=t_init, lam=self.cfg.warm.lam)
            self._methods[t_init] = make_method(self.cfg.model_copy(update={"warm": warm, "auto": None}), self.target)
        return self._methods[t_init]

    def _sigma_of(self, t_init: float) -> float:
        return float(warm_sigmas(self.cfg.sampler, self.edm, WarmStartConfig(t_init=t_init, lam=self.cfg.warm.lam))[0])

    def _p_target(self, x0: torch.Tensor) -> torch.Tensor:
        """P(target) of model-space windows [n, bins, W], read as log-mels."""
        W = x0.shape[-1] * self.target.card.time_downsample
        x = denormalise(x0.float().cpu(), self.target.card.mean, self.target.card.std)
        if self.autoencoder is not None:
            with torch.no_grad():
                x = self.autoencoder.model.decode(x.to(self.device), W).cpu()
        return self.probe.p_of(x, self.target_label)

    def _auto(self, normed: list[torch.Tensor], clip_ids: Sequence[str]) -> tuple[list[torch.Tensor], list[AutoChoice]]:
        """Per clip: tau_init chosen by the probe (tasks/auto_t_init.py), then the fixed-tau_init run at it."""
        wins = item_windows(normed, list(clip_ids), self.window, self.cfg.seed)
        denoiser = target_denoiser(self.cfg, self.target)
        d = lambda x, s: denoiser(x.to(self.device), s.to(self.device)).float().cpu()  # noqa: E731
        with self.autocast:
            if self.cfg.auto_rule() == "noise":
                choices = choose_by_noise(d, wins, len(normed), self.cfg.auto, self._sigma_of, batch=self.batch_windows,
                                          pad_to=self.batch_windows)
            else:
                choices = choose_t_init(d, wins, len(normed), self.cfg.auto, self._sigma_of, self.cfg.warm.lam,
                                        self._p_target, batch=self.batch_windows, pad_to=self.batch_windows)
        outs: list[torch.Tensor | None] = [None] * len(normed)
        for t in sorted({c.t_init for c in choices}, reverse=True):
            idx = [i for i, c in enumerate(choices) if c.t_init == t]
            method = self._at(t)
            got = transform_long(lambda g, e, n: self._windows(g, e, n, method), [normed[i] for i in idx],
                                 [clip_ids[i] for i in idx], self.window, self.cfg.seed, max_batch_windows=self.batch_windows)
            for i, o in zip(idx, got):
                outs[i] = o
        return outs, choices  # type: ignore[return-value]

    def _guide_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return (self.source or self.target).card.guide_stats(conditional_input=self.cfg.method == "conditional")

    def guides(self, audio: Sequence[np.ndarray], sample_rates_hz: Sequence[int]) -> tuple[list[torch.Tensor], list[int]]:
        """(the guides in the model's normalised space [bins, frames], their lengths in samples)."""
        sr = self.mel.sample_rate_hz
        guides, lengths = [], []
        for x, rate in zip(audio, sample_rates_hz):
            x = np.asarray(x, np.float32)
            if not np.isfinite(x).all():
                raise ValueError("guide audio contains NaN or infinite samples")
            if rate != sr:
                x = librosa.resample(x, orig_sr=rate, target_sr=sr, res_type="soxr_hq")
            lengths.append(len(x))
            g = self.front(torch.from_numpy(x)[None])
            if self.autoencoder is not None:
                with torch.no_grad():
                    g = self.autoencoder.model.encode(g.to(self.device))[0].cpu()
            guides.append(g[0])
        mean, std = self._guide_stats()
        return [normalise(g, mean, std) for g in guides], lengths

    def to_logmel(self, out: torch.Tensor, mel_frames: int) -> torch.Tensor:
        """A model-space output [bins, frames] -> log-mel [n_mels, mel_frames]."""
        x = denormalise(out, self.target.card.mean, self.target.card.std)
        if self.autoencoder is None:
            return x
        with torch.no_grad():
            return self.autoencoder.model.decode(x[None].to(self.device), mel_frames)[0].cpu()

    def transform(self, clip_ids: Sequence[str], audio: Sequence[np.ndarray], sample_rates_hz: Sequence[int]
                  ) -> list[ClipOutput]:
        sr = self.mel.sample_rate_hz
        t0 = time.perf_counter()
        normed, lengths = self.guides(audio, sample_rates_hz)
        t1 = time.perf_counter()
        choices: list[AutoChoice | None] = [None] * len(normed)
        if self.cfg.auto is not None:
            outs, choices = self._auto(normed, clip_ids)  # type: ignore[assignment]
        else:
            outs = transform_long(self._windows, normed, list(clip_ids), self.window, self.cfg.seed,
                                  max_batch_windows=self.batch_windows)
        t2 = time.perf_counter()
        results = []
        for cid, o, n in zip(clip_ids, outs, lengths):
            try:
                y = self.vocoder(self.to_logmel(o, num_frames_for(n, self.mel)).numpy())
            except ValueError as e:  # e.g. a non-finite mel: the clip is named in its quarantine row
                raise ValueError(f"clip {cid}: {e}") from None
            y = np.pad(y, (0, max(0, n - len(y))))[:n].astype(np.float32)
            results.append(y)
        t3 = time.perf_counter()
        for k, v in zip(self.stage_seconds, (t1 - t0, t2 - t1, t3 - t2)):
            self.stage_seconds[k] += v
        per_clip = (t3 - t0) / max(1, len(results))
        return [ClipOutput(y, sr, per_clip, c) for y, c in zip(results, choices)]


def _check_autoencoder(target: LoadedModel, autoencoder: LoadedAutoencoder | None) -> LoadedAutoencoder | None:
    """A latent model's own autoencoder (the one its card pins), and none for a log-mel model."""
    card = target.card
    if card.representation != "latent":
        if autoencoder is not None:
            raise ValueError(f"{target.name} models log-mels; it takes no autoencoder (got {autoencoder.name})")
        return None
    if autoencoder is None:
        raise ValueError(f"{target.name} is a latent model: pass its autoencoder ({card.encoder}) loaded "
                         "(tasks/builders.load_autoencoder)")
    if autoencoder.card.latent_channels != card.n_mels or autoencoder.card.time_downsample != card.time_downsample:
        raise ValueError(f"{autoencoder.name} makes {autoencoder.card.latent_channels} x 1/{autoencoder.card.time_downsample} "
                         f"latents; {target.name} models {card.n_mels} x 1/{card.time_downsample} ones of {card.encoder}")
    return autoencoder
