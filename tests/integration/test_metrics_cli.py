"""`reinstrument metrics fad|jd` on a real clips dataset and on folders, writing the metrics
table to moto S3 and logging it to MLflow (sqlite)."""
from __future__ import annotations

import io
import os

import boto3
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from typer.testing import CliRunner

from cli import app
from tasks.metrics.sources import audio_items

pytestmark = pytest.mark.integration
runner = CliRunner()


@pytest.fixture
def mlflow_run(tmp_path, monkeypatch):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("REINSTRUMENT_MLFLOW_ARTIFACTS", (tmp_path / "artifacts").as_uri())
    c = mlflow.MlflowClient(uri)
    exp = c.create_experiment("metrics-test", artifact_location=(tmp_path / "artifacts").as_uri())
    return c, c.create_run(exp).info.run_id


def test_fad_on_clips_datasets_to_s3_and_mlflow(built_corpus, s3_bucket, mlflow_run, tmp_path, monkeypatch):
    root, result = built_corpus
    monkeypatch.setenv("REINSTRUMENT_DATA_ROOT", str(tmp_path / "data"))
    from infra.settings import get_settings
    get_settings.cache_clear()
    c, run_id = mlflow_run
    out = f"s3://{s3_bucket}/metrics/fad.parquet"
    args = ["metrics", "fad", result.clips_url, result.clips_url, "--domain", "flute", "--eval-domain", "violin",
            "--eval-role", "clean", "--boot", "50", "--out", out, "--mlflow-run", run_id]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "reference statistics computed" in r.output and "(skipped)" in r.output
    table = pq.read_table(io.BytesIO(boto3.client("s3").get_object(Bucket=s3_bucket, Key="metrics/fad.parquet")["Body"].read()))
    rows = table.to_pylist()
    assert rows[0]["metric"] == "fad" and rows[0]["embedding"] == "musicnn-msd" and rows[0]["reference"] == "domain:flute"
    assert rows[0]["mean"] > 0 and rows[0]["ci_low"] <= rows[0]["mean"] <= rows[0]["ci_high"]
    run = c.get_run(run_id)
    assert run.data.metrics["fad_musicnn-msd"] == pytest.approx(rows[0]["mean"])
    assert "fad_musicnn-msd_ci_high" in run.data.metrics
    assert [a.path for a in c.list_artifacts(run_id)] == ["metrics.parquet"]
    r = runner.invoke(app, args[:-4])  # the second run reads the cached reference statistics
    assert r.exit_code == 0 and "reference statistics from cache" in r.output
    get_settings.cache_clear()


def test_jd_on_folders_with_midi_sidecars(built_corpus, tmp_path):
    root, result = built_corpus
    guides = [i for i in audio_items(result.clips_url, domain="flute", role="clean") if i.midi][:3]
    os.makedirs(tmp_path / "a")
    os.makedirs(tmp_path / "b")
    for n, item in enumerate(guides):
        sf.write(tmp_path / "a" / f"{n}.flac", item.audio, item.sample_rate_hz)
        sf.write(tmp_path / "b" / f"{n}.wav", item.audio, item.sample_rate_hz)
        (tmp_path / "b" / f"{n}.mid").write_bytes(item.midi)
    r = runner.invoke(app, ["metrics", "jd", str(tmp_path / "a"), str(tmp_path / "b"), "--per-item"])
    assert r.exit_code == 0, r.output
    assert "f1_midi" in r.output and "jd_melody" in r.output
    r = runner.invoke(app, ["metrics", "jd", str(tmp_path / "a"), str(tmp_path / "nothing")])
    assert r.exit_code == 1 and "no audio files" in r.output
    r = runner.invoke(app, ["metrics", "fad", str(tmp_path / "a"), str(tmp_path / "b"), "--embedding", "vggish"])
    assert r.exit_code == 1 and "--vggish-weights" in r.output
