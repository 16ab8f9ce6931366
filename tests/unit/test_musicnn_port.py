"""The PyTorch musicnn port against reference outputs of the original TensorFlow graph
(tests/fixtures/reference_models/make_reference.py), and the numpy checkpoint reader's error paths."""
from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

from infra.settings import get_settings
from tasks.metrics.musicnn import MIN_SECONDS, Musicnn
from tasks.metrics.tf_bundle import BundleError, read_bundle

FIX = os.path.join(os.path.dirname(__file__), "..", "fixtures", "reference_models")
RENDERS = ("piano_mix_fluidr3", "flute_soprano_timgm", "strings_alto_musescore_loud")


@pytest.fixture(scope="module")
def reference():
    return np.load(os.path.join(FIX, "reference.npz"))


@pytest.fixture(scope="module", params=["MSD_musicnn", "MTT_musicnn"])
def net(request):
    return Musicnn(request.param, get_settings().weights_dir)


@pytest.mark.parametrize("render", RENDERS)
def test_port_matches_tensorflow(net, reference, render):
    audio, sr = sf.read(os.path.join(FIX, f"{render}.flac"), dtype="float32")
    emb, tags = net.forward(audio, sr)
    ref_emb = reference[f"{net.model}/{render}/penultimate"]
    ref_tags = reference[f"{net.model}/{render}/taggram"]
    assert emb.shape == ref_emb.shape == (2, 200)
    assert np.abs(emb - ref_emb).max() <= 1e-4
    assert np.abs(tags - ref_tags).max() <= 1e-4
    for p in range(len(tags)):  # identical top-5 tags, patch by patch and on average
        assert list(np.argsort(-tags[p])[:5]) == list(np.argsort(-ref_tags[p])[:5])
    assert list(np.argsort(-tags.mean(0))[:5]) == list(np.argsort(-ref_tags.mean(0))[:5])


def test_tags_name_the_instrument():
    net = Musicnn("MTT_musicnn", get_settings().weights_dir)
    audio, sr = sf.read(os.path.join(FIX, "piano_mix_fluidr3.flac"), dtype="float32")
    assert net.top_tags(audio, sr, k=1) == ["piano"]
    audio, sr = sf.read(os.path.join(FIX, "flute_soprano_timgm.flac"), dtype="float32")
    assert net.top_tags(audio, sr, k=1) == ["flute"]


def test_other_sample_rates_are_resampled_and_short_or_bad_audio_rejected():
    net = Musicnn("MSD_musicnn", get_settings().weights_dir)
    audio, sr = sf.read(os.path.join(FIX, "flute_soprano_timgm.flac"), dtype="float32")
    import librosa
    up = librosa.resample(audio, orig_sr=sr, target_sr=44100)
    e16, e44 = net.embed(audio, sr), net.embed(up, 44100)
    assert e44.shape == e16.shape and np.abs(e44 - e16).max() < 0.2 * np.abs(e16).max()
    with pytest.raises(ValueError, match="shorter than one musicnn patch"):
        net.embed(audio[: int(0.5 * sr)], sr)
    assert MIN_SECONDS == pytest.approx(2.976)
    bad = audio.copy()
    bad[100] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        net.embed(bad, sr)
    with pytest.raises(ValueError, match="mono"):
        net.embed(np.stack([audio, audio]), sr)


def test_bundle_reader_rejects_bad_files(tmp_path):
    with pytest.raises(BundleError, match="no checkpoint index"):
        read_bundle(str(tmp_path / "missing"))
    (tmp_path / "junk.index").write_bytes(b"x" * 100)
    with pytest.raises(BundleError, match="footer magic"):
        read_bundle(str(tmp_path / "junk"))
    with pytest.raises(FileNotFoundError, match="make setup"):
        Musicnn("MSD_musicnn", str(tmp_path))
