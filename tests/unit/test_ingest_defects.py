"""Inputs that used to get through ingestion, or be mislabelled (issue 16, defects 4 and 6):
each is now refused with a reason, and a re-run writes nothing."""
from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from infra.datasets import ShardedDataset
from schemas.configs import ClipConfig, IngestConfig
from tasks.ingest import run_ingest
from tests.conftest import SR, tone, write_wav

CFG = IngestConfig(clip=ClipConfig(clip_s=2.0, overlap_s=0.5, min_clip_s=0.5))


def _ingest(src, dest, **kw):
    res = run_ingest(str(src), str(dest), CFG, **kw)
    clips = ShardedDataset.at(str(dest / "clips"), "clips").read(["clip_id", "domain", "source_uri"]).to_pylist()
    quar = ShardedDataset.at(str(dest / "quarantine"), "quarantine").read().to_pylist()
    return res, clips, quar


def test_a_symlink_that_leaves_src_is_refused_not_read(tmp_path):
    outside = tmp_path / "secret"
    write_wav(str(outside / "private.wav"), tone(500, 2.0))
    src = tmp_path / "src"
    write_wav(str(src / "flute/good.wav"), tone(440, 2.0))
    os.symlink(outside / "private.wav", src / "flute/link.wav")
    os.symlink(outside, src / "linked_dir")
    res, clips, quar = _ingest(src, tmp_path / "d")
    assert {os.path.basename(c["source_uri"]) for c in clips} == {"good.wav"}
    refused = {os.path.basename(q["source_uri"]): q["reason"] for q in quar}
    # the file link is refused; the directory link is either not listed or refused too
    assert set(refused) <= {"link.wav", "private.wav"} and "link.wav" in refused
    assert all("outside SRC" in r for r in refused.values())


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_an_empty_domain_label_is_refused_never_none(tmp_path, fmt):
    src = tmp_path / "src"
    write_wav(str(src / "a.wav"), tone(440, 2.0))
    write_wav(str(src / "b.wav"), tone(330, 2.0))
    side = tmp_path / f"side.{fmt}"
    if fmt == "csv":
        side.write_text("path,domain\na.wav,flute\nb.wav,\n")
    else:
        pq.write_table(pa.table({"path": ["a.wav", "b.wav"], "domain": ["flute", None]}), side)
    _, clips, quar = _ingest(src, tmp_path / "d", sidecar_url=str(side))
    assert {c["domain"] for c in clips} == {"flute"}
    assert [q["reason"] for q in quar] == ["empty domain label; expected a plain name such as 'flute'"]


def test_identical_bytes_under_two_domains_make_two_clip_sets(tmp_path):
    src = tmp_path / "src"
    write_wav(str(src / "flute/x.wav"), tone(440, 2.0))
    write_wav(str(src / "violin/x.wav"), tone(440, 2.0))
    assert (src / "flute/x.wav").read_bytes() == (src / "violin/x.wav").read_bytes()
    res, clips, _ = _ingest(src, tmp_path / "d")
    assert {c["domain"] for c in clips} == {"flute", "violin"} and len({c["clip_id"] for c in clips}) == len(clips)
    # and into a fresh destination the second domain is not "already done"
    res2, clips2, _ = _ingest(src, tmp_path / "fresh")
    assert res2.sources_skipped == 0 and len(clips2) == len(clips)


