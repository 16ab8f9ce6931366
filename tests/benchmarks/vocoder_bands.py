"""Where in frequency the vocoder's magnitude loses realism (issue 18's violin gap). Held-out clips
of each domain, decoded with PGHI from: each clip's true |STFT|, the vocoder's magnitude, the two
spliced at a cutoff (true above / below), and two post-filters of the vocoder's magnitude (the
partials sharpened against a local envelope; the magnitude rescaled until the output's log-mel
matches the input's), and with `--ranks` the true log-magnitude confined to a subspace as a linear
head confines its output (the head's own, and the best k-dimensional ones of train frames, PCA).
The splices and projections use the clip's own spectrum: oracles, for diagnosis only. Per
band it prints how much the log-magnitude varies across frequency (within a frame) and from frame
to frame, real and vocoded. FAD (musicnn-msd) against the real train clips of the same domain.
Not collected by pytest; run it by hand (about 1.5 min per domain on 2 cores for 15 clips):

    .venv/bin/python tests/benchmarks/vocoder_bands.py reinstrument-data/demo/corpus/clips \\
        --domain violin --domain flute [--ranks 192 --ranks 480]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchaudio  # noqa: E402

from infra.settings import get_settings  # noqa: E402
from infra.tracking import model_checkpoint, resolve_model  # noqa: E402
from schemas.configs import MelConfig  # noqa: E402
from tasks.builders import load_vocoder, make_embedding  # noqa: E402
from tasks.features import LogMel  # noqa: E402
from tasks.metrics.fad import embed_set, fad  # noqa: E402
from tasks.metrics.frechet import gaussian_stats  # noqa: E402
from tasks.metrics.sources import AudioItem, audio_items  # noqa: E402

BANDS_HZ = ((0, 500), (500, 1000), (1000, 2000), (2000, 3000), (3000, 4000), (4000, 6000), (6000, 8000))


def _envelope(mag: torch.Tensor, bins: int) -> torch.Tensor:
    """log-magnitude [1, F, T] averaged over `bins` neighbouring frequency bins."""
    lg = torch.log(mag + 1e-7)[0].T[:, None]
    return torch.nn.functional.avg_pool1d(lg, bins, 1, bins // 2, count_include_pad=False)[:, 0].T[None]


@torch.inference_mode()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("clips")
    ap.add_argument("--vocoder", default="shipped:vocoder")
    ap.add_argument("--domain", action="append", required=True)
    ap.add_argument("--limit", type=int, default=15)
    ap.add_argument("--ranks", type=int, action="append", default=[],
                    help="also the true log-magnitude projected on the best subspace of this dimension (repeat)")
    args = ap.parse_args()
    mel = MelConfig()
    front, emb = LogMel(mel), make_embedding("musicnn", get_settings().weights_dir)
    uri, name = resolve_model(args.vocoder)
    model = load_vocoder(model_checkpoint(uri), name, mel).model
    subspaces = _subspaces(model, args.clips, args.domain, args.ranks)
    for domain in args.domain:
        held = list(audio_items(args.clips, domain=domain, role="clean", split="test", limit=args.limit))
        ref = gaussian_stats(embed_set(audio_items(args.clips, domain=domain, role="clean", split="train"), emb).embeddings)
        mels, mags, trues, lengths = [], [], [], []
        for h in held:
            audio = torch.from_numpy(np.ascontiguousarray(h.audio, np.float32))[None]
            x = front(audio)
            mag, _ = model.spectrum(x)
            n = (x.shape[-1] - 1) * mel.hop_length_samples
            true = model.stft(audio[:, :n]).abs()
            t = min(mag.shape[-1], true.shape[-1])
            mels.append(x)
            mags.append(mag[..., :t])
            trues.append(true[..., :t])
            lengths.append(n)
        freqs = torch.arange(mags[0].shape[1]) * mel.sample_rate_hz / model.cfg.n_fft

        def synth(ms):
            return [model.synthesise(g, model.integrated_phase(g), n)[0].numpy() for g, n in zip(ms, lengths)]

        def score(label: str, ms) -> None:
            out = [AudioItem(h.item_id, np.pad(y, (0, max(0, len(h.audio) - len(y))))[:len(h.audio)], h.sample_rate_hz)
                   for h, y in zip(held, synth(ms))]
            r = fad(embed_set(out, emb), ref, emb.name, seed=0)
            print(f"{domain:8s} {label:58s} FAD {r.fad:6.2f} ({r.ci_low:.2f}–{r.ci_high:.2f})", flush=True)

        _band_stats(domain, torch.cat([g[0] for g in mags], 1), torch.cat([g[0] for g in trues], 1), freqs)
        score("true magnitude", trues)
        score(f"{name} magnitude", mags)
        for label, project in subspaces.items():
            score(f"  true log-magnitude in {label}", [project(t) for t in trues])
        for cut in (1000, 2000, 4000):
            low = (freqs < cut)[None, :, None]
            score(f"  {name} below {cut} Hz, true above", [torch.where(low, g, t) for g, t in zip(mags, trues)])
            score(f"  true below {cut} Hz, {name} above", [torch.where(low, t, g) for g, t in zip(mags, trues)])
        above = (freqs >= 1000)[None, :, None]
        sharpened = [torch.where(above, torch.exp(_envelope(g, 31) + 1.15 * (torch.log(g + 1e-7) - _envelope(g, 31))), g)
                     for g in mags]
        score("  post-filter: partials x1.15 against a 31-bin envelope, > 1 kHz", sharpened)
        score("  post-filter: rescaled to the input's log-mel, once", [_mel_matched(model, front, x, g, n)
                                                                       for x, g, n in zip(mels, mags, lengths)])


FLOOR = 1e-4  # of the log-magnitude projected: below it, bins are noise whose log would dominate a fit


def _subspaces(model, clips: str, domains: list[str], ranks: list[int]) -> dict:
    """What a linear head can output: each frame's log-magnitude is an affine function of its
    features, so it lies in a subspace of the bins. Projections of a true magnitude [1, F, T] onto
    the head's own subspace (least squares) and onto the best `k`-dimensional ones (PCA of the
    log-magnitude of 40 train clips per domain)."""
    if not ranks:
        return {}
    bins = model.cfg.n_fft // 2 + 1
    w, b = model.head.weight[:bins].double(), model.head.bias[:bins].double()[:, None]
    train = [model.stft(torch.from_numpy(np.ascontiguousarray(item.audio, np.float32))[None]).abs()[0]
             for d in domains for item in audio_items(clips, domain=d, role="clean", split="train", limit=40)]
    frames = torch.log(torch.cat(train, 1).clamp(min=FLOOR)).double().T
    mean = frames.mean(0)
    basis = torch.linalg.svd(frames - mean, full_matrices=False).Vh

    def projected(fit):
        def project(mag: torch.Tensor) -> torch.Tensor:
            log = torch.log(mag[0].clamp(min=FLOOR)).double()
            return (torch.exp(fit(log)) * model.passband).float()[None]
        return project

    out = {f"the head's subspace ({w.shape[1]} dimensions)":
           projected(lambda log: w @ torch.linalg.lstsq(w, log - b).solution + b)}
    for k in ranks:
        out[f"the best {k}-dimensional subspace"] = projected(
            lambda log, v=basis[:k]: ((log.T - mean) @ v.T @ v + mean).T)
    return out


def _band_stats(domain: str, mag: torch.Tensor, true: torch.Tensor, freqs: torch.Tensor) -> None:
    """Per band: mean std of log-magnitude across its bins (within a frame), mean |change| over one frame."""
    lv, lt = torch.log(mag + 1e-5), torch.log(true + 1e-5)
    for lo, hi in BANDS_HZ:
        b = (freqs >= lo) & (freqs < hi)
        across = (float(lv[b].std(0).mean()), float(lt[b].std(0).mean()))
        flux = (float(lv[b].diff(dim=1).abs().mean()), float(lt[b].diff(dim=1).abs().mean()))
        print(f"{domain:8s} {lo:5d}-{hi:5d} Hz  across frequency vocoded {across[0]:.2f} real {across[1]:.2f}   "
              f"over frames vocoded {flux[0]:.3f} real {flux[1]:.3f}")


def _mel_matched(model, front, x: torch.Tensor, mag: torch.Tensor, n: int) -> torch.Tensor:
    """One analysis-by-synthesis step: each STFT bin scaled by its mel bands' log-mel error."""
    y = model.synthesise(mag, model.integrated_phase(mag), n)
    got = front(y)
    t = min(got.shape[-1], mag.shape[-1], x.shape[-1])
    error = (x[..., :t] - got[..., :t]).clamp(-2, 2) * (x[..., :t] > np.log(1e-4))
    fb = torchaudio.functional.melscale_fbanks(mag.shape[1], 0.0, front.cfg.f_max_hz, front.cfg.n_mels,
                                               front.cfg.sample_rate_hz, norm="slaney", mel_scale="slaney")
    share = fb / fb.sum(1, keepdim=True).clamp(min=1e-8)
    return mag[..., :t] * torch.exp(torch.einsum("fb,nbt->nft", share, error))


if __name__ == "__main__":
    main()
