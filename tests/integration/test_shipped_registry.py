"""`reinstrument demo` registers the models weights/ ships in its MLflow: once (a second run finds
the version by the file's checksum), as champion only where the name has none, and a registered
copy of the shipped autoencoder keeps the shipped file's name, so latent sets and latent models
made with either agree on their encoder."""
from __future__ import annotations

import pytest

from infra import tracking
from jobs.decoders import SHIPPED_TAG, resolve_autoencoder
from jobs.ship import register_shipped, register_shipped_job, registered_name_of


def test_shipped_autoencoder_registers_once_as_champion_and_keeps_its_shipped_name(mlflow_env):
    first = register_shipped_job(("autoencoder",))["autoencoder"]
    assert first["name"] == "reinstrument-autoencoder" and first["champion"]
    assert tracking.champion_version("reinstrument-autoencoder") == first["version"]
    assert tracking.version_tag(first["name"], first["version"], SHIPPED_TAG) == first["sha256"]
    again = register_shipped("autoencoder")
    assert again == first  # found by checksum: no second version
    assert tracking.find_version(first["name"], SHIPPED_TAG, "0" * 64) is None
    # `auto` now resolves to the registered champion, pinned under the shipped file's name
    shipped_uri, _ = tracking.resolve_model("shipped:autoencoder")
    assert resolve_autoencoder("auto")[0] == shipped_uri
    assert resolve_autoencoder(f"models:/reinstrument-autoencoder/{first['version']}")[0] == shipped_uri
    # its bytes are the shipped file's
    assert tracking.model_checkpoint(f"models:/{first['name']}/{first['version']}") == tracking.model_checkpoint(shipped_uri)


def test_an_unknown_folder_or_kind_is_refused_with_what_exists(mlflow_env):
    with pytest.raises(ValueError, match="no shipped model 'flute-mel'.*autoencoder"):
        register_shipped("flute-mel")
    with pytest.raises(ValueError, match="kind 'sampler'"):
        registered_name_of({"kind": "sampler"})
    assert registered_name_of({"kind": "denoiser", "domain": "flute", "representation": "latent"}) == "reinstrument-flute-latent"
    assert registered_name_of({"kind": "denoiser", "domain": "flute", "cond_domain": "violin"}) == "reinstrument-cond-violin-to-flute"
