"""`reinstrument-nightly`: transform whatever arrived under an input prefix since the last
successful run, with each configured target's champion at its recommended tau_init, under a
dated prefix. Never reprocesses an input; a run that crashed is finished by the next one.

State lives in <out>/nightly/state.json, written atomically:
  {"watermark": N,             # clips shards of the nightly ingestion already transformed
   "pending": {"run_date": D, "from": N, "to": M} | null}
Each night: ingest the prefix (content-hashed sources: nothing is ingested twice); if a pending
batch exists (a crash), finish it first under its own run IDs (committed outputs are skipped);
then take shards [watermark, end) as a new pending batch, transform it, and only then advance
the watermark and clear `pending`."""
from __future__ import annotations

import datetime as dt
import json

from prefect import flow

from flows.data import _table_artifact
from flows.transform import transform_corpus
from infra import tracking
from infra.datasets import ShardedDataset
from infra.settings import get_settings
from infra.storage import Storage
from schemas.configs import IngestConfig
from schemas.diffusion import WarmStartConfig
from schemas.transform import InputSelection, TransformConfig, TransformLogistics
from tasks.ingest import run_ingest

STATE = "nightly/state.json"


def _read_state(root: Storage) -> dict:
    return json.loads(root.read_bytes(STATE)) if root.exists(STATE) else {"watermark": 0, "pending": None}


def recommended_t_init(root: Storage, model_version: str, default: float) -> float:
    """The newest sweep's recommendation (lambda 1) for this model version, else `default`."""
    best = None
    for rel in root.find("sweeps"):
        if rel.endswith("recommendation.json"):
            rec = json.loads(root.read_bytes(rel))
            if rec.get("model_version") == model_version and "1" in rec.get("recommended", {}):
                stamp = rec.get("finished_at", "")
                if best is None or stamp > best[0]:
                    best = (stamp, rec["recommended"]["1"].get("t_init", default))
    return default if best is None else float(best[1])


def run_targets(clips_url: str, shards: tuple[int, int], run_date: str, targets: list[dict], root: Storage, logistics: TransformLogistics,
                steps: int) -> list[dict]:
    done = []
    for t in targets:
        pinned_uri, version = tracking.resolve_model(t["model"])
        t_init = t.get("t_init") or recommended_t_init(root, version, 0.5)
        cfg = TransformConfig(model=pinned_uri, warm=WarmStartConfig(t_init=t_init, lam=1.0))
        cfg = cfg.model_copy(update={"sampler": cfg.sampler.model_copy(update={"steps": steps})})
        name = version.split("/")[0]
        log = logistics.model_copy(update={"run_id": f"nightly-{run_date}-{name}",
                                           "out_url": root.child(f"nightly/{run_date}").url})
        res = transform_corpus(clips_url, InputSelection(shards=shards), cfg, log)
        done.append({"date": run_date, "model": version, "t_init": t_init, "transformed": res["transformed"],
                     "skipped": res["skipped"], "failed": res["failed"], "outputs": res["outputs_url"]})
    return done


def nightly(inputs: str, targets: list[dict], out: str, *, actors: int = 2, steps: int = 35,
            run_date: str | None = None) -> dict:
    root = Storage(Storage(out).absolute_url())
    clips_url = run_ingest(inputs, root.child("nightly/ingested").url, IngestConfig()).clips_url
    state = _read_state(root)
    log = TransformLogistics(num_actors=actors, out_url=root.url)
    summary = []
    if state["pending"]:  # finish what a crashed run left, under its own run IDs
        p = state["pending"]
        summary += run_targets(clips_url, (p["from"], p["to"]), p["run_date"], targets, root, log, steps)
        state = {"watermark": p["to"], "pending": None}
        root.write_bytes(STATE, json.dumps(state).encode())
    end = ShardedDataset.at(clips_url, "clips").manifest().next_shard_index()
    if end > state["watermark"]:
        date = run_date or dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H%M%S")
        pending = {"run_date": date, "from": state["watermark"], "to": end}
        root.write_bytes(STATE, json.dumps({"watermark": state["watermark"], "pending": pending}).encode())
        summary += run_targets(clips_url, (pending["from"], end), date, targets, root, log, steps)
        root.write_bytes(STATE, json.dumps({"watermark": end, "pending": None}).encode())
    return {"runs": summary, "watermark": _read_state(root)["watermark"], "new_shards": end - state["watermark"]}


@flow(name="reinstrument-nightly", log_prints=True)
def nightly_flow(inputs: str, targets: list[dict], out: str | None = None, actors: int = 2, steps: int = 35) -> dict:
    """Transform what arrived under INPUTS since the last success, for each target {model, t_init?}."""
    res = nightly(inputs, targets, out or get_settings().data_root, actors=actors, steps=steps)
    _table_artifact("nightly-summary", res["runs"] or [{"note": "nothing new"}], "reinstrument-nightly")
    return res