def test_a_wav_shorter_than_its_header_is_quarantined(tmp_path):
    src = tmp_path / "src/flute"
    write_wav(str(src / "whole.wav"), tone(440, 3.0))
    data = (src / "whole.wav").read_bytes()
    (src / "cut.wav").write_bytes(data[: len(data) // 2])
    _, clips, quar = _ingest(tmp_path / "src", tmp_path / "d")
    assert {os.path.basename(c["source_uri"]) for c in clips} == {"whole.wav"}
    assert len(quar) == 1 and "truncated WAV" in quar[0]["reason"] and quar[0]["source_uri"].endswith("cut.wav")


def _clicks(seconds: float) -> np.ndarray:
    x = np.zeros(int(seconds * SR), np.float32)
    x[:: SR // 2] = 0.9  # a full-scale click every 0.5 s, nothing in between
    return x


@pytest.mark.parametrize("name,signal", [
    ("dc.wav", np.full(3 * SR, 0.5, np.float32)),                       # a DC offset: peak -6 dBFS
    ("infrasound.wav", tone(8.0, 3.0, amp=0.8)),                         # 8 Hz, well below hearing
    ("clicks.wav", _clicks(3.0)),                                        # sparse clicks
    ("hum_floor.wav", (1e-5 * np.random.default_rng(0).standard_normal(3 * SR)).astype(np.float32)),
])
def test_files_without_audible_content_are_quarantined_whatever_their_form(tmp_path, name, signal):
    src = tmp_path / "src/flute"
    write_wav(str(src / "music.wav"), tone(440, 3.0))
    write_wav(str(src / name), signal, subtype="FLOAT")
    _, clips, quar = _ingest(tmp_path / "src", tmp_path / "d")
    assert {os.path.basename(c["source_uri"]) for c in clips} == {"music.wav"}
    assert len(quar) == 1 and "no audible content" in quar[0]["reason"]


def test_quiet_but_real_music_is_kept(tmp_path):
    """The audibility test must not refuse quiet recordings (-50 dBFS) or short notes."""
    src = tmp_path / "src/flute"
    write_wav(str(src / "quiet.wav"), tone(440, 3.0, amp=0.003))
    short = np.zeros(3 * SR, np.float32)
    short[SR: SR + SR // 5] = tone(660, 0.2)  # one 200 ms note in 3 s
    write_wav(str(src / "one_note.wav"), short)
    _, clips, quar = _ingest(tmp_path / "src", tmp_path / "d")
    assert quar == [] and {os.path.basename(c["source_uri"]) for c in clips} == {"quiet.wav", "one_note.wav"}


def test_a_missing_sidecar_file_is_quarantined_once_and_a_rerun_writes_nothing(tmp_path):
    src = tmp_path / "src"
    write_wav(str(src / "a.wav"), tone(440, 2.0))
    side = tmp_path / "side.csv"
    side.write_text("path,domain\na.wav,flute\ngone.wav,flute\n")
    res, _, quar = _ingest(src, tmp_path / "d", sidecar_url=str(side))
    assert len(quar) == 1 and "not found" in quar[0]["reason"]
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "d").rglob("*") if p.is_file()}
    again = run_ingest(str(src), str(tmp_path / "d"), CFG, sidecar_url=str(side))
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "d").rglob("*") if p.is_file()}
    assert again.clips_added == 0 and again.quarantined == 0 and before == after


def test_quarantine_reasons_hold_no_memory_addresses(tmp_path):
    src = tmp_path / "src/flute"
    src.mkdir(parents=True)
    (src / "junk.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 40)
    (src / "text.flac").write_bytes(b"not audio at all\n" * 100)
    _, _, quar = _ingest(tmp_path / "src", tmp_path / "d")
    assert len(quar) == 2
    for q in quar:
        assert "0x" not in q["reason"] and "\n" not in q["reason"], q["reason"]
    # and the same input gives the same reason on every run (reasons are part of the row's key)
    _, _, quar2 = _ingest(tmp_path / "src", tmp_path / "d2")
    assert sorted(q["reason"] for q in quar) == sorted(q["reason"] for q in quar2)


def test_clean_reason_strips_addresses_and_lines():
    from tasks.errors import clean_reason

    assert clean_reason("Error opening <_io.BytesIO object at 0x7f3a2c1d9e40>:\n  Format not recognised.") == \
        "Error opening <_io.BytesIO>: Format not recognised."


def test_missing_src_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_ingest(str(tmp_path / "nope"), str(tmp_path / "d"), CFG)
    assert not (tmp_path / "d").exists()


def test_sweep_grids_are_validated_before_any_work():
    from pydantic import ValidationError

    from schemas.sweep import SweepConfig

    with pytest.raises(ValidationError, match="less than or equal to 1"):
        SweepConfig(model="models:/m/1", t_inits=(0.5, 1.5))
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        SweepConfig(model="models:/m/1", lams=(-1.0,))
    with pytest.raises(ValidationError, match="grid is empty for ddib"):
        SweepConfig(model="models:/m/1", method="ddib", source_model="models:/s/1", t_inits=(1.0,))
    with pytest.raises(ValidationError, match="embedding"):
        SweepConfig(model="models:/m/1", embedding="vggish-typo")
    assert len(SweepConfig(model="models:/m/1", t_inits=(0.4, 0.6), lams=(0.0, 1.0)).grid()) == 4
