"""Pitch augmentation: MIDI-backed clips re-rendered exactly; audio-only through the shifter."""
import io

import numpy as np
import pretty_midi

from infra.datasets import ShardedDataset
from schemas.configs import AugmentConfig, ClipConfig, IngestConfig
from tasks.audio import decode_audio_bytes
from tasks.augment import run_augment
from tasks.ingest import run_ingest
from tests.conftest import tone, write_wav


def _peak_hz(x, sr):
    return np.argmax(np.abs(np.fft.rfft(x * np.hanning(x.size)))) * sr / x.size


def test_midi_backed_clips_are_transposed_and_rerendered(built_corpus, tmp_path):
    _, res = built_corpus
    cfg = AugmentConfig(shifts_semitones=(12,), splits=("train",), roles=("clean",))
    out = run_augment(res.clips_url, str(tmp_path / "aug"), cfg)
    src = {r["clip_id"]: r for r in ShardedDataset.at(res.clips_url, "clips").read().to_pylist()}
    rows = ShardedDataset.at(out.out_url, "clips").read().to_pylist()
    assert out.clips_added == len(rows) == sum(1 for r in src.values() if r["role"] == "clean" and r["split"] == "train")
    for r in rows[:5]:
        parent = src[r["parent_id"]]
        assert r["pitch_shift_semitones"] == 12 and r["domain"] == parent["domain"]
        p0 = [n.pitch for i in pretty_midi.PrettyMIDI(io.BytesIO(parent["midi"])).instruments for n in i.notes]
        p1 = [n.pitch for i in pretty_midi.PrettyMIDI(io.BytesIO(r["midi"])).instruments for n in i.notes]
        assert p1 == [p + 12 for p in p0]
        assert decode_audio_bytes(r["audio_flac"])[0].size == parent["num_samples"]
    again = run_augment(res.clips_url, str(tmp_path / "aug"), cfg)
    assert again.clips_added == 0 and again.clips_skipped == out.clips_added


def test_audio_only_clips_use_the_phase_vocoder(tmp_path):
    write_wav(tmp_path / "src/flute/a.wav", tone(440, 2.0))
    run_ingest(str(tmp_path / "src"), str(tmp_path / "d"),
               IngestConfig(clip=ClipConfig(clip_s=2.0, overlap_s=0.5), split_fractions=(1.0, 0.0, 0.0)))
    out = run_augment(str(tmp_path / "d/clips"), str(tmp_path / "aug"),
                      AugmentConfig(shifts_semitones=(-12, 7)))
    rows = ShardedDataset.at(out.out_url, "clips").read().to_pylist()
    got = {r["pitch_shift_semitones"]: _peak_hz(*decode_audio_bytes(r["audio_flac"])) for r in rows}
    assert abs(got[-12] - 220) < 5 and abs(got[7] - 440 * 2 ** (7 / 12)) < 6
