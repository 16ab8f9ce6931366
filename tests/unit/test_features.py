"""Log-mel front end against librosa, segments, statistics, reader, Griffin-Lim."""
import librosa
import numpy as np
import pytest
import torch

from infra.datasets import ShardedDataset
from ray_actors import features as feature_actors
from ray_actors.features import PART_CLIPS, extract_features, feature_set_url
from tasks.feature_values import decode_values_column
from schemas.configs import FeatureConfig, MelConfig
from tasks.feature_reader import iter_feature_batches
from tasks.diffusion.vocoder import GriffinLimVocoder
from tasks.features import LogMel, logmel_batch, num_frames_for, segments
from tests.conftest import tone


def test_logmel_matches_librosa_reference():
    cfg = MelConfig()
    x = np.random.default_rng(0).standard_normal(16000 * 3).astype(np.float32) * 0.1 + tone(440, 3)
    ours = logmel_batch([x], LogMel(cfg))[0]
    ref = librosa.feature.melspectrogram(y=x, sr=16000, n_fft=1024, win_length=640, hop_length=320,
                                         n_mels=128, fmin=0, fmax=8000, power=1.0, pad_mode="constant")
    ref = np.log(np.maximum(ref, cfg.log_floor))
    assert ours.shape == ref.shape == (128, num_frames_for(x.size, cfg))
    assert np.abs(ours - ref).max() < 1e-2


def test_batching_does_not_change_an_item():
    fe = LogMel(MelConfig())
    a, b, c = tone(440, 2), tone(660, 2), tone(220, 1.3)
    alone = logmel_batch([a], fe)[0]
    together = logmel_batch([b, a, c], fe)
    np.testing.assert_array_equal(alone, together[1])
    assert together[2].shape[1] == num_frames_for(c.size, MelConfig())


def test_segments_cover_and_pad():
    cfg = FeatureConfig(segment_frames=128, segment_hop_frames=128)
    m = np.random.default_rng(1).standard_normal((128, 300)).astype(np.float32)
    segs = segments(m, cfg)
    assert [s for s, _, _ in segs] == [0, 128, 172]
    np.testing.assert_array_equal(segs[2][1], m[:, 172:300])
    short = segments(m[:, :50], cfg)
    assert len(short) == 1 and short[0][2] == 50
    np.testing.assert_allclose(short[0][1][:, 50:], np.log(cfg.mel.log_floor), rtol=1e-6)


def test_griffin_lim_recovers_a_tone():
    cfg = MelConfig()
    x = tone(440, 2)
    y = GriffinLimVocoder(cfg, n_iter=32)(logmel_batch([x], LogMel(cfg))[0])
    assert abs(y.size - x.size) <= cfg.hop_length_samples
    peak = np.argmax(np.abs(np.fft.rfft(y))) * 16000 / y.size
    assert abs(peak - 440) < 10


