"""Issue 44 in pure functions: the redaction rule, what Ray may carry, one error line, unwrapped
worker errors, shipped weights checked against their cards, and the smaller defects (9)."""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import pytest

from infra.secrets import has_userinfo, is_secret, redact, redact_obj

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("text, expected", [
    ("postgresql://user:PASSWORD@host/db", "postgresql://***@host/db"),
    ("postgresql+pg8000://u:p@ss@h:5432/db", "postgresql+pg8000://***@h:5432/db"),  # '@' in the password
    ("http://user:PASSWORD@10.0.0.1:9000", "http://***@10.0.0.1:9000"),
    ("s3://KEY:SECRET@bucket/raw", "s3://***@bucket/raw"),
    ("s3://AKIA:abc/def+ghi@bucket/raw", "s3://***@bucket/raw"),               # an AWS secret holds '/'
    ("https://token@github.com/x.git", "https://***@github.com/x.git"),
    ("FileNotFoundError('s3://k:s@b/x does not exist')", "FileNotFoundError('s3://***@b/x does not exist')"),
    ("a s3://k:s@b/x and http://u:p@h/y", "a s3://***@b/x and http://***@h/y"),
])
def test_userinfo_in_any_url_becomes_stars(text, expected):
    assert redact(text) == expected and has_userinfo(text)


@pytest.mark.parametrize("text", ["s3://bucket/raw", "s3://bucket/take@2x.wav", "sqlite:////tmp/mlflow.db",
                                  "http://127.0.0.1:5000", "models:/reinstrument-flute@champion", "user@example.org",
                                  "shipped:vocoder@198f1341"])
def test_urls_without_userinfo_are_left_alone(text):
    assert redact(text) == text and not has_userinfo(text)


def test_what_counts_as_a_secret():
    for name in ("AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN", "DB_PASSWORD", "MY_CREDENTIALS", "api_key"):
        assert is_secret(name, "x")
    assert is_secret("MLFLOW_TRACKING_URI", "postgresql://u:pw@h/db")
    assert is_secret("AWS_ENDPOINT_URL", "http://u:pw@h:9000")
    for name, value in (("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000"), ("AWS_DEFAULT_REGION", "us-east-1"),
                        ("AWS_SHARED_CREDENTIALS_FILE", "/proc/1/fd/3"), ("REINSTRUMENT_DATA_ROOT", "s3://b/p")):
        assert not is_secret(name, value)
    assert redact_obj({"inputs": "s3://k:s@b/x", "db_password": "hunter2", "n": 3, "l": ["http://u:p@h"]}) == \
        {"inputs": "s3://***@b/x", "db_password": "***", "n": 3, "l": ["http://***@h"]}


