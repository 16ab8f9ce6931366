"""Prefect flows against a real Prefect test server, and the CLI (every command has --help)."""
import pytest
from typer.testing import CliRunner

from cli import app
from flows.pipeline import corpus_build_flow, features_flow, ingest_flow
from schemas.configs import ClipConfig, CorpusConfig, FeatureConfig, IngestConfig
from tests.conftest import tone, write_wav

pytestmark = pytest.mark.integration
runner = CliRunner()

COMMANDS = [[], ["corpus"], ["corpus", "build"], ["ingest"], ["augment"], ["features"], ["inspect"],
            ["mel2audio"], ["config"], ["config", "show"], ["demo"], ["shipped"], ["shipped", "list"],
            ["shipped", "register"], ["shipped", "ship"], ["metrics"], ["metrics", "fad"], ["metrics", "jd"], ["transform"], ["sweep"], ["compare"], ["pull"], ["serve"], ["nightly"]]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "root")
def test_every_command_has_help(cmd):
    r = runner.invoke(app, cmd + ["--help"])
    assert r.exit_code == 0 and "Usage" in r.output


def test_flows_run_on_a_prefect_server(prefect_server, tmp_path):
    cfg = CorpusConfig(max_pieces=1, instruments=("flute",), voices=("soprano",),
                       clip=ClipConfig(clip_s=5.0, overlap_s=0.0))
    built = corpus_build_flow(dest=str(tmp_path / "corpus"), config=cfg, workers=1)
    assert built["pieces_built"] == 1 and built["clips_added"] > 0
    write_wav(tmp_path / "raw/cello/a.wav", tone(110, 2.0))
    ing = ingest_flow(src=str(tmp_path / "raw"), dest=str(tmp_path / "ing"),
                      config=IngestConfig(clip=ClipConfig(clip_s=2.0, overlap_s=0.0)))
    assert ing["clips_added"] == 1
    feats = features_flow(clips=[built["clips_url"], ing["clips_url"]], out=str(tmp_path / "feat"),
                          config=FeatureConfig(), local=True)
    assert feats["shards_added"] == 2 and feats["rows"] > 0


def test_cli_ingest_inspect_and_listen(tmp_path):
    write_wav(tmp_path / "raw/flute/a.wav", tone(440, 3.0))
    (tmp_path / "raw/flute/bad.wav").write_bytes(b"nope")
    r = runner.invoke(app, ["ingest", str(tmp_path / "raw"), "--out", str(tmp_path / "d"), "--clip-s", "2",
                            "--overlap-s", "0", "--no-prefect"])
    assert r.exit_code == 0, r.output
    assert "quarantined 1" in r.output
    r = runner.invoke(app, ["inspect", str(tmp_path / "d/quarantine")])
    assert r.exit_code == 0 and "undecodable" in r.output
    r = runner.invoke(app, ["features", str(tmp_path / "d/clips"), "--out", str(tmp_path / "f"),
                            "--actors", "0", "--no-prefect"])
    assert r.exit_code == 0, r.output
    feat_url = next((tmp_path / "f").glob("logmel-*"))
    r = runner.invoke(app, ["mel2audio", str(feat_url), "--out", str(tmp_path / "x.wav")])
    assert r.exit_code == 0, r.output
    import numpy as np
    import soundfile as sf

    y, sr = sf.read(tmp_path / "x.wav")
    assert sr == 16000 and abs(len(y) / sr - 2.0) <= 2 * 320 / sr  # the 2 s clip's valid frames
    peak_hz = np.argmax(np.abs(np.fft.rfft(y))) * sr / len(y)
    assert abs(peak_hz - 440) < 15, peak_hz  # Griffin-Lim of the 440 Hz tone's log-mel sounds at 440 Hz
    r = runner.invoke(app, ["config", "show", "ingset"])
    assert r.exit_code == 2 and "expected one of" in r.output


def test_cli_rejects_a_config_with_unknown_keys(tmp_path):
    bad = tmp_path / "c.json"
    bad.write_text('{"max_pieces": 2, "instrumnets": ["flute"]}')
    r = runner.invoke(app, ["corpus", "build", "--config", str(bad), "--no-prefect"])
    assert r.exit_code == 2 and "instrumnets" in r.output
