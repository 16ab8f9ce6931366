"""A behaviour pin, written before the job layer was restructured (issue 17): a tiny-model sweep on
the fixed mini corpus, run through the command line exactly as a user would (features, train,
sweep; no Prefect), must give the same output audio, metrics table and recommendation as the
recorded run in tests/fixtures/regression_pin.json.

Exact (audio SHA-256, metrics to 1e-9) when this machine's CPU flags, core count and torch
version match the recorded ones; float kernels differ between CPU kinds (AMX/bf16 vs AVX2), so
elsewhere every output's duration and level and every metric must agree within a tolerance.
Re-record (only when a behaviour change is intended and said in the commit):
REINSTRUMENT_RECORD_PIN=1 pytest tests/integration/test_regression_pin.py"""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from infra.datasets import ShardedDataset

pytestmark = pytest.mark.integration
PIN = Path(__file__).parent.parent / "fixtures" / "regression_pin.json"
CLI = str(Path(sys.executable).with_name("reinstrument"))


def machine() -> dict:
    import torch

    flags = next((ln.split(":", 1)[1].split() for ln in open("/proc/cpuinfo") if ln.startswith("flags")), [])
    return {"flags_sha256": hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()[:16],
            "amx": "amx_tile" in flags, "avx512f": "avx512f" in flags, "cpus": os.cpu_count(), "torch": torch.__version__}


def cli(*args: str, env: dict) -> str:
    r = subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"reinstrument {' '.join(args)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout + r.stderr


ADDED_SINCE_PIN = {"target_accuracy"}  # the instrument probe's share of outputs heard as the target


def observe(root: Path) -> dict:
    """What the sweep produced: every output's audio (per grid point and input clip), the metrics
    table and the recommendation, without IDs that hash configs (those may be renamed)."""
    sweeps = list((root / "sweeps").iterdir())
    assert len(sweeps) == 1, sweeps
    rec = json.loads((sweeps[0] / "recommendation.json").read_text())
    import pyarrow.parquet as pq

    # metrics added after the pin was recorded are new columns of the table, not changed behaviour
    rows = [r for r in pq.read_table(sweeps[0] / "metrics.parquet").to_pylist() if r["metric"] not in ADDED_SINCE_PIN]
    table = sorted(({k: r[k] for k in ("method", "task", "t_init", "lam", "metric", "embedding", "reference", "n",
                                        "mean", "ci_low", "ci_high")} for r in rows),
                   key=lambda r: (r["lam"], r["t_init"], r["metric"]))
    audio = {}
    for run_id in sorted({r["run_id"] for r in rows}):
        run = root / "runs" / run_id
        for o in ShardedDataset.at(str(run / "outputs"), "outputs").read().to_pylist():
            body = (run / "audio" / f"{o['output_key']}.flac").read_bytes()
            y, sr = sf.read(io.BytesIO(body), dtype="float32")
            audio[f"t{o['t_init']:g}-l{o['lam']:g}-{o['clip_id']}"] = {
                "sha256": hashlib.sha256(body).hexdigest(), "seconds": len(y) / sr,
                "rms": float(np.sqrt(np.mean(y.astype(np.float64) ** 2)))}
    return {"audio": audio, "metrics": table,
            "recommended": rec["recommended"], "operating_point": rec.get("operating_point")}


def same_point(a: dict, b: dict) -> bool:
    """Operating points are equal when every value is, the sampler settings compared as the current
    SamplerConfig reads them (an older recommendation.json must still load, under its old names)."""
    from schemas.diffusion import SamplerConfig

    rest = lambda p: {k: v for k, v in p.items() if k != "sampler"}  # noqa: E731
    return rest(a) == rest(b) and SamplerConfig.model_validate(a["sampler"]) == SamplerConfig.model_validate(b["sampler"])


def test_tiny_sweep_through_the_cli_is_pinned(built_corpus, tmp_path):
    _, corpus = built_corpus
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
               REINSTRUMENT_MLFLOW_ARTIFACTS=(tmp_path / "artifacts").as_uri(),
               REINSTRUMENT_DATA_ROOT=str(tmp_path / "data"), REINSTRUMENT_PROGRESS="0")
    # float32 values: the layout changed to bytes (features schema 3) while the pinned behaviour did
    # not; float16 storage (the default since) is a deliberate change of the values, not pinned here
    cli("features", corpus.clips_url, "--out", str(tmp_path / "features"), "--actors", "0", "--no-prefect",
        "--segment-frames", "64", "--segment-hop-frames", "32", "--dtype", "float32", env=env)
    (features_url,) = [str(p) for p in (tmp_path / "features").iterdir() if p.name.startswith("logmel-")]
    cli("train", features_url, "--domain", "flute", "--preset", "tiny", "--train-steps", "20", "--workers", "0",
        "--out", str(tmp_path / "training"), "--no-prefect", env=env)
    cli("sweep", "--inputs", corpus.clips_url, "--model", "models:/reinstrument-flute@champion", "--domain", "violin",
        "--split", "test", "--limit", "2", "--t-init", "0.4", "--t-init", "1.0", "--lam", "0", "--lam", "1",
        "--steps", "8", "--sampler", "heun", "--actors", "0", "--vocoder", "griffin-lim", "--out", str(tmp_path / "root"),
        "--no-anchors", "--no-prefect",  # the pinned grid; the anchors came later and are tested on their own
        env=env)
    seen = observe(tmp_path / "root")
    here = machine()
    if os.environ.get("REINSTRUMENT_RECORD_PIN"):
        PIN.write_text(json.dumps({"machine": here} | seen, indent=1, sort_keys=True) + "\n")
        pytest.skip(f"recorded {PIN}")
    pinned = json.loads(PIN.read_text())
    assert sorted(seen["audio"]) == sorted(pinned["audio"]), "a different set of outputs"
    assert [(r["t_init"], r["lam"], r["metric"], r["reference"], r["n"]) for r in seen["metrics"]] == \
           [(r["t_init"], r["lam"], r["metric"], r["reference"], r["n"]) for r in pinned["metrics"]]
    if here == pinned["machine"]:
        assert {k: a["sha256"] for k, a in seen["audio"].items()} == {k: a["sha256"] for k, a in pinned["audio"].items()}
        for got, want in zip(seen["metrics"], pinned["metrics"]):
            for k in ("mean", "ci_low", "ci_high"):
                assert got[k] == pytest.approx(want[k], rel=1e-9, abs=1e-12), (got, want)
        assert seen["recommended"] == pinned["recommended"]
        assert same_point(seen["operating_point"], pinned["operating_point"])
    else:  # another CPU kind: the same work within float noise of a tiny model
        for k, a in seen["audio"].items():
            assert a["seconds"] == pinned["audio"][k]["seconds"]
            assert a["rms"] == pytest.approx(pinned["audio"][k]["rms"], rel=0.1), k
        for got, want in zip(seen["metrics"], pinned["metrics"]):
            tol = 0.05 if got["metric"].startswith(("jd", "f1")) else 0.1 * abs(want["mean"]) + 1e-6
            assert abs(got["mean"] - want["mean"]) <= tol, (got, want)