def test_feature_set_round_trip_local(built_corpus, tmp_path):
    root, res = built_corpus
    cfg = FeatureConfig(roles=("clean",))
    out = extract_features([res.clips_url], str(tmp_path), cfg, local=True)
    clip_shards = ShardedDataset.at(res.clips_url, "clips").manifest().shards
    parts = sum(-(-e.num_rows // PART_CLIPS) for e in clip_shards)
    assert out["features_url"] == feature_set_url(str(tmp_path), cfg) and out["shards_added"] == parts > 1
    again = extract_features([res.clips_url], str(tmp_path), cfg, local=True)
    assert again["shards_added"] == 0 and again["rows"] == out["rows"]
    batches = list(iter_feature_batches(out["features_url"], 16, split="train", domain="flute"))
    x = torch.cat([b for b, _ in batches])
    assert x.shape[1:] == (128, 128) and x.dtype == torch.float32
    # normalised with train statistics: per-bin mean ~0, std ~1 over valid frames
    assert abs(float(x.mean())) < 0.3 and 0.5 < float(x.std()) < 1.5
    with pytest.raises(ValueError, match="no train statistics"):
        list(iter_feature_batches(out["features_url"], 4, role="degraded"))


def test_clips_at_another_rate_are_quarantined_not_featurised(tmp_path):
    from infra.datasets import ShardedDataset
    from schemas.configs import ClipConfig, IngestConfig
    from tasks.ingest import run_ingest
    from tests.conftest import write_wav

    write_wav(tmp_path / "src/flute/a.wav", tone(440, 2.0))
    run_ingest(str(tmp_path / "src"), str(tmp_path / "d"),
               IngestConfig(clip=ClipConfig(sample_rate_hz=22050, clip_s=2.0, overlap_s=0.5)))
    out = extract_features([str(tmp_path / "d/clips")], str(tmp_path / "f"), FeatureConfig(), local=True)
    assert out["quarantined"] == 1 and out["rows"] == 0
    q = ShardedDataset.at(str(tmp_path / "f/quarantine"), "quarantine").read().to_pylist()
    assert q[0]["stage"] == "features" and "expects 16000 Hz" in q[0]["reason"]


def test_features_table_stores_each_segment_as_bytes_of_the_set_dtype():
    import pyarrow as pa

    from schemas.tables import FEATURES
    from tasks.feature_values import decode_values, decode_values_column
    from tasks.features import features_table

    rng = np.random.default_rng(0)
    rows = [dict(feature_id=f"f{i}", clip_id="c", kind="logmel", domain="flute", role="clean", split="train",
                 segment_index=i, start_frame=8 * i, num_frames=8, num_valid_frames=8 - i, num_bins=3,
                 values=(4 * rng.standard_normal((3, 8)) - 6).astype(np.float32), config_hash="h") for i in range(4)]
    exact = features_table(rows, "float32")
    assert exact.schema == FEATURES and exact.column("values_dtype").to_pylist() == ["float32"] * 4
    # float32: bit for bit, row by row and as one column
    assert exact.equals(pa.Table.from_pylist([r | {"values": r["values"].tobytes(), "values_dtype": "float32"}
                                              for r in rows], schema=FEATURES))
    assert np.array_equal(decode_values(exact.column("values")[2].as_py(), "float32", 3, 8), rows[2]["values"])
    assert np.array_equal(decode_values_column(exact), np.stack([r["values"] for r in rows]))
    # float16: half the bytes, within half a unit in the last place (2^-11 relative)
    half = features_table(rows, "float16")
    assert half.column("values")[0].as_py() == rows[0]["values"].astype("<f2").tobytes()
    got = decode_values_column(half)
    assert got.dtype == np.float32 and np.all(np.abs(got - np.stack([r["values"] for r in rows]))
                                               <= np.abs(np.stack([r["values"] for r in rows])) * 2.0 ** -11)
    assert features_table([], "float16").num_rows == 0


def test_feature_values_refuse_what_they_cannot_hold_or_decode():
    from tasks.feature_values import decode_values, decode_values_column, values_column

    with pytest.raises(ValueError, match="do not fit float16.*dtype='float32'"):
        values_column([np.array([1.0, 7e4], np.float32)], "float16")
    assert values_column([np.array([1.0, 7e4], np.float32)], "float32")[0].as_py() == np.array([1.0, 7e4], "<f4").tobytes()
    with pytest.raises(ValueError, match="expected 2x3 float16 \\(12 bytes\\)"):
        decode_values(b"\0" * 10, "float16", 2, 3)
    import pyarrow as pa

    mixed = pa.table({"values": [b"\0" * 4, b"\0" * 8], "values_dtype": ["float16", "float16"],
                      "num_bins": [1, 2], "num_frames": [2, 2]})
    with pytest.raises(ValueError, match="mixed shapes"):
        decode_values_column(mixed)


def test_a_features_set_of_the_previous_layout_is_refused_with_what_to_do(tmp_path):
    """Features moved to schema 3 (values as bytes) on their own: clips and outputs of schema 2 stay readable."""
    from infra.datasets import SchemaMismatchError, ShardedDataset
    from schemas.manifest import Commit

    for table in ("features", "clips"):
        ds = ShardedDataset.at(str(tmp_path / table), table)
        c = Commit(commit_id="00000000000000000001-w-000001", table=table, schema_version="2", shards=[],
                   extra={}, created_at="2026-01-01T00:00:00+00:00")
        ds.storage.write_bytes(f"_commits/{c.commit_id}.json", c.model_dump_json().encode())
    with pytest.raises(SchemaMismatchError, match="features schema version 2; this code reads 3 .*re-create"):
        ShardedDataset.at(str(tmp_path / "features"), "features").manifest()
    assert ShardedDataset.at(str(tmp_path / "clips"), "clips").manifest().num_rows == 0


def test_a_failed_write_in_the_local_pipeline_commits_nothing(built_corpus, copy_tree, tmp_path, monkeypatch):
    """The in-process path writes shard k on a thread while it computes shard k+1: an error on
    that thread must still reach the caller before any manifest is written."""

    root, res = built_corpus
    urls = [res.clips_url, str(copy_tree(root / "clips"))]
    cfg = FeatureConfig(roles=("clean",))
    real_write = ShardedDataset.write_shard

    def fail_second(self, name, table, config_hash):
        if name.endswith("-00001"):
            raise OSError("disk full (injected)")
        return real_write(self, name, table, config_hash)

    monkeypatch.setattr(ShardedDataset, "write_shard", fail_second)
    with pytest.raises(OSError, match="injected"):
        extract_features(urls, str(tmp_path), cfg, local=True)
    assert ShardedDataset.at(feature_set_url(str(tmp_path), cfg), "features").manifest().shards == []
    monkeypatch.undo()
    out = extract_features(urls, str(tmp_path), cfg, local=True)
    one = extract_features([res.clips_url], str(tmp_path / "one"), cfg, local=True)
    assert out["shards_added"] == 2 * one["shards_added"] and out["rows"] == 2 * one["rows"]


def test_parts_of_a_clips_shard_give_the_rows_of_the_whole_and_a_whole_shard_set_stays_done(built_corpus, tmp_path,
                                                                                           monkeypatch):
    """Clips shards are featurised in parts of PART_CLIPS clips (the unit two actors share); the
    rows do not depend on it, and a set written with whole shards as its unit (before parts) is
    not featurised again."""
    _, res = built_corpus
    cfg = FeatureConfig(roles=("clean",))
    parts = extract_features([res.clips_url], str(tmp_path / "parts"), cfg, local=True)
    monkeypatch.setattr(feature_actors, "PART_CLIPS", 10**6)
    whole = extract_features([res.clips_url], str(tmp_path / "whole"), cfg, local=True)
    assert whole["shards_added"] == len(ShardedDataset.at(res.clips_url, "clips").manifest().shards)
    assert parts["shards_added"] > whole["shards_added"] and parts["rows"] == whole["rows"]
    a, b = (ShardedDataset.at(o["features_url"], "features").read() for o in (parts, whole))
    assert a.column("feature_id").to_pylist() == b.column("feature_id").to_pylist()  # same order too
    np.testing.assert_array_equal(decode_values_column(a), decode_values_column(b))
    monkeypatch.setattr(feature_actors, "PART_CLIPS", 64)
    again = extract_features([res.clips_url], str(tmp_path / "whole"), cfg, local=True)
    assert again["shards_added"] == 0 and again["rows"] == whole["rows"]
