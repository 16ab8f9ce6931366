"""Log-mel front end against librosa, segments, statistics, reader, Griffin-Lim."""
import librosa
import numpy as np
import pytest
import torch

from ray_actors.features import extract_features, feature_set_url
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
    assert out["features_url"] == feature_set_url(str(tmp_path), cfg) and out["shards_added"] == 1
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


def test_features_table_is_the_row_wise_table_built_column_wise():
    import pyarrow as pa

    from schemas.tables import FEATURES
    from tasks.features import features_table

    rng = np.random.default_rng(0)
    rows = [dict(feature_id=f"f{i}", clip_id="c", kind="logmel", domain="flute", role="clean", split="train",
                 segment_index=i, start_frame=8 * i, num_frames=8, num_valid_frames=8 - i, num_bins=3,
                 values=rng.standard_normal(3 * 8).astype(np.float32), config_hash="h") for i in range(4)]
    got = features_table(rows)
    assert got.schema == FEATURES and got.equals(pa.Table.from_pylist(rows, schema=FEATURES))
    assert np.array_equal(got.column("values")[2].values.to_numpy(), rows[2]["values"])
    assert features_table([]).num_rows == 0


def test_a_failed_write_in_the_local_pipeline_commits_nothing(built_corpus, copy_tree, tmp_path, monkeypatch):
    """The in-process path writes shard k on a thread while it computes shard k+1: an error on
    that thread must still reach the caller before any manifest is written."""
    from infra.datasets import ShardedDataset

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
    assert out["shards_added"] == 2 and out["rows"] == 2 * one["rows"]
