"""Fixtures the integration modules share."""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from ray_actors.features import extract_features
from schemas.configs import FeatureConfig
from schemas.training import TRAIN_PRESETS, TrainConfig, TrainLogistics


ENV = ("MLFLOW_TRACKING_URI", "REINSTRUMENT_MLFLOW_ARTIFACTS")


@contextmanager
def _tracking(tmp) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in ENV}
    os.environ.update(MLFLOW_TRACKING_URI=f"sqlite:///{tmp / 'mlflow.db'}",
                      REINSTRUMENT_MLFLOW_ARTIFACTS=(tmp / "artifacts").as_uri())
    try:
        yield
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture(scope="session")
def _trained_models(s3_env, built_corpus, tmp_path_factory):
    """flute and violin unconditional models, a violin->flute conditional one, one model of both
    instruments (labels) and its any->any conditional baseline, and a vocoder (tiny presets) in an
    MLflow store of their own, trained once per session."""
    from jobs.train import train_job
    from schemas.vocoder import VOCODER_PRESETS, VocoderTrainConfig

    tmp = tmp_path_factory.mktemp("transform-models")
    _, corpus = built_corpus
    with _tracking(tmp):
        feats = extract_features([corpus.clips_url], str(tmp / "features"),
                                 FeatureConfig(segment_frames=64, segment_hop_frames=32, roles=("clean",)), local=True)
        log = TrainLogistics(num_workers=0, out_url=str(tmp / "training"))
        for over in ({"domain": "flute"}, {"domain": "violin"}, {"domain": "flute", "cond_domain": "violin"},
                     {"domain": "instruments", "labels": ("flute", "violin")},
                     {"domain": "instruments", "labels": ("flute", "violin"), "cond_domain": "*"}):
            train_job(TrainConfig(features_url=feats["features_url"], **{**TRAIN_PRESETS["tiny"], "steps": 20, **over}), log)
        train_job(VocoderTrainConfig(clips_urls=(corpus.clips_url,), **VOCODER_PRESETS["tiny"]), log)
    return tmp, corpus


@pytest.fixture(scope="module")
def models(_trained_models):
    """The session's tiny models, their MLflow store active for the module (test_transform,
    test_compare); yields the corpus they were trained on."""
    tmp, corpus = _trained_models
    with _tracking(tmp):
        yield corpus
