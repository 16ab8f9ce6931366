"""VGGish (Hershey et al. 2017), the embedding the FAD paper (Kilgour et al. 2019) and the
warm-init papers report, loaded from a weights file the user provides (its weights are
fetched from a model hub we cannot reach here, so none ship with the product).

The file is a PyTorch state dict with torchvggish's key names (`features.{0,3,6,8,11,13}.*`,
`embeddings.{0,2,4}.*`), e.g. harritaylor/torchvggish's vggish-10086976.pth. The embedding is
the 128-d output of the last fully connected layer before any ReLU or PCA, as Google's FAD
reference takes it. Input framing follows vggish_input.waveform_to_examples: 16 kHz, 25 ms
periodic-Hann STFT magnitude every 10 ms, 64 HTK mel bands 125-7500 Hz, log(mel + 0.01),
non-overlapping 0.96 s examples (96 x 64)."""
from __future__ import annotations

import os

import librosa
import numpy as np
import torch
from torch import nn

from tasks.audio import check_audio

SAMPLE_RATE_HZ = 16000
WINDOW, HOP, N_FFT = 400, 160, 512
N_MELS, FMIN_HZ, FMAX_HZ = 64, 125.0, 7500.0
EXAMPLE_FRAMES = 96
LOG_OFFSET = 0.01


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log(1.0 + hz / 700.0)


def mel_matrix() -> np.ndarray:
    """[257, 64] weights, as vggish's mel_features.spectrogram_to_mel_matrix."""
    bins_mel = _hz_to_mel(np.linspace(0.0, SAMPLE_RATE_HZ / 2, N_FFT // 2 + 1))
    edges = np.linspace(_hz_to_mel(np.array(FMIN_HZ)), _hz_to_mel(np.array(FMAX_HZ)), N_MELS + 2)
    w = np.empty((len(bins_mel), N_MELS))
    for i in range(N_MELS):
        lo, c, hi = edges[i:i + 3]
        w[:, i] = np.maximum(0.0, np.minimum((bins_mel - lo) / (c - lo), (hi - bins_mel) / (hi - c)))
    w[0, :] = 0.0  # the DC bin carries no pitch information; the original zeroes it
    return w


def examples(audio_16k: np.ndarray) -> np.ndarray:
    """[n, 96, 64] log-mel examples (the remainder under 0.96 s is dropped, as in the original)."""
    if len(audio_16k) < WINDOW:
        raise ValueError(f"audio of {len(audio_16k)} samples is shorter than one 25 ms STFT window")
    frames = np.lib.stride_tricks.sliding_window_view(audio_16k.astype(np.float64), WINDOW)[::HOP]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WINDOW) / WINDOW)  # periodic Hann
    mag = np.abs(np.fft.rfft(frames * window, N_FFT))
    log_mel = np.log(mag @ mel_matrix() + LOG_OFFSET)
    n = len(log_mel) // EXAMPLE_FRAMES
    if n < 1:
        raise ValueError(f"audio of {len(audio_16k) / SAMPLE_RATE_HZ:.2f} s is shorter than one 0.96 s VGGish example")
    return log_mel[:n * EXAMPLE_FRAMES].reshape(n, EXAMPLE_FRAMES, N_MELS).astype(np.float32)


class VGGishNet(nn.Module):
    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for c_out, pool in ((64, True), (128, True), (256, False), (256, True), (512, False), (512, True)):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True)]
            if pool:
                layers.append(nn.MaxPool2d(2, 2))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(nn.Linear(512 * 4 * 6, 4096), nn.ReLU(inplace=True),
                                        nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Linear(4096, 128))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x[:, None])                  # [B, 512, 6, 4]
        h = h.permute(0, 2, 3, 1).flatten(1)           # TF's NHWC flattening order, as the weights expect
        return self.embeddings(h)


class VGGish:
    name = "vggish"
    sample_rate_hz = SAMPLE_RATE_HZ
    min_seconds = (WINDOW + (EXAMPLE_FRAMES - 1) * HOP) / SAMPLE_RATE_HZ

    def __init__(self, net: VGGishNet, batch_examples: int = 64):
        self.net = net.eval()
        self.batch_examples = batch_examples

    @classmethod
    def from_file(cls, path: str) -> "VGGish":
        if not os.path.exists(path):
            raise FileNotFoundError(f"VGGish weights file not found: {path}; expected a torchvggish-style state dict")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"{path} is not a loadable PyTorch state dict ({type(e).__name__}: {e}); expected "
                             "tensors only (pickles that run code are refused)") from e
        state = {k: v for k, v in state.items() if k.startswith(("features.", "embeddings."))}
        net = VGGishNet()
        expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in state.items()}
        missing, unexpected = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
        wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
        if missing or unexpected or wrong:
            raise ValueError(f"{path} does not hold VGGish weights: missing {missing[:4]}, unexpected {unexpected[:4]}, "
                             f"wrong shapes {[(k, got[k], expected[k]) for k in wrong[:4]]}")
        net.load_state_dict(state)
        return cls(net)

    @torch.inference_mode()
    def embed(self, audio: np.ndarray, sample_rate_hz: int) -> np.ndarray:
        x = check_audio(audio)
        if sample_rate_hz != SAMPLE_RATE_HZ:
            x = librosa.resample(x, orig_sr=sample_rate_hz, target_sr=SAMPLE_RATE_HZ, res_type="soxr_hq")
        ex = torch.from_numpy(examples(x))
        return torch.cat([self.net(ex[i:i + self.batch_examples])
                          for i in range(0, len(ex), self.batch_examples)]).numpy()
