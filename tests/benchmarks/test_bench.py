"""`make bench`: throughput measured side by side in one run, printed as ratios.
Not timed assertions (machines are shared and noisy), except the printed goal check."""
import os
import time

import librosa
import numpy as np
import pytest
import soundfile as sf

from infra.datasets import ShardedDataset
from ray_actors.features import extract_features
from schemas.configs import ClipConfig, CorpusConfig, FeatureConfig
from tasks.audio import decode_audio_bytes
from tasks.corpus import run_corpus

PIECES = int(os.environ.get("BENCH_PIECES", "6"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    cfg = CorpusConfig(max_pieces=PIECES, instruments=("flute", "violin"), voices=("soprano", "mix"),
                       clip=ClipConfig())
    t0 = time.perf_counter()
    res = run_corpus(cfg, str(root), workers=2)
    wall = time.perf_counter() - t0
    minutes = sum(r["minutes"] for r in res.summary)
    print(f"\n[corpus] rendered {minutes:.1f} audio-minutes ({res.clips_added} clips, {PIECES} chorales, "
          f"all roles) in {wall:.1f} s on {os.cpu_count()} cores: {minutes / (wall / 60):.1f} audio-min/min")
    return root, res


def _baseline(paths):
    """The straightforward way: per file, librosa.load + melspectrogram + log."""
    out = 0
    for p in paths:
        y, sr = librosa.load(p, sr=16000)
        m = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=1024, win_length=640, hop_length=320,
                                           n_mels=128, fmin=0, fmax=8000, power=1.0)
        out += np.log(np.maximum(m, 1e-5)).shape[1]
    return out


def test_logmel_throughput_pipeline_vs_librosa(corpus, tmp_path):
    root, res = corpus
    clips = ShardedDataset.at(res.clips_url, "clips").read(["clip_id", "audio_flac", "duration_s"])
    audio_s = float(np.sum(clips.column("duration_s").to_numpy()))
    wav_dir = tmp_path / "wav"
    wav_dir.mkdir()
    paths = []
    for cid, flac in zip(clips.column("clip_id").to_pylist(), clips.column("audio_flac").to_pylist()):
        x, sr = decode_audio_bytes(flac)
        paths.append(str(wav_dir / f"{cid}.wav"))
        sf.write(paths[-1], x, sr)
    t0 = time.perf_counter()
    _baseline(paths)
    base_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    local = extract_features([res.clips_url], str(tmp_path / "feat-local"), FeatureConfig(), local=True)
    local_s = time.perf_counter() - t0
    from infra.ray_cluster import ensure_ray
    ensure_ray()  # cluster start-up is a one-off per session; actor start-up is timed
    t0 = time.perf_counter()
    ray_out = extract_features([res.clips_url], str(tmp_path / "feat-ray"), FeatureConfig(), num_actors=2)
    ray_s = time.perf_counter() - t0
    print(f"\n[log-mel] {audio_s / 60:.1f} audio-minutes in {len(paths)} clips, {local['rows']} segments written")
    print(f"[log-mel] per-file librosa baseline (WAV in -> arrays, nothing written): "
          f"{audio_s / base_s:.0f} audio-s/s")
    print(f"[log-mel] pipeline in-process (Parquet in -> batched torch -> Parquet out): "
          f"{audio_s / local_s:.0f} audio-s/s, {base_s / local_s:.2f}x baseline")
    print(f"[log-mel] pipeline on Ray, 2 actors (same, incl. actor start-up): "
          f"{audio_s / ray_s:.0f} audio-s/s, {base_s / ray_s:.2f}x baseline (goal >= 3x)")
    assert local["rows"] == ray_out["rows"] > 0
