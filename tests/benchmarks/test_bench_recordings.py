"""`make bench`: whole recordings against the clip path, side by side in one run, each in a process
of its own (so peak RSS is its own): a 30-minute recording transformed into clips only, the same
into a whole file, and a 10-minute one into a whole file, with the shipped model of six instruments
at the same operating point (τ_init 0.6, λ 0, DPM-Solver++(2M) 6 steps), in-process (2 threads).
Prints × real time (audio seconds per wall second, ingestion included) and peak RSS; whole files
must keep ≥ 90 % of the clip path's × real time and their peak RSS must not grow with length.
BENCH_RECORDING_MIN (default 30) shortens the long recording for a quick look."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import soundfile as sf

from jobs.ship import cpu_flags

LONG_MIN = float(os.environ.get("BENCH_RECORDING_MIN", "30"))
RUNNER = """
import json, resource, sys, time
from jobs.transform import transform_job
from schemas.transform import InputSelection, TransformConfig, TransformLogistics, WholeOutputs
src, out, whole = sys.argv[1], sys.argv[2], sys.argv[3] == "whole"
cfg = TransformConfig(model="shipped:instruments-latent", target="flute", warm={"t_init": 0.6, "lam": 0.0})
t0 = time.perf_counter()
res = transform_job(src, InputSelection(), cfg, TransformLogistics(num_actors=0, out_url=out),
                    whole=WholeOutputs() if whole else None)
wall = time.perf_counter() - t0
print("RESULT", json.dumps({"wall_s": wall, "audio_s": float(sys.argv[4]), "written": res["recordings_written"],
                            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _recording(path, minutes: float) -> float:
    """A violin-like melody, written in 1-minute blocks (never whole in memory)."""
    from tests.e2e.test_recordings_quickstart import _violin

    with sf.SoundFile(path, "w", samplerate=44100, channels=1, format="FLAC") as f:
        for k in range(int(np.ceil(minutes))):
            f.write(_violin(min(60.0, minutes * 60 - 60 * k), 44100, k))
    return minutes * 60


def _run(src, out, mode: str, seconds: float, tmp) -> dict:
    env = dict(os.environ, REINSTRUMENT_DATA_ROOT=str(tmp / "data"), MLFLOW_TRACKING_URI=f"sqlite:///{tmp / 'mlflow.db'}",
               REINSTRUMENT_PROGRESS="0")
    r = subprocess.run([sys.executable, "-c", RUNNER, str(src), str(out), mode, str(seconds)], env=env,
                       capture_output=True, text=True, timeout=3600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.split("RESULT ", 1)[1])


def test_whole_recordings_against_the_clip_path(tmp_path):
    # the MLflow store's tables made first, so no timed run pays for creating them
    subprocess.run([sys.executable, "-c", "import mlflow; mlflow.search_experiments()"], check=True,
                   env=dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}"), capture_output=True)
    runs = {}
    for minutes in (LONG_MIN, LONG_MIN / 3):
        d = tmp_path / f"in-{minutes:g}"
        d.mkdir()
        runs[minutes] = _recording(d / "long.flac", minutes)
    results = {("clips", LONG_MIN): _run(tmp_path / f"in-{LONG_MIN:g}", tmp_path / "out-clips", "clips",
                                         runs[LONG_MIN], tmp_path),
               ("whole", LONG_MIN): _run(tmp_path / f"in-{LONG_MIN:g}", tmp_path / "out-whole", "whole",
                                         runs[LONG_MIN], tmp_path),
               ("whole", LONG_MIN / 3): _run(tmp_path / f"in-{LONG_MIN / 3:g}", tmp_path / "out-whole-short", "whole",
                                             runs[LONG_MIN / 3], tmp_path)}
    print(f"\nwhole recordings vs the clip path; CPU flags: {' '.join(cpu_flags())}; {os.cpu_count()} cores")
    print(f"{'path':<8}{'minutes':>8}{'x real time':>13}{'wall s':>9}{'peak RSS MB':>13}")
    for (mode, minutes), r in results.items():
        print(f"{mode:<8}{minutes:>8.1f}{r['audio_s'] / r['wall_s']:>13.2f}{r['wall_s']:>9.1f}{r['peak_rss_mb']:>13.0f}")
    clip, whole, short = results[("clips", LONG_MIN)], results[("whole", LONG_MIN)], results[("whole", LONG_MIN / 3)]
    ratio = (whole["audio_s"] / whole["wall_s"]) / (clip["audio_s"] / clip["wall_s"])
    growth = whole["peak_rss_mb"] / short["peak_rss_mb"] - 1
    print(f"whole / clip path x real time: {ratio:.3f}; peak RSS {LONG_MIN:g} min vs {LONG_MIN / 3:g} min: "
          f"{100 * growth:+.1f} %")
    assert whole["written"] == 1 and clip["written"] == 0
    assert ratio >= 0.9 and abs(growth) <= 0.10
