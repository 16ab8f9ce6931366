"""Which decoder a run gets (jobs/decoders.py): `auto` is the registered champion vocoder, else the
shipped one (pinned by its file's checksum), else Griffin-Lim with a one-line notice; a pinned
shipped URI whose file has changed since is refused, never silently swapped."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from infra.settings import get_settings

SHIPPED = Path(__file__).resolve().parents[2] / "weights"


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """An empty MLflow registry (sqlite) and a shipped-models folder of our own."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("REINSTRUMENT_SHIPPED_DIR", str(tmp_path / "weights"))
    get_settings.cache_clear()
    yield tmp_path / "weights"
    get_settings.cache_clear()


def test_auto_is_the_shipped_vocoder_pinned_by_checksum(registry):
    from infra import tracking
    from jobs.decoders import resolve_vocoder

    shutil.copytree(SHIPPED / "vocoder", registry / "vocoder")
    data = (registry / "vocoder" / "model.pt").read_bytes()
    uri, name = resolve_vocoder("auto")
    assert uri == name == f"shipped:vocoder@{hashlib.sha256(data).hexdigest()[:16]}"
    assert tracking.model_checkpoint(uri) == data
    assert resolve_vocoder("griffin-lim") == (None, None)

    retrained = data[:-1] + bytes([data[-1] ^ 1])
    (registry / "vocoder" / "model.pt").write_bytes(retrained)  # a damaged file: its card still names the old one
    with pytest.raises(ValueError, match="does not match its card"):
        tracking.model_checkpoint(uri)
    card = json.loads((registry / "vocoder" / "card.json").read_text())
    card["sha256"] = hashlib.sha256(retrained).hexdigest()  # a retrained file, shipped with its card
    (registry / "vocoder" / "card.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="has changed"):
        tracking.model_checkpoint(uri)


def test_auto_without_any_vocoder_is_griffin_lim_with_one_notice(registry, capsys):
    from jobs.decoders import resolve_vocoder

    assert resolve_vocoder("auto") == (None, None)
    assert resolve_vocoder("auto") == (None, None)
    assert capsys.readouterr().out.count("decoding with Griffin-Lim") == 1
    with pytest.raises(ValueError, match="no shipped model 'vocoder'"):
        resolve_vocoder("shipped:vocoder")


def test_a_config_names_only_decoders_it_can_resolve():
    from schemas.transform import TransformConfig

    for ok in ("auto", "griffin-lim", "shipped:vocoder", "shipped:vocoder@0123abcd", "models:/reinstrument-vocoder@champion"):
        assert TransformConfig(model="models:/m/1", vocoder=ok).vocoder == ok
    with pytest.raises(ValueError, match="vocoder"):
        TransformConfig(model="models:/m/1", vocoder="hifigan")
