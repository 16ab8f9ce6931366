"""`make bench`: metric throughput in audio-seconds per wall-second, side by side in one run:
musicnn (MSD) embedding, VGGish (randomly initialised: throughput only, no weights ship), and
Basic Pitch tracking, on the same renders; plus the share of musicnn time spent on its log-mel."""
import os
import time

import pytest
from music21 import corpus

from infra.settings import get_settings
from tasks.corpus import _music21_voices
from tasks.metrics import musicnn as mn
from tasks.metrics.musicnn import Musicnn
from tasks.metrics.pitch import BasicPitch
from tasks.metrics.vggish import VGGish, VGGishNet
from tasks.midi import parse_midi, render, slice_midi, with_program

SR = 16000
CLIPS = int(os.environ.get("BENCH_METRIC_CLIPS", "12"))


@pytest.fixture(scope="module")
def audio():
    out = []
    for path in sorted(str(p) for p in corpus.getComposer("bach"))[:CLIPS]:
        pm = parse_midi(_music21_voices(corpus.parse(path))["mix"])
        out.append(render(with_program(slice_midi(pm, 0, 10), 0), SR, "fluidr3", tail_s=0)[: 10 * SR])
    return out


def _rate(fn, clips) -> float:
    t0 = time.perf_counter()
    for y in clips:
        fn(y, SR)
    return sum(len(y) for y in clips) / SR / (time.perf_counter() - t0)


def test_metric_throughput(audio):
    weights = get_settings().weights_dir
    net = Musicnn("MSD_musicnn", weights)
    net.embed(audio[0], SR)  # warm-up: first-call allocations are not throughput
    rates = {"musicnn embedding": _rate(net.embed, audio),
             "musicnn log-mel only": _rate(lambda y, sr: mn.log_mel_patches(y), audio),
             "vggish embedding": _rate(VGGish(VGGishNet()).embed, audio),
             "basic-pitch tracking": _rate(BasicPitch(weights).notes, audio)}
    total_s = sum(len(y) for y in audio) / SR
    print(f"\n[metrics] {len(audio)} clips, {total_s:.0f} audio-s, {os.cpu_count()} cores")
    for name, r in rates.items():
        print(f"  {name:24s} {r:8.1f} audio-s/s")
    print(f"  log-mel share of musicnn time: {rates['musicnn embedding'] / rates['musicnn log-mel only']:.2f}; "
          f"JD of one pair costs {2 / rates['basic-pitch tracking']:.3f} s per audio-s, "
          f"FAD {1 / rates['musicnn embedding']:.3f} s per audio-s")
    assert all(r > 0 for r in rates.values())
