"""Performance variation for rendered corpora: what separates a recording from a score played by
a sequencer. Two levels, because clips of different instruments must stay aligned in time (the
true target of a guide is the same segment played by the target instrument):
- the *performance* of a voice (tempo, dynamics, articulation) is drawn once per (piece, voice)
  and shared by every instrument and soundfont that plays it;
- the *rendition* (vibrato depth, room) is drawn per instrument and soundfont.
Every draw comes from a seed derived from the item's identity, so a rebuild plays the same performance."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import pretty_midi
from scipy import signal

from schemas.configs import PerformanceConfig

MOD_WHEEL = 1  # GM CC 1: most GM soundfonts map it to vibrato depth (an LFO on pitch)


@dataclass(frozen=True)
class Performance:
    tempo: float          # time scale: > 1 plays slower
    velocity: int         # the voice's base MIDI velocity
    swell_db: float       # peak-to-peak of a slow dynamic swell across the voice
    legato: float         # sounding share of each written note (1 = full length)


@dataclass(frozen=True)
class Rendition:
    vibrato: int          # CC1 value, 0..127
    room_rt60_s: float    # 0 = dry
    room_wet: float


def draw_performance(cfg: PerformanceConfig, seed: int) -> Performance:
    rng = np.random.default_rng(seed)
    return Performance(tempo=float(rng.uniform(*cfg.tempo_scale)), velocity=int(rng.integers(*cfg.velocity, endpoint=True)),
                       swell_db=float(rng.uniform(0, cfg.swell_db)), legato=float(rng.uniform(*cfg.legato)))


def draw_rendition(cfg: PerformanceConfig, seed: int) -> Rendition:
    rng = np.random.default_rng(seed)
    dry = rng.random() < cfg.dry_share
    return Rendition(vibrato=int(rng.integers(*cfg.vibrato_cc, endpoint=True)),
                     room_rt60_s=0.0 if dry else float(rng.uniform(*cfg.room_rt60_s)),
                     room_wet=0.0 if dry else float(rng.uniform(*cfg.room_wet)))


def perform(pm: pretty_midi.PrettyMIDI, p: Performance, seed: int) -> pretty_midi.PrettyMIDI:
    """The voice as played: stretched in time, shortened notes (never below 60 ms), velocities
    from the base level, a slow swell and a little per-note jitter. Pitches are untouched."""
    rng = np.random.default_rng(seed)
    out = copy.deepcopy(pm)
    end = max((n.end for i in out.instruments for n in i.notes), default=0.0) * p.tempo or 1.0
    phase = rng.uniform(0, 2 * np.pi)
    for inst in out.instruments:
        for n in inst.notes:
            start, dur = n.start * p.tempo, (n.end - n.start) * p.tempo
            n.start, n.end = start, start + max(0.06, min(dur, dur * p.legato))
            swell = 10 ** (p.swell_db / 2 * np.sin(2 * np.pi * start / end + phase) / 20)
            n.velocity = int(np.clip(round(p.velocity * swell + rng.normal(0, 4)), 20, 127))
        for b in inst.pitch_bends:
            b.time *= p.tempo
        for c in inst.control_changes:
            c.time *= p.tempo
    return out


def with_vibrato(pm: pretty_midi.PrettyMIDI, r: Rendition) -> pretty_midi.PrettyMIDI:
    out = copy.deepcopy(pm)
    for inst in out.instruments:
        inst.control_changes.insert(0, pretty_midi.ControlChange(MOD_WHEEL, r.vibrato, 0.0))
    return out


def room(x: np.ndarray, r: Rendition, sample_rate_hz: int, seed: int) -> np.ndarray:
    """A small room: exponentially decaying noise (60 dB down at rt60), pre-delayed 10 ms and
    mixed at `room_wet`; length unchanged, so clips stay aligned with their MIDI."""
    if r.room_wet <= 0 or r.room_rt60_s <= 0:
        return x
    rng = np.random.default_rng(seed)
    n = int(r.room_rt60_s * sample_rate_hz)
    t = np.arange(n) / sample_rate_hz
    ir = rng.standard_normal(n) * 10 ** (-3 * t / r.room_rt60_s)
    ir = np.concatenate([np.zeros(int(0.01 * sample_rate_hz)), ir / np.sqrt(np.sum(ir ** 2))])
    wet = signal.fftconvolve(x, ir)[: x.size]
    return ((1 - r.room_wet) * x + r.room_wet * wet).astype(np.float32)
