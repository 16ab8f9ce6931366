"""Corpus -> ingest -> features against a real S3 server (moto on 127.0.0.1) and local Ray."""
import io

import boto3
import pytest
import soundfile as sf

from infra.datasets import ShardBuffer, ShardedDataset
from infra.storage import Storage, StorageError
from ray_actors.features import PART_CLIPS, extract_features
from schemas.configs import ClipConfig, FeatureConfig, IngestConfig
from tasks.corpus import run_corpus
from tasks.feature_reader import iter_feature_batches
from tasks.ingest import run_ingest
from tests.conftest import tone

pytestmark = pytest.mark.integration
INGEST = IngestConfig(clip=ClipConfig(clip_s=2.0, overlap_s=0.5))


def _objects(bucket):
    """key -> (etag, last-modified): proof that nothing was rewritten."""
    out = {}
    for page in boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            out[o["Key"]] = (o["ETag"], o["LastModified"])
    return out


def _wav(x, sr=16000):
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="WAV")
    return buf.getvalue()


def test_corpus_ingest_features_on_s3_and_rerun_is_a_noop(s3_bucket, ray_local, tiny_corpus_cfg):
    base = f"s3://{s3_bucket}"
    cfg = tiny_corpus_cfg.model_copy(update={"max_pieces": 2})
    corpus = run_corpus(cfg, f"{base}/corpus")
    raw = Storage(f"{base}/raw")
    raw.write_bytes("flute/a.wav", _wav(tone(440, 3.0)))
    raw.write_bytes("violin/b.wav", _wav(tone(330, 2.5, sr=44100), sr=44100))
    raw.write_bytes("violin/broken.wav", b"RIFF\x00\x00")
    ing = run_ingest(f"{base}/raw", f"{base}/ingested", INGEST)
    assert ing.clips_added >= 3 and ing.quarantined == 1
    feats = extract_features([corpus.clips_url, ing.clips_url], f"{base}/features", FeatureConfig(), num_actors=2)
    parts = sum(-(-e.num_rows // PART_CLIPS) for url in (corpus.clips_url, ing.clips_url)
                for e in ShardedDataset.at(url, "clips").manifest().shards)
    assert feats["features_url"].startswith("s3://") and feats["shards_added"] == parts >= 2
    ds = ShardedDataset.at(feats["features_url"], "features")
    t = ds.read(["clip_id", "num_bins", "num_frames"])
    assert t.num_rows == feats["rows"] > 0
    clip_ids = ShardedDataset.at(corpus.clips_url, "clips").column_values("clip_id") | \
        ShardedDataset.at(ing.clips_url, "clips").column_values("clip_id")
    assert set(t.column("clip_id").to_pylist()) == clip_ids
    x, _ = next(iter_feature_batches(feats["features_url"], 4, split=None, domain="flute"))
    assert x.shape == (4, 128, 128)

    before = _objects(s3_bucket)
    assert run_corpus(cfg, f"{base}/corpus").clips_added == 0
    again = run_ingest(f"{base}/raw", f"{base}/ingested", INGEST)
    assert again.clips_added == 0 and again.quarantined == 0
    assert extract_features([corpus.clips_url, ing.clips_url], f"{base}/features", FeatureConfig())["shards_added"] == 0
    assert _objects(s3_bucket) == before


def _row(i):
    return dict(source_uri=f"s3://x/{i}", source_id=str(i), stage="ingest", reason="r", detail="", config_hash="h")


def test_writer_raising_mid_shard_leaves_nothing_visible(s3_bucket):
    ds = ShardedDataset.at(f"s3://{s3_bucket}/q", "quarantine")
    buf = ShardBuffer(ds, "h", shard_rows=4)
    with pytest.raises(RuntimeError):
        for i in range(10):
            if i == 6:  # one shard already flushed, the next half full
                raise RuntimeError("source died mid-shard")
            buf.add(_row(i))
    assert not ds.exists() and ds.read().num_rows == 0  # no manifest: nothing is trusted


def test_failed_put_leaves_no_object(s3_bucket, monkeypatch):
    st = Storage(f"s3://{s3_bucket}/p")
    st.write_bytes("shards/part-00000.parquet", b"committed")
    real = st.fs._call_s3

    async def failing(method, *args, **kwargs):
        if method == "put_object":
            raise ConnectionResetError("connection dropped during upload")
        return await real(method, *args, **kwargs)

    monkeypatch.setattr(st.fs, "_call_s3", failing)
    with pytest.raises(StorageError, match=r"S3 write of s3://\S+/p/shards/part-00001.parquet") as e:
        st.write_bytes("shards/part-00001.parquet", b"y" * 100_000)
    assert isinstance(e.value.__cause__, ConnectionResetError)
    monkeypatch.undo()
    assert st.find("shards") == ["shards/part-00000.parquet"]
    assert st.read_bytes("shards/part-00000.parquet") == b"committed"
