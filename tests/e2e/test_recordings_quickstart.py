"""README's quickstart for your own recordings, run as written (parsed from README, so the two
cannot drift), on a folder a user could have: a 95-s stereo 44.1 kHz WAV, a 7-s mono 48 kHz FLAC,
an MP3 and a file in a subfolder. Each source comes back as exactly one file named after it, as
long as it (to a frame), with a table row pointing back to it; a re-run writes nothing; a run
killed with SIGKILL and run again leaves each output once."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from infra.datasets import ShardedDataset
from tests.conftest import sigkill_once_committed

ROOT = Path(__file__).resolve().parents[2]
BIN = os.path.dirname(sys.executable)
FRAME_S = 256 / 16000   # one mel frame of the shipped models
SOURCES = {"concert.wav": (95.0, 44100, 2, "WAV"), "etude.flac": (7.0, 48000, 1, "FLAC"),
           "air.mp3": (12.0, 44100, 1, "MP3"), "sub/scale.wav": (15.0, 22050, 1, "WAV")}


def quickstart() -> list[str]:
    """The commands of README's recordings quickstart, as written."""
    text = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- quickstart: recordings.*?-->\s*```bash\n(.*?)```", text, re.S)
    assert m, "README has no recordings quickstart block"
    return [line for line in m.group(1).splitlines() if line.startswith("reinstrument ")]


def _violin(seconds: float, sr: int, seed: int) -> np.ndarray:
    """A bowed-string-like melody: harmonics, vibrato, a note every 0.4 s, phrases with rests."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    notes = 392 * 2 ** (rng.integers(0, 15, size=int(seconds / 0.4) + 1) / 12)
    f = notes[(t / 0.4).astype(int)] * (1 + 0.004 * np.sin(2 * np.pi * 5.5 * t))
    ph = 2 * np.pi * np.cumsum(f) / sr
    x = sum(np.sin(k * ph) / k ** 1.3 for k in range(1, 8))
    env = np.minimum(1, (t % 0.4) / 0.03) * (0.6 + 0.4 * (np.sin(2 * np.pi * t / 9) > -0.8))
    return (0.15 * x * env).astype(np.float32)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("quickstart")
    for k, (rel, (sec, sr, ch, fmt)) in enumerate(SOURCES.items()):
        p = d / "my-violin" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        x = _violin(sec, sr, k)
        sf.write(p, np.stack([x, 0.9 * x], 1) if ch == 2 else x, sr, format=fmt)
    return d


def _env(d: Path) -> dict:
    return dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", REINSTRUMENT_DATA_ROOT=str(d / "data"),
                MLFLOW_TRACKING_URI=f"sqlite:///{d / 'mlflow.db'}", REINSTRUMENT_PROGRESS="0")


def _run(cmd: str, d: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, shell=True, cwd=d, env=_env(d), capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{cmd}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def _check_outputs(folder: Path, run: Path, d: Path, sources: dict = SOURCES) -> None:
    got = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")}
    assert got == {os.path.splitext(rel)[0] + ".flute.flac" for rel in sources}
    rows = ShardedDataset.at(str(run / "recording_rows"), "recordings").read().to_pylist()
    assert len(rows) == len({r["source_id"] for r in rows}) == len(sources)
    by_name = {r["name"]: r for r in rows}
    for rel, (sec, sr, ch, _) in sources.items():
        row = by_name[os.path.splitext(rel)[0] + ".flute.flac"]
        assert row["source_uri"] == str(d / "my-violin" / rel) and row["piece"] == rel
        assert row["source_sample_rate_hz"] == sr and row["source_channels"] == ch
        src = sf.info(str(d / "my-violin" / rel))
        out = sf.info(str(folder / row["name"]))
        assert out.channels == 1 and out.samplerate == 16000
        assert abs(out.frames / out.samplerate - src.frames / src.samplerate) <= FRAME_S, rel
        assert row["model"] and row["vocoder"] and row["t_init"] is not None and row["seed"] == 0
        assert len(row["clip_keys"]) == row["clips"] >= 1


def test_the_readme_quickstart_as_written(workdir):
    transform, pull = quickstart()
    assert "--inputs my-violin" in transform and "pull" in pull
    r = _run(transform, workdir)
    assert "operating point: τ_init" in r.stderr and "recordings:" in r.stderr
    run = workdir / "my-runs/runs/my-flute"
    _check_outputs(run / "recordings", run, workdir)
    _run(pull, workdir)
    _check_outputs(workdir / "flute-versions/recordings", workdir / "flute-versions", workdir)
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=workdir / "flute-versions", capture_output=True)
    assert check.returncode == 0, check.stdout

    # a re-run writes nothing new: every file of the run keeps its bytes and its mtime
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    again = _run(transform, workdir)
    assert "already transformed (skipped); 0 to do" in again.stdout + again.stderr
    after = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    assert {p: t for p, t in after.items() if "mlflow" not in str(p)} == {p: t for p, t in before.items()
                                                                          if "mlflow" not in str(p)}


def test_a_run_killed_mid_way_then_rerun_leaves_each_output_once(workdir):
    """The same command in its own folder (the short recordings: 5 clips), one clip per commit so
    the kill lands mid-run."""
    d = workdir / "killed"
    short = {rel: v for rel, v in SOURCES.items() if v[0] < 60}
    for rel in short:
        (d / "my-violin" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(workdir / "my-violin" / rel, d / "my-violin" / rel)  # a link outside the folder is refused
    cmd = quickstart()[0] + " --actors 0 --clips-per-task 1 --no-prefect"
    run = d / "my-runs/runs/my-flute"
    outputs = ShardedDataset.at(str(run / "outputs"), "outputs")
    committed = sigkill_once_committed(shlex.split(cmd), outputs.url, 2, cwd=d, env=_env(d))
    total = ShardedDataset.at(str(run / "inputs/clips"), "clips").manifest().num_rows
    assert 2 <= committed < total == 5, f"the kill landed after {committed} of {total} clips"
    _run(cmd, d)
    _check_outputs(run / "recordings", run, d.resolve(), short)
    rows = outputs.read(["output_key"]).column("output_key").to_pylist()
    assert len(rows) == len(set(rows)) == total
