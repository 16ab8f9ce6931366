"""Whole recordings through the pipeline with the session's tiny models: a folder on S3 (moto)
comes back as one file per recording on S3, `pull` brings them verified; a long recording has no
seam at any joint between clips or between diffusion windows."""
from __future__ import annotations

import os

import boto3
import numpy as np
import pytest
import soundfile as sf

from infra.datasets import ShardedDataset
from infra.storage import Storage
from schemas.diffusion import SamplerConfig, WarmStartConfig, WindowConfig
from schemas.transform import InputSelection, TransformConfig, TransformLogistics, WholeOutputs
from tasks.recordings import ClipSpan, joints_s, seam_report, stitch, window_joints_s
from tests.e2e.test_recordings_quickstart import _violin

pytestmark = pytest.mark.integration
SR = 16000
WINDOW = WindowConfig(window_frames=64, overlap_frames=16)


def _cfg() -> TransformConfig:
    return TransformConfig(model="models:/reinstrument-flute@champion", warm=WarmStartConfig(t_init=0.6, lam=0.0),
                           sampler=SamplerConfig(steps=6), window=WINDOW, vocoder="griffin-lim", vocoder_iters=8)


def _put(bucket: str, key: str, x: np.ndarray, sr: int, fmt: str) -> None:
    path = f"/tmp/{os.getpid()}-{os.path.basename(key)}"
    sf.write(path, x, sr, format=fmt)
    boto3.client("s3").upload_file(path, bucket, key)
    os.unlink(path)


def test_a_folder_on_s3_comes_back_whole_on_s3_and_pulls_verified(models, s3_bucket, tmp_path):
    from jobs.transform import transform_job
    from tasks.pull import pull_run

    _put(s3_bucket, "in/take one.wav", _violin(23.0, 44100, 0), 44100, "WAV")
    _put(s3_bucket, "in/sub/take two.flac", _violin(6.0, 48000, 1), 48000, "FLAC")
    log = TransformLogistics(num_actors=0, out_url=f"s3://{s3_bucket}/out")
    res = transform_job(f"s3://{s3_bucket}/in", InputSelection(), _cfg(), log, whole=WholeOutputs())
    assert (res["recordings"], res["recordings_written"]) == (2, 2)
    run = Storage(res["run_url"])
    assert sorted(run.find("recordings")) == ["recordings/sub/take two.flute.flac", "recordings/take one.flute.flac"]
    rows = {r["name"]: r for r in ShardedDataset.at(run.child("recording_rows").url, "recordings").read().to_pylist()}
    assert rows["take one.flute.flac"]["source_uri"] == f"s3://{s3_bucket}/in/take one.wav"
    assert rows["take one.flute.flac"]["clips"] == 3 and rows["sub/take two.flute.flac"]["clips"] == 1
    again = transform_job(f"s3://{s3_bucket}/in", InputSelection(), _cfg(), log, whole=WholeOutputs())
    assert (again["recordings_written"], again["recordings_skipped"], again["transformed"]) == (0, 2, 0)

    pulled = pull_run(res["run_url"], str(tmp_path / "pulled"))
    assert pulled.recordings == pulled.files == 2
    for name, seconds in (("take one.flute.flac", 23.0), ("sub/take two.flute.flac", 6.0)):
        info = sf.info(str(tmp_path / "pulled/recordings" / name))
        assert abs(info.duration - seconds) <= 320 / SR and info.samplerate == SR

    # the source's rate and WAV: another run (its files differ), resampled, not stretched
    wav = transform_job(f"s3://{s3_bucket}/in", InputSelection(), _cfg(), log,
                        whole=WholeOutputs(format="wav", sample_rate="source"))
    assert wav["run_id"] != res["run_id"] and wav["transformed"] == 4  # its own run folder
    body = Storage(wav["run_url"]).read_bytes("recordings/take one.flute.wav")
    info = sf.info(__import__("io").BytesIO(body))
    assert info.samplerate == 44100 and info.frames == int(23.0 * 44100) and info.format == "WAV"


def test_a_long_recording_has_no_seam_at_any_joint(models, tmp_path):
    """Clip joints (cross-fades between independently transformed clips) and window joints (inside
    each clip): the spectral change there is within the 95th percentile of the music's own. The
    same clip outputs cut together without a fade do show seams: the measure can fail."""
    from jobs.transform import transform_job

    (tmp_path / "in").mkdir()
    sf.write(tmp_path / "in/long.wav", _violin(64.0, 16000, 3), 16000)
    res = transform_job(str(tmp_path / "in"), InputSelection(), _cfg(),
                        TransformLogistics(num_actors=0, out_url=str(tmp_path / "out")), whole=WholeOutputs())
    run = Storage(res["run_url"])
    row = ShardedDataset.at(run.child("recording_rows").url, "recordings").read().to_pylist()[0]
    outs = {r["output_key"]: r for r in ShardedDataset.at(res["outputs_url"], "outputs").read().to_pylist()}
    spans = sorted((ClipSpan(k, outs[k]["start_s"], outs[k]["duration_s"], 0.0) for k in row["clip_keys"]),
                   key=lambda s: s.start_s)
    y, sr = sf.read(str(tmp_path / "out/runs" / res["run_id"] / "recordings/long.flute.flac"), dtype="float32")
    clips = joints_s(spans)
    windows = window_joints_s(spans, 320 / SR, WINDOW.window_frames, WINDOW.overlap_frames)
    assert len(clips) == len(spans) - 1 == 6 and len(windows) >= 10
    report = seam_report(y, sr, clips + windows)
    assert report["seamless"], report

    def read(key):
        return sf.read(__import__("io").BytesIO(run.read_bytes(f"audio/{key}.flac")), dtype="float32")[0]
    cut = np.concatenate(list(stitch(spans, read, [0.0] * len(spans), len(y), SR, crossfade_s=1 / SR)))
    assert not seam_report(cut, SR, clips)["seamless"]
