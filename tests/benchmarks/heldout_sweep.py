"""A tau_init sweep of a demo-corpus flute model on 8 Bach chorales it never saw (pieces 33-40 of
the collection; `make demo` renders and trains on the first 32), with the metrics functions:
FAD (musicnn-msd) against the demo corpus's real flute train clips (REF=vocoded: the same clips
through the model's own decoding path at tau_init 1), JD against the guide. Outputs are decoded
as the pipeline decodes them (the champion vocoder, else the shipped one; a latent model through
the autoencoder its card names first).
Not collected by pytest; run it by hand:

    MLFLOW_TRACKING_URI=sqlite:///$PWD/reinstrument-data/mlflow.db \
    .venv/bin/python tests/benchmarks/heldout_sweep.py ./reinstrument-data/demo \
        models:/reinstrument-flute/1 1,0.8,0.5,0.4 [EVAL_DIR]

Works for log-mel and latent models alike. LAM=0 in the environment sweeps lambda 0 (default 1); CHURN and CHURN_SIGMA_MIN set the Heun
sampler's S_churn and S_tmin (default 0: the deterministic sampler). VOCODER names the decoder (default
auto; griffin-lim, shipped:vocoder, a model URI); PHASE=head|pghi decodes a trained vocoder with that phase.

It renders the 40-chorale violin corpus under EVAL_DIR (default ./reinstrument-data/heldout40)
and prints one JSON line per tau_init: JD and FAD, each with its 95 % bootstrap interval."""
import json
import os
import sys
import time
from dataclasses import dataclass

# Run as a script from anywhere: the repository root is three levels up.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import torch  # noqa: E402

from infra.datasets import ShardedDataset  # noqa: E402
from infra.tracking import model_checkpoint  # noqa: E402
from jobs.decoders import load_decoder  # noqa: E402
from tasks.builders import load_autoencoder, load_model  # noqa: E402
from schemas.configs import CorpusConfig  # noqa: E402
from schemas.diffusion import SamplerConfig, WarmStartConfig  # noqa: E402
from schemas.transform import TransformConfig  # noqa: E402
from tasks.corpus import run_corpus  # noqa: E402
from tasks.metrics.fad import embed_set, fad  # noqa: E402
from tasks.metrics.frechet import gaussian_stats  # noqa: E402
from tasks.metrics.musicnn import Musicnn  # noqa: E402
from tasks.metrics.pitch import BasicPitch  # noqa: E402
from tasks.metrics.sources import AudioItem, audio_items  # noqa: E402
from tasks.metrics.table import mean_ci, pitch_item_values  # noqa: E402
from tasks.transform import Transformer  # noqa: E402
from tasks.vocoder.vocos import NeuralVocoder  # noqa: E402


@dataclass
class HeldOut:
    """What every held-out evaluation needs: the guides, the model and its decoding chain, the
    embedding, the pitch tracker and the real flute reference statistics."""
    guides: list
    loaded: object
    vocoder: object
    ae: object
    emb: object
    tracker: object
    stats: object

    def transform(self, items, warm: WarmStartConfig, sampler: SamplerConfig) -> list:
        tr = Transformer(TransformConfig(model="x", warm=warm, sampler=sampler), self.loaded, vocoder=self.vocoder,
                         autoencoder=self.ae)
        out = []
        for k in range(0, len(items), 8):
            c = items[k:k + 8]
            o = tr.transform([i.item_id for i in c], [i.audio for i in c], [i.sample_rate_hz for i in c])
            out += [AudioItem(i.item_id, x.audio, x.sample_rate_hz) for i, x in zip(c, o)]
        return out

    def score(self, outs) -> dict:
        """FAD against the reference and JD against the guides, each with its 95 % interval."""
        f = fad(embed_set(outs, self.emb), self.stats, self.emb.name, seed=0)
        jd = mean_ci([v["jd"] for v in pitch_item_values(zip(outs, self.guides), self.tracker)])
        return {"n_clips": len(outs), "jd": [round(x, 3) for x in jd],
                "fad": [round(f.fad, 2), round(f.ci_low, 2), round(f.ci_high, 2)]}