def test_ray_gets_no_secret_of_any_prefix_and_no_url_password(monkeypatch):
    """Defects 1 and 2: what the local Ray's processes inherit and what runtime_env carries."""
    from infra import ray_cluster as rc

    env = {"GITHUB_TOKEN": "sentinel-gh", "DB_PASSWORD": "sentinel-db", "AWS_SECRET_ACCESS_KEY": "sentinel-aws",
           "AWS_ACCESS_KEY_ID": "AKIAPLAIN",
           "MLFLOW_TRACKING_URI": "postgresql://u:sentinel-pg@127.0.0.1/db", "AWS_ENDPOINT_URL": "http://u:sentinel-ep@h",
           "AWS_DEFAULT_REGION": "us-east-1", "RAY_AUTH_TOKEN": "ray-own"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with rc._without_secrets():
        inherited = dict(__import__("os").environ)
    assert not any(s in json.dumps(inherited) for s in ("sentinel-gh", "sentinel-db", "sentinel-aws", "sentinel-pg",
                                                        "sentinel-ep"))
    assert inherited["AWS_DEFAULT_REGION"] == "us-east-1" and inherited["RAY_AUTH_TOKEN"] == "ray-own"
    plain = {k: v for k, v in rc.forwarded_env().items() if not rc.kept_from_ray(k, v)}
    assert "sentinel" not in json.dumps(plain) and plain["AWS_DEFAULT_REGION"] == "us-east-1"
    # the workers still get them, from the private in-memory file
    files = rc.write_worker_files({"MLFLOW_TRACKING_URI": env["MLFLOW_TRACKING_URI"]})
    monkeypatch.setenv(rc.WORKER_ENV_VAR, files[rc.WORKER_ENV_VAR])
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    rc.apply_worker_env()
    import os

    assert os.environ["MLFLOW_TRACKING_URI"] == env["MLFLOW_TRACKING_URI"]
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == "sentinel-aws"
    assert "aws_secret_access_key = sentinel-aws" in open(files["AWS_SHARED_CREDENTIALS_FILE"]).read()
    assert files["AWS_SHARED_CREDENTIALS_FILE"].startswith(f"/proc/{os.getpid()}/fd/")  # memory, not disk


def test_log_records_lose_url_passwords(caplog):
    from infra.secrets import redact_log_records

    redact_log_records()
    log = logging.getLogger("prefect.flow_runs.test")
    with caplog.at_level(logging.INFO):
        log.info("inputs %s", "s3://KEY:SECRET@bucket/raw")
        try:
            raise FileNotFoundError("s3://KEY:SECRET@bucket/raw is missing")
        except FileNotFoundError:
            log.exception("failed")
    text = caplog.text + "".join(r.exc_text or "" for r in caplog.records)
    assert "SECRET" not in text and "s3://***@bucket/raw" in text


def test_the_error_printer_takes_brackets_as_text_and_redacts(capsys):
    """Defect 7: a `[` in a message was parsed as rich markup (MarkupError)."""
    import typer

    from cli.common import fail

    with pytest.raises(typer.Exit) as e:
        fail(ValueError('bucket "bad:bucket" must match "^[a-zA-Z0-9.\\-_]{1,255}$" [/red] at s3://k:SECRET@b/x'))
    err = capsys.readouterr().err
    assert e.value.exit_code == 1 and err.count("\n") == 1
    assert "^[a-zA-Z0-9.\\-_]{1,255}$" in err and "[/red]" in err and "SECRET" not in err


def test_exit_status_convention():
    from pydantic import ValidationError

    from cli.common import exit_status
    from schemas.transform import InputSelection

    with pytest.raises(ValidationError) as e:
        InputSelection(limit=0)
    assert exit_status(e.value) == 2 and exit_status(FileNotFoundError("x")) == 1


def test_worker_errors_are_unwrapped_to_the_reason():
    """Defect 6, the parts Ray's wrappers hide: an actor call's cause, an actor's __init__, a Ray
    Train worker group's failures (read by attribute, as tasks/errors.py does)."""
    from ray.exceptions import ActorDiedError, RayTaskError
    from ray.train import ControllerError
    from ray.train.v2.api.exceptions import WorkerGroupError

    from ray_actors.pool import init_error
    from tasks.errors import describe, user_error

    reason = ValueError("shipped:vocoder is not a denoiser but a vocoder model")
    task_error = RayTaskError("ClipTransformer.__init__", "Traceback ...", reason)
    died = ActorDiedError(task_error)
    assert init_error(died) is reason
    assert user_error(WorkerGroupError("rank 1 failed", {1: RuntimeError("gloo"), 0: task_error})) is reason
    assert user_error(ControllerError(reason)) is reason
    assert describe(user_error(task_error.as_instanceof_cause())) == f"ValueError: {reason}"
    assert user_error(WorkerGroupError("x", {0: RuntimeError("a bug")})) is None  # bugs keep their traceback


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    from infra.settings import get_settings

    shutil.copytree(ROOT / "weights" / "vocoder", tmp_path / "vocoder")
    monkeypatch.setenv("REINSTRUMENT_SHIPPED_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_shipped_weights_are_checked_against_their_card_on_every_load(shipped):
    """Defect 8: 64 flipped bytes loaded and changed the audio."""
    from infra import tracking

    good = tracking.model_checkpoint("shipped:vocoder")
    assert hashlib.sha256(good).hexdigest() == json.loads((shipped / "vocoder/card.json").read_text())["sha256"]
    damaged = bytearray(good)
    for k in range(64):
        damaged[len(good) // 2 + k] ^= 0xFF
    (shipped / "vocoder/model.pt").write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match="does not match its card"):
        tracking.model_checkpoint("shipped:vocoder")
    with pytest.raises(ValueError, match="does not match its card"):
        tracking.resolve_model("shipped:vocoder")
    (shipped / "vocoder/model.pt").write_bytes(good)
    (shipped / "vocoder/card.json").unlink()
    with pytest.raises(ValueError, match="loaded only with its card"):
        tracking.model_checkpoint("shipped:vocoder")


@pytest.mark.parametrize("uri", ["shipped:/etc/passwd", "shipped:../vocoder", "shipped:vocoder/../../x", "shipped:"])
def test_shipped_takes_names_only(shipped, uri):
    from infra import tracking

    with pytest.raises(ValueError, match="not a path"):
        tracking.model_checkpoint(uri)


@pytest.mark.parametrize("uri", ["x", "models:/x", "s3://bucket/model.pt", "/tmp/model.pt", "runs:/"])
def test_a_model_uri_of_no_known_form_is_refused_before_anything_runs(uri):
    """Defect 9: `--model x` reached the workers and failed with MLflow's raw '##### File x #####'."""
    from infra import tracking

    with pytest.raises(ValueError, match="expected models:/NAME@ALIAS, models:/NAME/VERSION"):
        tracking.resolve_model(uri)


def test_split_all_means_every_split_everywhere():
    """Defect 9: `--split all` was taken literally by transform and sweep."""
    from schemas.compare import CompareConfig
    from schemas.transform import InputSelection

    assert InputSelection(split="all").split is None and InputSelection(split="test").split == "test"
    assert CompareConfig(model="models:/m/1", split="all").split is None


def test_ingested_midi_counts_notes_outside_the_playable_range(tmp_path):
    """Defect 9: pitches 0-3 and 120-127 were accepted with out_of_range_notes null."""
    import pretty_midi

    from infra.datasets import ShardedDataset
    from schemas.configs import IngestConfig
    from tasks.ingest import run_ingest

    for name, pitches in (("low_high", [0, 3, 60, 64, 120, 127]), ("fine", [60, 62, 64, 65])):
        pm = pretty_midi.PrettyMIDI()
        inst = pretty_midi.Instrument(program=0)
        inst.notes = [pretty_midi.Note(90, p, 0.5 * k, 0.5 * k + 0.45) for k, p in enumerate(pitches)]
        pm.instruments.append(inst)
        (tmp_path / "src").mkdir(exist_ok=True)
        pm.write(str(tmp_path / "src" / f"{name}.mid"))
    res = run_ingest(str(tmp_path / "src"), str(tmp_path / "d"), IngestConfig(midi_soundfont="sine"))
    rows = ShardedDataset.at(res.clips_url, "clips").read(["source_uri", "out_of_range_notes"]).to_pylist()
    per = {Path(r["source_uri"]).stem: r["out_of_range_notes"] for r in rows}
    assert per == {"low_high": 4, "fine": 0}


def test_the_ingest_summary_counts_every_file_seen(tmp_path):
    """Defect 9: two bad files were summarised as 1 source and 2 quarantined."""
    from schemas.configs import IngestConfig
    from tasks.ingest import run_ingest

    (tmp_path / "src").mkdir()
    (tmp_path / "outside.wav").write_bytes(b"RIFF")
    (tmp_path / "src/escapes.wav").symlink_to(tmp_path / "outside.wav")  # refused before decoding
    (tmp_path / "src/broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")  # quarantined by decoding
    res = run_ingest(str(tmp_path / "src"), str(tmp_path / "d"), IngestConfig())
    assert (res.sources_seen, res.quarantined, res.clips_added) == (2, 2, 0)
    again = run_ingest(str(tmp_path / "src"), str(tmp_path / "d"), IngestConfig())
    assert (again.sources_seen, again.sources_skipped, again.quarantined) == (2, 2, 0)


def test_compare_without_true_targets_starts_no_child_run_it_would_leave_running(monkeypatch):
    """Defect 9: `compare` on inputs without true targets left the MLflow child run `timbre/target`
    RUNNING (started, then returned from before it was finished)."""
    import jobs.compare as compare_mod
    from infra import tracking
    from schemas.transform import InputSelection, TransformLogistics
    from tasks.compare import Method

    started = []
    monkeypatch.setattr(tracking.TrackedRun, "start", classmethod(lambda cls, *a, **k: started.append(a) or cls("x")))
    out = compare_mod.run_method("timbre", Method("target", "true target", "target"), "in", InputSelection(),
                                 {"guides": {"g": object()}, "targets": {}, "kinds": {}}, {}, None, None, (None, None),
                                 TransformLogistics(num_actors=0, out_url="unused"))
    assert out == {"rows": [], "run_url": None, "keys": {}} and started == []
