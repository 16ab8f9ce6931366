"""The bad-input suite: each bad file yields one quarantine row with a clear reason, no crash,
and every good file in the same batch is ingested."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pretty_midi
import pytest
import soundfile as sf

from infra.datasets import ShardedDataset
from schemas.configs import ClipConfig, IngestConfig
from tasks.ingest import run_ingest
from tests.conftest import tone, write_wav

CFG = IngestConfig(clip=ClipConfig(clip_s=2.0, overlap_s=0.5, min_clip_s=0.5))


def _midi(path, notes=True):
    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=73)
    if notes:
        inst.notes = [pretty_midi.Note(90, 72 + i, i * 0.5, i * 0.5 + 0.45) for i in range(6)]
    pm.instruments.append(inst)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pm.write(str(path))


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    src = tmp_path_factory.mktemp("src")
    write_wav(src / "flute/good.wav", tone(440, 3.0))
    write_wav(src / "flute/rate8k.wav", tone(440, 3.0, sr=8000), sr=8000)
    write_wav(src / "flute/rate96k.wav", tone(440, 3.0, sr=96000), sr=96000)
    write_wav(src / "violin/six_channel.wav", tone(330, 3.0, channels=6))
    sf.write(src / "violin/good.flac", tone(330, 2.5), 16000)
    _midi(src / "piano/tune.mid")
    good_bytes = (src / "flute/good.wav").read_bytes()
    (src / "bad").mkdir()
    (src / "bad/truncated_header.wav").write_bytes(good_bytes[:30])
    (src / "bad/zero.wav").write_bytes(b"")
    (src / "bad/not_audio.wav").write_bytes(b"this is a text file, not audio\n" * 50)
    nan = tone(440, 2.0)
    nan[12345] = np.nan
    write_wav(src / "bad/nan.wav", nan, subtype="FLOAT")
    inf = tone(440, 2.0)
    inf[100] = np.inf
    write_wav(src / "bad/inf.wav", inf, subtype="FLOAT")
    write_wav(src / "bad/silent.wav", np.zeros(32000, np.float32))
    _midi(src / "bad/empty.mid", notes=False)
    (src / "bad/corrupt.mid").write_bytes(b"MThd\x00\x00\x00\x06garbage-garbage")
    return src


@pytest.fixture(scope="module")
def ingested(messy, tmp_path_factory):
    dest = tmp_path_factory.mktemp("dest")
    res = run_ingest(str(messy), str(dest), CFG, shard_rows=8)
    clips = ShardedDataset.at(str(dest / "clips"), "clips").read()
    quar = ShardedDataset.at(str(dest / "quarantine"), "quarantine").read()
    return dest, res, clips, quar


def _reason(quar, name):
    rows = [r for r in quar.to_pylist() if r["source_uri"].endswith(name)]
    assert len(rows) == 1, f"expected one quarantine row for {name}, got {rows}"
    return rows[0]["reason"]


@pytest.mark.parametrize("name,expected", [
    ("truncated_header.wav", "undecodable"), ("zero.wav", "empty file"),
    ("not_audio.wav", "undecodable"), ("nan.wav", "non-finite"), ("inf.wav", "non-finite"),
    ("silent.wav", "silent"), ("empty.mid", "no pitched notes"), ("corrupt.mid", "corrupt MIDI"),
])
def test_each_bad_file_is_quarantined_with_a_reason(ingested, name, expected):
    assert expected in _reason(ingested[3], name)


def test_good_files_in_the_same_batch_are_ingested(ingested):
    _, res, clips, quar = ingested
    sources = {os.path.basename(u) for u in clips.column("source_uri").to_pylist()}
    assert sources == {"good.wav", "rate8k.wav", "rate96k.wav", "six_channel.wav", "good.flac", "tune.mid"}
    assert quar.num_rows == 8 and res.quarantined == 8
    rows = clips.to_pylist()
    assert {r["sample_rate_hz"] for r in rows} == {16000}
    assert {r["domain"] for r in rows} == {"flute", "violin", "piano"}
    # 3 s at any input rate -> the same clip spans at 16 kHz (resampled, not rejected)
    spans = {os.path.basename(r["source_uri"]): [] for r in rows}
    for r in rows:
        spans[os.path.basename(r["source_uri"])].append((round(r["start_s"], 3), r["num_samples"]))
    assert sorted(spans["rate8k.wav"]) == sorted(spans["good.wav"]) == sorted(spans["rate96k.wav"])
    midi_rows = [r for r in rows if r["source_uri"].endswith("tune.mid")]
    assert all(r["midi"] for r in midi_rows)


def test_resampled_audio_keeps_its_pitch(ingested):
    from tasks.audio import decode_audio_bytes
    clips = ingested[2].to_pylist()
    for name in ("rate8k.wav", "rate96k.wav", "six_channel.wav"):
        r = next(r for r in clips if r["source_uri"].endswith(name))
        x, sr = decode_audio_bytes(r["audio_flac"])
        peak_hz = np.argmax(np.abs(np.fft.rfft(x))) * sr / x.size
        assert abs(peak_hz - (330 if "six" in name else 440)) < 2, name
        assert abs(np.sqrt(np.mean(x ** 2)) - 10 ** (-23 / 20) * 1.0) < 0.05  # loudness-normalised


def test_rerun_adds_and_rewrites_nothing(ingested, messy):
    dest, _, clips, _ = ingested
    before = {p: os.stat(p).st_mtime_ns for p in dest.rglob("*") if p.is_file()}
    res = run_ingest(str(messy), str(dest), CFG, shard_rows=8)
    after = {p: os.stat(p).st_mtime_ns for p in dest.rglob("*") if p.is_file()}
    assert res.clips_added == 0 and res.quarantined == 0 and res.sources_skipped == 6 + 8
    assert before == after


def test_sidecar_paths_that_escape_the_root_are_quarantined(messy, tmp_path):
    side = tmp_path / "side.csv"
    side.write_text("path,domain,split\nflute/good.wav,flute,train\n../../etc/passwd,flute,train\n"
                    "violin/good.flac,../evil,train\n/abs/path.wav,flute,test\n")
    res = run_ingest(str(messy), str(tmp_path / "d"), CFG, sidecar_url=str(side))
    quar = ShardedDataset.at(str(tmp_path / "d/quarantine"), "quarantine").read().to_pylist()
    reasons = sorted(r["reason"] for r in quar)
    assert res.clips_added > 0 and len(quar) == 3
    assert sum("escapes its root" in r for r in reasons) == 1
    assert sum("not a plain name" in r for r in reasons) == 1
    assert sum("absolute" in r for r in reasons) == 1
    clips = ShardedDataset.at(str(tmp_path / "d/clips"), "clips").read().to_pylist()
    assert {r["split"] for r in clips} == {"train"}


def test_thirty_minute_file_is_ingested_with_bounded_memory(tmp_path):
    """30 min of 44.1 kHz stereo (decoded whole as float32: 635 MB). Peak RSS growth is printed
    and must stay far below that."""
    src = tmp_path / "long/flute"
    src.mkdir(parents=True)
    sr, minutes = 44100, 30
    with sf.SoundFile(src / "long.wav", "w", sr, 2, "PCM_16") as f:
        for k in range(minutes * 6):  # 10 s blocks
            t = (np.arange(10 * sr) + k * 10 * sr) / sr
            x = 0.2 * np.sin(2 * np.pi * (220 + 20 * np.sin(0.1 * t)) * t)
            f.write(np.stack([x, x], axis=1))
    script = textwrap.dedent(f"""
        import json, resource, tracemalloc
        from schemas.configs import IngestConfig
        from tasks.ingest import run_ingest
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        tracemalloc.start()
        r = run_ingest({str(tmp_path / 'long')!r}, {str(tmp_path / 'out')!r}, IngestConfig(), shard_rows=32)
        heap_peak = tracemalloc.get_traced_memory()[1]
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({{"clips": r.clips_added, "quarantined": r.quarantined, "heap_peak_mib": heap_peak / 2**20,
                          "base_mib": base / 1024, "peak_mib": peak / 1024}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env=dict(os.environ, REINSTRUMENT_PROGRESS="0"))
    stats = json.loads(out.stdout.strip().splitlines()[-1])
    growth = stats["peak_mib"] - stats["base_mib"]
    print(f"\n30-min 44.1 kHz stereo WAV: {stats['clips']} clips, peak RSS {stats['peak_mib']:.0f} MiB "
          f"(+{growth:.0f} MiB over the loaded interpreter), traced heap peak {stats['heap_peak_mib']:.0f} MiB")
    assert stats["quarantined"] == 0 and stats["clips"] == 200  # 199 clips every 9 s + one end-aligned
    assert growth < 250 and stats["heap_peak_mib"] < 250
