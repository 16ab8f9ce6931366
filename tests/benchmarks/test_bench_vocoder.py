"""`make bench`: decoding speed of the shipped vocoder against Griffin-Lim (32 iterations), side by
side in one run, on the same log-mels of ten-second renders; audio-seconds per wall-second, the
ratio, and the CPU's flags. With a GPU (when one is lent): the vocoder in bf16, batched.
Issue 18's targets: >= 100x real time on 2 CPU cores, >= 5,000x on a GPU in bf16.
The first PGHI call compiles it (numba, cached on disk): the warm-up call keeps that out."""
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from music21 import corpus

from jobs.ship import cpu_flags
from schemas.configs import MelConfig
from tasks.builders import load_vocoder, make_vocoder
from tasks.corpus import _music21_voices
from tasks.features import LogMel
from tasks.midi import parse_midi, render, slice_midi, with_program

SR = 16000
CLIPS = int(os.environ.get("BENCH_VOCODER_CLIPS", "8"))
SHIPPED = Path(__file__).resolve().parents[2] / "weights" / "vocoder" / "model.pt"


@pytest.fixture(scope="module")
def logmels():
    front, out = LogMel(MelConfig()), []
    for path in sorted(str(p) for p in corpus.getComposer("bach"))[:CLIPS]:
        pm = parse_midi(_music21_voices(corpus.parse(path))["soprano"])
        y = render(with_program(slice_midi(pm, 0, 10), 73), SR, "fluidr3", tail_s=0)[: 10 * SR]  # flute
        out.append(front(torch.from_numpy(np.pad(y, (0, 10 * SR - len(y))).astype(np.float32))[None])[0].numpy())
    return out


def _rate(decode, mels) -> float:
    decode(mels[0])  # warm-up: first-call allocations are not throughput
    t0 = time.perf_counter()
    for m in mels:
        decode(m)
    return len(mels) * 10.0 / (time.perf_counter() - t0)


def test_vocoder_decoding_speed_against_griffin_lim(logmels):
    data = SHIPPED.read_bytes()
    rates = {"griffin-lim (32 it.)": _rate(make_vocoder("griffin-lim", MelConfig(), n_iter=32), logmels)}
    # the shipped weights decoded both ways: their own phase head, and the phase PGHI integrates
    # from the head's magnitude (the shipped file's setting; tasks/vocoder/pghi.py)
    shipped = load_vocoder(data, "shipped", MelConfig())
    for phase in ("head", "pghi"):
        rates[f"vocoder, {phase} phase"] = _rate(shipped.with_phase(phase), logmels)
    print(f"\n[vocoder] {len(logmels)} ten-second clips, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
          f"CPU flags: {' '.join(cpu_flags()) or 'unknown'}")
    for name, r in rates.items():
        print(f"  {name:22s} {r:9.1f} x real time")
    for phase in ("head", "pghi"):
        print(f"  vocoder ({phase}) / griffin-lim: {rates[f'vocoder, {phase} phase'] / rates['griffin-lim (32 it.)']:.1f}x")
    if torch.cuda.is_available():
        # the head's phase: PGHI runs on the CPU, item by item, and would measure the host
        gpu = load_vocoder(data, "shipped", MelConfig(), "cuda").with_phase("head")
        batch = torch.from_numpy(np.stack(logmels * max(1, 64 // len(logmels)))).cuda()
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            gpu.model(batch)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(5):
                gpu.model(batch)
            torch.cuda.synchronize()
        rate = 5 * len(batch) * 10.0 / (time.perf_counter() - t0)
        print(f"  vocoder bf16 on {torch.cuda.get_device_name()}: {rate:9.1f} x real time (batch {len(batch)})")
    assert all(r > 0 for r in rates.values())
