"""Whole recordings from clip outputs (tasks/recordings.py): stitching, gains, streaming writes, seams."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from schemas.configs import ClipConfig
from tasks.audio import clip_spans
from tasks.recordings import (ClipSpan, clip_gains_db, joints_s, output_name, seam_report, stitch, write_stream)

SR = 16000


def _signal(seconds: float, seed: int = 0) -> np.ndarray:
    """A gliding tone with slow vibrato: no onsets, so any seam stands out."""
    t = np.arange(int(seconds * SR)) / SR
    f = 330 + 60 * np.sin(2 * np.pi * t / 11) + 4 * np.sin(2 * np.pi * 5.5 * t)
    ph = 2 * np.pi * np.cumsum(f) / SR + seed
    return (0.2 * (np.sin(ph) + 0.4 * np.sin(2 * ph + 0.3))).astype(np.float32)


def _clips_of(x: np.ndarray, clip_s: float = 10.0, overlap_s: float = 1.0):
    cfg = ClipConfig(clip_s=clip_s, overlap_s=overlap_s)
    n, hop = int(clip_s * SR), int((clip_s - overlap_s) * SR)
    spans = [ClipSpan(f"k{i}", a / SR, (b - a) / SR, -23.0) for i, (a, b) in enumerate(clip_spans(x.size, n, hop))]
    assert cfg.clip_s == clip_s
    return spans


def _stitched(spans, read, total, crossfade_s=1.0, gains=None):
    return np.concatenate(list(stitch(spans, read, gains or [0.0] * len(spans), total, SR, crossfade_s)))


def test_stitching_the_clips_of_one_signal_gives_the_signal_back():
    """Clips cut from one recording and put back: the same samples (the end-aligned tail
    included), the length exact, the joints neither dipping nor swelling (rho = 1: equal gains)."""
    x = _signal(47.3)
    spans = _clips_of(x)
    assert len(spans) == 6 and spans[-1].start_s + spans[-1].duration_s == pytest.approx(x.size / SR)
    read = {s.output_key: x[int(round(s.start_s * SR)):int(round(s.start_s * SR)) + int(round(s.duration_s * SR))]
            for s in spans}.__getitem__
    y = _stitched(spans, read, x.size)
    assert y.size == x.size
    assert np.max(np.abs(y - x)) < 1e-4


def test_independent_renderings_keep_their_power_through_each_joint():
    """Two unrelated signals cross-faded: the equal-power law (rho = 0), no 3 dB dip."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal(20 * SR).astype(np.float32) * 0.1 for _ in range(2))
    spans = [ClipSpan("a", 0.0, 10.0, -23.0), ClipSpan("b", 9.0, 10.0, -23.0)]
    y = _stitched(spans, {"a": a[:10 * SR], "b": b[9 * SR:19 * SR]}.__getitem__, 19 * SR)
    rms = lambda v: float(np.sqrt(np.mean(v ** 2)))  # noqa: E731
    mid = y[int(9.3 * SR):int(9.7 * SR)]
    assert rms(mid) == pytest.approx(0.1, rel=0.05)


def test_gaps_are_silence_and_gains_follow_the_source_level():
    """A clip ingestion dropped (silent) is silence; a clip 10 dB quieter in the source comes back
    10 dB quieter; no clip peaks above the ceiling."""
    spans = [ClipSpan("a", 0.0, 10.0, -20.0), ClipSpan("c", 18.0, 10.0, -30.0)]
    g = clip_gains_db(spans, [-3.0, -3.0], target_lufs=-23.0, ceiling_dbfs=-1.0, clip_lufs=-23.0)
    assert g[0] - g[1] == pytest.approx(10.0)
    assert max(g) - 3.0 <= -1.0 + 1e-9
    tone = _signal(10.0)
    y = _stitched(spans, lambda k: tone, 28 * SR, gains=g)
    assert y.size == 28 * SR
    assert np.all(y[int(10.02 * SR):18 * SR] == 0)
    level = lambda v: 20 * np.log10(np.sqrt(np.mean(v ** 2)))  # noqa: E731
    assert level(y[2 * SR:8 * SR]) - level(y[20 * SR:26 * SR]) == pytest.approx(10.0, abs=0.05)


