"""Acceptance of the realism and faithfulness metrics on FluidSynth renders of Bach lines:
FAD (musicnn, loudness-normalised) and Basic Pitch JD / F1 against the MIDI."""
from __future__ import annotations

import numpy as np
import pretty_midi
import pytest
from music21 import corpus

from infra.settings import get_settings
from infra.storage import Storage
from tasks.corpus import _music21_voices
from tasks.metrics.fad import cached_reference_stats, embed_set, fad
from tasks.metrics.frechet import gaussian_stats
from tasks.metrics.musicnn import Musicnn
from tasks.metrics.pitch import BasicPitch, active_sets, compare_pitches, midi_roll, score_against_midi
from tasks.metrics.sources import AudioItem
from tasks.metrics.table import GridPoint, aggregate, pitch_item_values
from tasks.midi import instrument, midi_bytes, octave_fit, parse_midi, render, slice_midi, with_program

SR = 16000
N_CLIPS = 20


@pytest.fixture(scope="module")
def lines():
    out = []
    for path in sorted(str(p) for p in corpus.getComposer("bach"))[:30]:
        voices = _music21_voices(corpus.parse(path))
        out += [parse_midi(voices[k]) for k in ("soprano", "alto", "tenor", "bass") if k in voices]
        if len(out) >= 2 * N_CLIPS:
            return out
    raise AssertionError("music21 ships fewer Bach voices than expected")


def clips(lines, inst: str, font: str) -> list[AudioItem]:
    ins = instrument(inst)
    out = []
    for i, pm in enumerate(lines):
        shift, _ = octave_fit(pm, ins)
        y = render(with_program(slice_midi(pm, 0, 10), ins.gm_program, shift), SR, font, tail_s=0)[: 10 * SR]
        out.append(AudioItem(f"{inst}-{font}-{i}", y, SR))
    return out


@pytest.fixture(scope="module")
def musicnn():
    return Musicnn("MSD_musicnn", get_settings().weights_dir)


@pytest.fixture(scope="module")
def sets(lines, musicnn):
    a, b = lines[:N_CLIPS], lines[N_CLIPS:2 * N_CLIPS]
    rendered = {"A": clips(a, "flute", "fluidr3"), "B": clips(b, "flute", "fluidr3"),
                "violin": clips(b, "violin", "fluidr3"), "timgm": clips(b, "flute", "timgm6mb")}
    return rendered, gaussian_stats(embed_set(rendered["A"], musicnn).embeddings)


def fad_of(items, ref, net):
    return fad(embed_set(items, net), ref, net.name, n_boot=100)


def test_fad_self_domain_and_other_domains(sets, musicnn):
    rendered, ref = sets
    self_fad = fad_of(rendered["A"], ref, musicnn)
    same = fad_of(rendered["B"], ref, musicnn)
    violin = fad_of(rendered["violin"], ref, musicnn)
    timgm = fad_of(rendered["timgm"], ref, musicnn)
    print(f"\nFAD vs flute/FluidR3: self {self_fad.fad:.3f}, same domain {same.fad:.2f} "
          f"[{same.ci_low:.2f}, {same.ci_high:.2f}], other soundfont {timgm.fad:.2f}, violin {violin.fad:.2f}")
    assert self_fad.fad < 1e-6
    assert same.ci_low <= same.fad <= same.ci_high
    assert timgm.fad > 3 * same.fad and violin.fad > 10 * same.fad
    assert timgm.ci_low > same.ci_high and violin.ci_low > timgm.ci_high


def test_fad_grows_as_snr_falls_and_ignores_gain(sets, musicnn):
    rendered, ref = sets
    rng = np.random.default_rng(0)
    values = []
    for snr_db in (40, 20, 10, 0):
        noisy = []
        for it in rendered["B"]:
            n = rng.standard_normal(it.audio.size).astype(np.float32)
            n *= np.sqrt(np.mean(it.audio ** 2) / np.mean(n ** 2) / 10 ** (snr_db / 10))
            noisy.append(AudioItem(it.item_id, it.audio + n, SR))
        values.append(fad_of(noisy, ref, musicnn).fad)
    print("\nFAD at SNR 40/20/10/0 dB:", [round(v, 2) for v in values])
    assert all(x < y for x, y in zip(values, values[1:]))
    base = fad_of(rendered["B"], ref, musicnn)
    for gain in (2.0, 0.5):  # +-6 dB
        louder = fad_of([AudioItem(i.item_id, i.audio * gain, SR) for i in rendered["B"]], ref, musicnn)
        assert abs(louder.fad - base.fad) <= (base.ci_high - base.ci_low) / 2


