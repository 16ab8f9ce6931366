"""PyTorch port of musicnn (Pons & Serra 2019; github.com/jordipons/musicnn, ISC), reading the
MSD_musicnn / MTT_musicnn checkpoints from the musicnn 0.1.0 wheel with a numpy reader.

Architecture as musicnn/models.py `build_musicnn`: batch-normalised log-mel input; a front end of
timbral convolutions (7x38 and 7x67 over time x mel, 204 filters each) and temporal convolutions
(128/64/32 x 1, 51 filters each), each max-pooled over frequency; a dense mid end of three 7-frame
1-D convolutions with residual connections; a back end pooling max and mean over time, a 200-unit
dense layer whose batch-normalised output is the embedding ("penultimate"), and 50 tag logits.
Exactness details (checked against the TensorFlow graph, tests/fixtures/musicnn): TF batch-norm
eps 1e-3; TF 'same' padding puts the odd extra row at the end; the back end flattens [max, mean]
interleaved per channel; input log10(10000 mel + 1) of a mel cast to float16 first."""
from __future__ import annotations

import os

import librosa
import numpy as np
import torch
import torch.nn.functional as F

from tasks.audio import check_audio
from tasks.metrics.tf_bundle import read_bundle

SAMPLE_RATE_HZ = 16000
N_FFT, HOP, N_MELS = 512, 256, 96
PATCH_FRAMES = 187            # 3 s patches, as the models were trained
BN_EPS = 1e-3                 # TF's default, not PyTorch's 1e-5
MIN_SECONDS = (PATCH_FRAMES - 1) * HOP / SAMPLE_RATE_HZ

MTT_LABELS = ["guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast",
              "piano", "ambient", "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male",
              "singing", "vocals", "no vocals", "harpsichord", "loud", "quiet", "flute", "woman",
              "male vocal", "no vocal", "pop", "soft", "sitar", "solo", "man", "classic", "choir", "voice",
              "new age", "dance", "male voice", "female vocal", "beats", "harp", "cello", "no voice",
              "weird", "country", "metal", "female voice", "choral"]
MSD_LABELS = ["rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s",
              "alternative rock", "jazz", "beautiful", "metal", "chillout", "male vocalists", "classic rock",
              "soul", "indie rock", "Mellow", "electronica", "80s", "folk", "90s", "chill", "instrumental",
              "punk", "oldies", "blues", "hard rock", "ambient", "acoustic", "experimental",
              "female vocalist", "guitar", "Hip-Hop", "70s", "party", "country", "easy listening", "sexy",
              "catchy", "funk", "electro", "heavy metal", "Progressive rock", "60s", "rnb", "indie pop",
              "sad", "House", "happy"]
MODELS = {"MSD_musicnn": MSD_LABELS, "MTT_musicnn": MTT_LABELS}


def log_mel_patches(audio_16k: np.ndarray) -> np.ndarray:
    """musicnn's input: [patches, 187, 96] float32 (non-overlapping 3 s patches; the remainder is
    dropped, as in musicnn's extractor)."""
    mel = librosa.feature.melspectrogram(y=audio_16k, sr=SAMPLE_RATE_HZ, hop_length=HOP, n_fft=N_FFT,
                                         n_mels=N_MELS).T
    # float16 then float32 before the log: what NumPy 1's promotion did in the original (NumPy 2
    # would keep float16 and overflow to inf on loud audio).
    mel = np.log10(10000 * mel.astype(np.float16).astype(np.float32) + 1)
    n = (len(mel) - PATCH_FRAMES) // PATCH_FRAMES + 1
    if n < 1:
        raise ValueError(f"audio of {len(audio_16k) / SAMPLE_RATE_HZ:.2f} s is shorter than one musicnn "
                         f"patch ({MIN_SECONDS:.2f} s); expected at least {MIN_SECONDS:.2f} s per clip")
    return np.stack([mel[i * PATCH_FRAMES:(i + 1) * PATCH_FRAMES] for i in range(n)])