def test_a_hard_cut_is_a_seam_and_a_crossfade_is_not():
    """The seam measure itself: two renderings of the same tune that differ in timbre, joined by a
    cut, change at the joint more than the music does; cross-faded, they do not."""
    x1, x2 = _signal(30.0), _signal(30.0, seed=1) * 0.7
    x2 = x2 + 0.05 * np.sin(2 * np.pi * 3 * np.cumsum(np.ones(x2.size)) * 440 / SR).astype(np.float32)
    spans = _clips_of(x1)
    outs = {s.output_key: (x1 if i % 2 == 0 else x2)[int(round(s.start_s * SR)):int(round(s.start_s * SR))
                                                       + int(round(s.duration_s * SR))] for i, s in enumerate(spans)}
    joints = joints_s(spans)
    smooth = seam_report(_stitched(spans, outs.__getitem__, x1.size), SR, joints)
    cut = seam_report(_stitched(spans, outs.__getitem__, x1.size, crossfade_s=1 / SR), SR, joints)
    assert smooth["joints"] == cut["joints"] == len(spans) - 1
    assert smooth["seamless"], smooth
    assert not cut["seamless"], cut


@pytest.mark.parametrize("fmt,rate", [("flac", SR), ("wav", 44100)])
def test_written_streams_have_the_exact_length_and_rate(tmp_path, fmt, rate):
    x = _signal(12.345)
    total_out = int(round(x.size * rate / SR))
    blocks = (x[k:k + 4000] for k in range(0, x.size, 4000))
    n = write_stream(blocks, str(tmp_path / f"o.{fmt}"), SR, rate, fmt, total_out)
    info = sf.info(str(tmp_path / f"o.{fmt}"))
    assert n == info.frames == total_out and info.samplerate == rate and info.channels == 1
    if rate != SR:  # resampled, not stretched: the same pitch (peak of the spectrum) at the new rate
        y, _ = sf.read(str(tmp_path / f"o.{fmt}"))
        fx = np.argmax(np.abs(np.fft.rfft(x[:SR]))) * SR / SR
        fy = np.argmax(np.abs(np.fft.rfft(y[:rate]))) * SR / rate * rate / SR
        assert abs(fx - fy) <= 2
    with pytest.raises(ValueError, match="expected one of"):
        write_stream(iter([x]), str(tmp_path / "o.mp3"), SR, SR, "mp3", x.size)


def test_output_names_keep_the_source_path():
    assert output_name("violin/take 1.wav", "flute", "flac") == "violin/take 1.flute.flac"
    assert output_name("a.wav", "flute", "wav", keep_extension=True) == "a.wav.flute.wav"


def test_an_outputs_table_of_the_previous_version_still_reads(tmp_path):
    """A run made before outputs rows named their source (schema 2) resumes after the upgrade: its
    rows read, the columns added since as nulls, and new commits append to it."""
    import pyarrow as pa

    from infra.datasets import ShardBuffer, ShardedDataset
    from infra.storage import Storage
    from schemas.tables import OUTPUTS

    old = pa.schema([f for f in OUTPUTS if f.name not in ("source_uri", "source_id", "start_s", "piece", "peak_dbfs")])
    ds = ShardedDataset(Storage(str(tmp_path / "outputs")), "outputs")
    ds.version, ds.schema = "2", old
    buf = ShardBuffer(ds, "h", shard_rows=4)
    buf.add({"output_key": "k0", "clip_id": "c0", "duration_s": 1.0})
    buf.commit()
    now = ShardedDataset(Storage(str(tmp_path / "outputs")), "outputs")
    buf = ShardBuffer(now, "h", shard_rows=4)
    buf.add({"output_key": "k1", "clip_id": "c1", "duration_s": 2.0, "source_uri": "/a.wav", "start_s": 9.0})
    buf.commit()
    rows = now.read(["output_key", "source_uri", "start_s"]).to_pylist()
    assert rows == [{"output_key": "k0", "source_uri": None, "start_s": None},
                    {"output_key": "k1", "source_uri": "/a.wav", "start_s": 9.0}]
    assert now.read().num_rows == 2