def test_reference_stats_are_cached(tmp_path, sets, musicnn):
    rendered, _ = sets
    cache = Storage(str(tmp_path / "cache"))
    calls = []

    def build():
        calls.append(1)
        return embed_set(rendered["A"][:4], musicnn)

    ids = [i.item_id for i in rendered["A"][:4]]
    s1, hit1 = cached_reference_stats(cache, "flute", musicnn.name, ids, build)
    s2, hit2 = cached_reference_stats(cache, "flute", musicnn.name, ids, build)
    s3, hit3 = cached_reference_stats(cache, "flute", musicnn.name, ids[:3], build)
    assert (hit1, hit2, hit3) == (False, True, False) and len(calls) == 2
    np.testing.assert_array_equal(s1.sigma, s2.sigma)
    assert s1.n == s2.n == 12


def test_fad_bad_input_is_named(musicnn):
    good = AudioItem("good", np.sin(np.arange(4 * SR) * 0.05).astype(np.float32), SR)
    nan = AudioItem("nan-clip", np.full(4 * SR, np.nan, np.float32), SR)
    short = AudioItem("short-clip", np.ones(SR // 2, np.float32) * 0.1, SR)
    with pytest.raises(ValueError, match="nan-clip.*NaN"):
        embed_set([good, nan], musicnn)
    counted = embed_set([good, short], musicnn)  # a tail clip under one patch is skipped, and counted
    assert counted.short_clips == 1 and counted.clip_ids == ["good"]
    with pytest.raises(ValueError, match="no clip of at least 2.98 s"):
        embed_set([short], musicnn)
    silent = embed_set([good, AudioItem("quiet", np.zeros(4 * SR, np.float32), SR)], musicnn)
    assert silent.silent_clips == 1 and np.isfinite(silent.embeddings).all()
    with pytest.raises(ValueError, match="no clip"):
        embed_set([], musicnn)


# -- pitch --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tracker():
    return BasicPitch(get_settings().weights_dir)


def line(pitches, program, dur_s=0.4):
    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=program)
    inst.notes = [pretty_midi.Note(90, p, i * dur_s, (i + 1) * dur_s) for i, p in enumerate(pitches)]
    pm.instruments.append(inst)
    return pm


MELODY = [72, 74, 76, 77, 79, 77, 76, 74, 72, 71, 72]


def test_jd_cases(tracker):
    flute = render(line(MELODY, 73), SR, "fluidr3")
    notes = {"flute": tracker.notes(flute, SR),
             "violin": tracker.notes(render(line(MELODY, 40), SR, "fluidr3"), SR),
             "flute+1": tracker.notes(render(line([p + 1 for p in MELODY], 73), SR, "fluidr3"), SR),
             "sine": tracker.notes(render(line([60, 62, 64, 65], 0), SR, "sine"), SR),
             "sine+6": tracker.notes(render(line([66, 68, 70, 71], 0), SR, "sine"), SR)}
    same = compare_pitches(notes["flute"], notes["flute"])
    assert same.poly.distance == 0.0 and same.melody.distance == 0.0
    assert compare_pitches(notes["sine"], notes["sine+6"]).poly.distance == 1.0
    semitone = compare_pitches(notes["flute"], notes["flute+1"])
    other = compare_pitches(notes["flute"], notes["violin"])
    print(f"\nJD: semitone up {semitone.poly.distance:.3f} (melody {semitone.melody.distance:.3f}); "
          f"flute vs violin {other.poly.distance:.3f} (melody {other.melody.distance:.3f})")
    assert semitone.poly.distance > 0.9 and semitone.melody.distance > 0.9
    assert other.poly.distance < 0.25 and other.melody.distance < 0.25
    # another sample rate is resampled onto the same grid
    import librosa
    up = tracker.notes(librosa.resample(flute, orig_sr=SR, target_sr=44100), 44100)
    assert compare_pitches(notes["flute"], up).poly.distance < 0.05


def test_f1_against_midi_piano_strings_mix(tracker):
    full = slice_midi(parse_midi(_music21_voices(corpus.parse("bach/bwv66.6"))["mix"]), 0, 12)
    quartet = slice_midi(full, 0, 12)
    for inst, program in zip(quartet.instruments, (73, 68, 71, 70)):  # flute, oboe, clarinet, bassoon
        inst.program = program
    scores = {}
    for name, pm in (("piano", with_program(full, 0)), ("strings", with_program(full, 48)), ("mix", quartet)):
        notes = tracker.notes(render(pm, SR, "fluidr3"), SR)
        scores[name] = score_against_midi(active_sets(notes), midi_roll(full, len(notes)))
    print("\nframe F1 vs MIDI:", {k: round(v.f1, 3) for k, v in scores.items()})
    for s in scores.values():
        assert 0.7 < s.f1 <= 1 and s.precision > 0.6 and s.recall > 0.7


def test_pitch_bad_input_and_table(tracker):
    silence = np.zeros(SR, np.float32)
    with pytest.raises(ValueError, match="no frame has an active pitch"):
        compare_pitches(tracker.notes(silence, SR), tracker.notes(silence, SR))
    with pytest.raises(ValueError, match="NaN"):
        tracker.notes(np.full(SR, np.nan, np.float32), SR)
    flute = render(line(MELODY, 73), SR, "fluidr3")
    with pytest.raises(ValueError, match="differ in length"):
        compare_pitches(tracker.notes(flute, SR), tracker.notes(flute[: SR], SR))
    short = tracker.notes(flute[: SR // 2], SR)  # sub-second clips are tracked, not refused
    assert short.shape == (43, 88)
    pm = line(MELODY, 73)
    guide = AudioItem("guide", flute, SR, midi_bytes(pm))
    values = pitch_item_values([(AudioItem("out", flute, SR), guide)], tracker)
    assert values[0]["jd"] == 0.0 and 0.7 < values[0]["f1_midi"] <= 1.0
    rows = aggregate(GridPoint("run", t_init=0.5, lam=1.0), values * 3, ("jd", "f1_midi"), reference="guide")
    assert [r["metric"] for r in rows] == ["jd", "f1_midi"] and rows[0]["n"] == 3


def test_item_ids_match_audio_items_without_decoding(built_corpus, tmp_path):
    from tasks.metrics.sources import audio_items, item_ids

    _, corpus = built_corpus
    for kw in ({"domain": "flute", "role": "clean"}, {"role": "midi_guide", "limit": 2}, {}):
        assert item_ids(corpus.clips_url, **kw) == [i.item_id for i in audio_items(corpus.clips_url, **kw)]
    import soundfile as sf
    for name in ("b.wav", "a.flac"):
        sf.write(tmp_path / name, np.zeros(1600, np.float32), SR)
    assert item_ids(str(tmp_path)) == [i.item_id for i in audio_items(str(tmp_path))] == ["a.flac", "b.wav"]


def test_folders_with_the_same_file_names_never_share_reference_statistics(tmp_path, sets, musicnn):
    """Issue 17: the cache was keyed by relative file names, so a second folder with the same
    names silently reused the first one's statistics."""
    import soundfile as sf

    from tasks.metrics.compute import SetSpec, fad_between
    from tasks.metrics.sources import item_content_ids, item_ids

    rendered, _ = sets
    for folder, key in (("flute", "A"), ("violin", "violin")):
        for k, item in enumerate(rendered[key][:6]):
            (tmp_path / folder).mkdir(exist_ok=True)
            sf.write(tmp_path / folder / f"clip{k}.wav", item.audio, item.sample_rate_hz)
    assert item_ids(str(tmp_path / "flute")) == item_ids(str(tmp_path / "violin"))  # the same names
    assert set(item_content_ids(str(tmp_path / "flute"))).isdisjoint(item_content_ids(str(tmp_path / "violin")))
    cache = str(tmp_path / "cache")
    evaluated = SetSpec(str(tmp_path / "flute"))
    same, _ = fad_between(evaluated, SetSpec(str(tmp_path / "flute")), musicnn, cache_url=cache, reference_domain="x")
    other, cached = fad_between(evaluated, SetSpec(str(tmp_path / "violin")), musicnn, cache_url=cache,
                                reference_domain="x")
    assert not cached
    assert same.fad < 1.0 < 5.0 < other.fad, (same.fad, other.fad)