class MusicnnNet(torch.nn.Module):
    """The inference graph with weights as buffers taken from the TF variable dict."""

    def __init__(self, tf_vars: dict[str, np.ndarray]):
        super().__init__()
        t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tf_vars.items() if "Adam" not in k}
        self.w = t

    def _bn(self, x: torch.Tensor, i: int, dim: int = 1) -> torch.Tensor:
        name = "batch_normalization" + (f"_{i}" if i else "")
        shape = [1] * x.dim()
        shape[dim] = -1
        g, b, m, v = (self.w[f"{name}/{p}"].view(shape) for p in ("gamma", "beta", "moving_mean", "moving_variance"))
        return (x - m) / torch.sqrt(v + BN_EPS) * g + b

    def _conv2d(self, x: torch.Tensor, i: int, padding=0) -> torch.Tensor:
        name = "conv2d" + (f"_{i}" if i else "")
        return F.relu(F.conv2d(x, self.w[f"{name}/kernel"].permute(3, 2, 0, 1), self.w[f"{name}/bias"], padding=padding))

    def forward(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, 187, 96] log-mel -> (penultimate [B, 200], tag logits [B, 50])."""
        x = self._bn(patches[:, None], 0)                                      # [B, 1, T, 96]
        padded = F.pad(x, (0, 0, 3, 3))
        front = [self._bn(self._conv2d(padded, i), i + 1).amax(dim=3) for i in (0, 1)]   # timbral
        for i, k in ((2, 128), (3, 64), (4, 32)):                               # temporal, TF 'same'
            y = self._conv2d(F.pad(x, (0, 0, (k - 1) // 2, k // 2)), i)
            front.append(self._bn(y, i + 1).amax(dim=3))
        h = torch.cat(front, dim=1)                                             # [B, 561, T]
        mid = [h]
        for j, i in enumerate((5, 6, 7)):
            kernel = self.w[f"conv2d_{i}/kernel"][:, :, 0, :].permute(2, 1, 0)  # [64, C, 7]
            y = F.relu(F.conv1d(F.pad(mid[-1], (3, 3)), kernel, self.w[f"conv2d_{i}/bias"]))
            y = self._bn(y, i + 1)
            mid.append(y if j == 0 else y + mid[-1])
        feats = torch.cat(mid, dim=1)                                           # [B, 753, T]
        pooled = torch.stack([feats.amax(dim=2), feats.mean(dim=2)], dim=2).flatten(1)  # interleaved
        pooled = self._bn(pooled, 9)
        dense = F.relu(pooled @ self.w["dense/kernel"] + self.w["dense/bias"])
        penultimate = self._bn(dense, 10)
        return penultimate, penultimate @ self.w["dense_1/kernel"] + self.w["dense_1/bias"]


class Musicnn:
    """FAD embedding: the 200-d penultimate layer of every 3 s patch."""

    sample_rate_hz = SAMPLE_RATE_HZ
    min_seconds = MIN_SECONDS

    def __init__(self, model: str = "MSD_musicnn", weights_dir: str = ".weights", batch_patches: int = 64):
        if model not in MODELS:
            raise ValueError(f"unknown musicnn model {model!r}; expected one of {sorted(MODELS)}")
        prefix = os.path.join(weights_dir, "musicnn", model) + "/"
        if not os.path.exists(prefix + ".index"):
            raise FileNotFoundError(
                f"musicnn weights not found at {prefix}; run `make setup` (it downloads the hash-pinned "
                "musicnn 0.1.0 wheel into .weights/) or set REINSTRUMENT_WEIGHTS_DIR to where they are")
        self.model, self.labels = model, MODELS[model]
        self.name = "musicnn-msd" if model == "MSD_musicnn" else "musicnn-mtt"
        self.net = MusicnnNet(read_bundle(prefix)).eval()
        self.batch_patches = batch_patches

    def _to_16k(self, audio: np.ndarray, sample_rate_hz: int) -> np.ndarray:
        x = check_audio(audio)
        # soxr_hq: what librosa.load(sr=16000) in musicnn's extractor uses
        return x if sample_rate_hz == SAMPLE_RATE_HZ else librosa.resample(
            x, orig_sr=sample_rate_hz, target_sr=SAMPLE_RATE_HZ, res_type="soxr_hq")

    @torch.inference_mode()
    def forward(self, audio: np.ndarray, sample_rate_hz: int) -> tuple[np.ndarray, np.ndarray]:
        """(penultimate [patches, 200], tag probabilities [patches, 50])."""
        patches = torch.from_numpy(log_mel_patches(self._to_16k(audio, sample_rate_hz)))
        outs = [self.net(patches[i:i + self.batch_patches]) for i in range(0, len(patches), self.batch_patches)]
        emb = torch.cat([o[0] for o in outs]).numpy()
        tags = torch.sigmoid(torch.cat([o[1] for o in outs])).numpy()
        return emb, tags

    def embed(self, audio: np.ndarray, sample_rate_hz: int) -> np.ndarray:
        return self.forward(audio, sample_rate_hz)[0]

    def top_tags(self, audio: np.ndarray, sample_rate_hz: int, k: int = 5) -> list[str]:
        tags = self.forward(audio, sample_rate_hz)[1].mean(axis=0)
        return [self.labels[i] for i in np.argsort(-tags)[:k]]
