"""The latent path end to end on real services (moto S3, local Ray, MLflow with S3 artifacts):
an autoencoder trained and registered, latent feature shards written by Ray actors (exactly once,
resumable, its encoder pinned in the set's identity), a latent denoiser trained on them, refused
with features of another encoder, and a transform through Ray that encodes, warm-starts and decodes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from schemas.autoencoder import AUTOENCODER_PRESETS, AutoencoderTrainConfig
from schemas.configs import FeatureConfig
from schemas.diffusion import SamplerConfig, WarmStartConfig
from schemas.training import TRAIN_PRESETS, TrainConfig, TrainLogistics
from schemas.transform import InputSelection, TransformConfig, TransformLogistics
from tasks.feature_values import decode_values

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def encoders(mlflow_env, built_corpus, tmp_path_factory):
    """Two registered autoencoder versions (seeds 0 and 1)."""
    from jobs.train import train_job

    clips = built_corpus[1].clips_url
    out = str(tmp_path_factory.mktemp("ae-training"))
    return [train_job(AutoencoderTrainConfig(clips_urls=(clips,), seed=seed, **AUTOENCODER_PRESETS["tiny"]),
                      TrainLogistics(num_workers=0, out_url=out, experiment="reinstrument-autoencoder"))
            for seed in (0, 1)]


def _latent_features(clips_url: str, bucket: str, encoder: str, local: bool) -> dict:
    from jobs.data import features_job

    cfg = FeatureConfig(kind="latent", encoder=encoder, segment_frames=64, segment_hop_frames=32, roles=("clean",))
    return features_job([clips_url], f"s3://{bucket}/features", cfg, actors=2, local=local)


def test_latent_sets_are_pinned_exactly_once_and_never_mix_encoders(encoders, mlflow_env, built_corpus, ray_local):
    from infra import tracking
    from infra.datasets import ShardedDataset
    from schemas.records import FeatureSetExtra
    from tasks.audio import decode_audio_bytes
    from tasks.builders import load_autoencoder
    from tasks.features import LogMel, segments

    assert [e["model_version"] for e in encoders] == ["1", "2"]
    clips_url = built_corpus[1].clips_url
    first = _latent_features(clips_url, mlflow_env, "auto", local=False)  # Ray actors
    assert first["shards_added"] > 0
    ds = ShardedDataset.at(first["features_url"], "features")
    extra = FeatureSetExtra.of(ds.manifest().extra, first["features_url"])
    champion = tracking.champion_version("reinstrument-autoencoder")
    assert extra.config.encoder == f"models:/reinstrument-autoencoder/{champion}", "the alias is pinned to a version"
    rows = ds.read(["kind", "clip_id", "segment_index", "num_bins", "num_frames", "num_valid_frames", "values",
                    "values_dtype"]).to_pylist()
    assert {(r["kind"], r["num_bins"], r["num_frames"]) for r in rows} == {("latent", 8, 16)}
    assert all(1 <= r["num_valid_frames"] <= 16 for r in rows)
    assert all(len(v["sum"]) == 8 for w in extra.stats.values() for v in w.values()), "statistics per latent channel"

    # a row is the posterior mean of its log-mel segment
    ae = load_autoencoder(tracking.model_checkpoint(extra.config.encoder), "ae").model
    clip = ShardedDataset.at(clips_url, "clips").read(["clip_id", "audio_flac"]).to_pylist()
    row = rows[0]
    audio = decode_audio_bytes(next(c["audio_flac"] for c in clip if c["clip_id"] == row["clip_id"]))[0]
    logmel = LogMel(extra.config.mel)(torch.from_numpy(np.asarray(audio, np.float32))[None])[0].numpy()
    seg = segments(logmel, extra.config)[row["segment_index"]][1]
    with torch.no_grad():
        expected = ae.encode(torch.from_numpy(seg)[None])[0][0].numpy()
    stored = decode_values(row["values"], row["values_dtype"], 8, 16)
    assert row["values_dtype"] == "float16"  # the default storage precision: within its rounding
    np.testing.assert_allclose(stored, expected, rtol=2.0 ** -11, atol=1e-5)

    # a re-run adds nothing (in-process this time: the same set, the same pinned encoder)
    again = _latent_features(clips_url, mlflow_env, f"models:/reinstrument-autoencoder/{champion}", local=True)
    assert again["features_url"] == first["features_url"] and again["shards_added"] == 0
    # the other encoder version makes another set
    other_version = "2" if champion == "1" else "1"
    other = _latent_features(clips_url, mlflow_env, f"models:/reinstrument-autoencoder/{other_version}", local=True)
    assert other["features_url"] != first["features_url"] and other["shards_added"] > 0


def test_a_latent_model_trains_refuses_another_encoder_and_transforms_on_ray(encoders, mlflow_env, built_corpus,
                                                                             ray_local, tmp_path):
    from infra import tracking
    from infra.datasets import ShardedDataset
    from jobs.train import train_job
    from jobs.transform import transform_job

    clips_url = built_corpus[1].clips_url
    sets = {v: _latent_features(clips_url, mlflow_env, f"models:/reinstrument-autoencoder/{v}", local=True)["features_url"]
            for v in ("1", "2")}
    logistics = TrainLogistics(num_workers=0, out_url=str(tmp_path / "training"))
    with pytest.raises(ValueError, match="crop_frames=32 exceeds the segments .*cpu-latent"):
        train_job(TrainConfig(domain="flute", features_url=sets["1"], **TRAIN_PRESETS["tiny"]), logistics)
    tiny = {**TRAIN_PRESETS["tiny"], "crop_frames": 16, "steps": 20}
    res = train_job(TrainConfig(domain="flute", features_url=sets["1"], **tiny), logistics)
    name = f"reinstrument-flute-latent/{res['model_version']}"
    assert res["champion"] is True and tracking.champion_version("reinstrument-flute") is None, \
        "a latent model never takes a log-mel model's name"
    from tasks.builders import load_model

    card = load_model(tracking.model_checkpoint(f"models:/{name}"), name).card
    assert (card.representation, card.encoder, card.n_mels, card.time_downsample) == \
        ("latent", "models:/reinstrument-autoencoder/1", 8, 4)
    with pytest.raises(ValueError, match="models the latents of models:/reinstrument-autoencoder/1; these features "
                                         "are of models:/reinstrument-autoencoder/2"):
        train_job(TrainConfig(domain="flute", features_url=sets["2"], init_from=f"models:/{name}", **tiny), logistics)

    cfg = TransformConfig(model=f"models:/{name}", task="timbre", warm=WarmStartConfig(t_init=0.5),
                          sampler=SamplerConfig(steps=4), vocoder="griffin-lim", vocoder_iters=2)
    log = TransformLogistics(num_actors=2, clips_per_task=1, out_url=f"s3://{mlflow_env}/out")
    out = transform_job(clips_url, InputSelection(domain="violin", limit=2), cfg, log)
    assert out["transformed"] == 2 and out["failed"] == 0
    table = ShardedDataset.at(out["outputs_url"], "outputs").read(["model", "duration_s"]).to_pylist()
    assert {r["model"] for r in table} == {name} and all(r["duration_s"] > 1 for r in table)


def test_a_decoder_fine_tune_decodes_the_same_latents_and_another_encoder_is_refused(encoders, mlflow_env, built_corpus,
                                                                                    tmp_path, monkeypatch):
    """--decoder: an autoencoder fine-tuned with the encoder frozen decodes a latent model's outputs
    (other outputs, other keys: nothing is skipped as done); an autoencoder with another encoder,
    or a model of another kind, is refused before a run exists."""
    from infra import tracking
    from infra.datasets import ShardedDataset
    from infra.storage import Storage
    from jobs.train import train_job
    from jobs.transform import transform_job

    clips_url = built_corpus[1].clips_url
    logistics = TrainLogistics(num_workers=0, out_url=str(tmp_path / "training"), experiment="reinstrument-autoencoder")
    tuned = train_job(AutoencoderTrainConfig(clips_urls=(clips_url,), **{**AUTOENCODER_PRESETS["tiny"], "steps": 6},
                                             init_from="models:/reinstrument-autoencoder/1", freeze_encoder=True),
                      logistics)
    feats = _latent_features(clips_url, mlflow_env, "models:/reinstrument-autoencoder/1", local=True)["features_url"]
    res = train_job(TrainConfig(domain="flute", features_url=feats, **{**TRAIN_PRESETS["tiny"], "crop_frames": 16,
                                                                         "steps": 5}),
                    TrainLogistics(num_workers=0, out_url=str(tmp_path / "training")))
    model = f"models:/reinstrument-flute-latent/{res['model_version']}"
    base = TransformConfig(model=model, task="timbre", warm=WarmStartConfig(t_init=0.5), sampler=SamplerConfig(steps=4),
                           vocoder="griffin-lim", vocoder_iters=2)
    log = TransformLogistics(num_actors=0, out_url=str(tmp_path / "out"))
    sel = InputSelection(domain="violin", limit=1)
    own = transform_job(clips_url, sel, base, log)
    other = transform_job(clips_url, sel, base.model_copy(update={"decoder": f"models:/reinstrument-autoencoder/"
                                                                             f"{tuned['model_version']}"}), log)
    assert own["transformed"] == other["transformed"] == 1 and own["run_url"] != other["run_url"]
    rows = [ShardedDataset.at(r["outputs_url"], "outputs").read(["output_key", "sha256"]).to_pylist()[0] for r in (own, other)]
    assert rows[0]["output_key"] != rows[1]["output_key"] and rows[0]["sha256"] != rows[1]["sha256"]
    for wrong, why in (("models:/reinstrument-autoencoder/2", "does not keep the encoder"),
                       (model, "expected an autoencoder")):
        with pytest.raises(ValueError, match=why):
            transform_job(clips_url, sel, base.model_copy(update={"decoder": wrong}), log)

    # shipped for that encoder, the fine-tune is the default decoder; 'own' still asks for the model's own
    import hashlib
    import json

    data = tracking.model_checkpoint(f"models:/reinstrument-autoencoder/{tuned['model_version']}")
    folder = tmp_path / "weights" / "decoder-tuned"
    folder.mkdir(parents=True)
    (folder / "model.pt").write_bytes(data)
    (folder / "card.json").write_text(json.dumps({"sha256": hashlib.sha256(data).hexdigest(), "kind": "autoencoder",
                                                  "decodes_latents_of": "models:/reinstrument-autoencoder/1"}))
    from infra.settings import get_settings

    monkeypatch.setenv("REINSTRUMENT_SHIPPED_DIR", str(tmp_path / "weights"))
    get_settings.cache_clear()
    try:
        default = transform_job(clips_url, sel, base, log)
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    monkeypatch.setenv("REINSTRUMENT_SHIPPED_DIR", str(tmp_path / "weights"))
    get_settings.cache_clear()
    assert default["transformed"] == 1 and default["run_url"] != own["run_url"]
    pinned = json.loads(Storage(default["run_url"]).read_bytes("run.json"))["pinned"]
    assert pinned["decoder"].startswith("shipped:decoder-tuned@")
    got = ShardedDataset.at(default["outputs_url"], "outputs").read(["sha256"]).to_pylist()[0]["sha256"]
    assert got == rows[1]["sha256"], "the shipped decoder decodes as the same weights named by --decoder"
    try:
        again = transform_job(clips_url, sel, base.model_copy(update={"decoder": "own"}), log)
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert again["run_url"] == own["run_url"] and again["transformed"] == 0, "'own' is the run without a decoder"