def held_out(demo: str, model: str, eval_dir: str, *, vocoder: str = "auto", phase: str | None = None,
             reference: str = "real") -> HeldOut:
    """Renders the 40-chorale violin corpus under `eval_dir` (once) and keeps the clips of the
    pieces the demo never renders; loads `model` and the decoders its outputs go through."""
    weights = os.environ.get("REINSTRUMENT_WEIGHTS_DIR", ".weights")
    demo_pieces = set(ShardedDataset.at(f"{demo}/corpus/clips", "clips").read(["piece"]).column("piece").to_pylist())
    cfg = CorpusConfig(collection="bach", max_pieces=40, instruments=("violin",), soundfonts=("fluidr3",), voices=("soprano",))
    res = run_corpus(cfg, eval_dir, workers=2)
    t = ShardedDataset.at(res.clips_url, "clips").read(["clip_id", "piece", "domain", "role"])
    held = {c for c, p, d, r in zip(*[t.column(k).to_pylist() for k in ("clip_id", "piece", "domain", "role")])
            if p not in demo_pieces and d == "violin" and r == "clean"}
    pieces = sorted({p for p in t.column("piece").to_pylist() if p not in demo_pieces})
    guides = [i for i in audio_items(res.clips_url, domain="violin", role="clean") if i.item_id in held]
    print(f"held-out pieces {len(pieces)}: {pieces}; {len(guides)} violin clips", flush=True)
    loaded = load_model(model_checkpoint(model), model)
    mel = loaded.card.mel
    voc, vocoder_name = load_decoder(vocoder, mel)
    if phase and isinstance(voc, NeuralVocoder):  # the same weights, decoded with another phase
        voc = voc.with_phase(phase)
        vocoder_name = voc.name
    encoder = getattr(loaded.card, "encoder", None)
    ae = load_autoencoder(model_checkpoint(encoder), encoder, mel) if encoder else None
    print(f"model {model} ({loaded.card.representation}), decoder {vocoder_name}"
          + (f", autoencoder {encoder}" if encoder else ""), flush=True)
    h = HeldOut(guides, loaded, voc, ae, Musicnn("MSD_musicnn", weights), BasicPitch(weights, threads=2), None)
    ref = list(audio_items(f"{demo}/corpus/clips", domain="flute", role="clean", split="train"))
    h.stats = gaussian_stats(embed_set(h.transform(ref, WarmStartConfig(t_init=1.0), SamplerConfig())
                                       if reference == "vocoded" else ref, h.emb).embeddings)
    print(f"reference: {len(ref)} {reference} flute train clips", flush=True)
    return h


def main():
    torch.set_num_threads(2)
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    demo, model = sys.argv[1], sys.argv[2]   # demo root (…/reinstrument-data/demo), models:/reinstrument-flute/N
    t_inits = [float(x) for x in sys.argv[3].split(",")]
    lam = float(os.environ.get("LAM", "1"))
    sampler = SamplerConfig(S_churn=float(os.environ.get("CHURN", "0")),
                            S_tmin=float(os.environ.get("CHURN_SIGMA_MIN", "0")))
    h = held_out(demo, model, sys.argv[4] if len(sys.argv) > 4 else "./reinstrument-data/heldout40",
                 vocoder=os.environ.get("VOCODER", "auto"), phase=os.environ.get("PHASE") or None,
                 reference=os.environ.get("REF", "real"))
    for ti in t_inits:
        t0 = time.time()
        outs = h.transform(h.guides, WarmStartConfig(t_init=ti, lam=lam), sampler)
        row = {"t_init": ti, "lam": lam, "S_churn": sampler.S_churn} | h.score(outs) | {"s": round(time.time() - t0)}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
