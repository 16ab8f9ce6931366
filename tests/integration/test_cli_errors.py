"""Mistakes that used to succeed or end in a traceback, and Prefect processes that outlived their
command (issue 16, defects 5, 6 and 8). Each runs the real `reinstrument` command."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from infra.datasets import ShardedDataset
from tests.conftest import tone, write_wav

BIN = os.path.dirname(sys.executable)


def cli(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    full = dict(os.environ, REINSTRUMENT_PROGRESS="0") | (env or {})
    return subprocess.run([f"{BIN}/reinstrument", *args], capture_output=True, text=True, env=full, timeout=timeout)


def one_line_error(r: subprocess.CompletedProcess, *expected: str) -> None:
    assert r.returncode != 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    err = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1, r.stderr
    for text in expected:
        assert text in err[0], err[0]


@pytest.fixture
def src(tmp_path):
    for k in range(3):
        write_wav(str(tmp_path / f"src/flute/t{k}.wav"), tone(400 + 40 * k, 2.0))
    return tmp_path / "src"


def test_ingest_from_a_missing_src_fails(tmp_path):
    one_line_error(cli("ingest", str(tmp_path / "nope"), "--out", str(tmp_path / "d"), "--no-prefect"), "does not exist")
    assert not (tmp_path / "d").exists()


def test_features_on_an_empty_folder_fails_and_prints_no_url(tmp_path):
    (tmp_path / "empty").mkdir()
    r = cli("features", str(tmp_path / "empty"), "--out", str(tmp_path / "f"), "--actors", "0", "--no-prefect")
    one_line_error(r, "not a clips dataset")
    assert "features:" not in r.stdout + r.stderr and not (tmp_path / "f").exists()


def test_features_with_zero_actors_runs_in_process_and_negative_is_refused(tmp_path, src):
    """`--actors 0` means in this process, as for transform and sweep (it used to end in Ray's
    'size must be >= 1'); no Ray starts for it."""
    assert cli("ingest", str(src), "--out", str(tmp_path / "d"), "--no-prefect").returncode == 0
    r = cli("features", str(tmp_path / "d/clips"), "--out", str(tmp_path / "f"), "--actors", "0", "--no-prefect",
            env={"REINSTRUMENT_RAY_ADDRESS": "127.0.0.1:1"})  # a Ray it would fail to reach
    assert r.returncode == 0 and "features:" in r.stdout + r.stderr, r.stderr[-2000:]
    r = cli("features", str(tmp_path / "d/clips"), "--out", str(tmp_path / "g"), "--actors", "-1", "--no-prefect")
    assert r.returncode == 2 and "greater than or equal to 0" in r.stderr and not (tmp_path / "g").exists()


def test_a_run_id_that_escapes_runs_is_refused(tmp_path, src):
    r = cli("transform", "--inputs", str(src), "--model", "models:/x/1", "--run-id", "../escaped",
            "--out", str(tmp_path / "out"), "--no-prefect", env={"REINSTRUMENT_DATA_ROOT": str(tmp_path / "root")})
    one_line_error(r, "run_id")
    assert not (tmp_path / "out").exists() and not (tmp_path / "escaped").exists()


def test_a_sidecar_without_a_domain_column_is_one_line(tmp_path, src):
    side = tmp_path / "side.csv"
    side.write_text("path,label\nflute/t0.wav,flute\n")
    one_line_error(cli("ingest", str(src), "--out", str(tmp_path / "d"), "--sidecar", str(side), "--no-prefect"),
                   "expected path, domain")


def test_a_model_that_does_not_exist_is_one_line(tmp_path, src):
    env = {"REINSTRUMENT_DATA_ROOT": str(tmp_path / "root")}
    one_line_error(cli("transform", "--inputs", str(src), "--model", "models:/reinstrument-nope@champion",
                       "--out", str(tmp_path / "out"), "--no-prefect", env=env), "reinstrument-nope")
    assert not (tmp_path / "out").exists()


def test_train_on_an_empty_root_or_an_unknown_domain_is_one_line(tmp_path, src):
    env = {"REINSTRUMENT_DATA_ROOT": str(tmp_path / "root")}
    (tmp_path / "empty").mkdir()
    one_line_error(cli("train", str(tmp_path / "empty"), "--domain", "flute", "--preset", "tiny", "--workers", "0",
                       "--no-prefect", env=env), "not a feature set")
    side = tmp_path / "side.csv"
    side.write_text("path,domain,split\n" + "".join(f"flute/t{k}.wav,flute,train\n" for k in range(3)))
    # the feature set the failing command reads, made in this process (only `train` is under test)
    from ray_actors.features import extract_features
    from schemas.configs import FeatureConfig, IngestConfig
    from tasks.ingest import run_ingest

    run_ingest(str(src), str(tmp_path / "ing"), IngestConfig(), str(side))
    url = extract_features([str(tmp_path / "ing/clips")], str(tmp_path / "feat"), FeatureConfig(), local=True)["features_url"]
    one_line_error(cli("train", url, "--domain", "violin", "--preset", "tiny", "--workers", "0", "--no-prefect",
                       env=env), "no train statistics", "violin")


def test_an_s3_endpoint_that_is_down_is_one_line(tmp_path):
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y",
           "AWS_MAX_ATTEMPTS": "1"}
    one_line_error(cli("ingest", "s3://bucket/in", "--out", str(tmp_path / "d"), "--no-prefect", env=env), "127.0.0.1:9")


def test_no_prefect_means_no_prefect(tmp_path, src):
    """With a PREFECT_API_URL nothing answers on, any Prefect call would fail the command."""
    r = cli("ingest", str(src), "--out", str(tmp_path / "d"), "--no-prefect", env={"PREFECT_API_URL": "http://127.0.0.1:9/api"})
    assert r.returncode == 0, r.stderr
    assert ShardedDataset.at(str(tmp_path / "d/clips"), "clips").read(["clip_id"]).num_rows == 3


def _uvicorn_children(proc: psutil.Process) -> list[psutil.Process]:
    out = []
    for p in proc.children(recursive=True):
        try:
            if "uvicorn" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def test_the_temporary_prefect_api_is_on_loopback_and_dies_with_its_command(tmp_path, src):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env |= {"PREFECT_HOME": str(tmp_path / "prefect-home"), "REINSTRUMENT_PROGRESS": "0"}
    p = subprocess.Popen([f"{BIN}/reinstrument", "ingest", str(src), "--out", str(tmp_path / "d")], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parent = psutil.Process(p.pid)
    deadline, servers = time.time() + 120, []
    while time.time() < deadline and not servers:
        servers = _uvicorn_children(parent)
        time.sleep(0.2)
    assert servers, "no temporary Prefect API was started"
    server = servers[0]
    listening = []
    while time.time() < deadline and not listening:
        listening = [c.laddr.ip for c in server.net_connections("inet") if c.status == psutil.CONN_LISTEN]
        time.sleep(0.2)
    assert listening and all(ip in ("127.0.0.1", "::1") for ip in listening), listening
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    gone, alive = psutil.wait_procs([server], timeout=15)
    assert not alive, "the temporary Prefect API outlived its command"


def test_a_command_under_the_temporary_prefect_api_ends_without_log_errors(tmp_path, src):
    """Prefect batches its log lines to the API; queued lines must reach it before it stops, or
    its sender retries for a minute after the work is done and ends every command with an error."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env |= {"PREFECT_HOME": str(tmp_path / "prefect-home"), "REINSTRUMENT_PROGRESS": "0"}
    r = subprocess.run([f"{BIN}/reinstrument", "ingest", str(src), "--out", str(tmp_path / "d")], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Beginning flow run" in r.stdout + r.stderr  # it ran under Prefect
    assert "Error logging to API" not in r.stdout + r.stderr, r.stderr[-2000:]


def test_a_sweep_grid_is_validated_before_any_work(tmp_path):
    r = cli("sweep", "--inputs", str(tmp_path / "clips"), "--model", "models:/reinstrument-flute/1",
            "--t-init", "0.5", "--t-init", "2.0", "--out", str(tmp_path / "out"), "--no-prefect",
            env={"REINSTRUMENT_DATA_ROOT": str(tmp_path / "root")}, timeout=120)
    one_line_error(r, "t_init", "less than or equal to 1")
    assert not (tmp_path / "out").exists() and not (tmp_path / "root").exists()


# -- issue 44: one line for every mistake, in the default (Prefect) mode ------------------------
# (command line, exit status, text the error line holds). 2: usage or config; 1: anything else.
MISTAKES = [
    (("ingest", "{t}/nope", "--out", "{t}/d"), 1, "does not exist"),
    (("ingest", "s3://bad:bucket/raw", "--out", "{t}/d"), 1, "'bad:bucket' is not an S3 bucket name"),  # '[' used to crash
    (("ingest", "s3://AKIA:hunter2x@bucket/raw", "--out", "{t}/d"), 2, "s3://***@bucket/raw holds credentials"),
    (("ingest",), 2, "Missing argument 'src'"),
    (("ingest", "{t}/src", "--out", "{t}/d", "--bogus"), 2, "No such option: --bogus"),
    (("augment", "{t}/nope", "--out", "{t}/aug"), 1, "is not a clips dataset"),
    (("features", "{t}/empty", "--out", "{t}/f"), 1, "not a clips dataset"),
    (("train", "{t}/empty", "--domain", "flute", "--preset", "tiny"), 1, "not a feature set"),
    (("train", "{t}/empty", "--domain", "flute", "--preset", "huge"), 2, "unknown preset 'huge'"),
    (("transform", "--inputs", "{t}/src", "--model", "x"), 1, "expected models:/NAME@ALIAS"),
    (("transform", "--inputs", "{t}/src", "--model", "shipped:vocoder"), 1, "not a denoiser but a vocoder"),
    (("transform", "--inputs", "{t}/src", "--model", "shipped:flute-latent", "--t-init", "1.5"), 2, "t_init"),
    (("sweep", "--inputs", "{t}/nope", "--model", "shipped:flute-latent"), 1, "0 clips"),
    (("compare", "--inputs", "{t}/src", "--model", "shipped:flute-latent"), 1, "is not a clips dataset"),
    (("nightly", "--inputs", "{t}/nope", "--model", "shipped:flute-latent"), 1, "does not exist"),
    (("pull", "{t}/nope", "--out", "{t}/dest"), 1, "no outputs table"),
    (("inspect", "{t}/nope"), 1, "no dataset at"),
    (("config", "show", "bogus"), 2, "unknown config 'bogus'"),
    (("metrics", "fad", "{t}/nope", "{t}/nope"), 1, "no audio files"),
    (("corpus", "build", "--out", "{t}/c", "--pieces", "0"), 2, "max_pieces"),
    (("demo", "--out", "{t}/demo", "--pieces", "0"), 2, "tunes_per_file"),
    (("train-vocoder", "{t}/nope"), 1, "no clean train clips"),
    (("shipped", "register", "nope"), 1, "no shipped model 'nope'"),
    (("mel2audio", "{t}/nope", "--out", "{t}/x.wav"), 1, "is not a feature set"),
    (("warm-probe", "{t}/nope", "--model", "shipped:flute-latent", "--guide-domain", "violin"), 1, "{t}/nope"),
    (("train-autoencoder", "{t}/nope", "--preset", "huge"), 2, "unknown preset 'huge'"),
    (("serve",), 2, "PREFECT_API_URL is not set"),
]


@pytest.fixture(scope="module")
def prefect_url(tmp_path_factory):
    """One Prefect API for every command of the module (a temporary one per command costs ~10 s)."""
    from infra.prefect_api import prefect_api

    os.environ.pop("PREFECT_API_URL", None)
    with prefect_api() as url:
        yield url


def _mistake(base: Path, prefect_url: str, args: tuple, status: int, text: str) -> str | None:
    """What is wrong with one mistake's output (None: one `error:` line holding `text`, `status`)."""
    (base / "empty").mkdir(parents=True)
    write_wav(str(base / "src/violin/a.wav"), tone(440, 2.0))
    env = {"PREFECT_API_URL": prefect_url if args != ("serve",) else "", "AWS_MAX_ATTEMPTS": "1",
           "REINSTRUMENT_DATA_ROOT": str(base / "root")}
    r = cli(*[a.format(t=base) for a in args], env=env)
    try:
        one_line_error(r, text.format(t=base))
        assert r.returncode == status, f"exit {r.returncode}, expected {status}"
        assert "hunter2x" not in r.stdout + r.stderr
        assert "Finished in state Failed" not in r.stderr and "Encountered exception" not in r.stderr
    except AssertionError as e:
        return f"{' '.join(args)}: {e}\n{r.stderr[-1500:]}"
    return None


def test_every_commands_common_mistakes_end_in_one_line_in_the_default_mode(tmp_path, prefect_url):
    """Two commands at a time (each is mostly its own start-up), every failure reported."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as ex:
        problems = [p for p in ex.map(lambda km: _mistake(tmp_path / str(km[0]), prefect_url, *km[1]),
                                      enumerate(MISTAKES)) if p]
    assert not problems, "\n\n".join(problems)


def test_the_temporary_apis_dead_link_is_not_printed_and_the_failure_stays_in_prefect(tmp_path):
    """The failure's traceback is in Prefect's database (the API's logs), not on the terminal."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env |= {"PREFECT_HOME": str(tmp_path / "prefect-home"), "REINSTRUMENT_PROGRESS": "0"}
    r = subprocess.run([f"{BIN}/reinstrument", "ingest", str(tmp_path / "nope"), "--out", str(tmp_path / "d")], env=env,
                       capture_output=True, text=True, timeout=300)
    one_line_error(r, "does not exist")
    assert r.returncode == 1 and "View at" not in r.stderr and "Beginning flow run" in r.stderr
    import sqlite3

    db = sqlite3.connect(tmp_path / "prefect-home" / "prefect.db")
    states = [s for (s,) in db.execute("SELECT state_type FROM flow_run")]
    logs = " ".join(m for (m,) in db.execute("SELECT message FROM log"))
    assert states == ["FAILED"] and "Traceback" in logs and "does not exist" in logs


def test_an_error_inside_a_ray_train_worker_is_the_same_one_line(tmp_path, src):
    """Issue 44, defect 6 for training: a worker's ValueError came back as Ray Train's
    WorkerGroupError with every worker's traceback; it is now the worker's own line."""
    from ray_actors.features import extract_features
    from schemas.configs import FeatureConfig, IngestConfig
    from tasks.ingest import run_ingest

    side = tmp_path / "side.csv"
    side.write_text("path,domain,split\n" + "".join(f"flute/t{k}.wav,flute,train\n" for k in range(3)))
    run_ingest(str(src), str(tmp_path / "ing"), IngestConfig(), str(side))
    url = extract_features([str(tmp_path / "ing/clips")], str(tmp_path / "feat"), FeatureConfig(), local=True)["features_url"]
    (tmp_path / "odd.json").write_text('{"batch_size": 7, "steps": 4}')  # 7 rows cannot split over 2 workers
    r = cli("train", url, "--domain", "flute", "--preset", "tiny", "--workers", "2", "--config", str(tmp_path / "odd.json"),
            "--no-prefect", "--no-register", "--out", str(tmp_path / "out"),
            env={"REINSTRUMENT_DATA_ROOT": str(tmp_path / "root"), "RAY_ADDRESS": ""})
    one_line_error(r, "ValueError: batch_size=7 is not divisible by 2 workers")
    assert r.returncode == 1
