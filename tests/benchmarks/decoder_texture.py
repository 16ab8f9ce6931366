"""What the autoencoder's decoder drops (issue 19): frame-level texture, not slow modulation. Held-out
clips of each domain go through log-mel → autoencoder → shipped vocoder (head phase, as latent
outputs are decoded), and the same with noise of the size the decoder's residual has put back:
iid Gaussian per value with each mel bin's residual standard deviation (all bins, or only bins
above -6.9 = ln 1e-3), or another clip's whole residual. The residual statistics come from the
same clips: an oracle, for diagnosis only, not a decoder. With `--vocoder`, the same question one
stage later: the vocoder's STFT magnitude with its own residual's texture put back (PGHI phase).
FAD (musicnn-msd) against the real train clips of the same domain, 95 % intervals.
Not collected by pytest; run it by hand (about 1 min per row on 2 cores for 15 clips):

    .venv/bin/python tests/benchmarks/decoder_texture.py reinstrument-data/demo/corpus/clips \\
        --autoencoder shipped:autoencoder --domain violin --domain flute [--vocoder]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from infra.settings import get_settings  # noqa: E402
from infra.tracking import model_checkpoint, resolve_model  # noqa: E402
from schemas.configs import MelConfig  # noqa: E402
from tasks.autoencoder.model import reconstruct  # noqa: E402
from tasks.builders import load_autoencoder, load_vocoder, make_embedding  # noqa: E402
from tasks.features import LogMel  # noqa: E402
from tasks.metrics.fad import embed_set, fad  # noqa: E402
from tasks.metrics.frechet import gaussian_stats  # noqa: E402
from tasks.metrics.sources import AudioItem, audio_items  # noqa: E402

ACTIVE = float(np.log(1e-3))


def bin_std(residuals: list[np.ndarray], masks: list[np.ndarray]) -> np.ndarray:
    """Each bin's RMS residual over the values the masks select: [bins, 1]."""
    num = sum((r ** 2 * m).sum(1) for r, m in zip(residuals, masks))
    den = sum(m.sum(1) for m in masks)
    return np.sqrt(num / np.maximum(den, 1))[:, None].astype(np.float32)


def fitted(r: np.ndarray, frames: int) -> np.ndarray:
    return np.pad(r, ((0, 0), (0, max(0, frames - r.shape[1]))))[:, :frames]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("clips")
    ap.add_argument("--autoencoder", default="shipped:autoencoder")
    ap.add_argument("--domain", action="append", required=True)
    ap.add_argument("--limit", type=int, default=15)
    ap.add_argument("--vocoder", action="store_true", help="also the vocoder's magnitude texture")
    args = ap.parse_args()
    mel, front = MelConfig(), LogMel(MelConfig())
    emb = make_embedding("musicnn", get_settings().weights_dir)
    uri, name = resolve_model("shipped:vocoder")
    voc = load_vocoder(model_checkpoint(uri), name, mel)
    head = voc.with_phase("head")
    uri, name = resolve_model(args.autoencoder)
    ae = load_autoencoder(model_checkpoint(uri), name, mel).model
    for domain in args.domain:
        held = list(audio_items(args.clips, domain=domain, role="clean", split="test", limit=args.limit))
        ref = gaussian_stats(embed_set(audio_items(args.clips, domain=domain, role="clean", split="train"), emb).embeddings)

        def score(label: str, audio: list[np.ndarray]) -> None:
            out = [AudioItem(h.item_id, fitted(y[None], len(h.audio))[0], h.sample_rate_hz) for h, y in zip(held, audio)]
            r = fad(embed_set(out, emb), ref, emb.name, seed=0)
            print(f"{domain:8s} {label:60s} FAD {r.fad:6.2f} ({r.ci_low:.2f}–{r.ci_high:.2f})", flush=True)

        rng = np.random.default_rng(0)
        x = [front(torch.from_numpy(np.ascontiguousarray(h.audio, np.float32))[None])[0].numpy() for h in held]
        y = [reconstruct(ae, m) for m in x]
        res = [a - b for a, b in zip(x, y)]
        moves = lambda mels: np.mean([np.abs(np.diff(m, axis=1)).mean() for m in mels])  # noqa: E731
        print(f"{domain:8s} mean |change over one frame| of the log-mel: real {moves(x):.3f}, {name} {moves(y):.3f}")
        every, active = bin_std(res, [np.ones_like(r) for r in res]), bin_std(res, [b > ACTIVE for b in y])
        decode = lambda mels: [np.asarray(head(m), np.float32) for m in mels]  # noqa: E731
        noise = lambda b: rng.standard_normal(b.shape).astype(np.float32)  # noqa: E731
        score("real log-mel → vocoder", decode(x))
        score(f"{name} → vocoder", decode(y))
        for k in (0.5, 1.0):
            score(f"  + {k} × iid noise of the residual's size, every bin", decode([b + k * every * noise(b) for b in y]))
            score(f"  + {k} × iid noise of the residual's size, active bins", decode([b + k * active * (b > ACTIVE) * noise(b)
                                                                                     for b in y]))
        score("  + another clip's residual", decode([b + fitted(r, b.shape[1]) for b, r in zip(y, res[::-1])]))
        if args.vocoder:
            _vocoder_texture(voc.model, held, x, score, rng)


@torch.inference_mode()
def _vocoder_texture(model, held, mels, score, rng) -> None:
    """The vocoder's STFT magnitude × exp(texture) → PGHI → inverse STFT, texture of the size of
    log|STFT(real)| - log(magnitude) in bins within 60 dB of their frame's peak."""
    mags, residuals, lengths = [], [], []
    for h, m in zip(held, mels):
        mag, _ = model.spectrum(torch.from_numpy(m)[None])
        n = (m.shape[-1] - 1) * model.cfg.mel.hop_length_samples
        true = model.stft(torch.from_numpy(np.ascontiguousarray(h.audio[:n], np.float32))[None]).abs()
        t = min(mag.shape[-1], true.shape[-1])
        mags.append(mag[0, :, :t].numpy())
        residuals.append(np.log(true[0, :, :t].numpy() + 1e-5) - np.log(mags[-1] + 1e-5))
        lengths.append(n)
    active = [g > g.max(0, keepdims=True) * 1e-3 for g in mags]
    std = np.minimum(bin_std(residuals, active), 2.0)

    def synth(ms):
        out = []
        for g, n in zip(ms, lengths):
            g = torch.from_numpy(np.ascontiguousarray(g, np.float32))[None]
            out.append(model.synthesise(g, model.integrated_phase(g), n)[0].numpy())
        return out

    score("vocoder magnitude → PGHI", synth(mags))
    for k in (0.5, 1.0):
        score(f"  × exp({k} × iid texture of the residual's size), active bins",
              synth([g * np.exp(k * std * a * rng.standard_normal(g.shape)) for g, a in zip(mags, active)]))
    score("  × exp(another clip's residual)", synth([g * np.exp(np.clip(fitted(r, g.shape[1]), -3, 3))
                                                     for g, r in zip(mags, residuals[::-1])]))


if __name__ == "__main__":
    main()
