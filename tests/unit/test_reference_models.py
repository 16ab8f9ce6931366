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


@pytest.mark.parametrize("render", ["piano_mix_fluidr3", "flute_soprano_timgm"])
def test_basic_pitch_windowing_matches_the_package(render):
    """Activations equal basic_pitch.inference.run_inference's (stored as float16)."""
    from tasks.metrics.pitch import BasicPitch

    ref = np.load(os.path.join(FIX, "basic_pitch_reference.npz"))[render].astype(np.float32)
    audio, sr = sf.read(os.path.join(FIX, f"{render}.flac"), dtype="float32")
    notes = BasicPitch(get_settings().weights_dir).notes(audio, sr)
    assert notes.shape == ref.shape
    assert np.abs(notes - ref).max() < 1e-3


def test_vggish_loads_a_state_dict_file_and_rejects_wrong_ones(tmp_path):
    import torch

    from tasks.metrics.vggish import VGGish, VGGishNet, examples, mel_matrix

    torch.manual_seed(0)
    net = VGGishNet()
    path = tmp_path / "vggish.pth"
    torch.save({**net.state_dict(), "pproc.pca_means": torch.zeros(128)}, path)  # extra keys are ignored
    loaded = VGGish.from_file(str(path))
    audio = np.random.default_rng(0).standard_normal(3 * 16000).astype(np.float32) * 0.1
    emb = loaded.embed(audio, 16000)
    assert emb.shape == (3, 128)  # 3 s -> 298 frames -> 3 examples of 0.96 s
    with torch.inference_mode():
        direct = net.eval()(torch.from_numpy(examples(audio))).numpy()
    np.testing.assert_array_equal(emb, direct)
    m = mel_matrix()
    assert m.shape == (257, 64) and not m[0].any() and (m.max(axis=0) > 0).all() and m.max() <= 1

    bad = {k: v for k, v in net.state_dict().items() if not k.startswith("embeddings.4")}
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="missing.*embeddings.4"):
        VGGish.from_file(str(tmp_path / "bad.pth"))
    torch.save({"features.0.weight": torch.zeros(3)}, tmp_path / "shape.pth")
    with pytest.raises(ValueError, match="wrong shapes"):
        VGGish.from_file(str(tmp_path / "shape.pth"))
    with pytest.raises(FileNotFoundError, match="state dict"):
        VGGish.from_file(str(tmp_path / "none.pth"))
    with pytest.raises(ValueError, match="shorter than one 0.96 s"):
        loaded.embed(audio[:8000], 16000)
