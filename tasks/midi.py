"""MIDI helpers: parse, slice, transpose, fit to an instrument's range, render with FluidSynth."""
from __future__ import annotations

import functools
import io
from dataclasses import dataclass

import numpy as np
import pretty_midi

from schemas.configs import SOUNDFONTS


class MidiError(ValueError):
    """A MIDI source that cannot be used; the message is the quarantine reason."""


@dataclass(frozen=True)
class Instrument:
    name: str
    gm_program: int      # 0-based General MIDI program
    low_midi: int        # written range, MIDI note numbers
    high_midi: int


INSTRUMENTS: dict[str, Instrument] = {i.name: i for i in [
    Instrument("flute", 73, 60, 96),
    Instrument("violin", 40, 55, 103),
    Instrument("viola", 41, 48, 91),
    Instrument("cello", 42, 36, 76),
    Instrument("contrabass", 43, 28, 67),
    Instrument("oboe", 68, 58, 91),
    Instrument("clarinet", 71, 50, 94),
    Instrument("bassoon", 70, 34, 75),
    Instrument("trumpet", 56, 54, 86),
    Instrument("french_horn", 60, 41, 77),
    Instrument("alto_sax", 65, 49, 81),
    Instrument("piano", 0, 21, 108),
    Instrument("acoustic_guitar", 24, 40, 88),
]}


# Notes a clip's MIDI may hold and still be scored: Basic Pitch (the JD scorer) transcribes A0-C8,
# the piano's range (MIDI 21-108); a note outside it can never be matched.
SCORED_RANGE = INSTRUMENTS["piano"]


def playable_range(domain: str | None) -> Instrument:
    """The range an ingested MIDI's notes are checked against: its domain's instrument where the
    domain names one, else the range the pipeline can score."""
    return INSTRUMENTS.get(domain or "", SCORED_RANGE)


def instrument(name: str) -> Instrument:
    try:
        return INSTRUMENTS[name]
    except KeyError:
        raise ValueError(f"unknown instrument {name!r}; expected one of {sorted(INSTRUMENTS)}") from None


def parse_midi(data: bytes) -> pretty_midi.PrettyMIDI:
    if not data:
        raise MidiError("empty MIDI file (0 bytes); expected a Standard MIDI File")
    try:
        pm = pretty_midi.PrettyMIDI(io.BytesIO(data))
    except Exception as e:
        raise MidiError(f"corrupt MIDI ({type(e).__name__}: {e}); expected a Standard MIDI File") from e
    if not any(i.notes for i in pm.instruments if not i.is_drum):
        raise MidiError("MIDI has no pitched notes; expected at least one note")
    return pm


def midi_bytes(pm: pretty_midi.PrettyMIDI) -> bytes:
    buf = io.BytesIO()
    pm.write(buf)
    return buf.getvalue()


def pitched(pm: pretty_midi.PrettyMIDI) -> list[pretty_midi.Note]:
    return [n for i in pm.instruments if not i.is_drum for n in i.notes]


def with_program(pm: pretty_midi.PrettyMIDI, gm_program: int, semitones: int = 0) -> pretty_midi.PrettyMIDI:
    """A copy with every pitched track on one program, transposed; drums dropped."""
    out = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    for inst in pm.instruments:
        if inst.is_drum:
            continue
        new = pretty_midi.Instrument(program=gm_program, name=inst.name)
        new.notes = [pretty_midi.Note(n.velocity, int(np.clip(n.pitch + semitones, 0, 127)), n.start, n.end)
                     for n in inst.notes]
        out.instruments.append(new)
    return out


def octave_fit(pm: pretty_midi.PrettyMIDI, inst: Instrument) -> tuple[int, int]:
    """The octave transposition (in semitones) that leaves the fewest notes outside the
    instrument's range (ties: the smallest move), and how many notes remain outside."""
    pitches = np.array([n.pitch for n in pitched(pm)])
    best = (10**9, 0)
    for k in sorted(range(-4, 5), key=abs):
        shifted = pitches + 12 * k
        bad = int(np.sum((shifted < inst.low_midi) | (shifted > inst.high_midi)))
        if bad < best[0]:
            best = (bad, 12 * k)
    return best[1], best[0]


def count_out_of_range(pm: pretty_midi.PrettyMIDI, inst: Instrument) -> int:
    return sum(1 for n in pitched(pm) if not inst.low_midi <= n.pitch <= inst.high_midi)


def slice_midi(pm: pretty_midi.PrettyMIDI, start_s: float, end_s: float) -> pretty_midi.PrettyMIDI:
    """Notes sounding in [start_s, end_s), clipped to it, with times relative to start_s."""
    out = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    for inst in pm.instruments:
        new = pretty_midi.Instrument(program=inst.program, is_drum=inst.is_drum, name=inst.name)
        for n in inst.notes:
            if n.end > start_s and n.start < end_s:
                new.notes.append(pretty_midi.Note(n.velocity, n.pitch, max(n.start, start_s) - start_s,
                                                  min(n.end, end_s) - start_s))
        out.instruments.append(new)
    return out


@functools.lru_cache(maxsize=4)
def _cached_synth(path: str, sample_rate_hz: int):
    import fluidsynth

    synth = fluidsynth.Synth(samplerate=sample_rate_hz)
    return synth, synth.sfload(path)


def _loaded(path: str, sample_rate_hz: int):
    """An .sf3 soundfont loaded once per process: loading decodes every Ogg sample (1.6 s for
    MuseScore Lite, 3.5 s for the full one, measured), longer than rendering a voice. Each use
    starts from a reset synth with 2 s of silence drawn, so no note or reverb tail of the last
    render reaches the next (the chorus LFO's phase still does: a re-render differs by ~1e-3)."""
    synth, sfid = _cached_synth(path, sample_rate_hz)
    synth.system_reset()
    synth.get_samples(2 * sample_rate_hz)
    return synth, sfid


def render(pm: pretty_midi.PrettyMIDI, sample_rate_hz: int, synth: str, tail_s: float = 1.0) -> np.ndarray:
    """Render to mono float32. `synth` is a soundfont name (FluidSynth) or 'sine'
    (pretty_midi's additive sine synthesis). Length = last note end + `tail_s`."""
    if synth == "sine":
        y = pm.synthesize(fs=sample_rate_hz)
    else:
        if synth not in SOUNDFONTS:
            raise ValueError(f"unknown synth {synth!r}; expected 'sine' or one of {sorted(SOUNDFONTS)}")
        path = SOUNDFONTS[synth]
        synth, sfid = _loaded(path, sample_rate_hz) if path.endswith(".sf3") else (path, 0)
        y = pm.fluidsynth(fs=sample_rate_hz, synthesizer=synth, sfid=sfid)
    n = int(round((pm.get_end_time() + tail_s) * sample_rate_hz))
    y = np.asarray(y, dtype=np.float32)[:n]
    return np.pad(y, (0, n - y.size)) if y.size < n else y

