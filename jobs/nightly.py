"""`reinstrument-nightly`: transform whatever arrived under an input prefix since the last
successful run, with each configured target's champion at its recommended tau_init, under a
dated prefix, with a listening report (nightly/<date>/report/report.html). Never reprocesses an
input; a run that crashed is finished by the next one.

State lives in <out>/nightly/state.json, written atomically:
  {"done": [commit IDs],       # commits of the nightly ingestion already transformed
   "pending": {"run_date": D, "commits": [...], "targets": [pinned model, warm start, sampler]} | null}
Each night: ingest the prefix (content-hashed sources: nothing is ingested twice); if a pending
batch exists (a crash), finish it first under its own run IDs (committed outputs are skipped);
then take the ingestion's commits not yet done as a new pending batch, transform it, and only then
add them to `done` and clear `pending`. Commits, not shard positions: a commit that another
writer published late (its ID older than one already done) is still picked up."""
from __future__ import annotations

import datetime as dt
import json

from infra import tracking
from infra.datasets import ShardedDataset
from infra.storage import Storage
from jobs.steps import Step, inline
from jobs.decoders import resolve_vocoder
from jobs.sweep import newest_operating_point
from jobs.transform import transform_job
from ray_actors.pool import keep_workers
from schemas.configs import IngestConfig
from schemas.diffusion import RECOMMENDED_SAMPLER, SamplerConfig, WarmStartConfig
from schemas.records import RunLayout
from schemas.results import NightlyResult
from schemas.transform import DEFAULT_VOCODER, InputSelection, TransformConfig, TransformLogistics
from tasks.audio import decode_audio_bytes
from tasks.ingest import run_ingest
from tasks.listening import ListeningInput, write_page

STATE = "nightly/state.json"


def _read_state(root: Storage) -> dict:
    return json.loads(root.read_bytes(STATE)) if root.exists(STATE) else {"done": [], "pending": None}


DEFAULT_T_INIT = 0.5


def resolve_targets(targets: list[dict], root: Storage, steps: int | None = None) -> list[dict]:
    """Pin each target's model version and operating point now: a batch is finished, after a crash,
    with exactly the settings it started with (other settings would give other output keys, so a
    committed input would be transformed twice). A target's own `t_init` (0.0 included: plain
    generation is a choice) wins, with `lam` (default 1); else the newest sweep's operating point
    is applied whole; else tau_init 0.5, lambda 1. `steps` overrides the sampler's N."""
    resolved = []
    for t in targets:
        pinned_uri, version = tracking.resolve_model(t["model"])
        instrument = t.get("target")  # a model of several instruments: which one (its own operating point)
        point = (None if t.get("t_init") is not None  # arrivals are re-instrumented: the timbre sweep's point
                 else newest_operating_point(root, version, "timbre", instrument))
        if point is None:
            warm = {"t_init": DEFAULT_T_INIT if t.get("t_init") is None else t["t_init"], "lam": t.get("lam", 1.0)}
            sampler = RECOMMENDED_SAMPLER.model_copy(update={"steps": steps} if steps else {})
        else:
            warm = point.warm().model_dump(exclude_none=True)
            sampler = point.sampler.model_copy(update={"steps": steps}) if steps else point.sampler
        WarmStartConfig(**warm)  # validated now, not mid-batch
        resolved.append({"model": pinned_uri, "version": version, "warm": warm, "target": instrument,
                         "sampler": sampler.model_dump(mode="json"),
                         # the decoder pinned for the night (a target may name one; default the
                         # champion vocoder, else the shipped one, else Griffin-Lim), kept in the
                         # state so that a crashed night is finished with the same one
                         "vocoder": resolve_vocoder(t.get("vocoder", DEFAULT_VOCODER))[0] or "griffin-lim"})
    return resolved


def _label(t: dict) -> str:
    w = t["warm"]
    s = SamplerConfig.model_validate(t["sampler"])  # older states name the churn settings as before issue 17
    x = f"τ {w['t_init']:g}" if w.get("t_init") is not None else f"σ {w['sigma_start']:g}"
    churn = f", S_churn {s.S_churn:g}" if s.S_churn else ""
    return f"{x}, λ {w['lam']:g}, {s.name} {s.steps}{churn}"


def run_targets(clips_url: str, commits: list[str], run_date: str, resolved: list[dict], root: Storage,
                logistics: TransformLogistics) -> list[dict]:
    done = []
    for t in resolved:
        # a state written before the decoder was resolved per night decoded with Griffin-Lim
        cfg = TransformConfig(model=t["model"], warm=WarmStartConfig(**t["warm"]), sampler=SamplerConfig(**t["sampler"]),
                              vocoder=t.get("vocoder", "griffin-lim"), target=t.get("target"))
        name = t["version"].split("/")[0] + (f"-{t['target']}" if t.get("target") else "")
        log = logistics.model_copy(update={"run_id": f"nightly-{run_date}-{name}",
                                           "out_url": root.child(f"nightly/{run_date}").url})
        res = transform_job(clips_url, InputSelection(commits=tuple(commits)), cfg, log)
        done.append({"date": run_date, "model": t["version"] + (f" → {t['target']}" if t.get("target") else ""),
                     "point": _label(t), "transformed": res["transformed"],
                     "vocoder": t.get("vocoder", "griffin-lim"),
                     "skipped": res["skipped"], "failed": res["failed"], "outputs": res["outputs_url"],
                     "run": res["run_url"]})
    return done


def nightly_report(root: Storage, run_date: str, clips_url: str, commits: list[str], runs: list[dict],
                   n_examples: int = 3) -> str:
    """nightly/<date>/report/report.html: a few of the night's inputs next to each target's output."""
    ds = ShardedDataset.at(clips_url, "clips")
    guides = {r["clip_id"]: r for e in ds.commit_shards(commits)
              for r in ds.read_shard(e, ["clip_id", "audio_flac"]).to_pylist()}
    keys = [(r, {x["clip_id"]: x["output_key"] for x in
                 ShardedDataset.at(r["outputs"], "outputs").read(["clip_id", "output_key"]).to_pylist()}) for r in runs]
    inputs = [ListeningInput(cid, decode_audio_bytes(guides[cid]["audio_flac"]),
                             [(f"{r['model']}, {r['point']}", Storage(r["run"]).read_bytes(RunLayout.audio(k[cid])), True)
                              for r, k in keys if cid in k]) for cid in sorted(guides)[:n_examples]]
    return write_page(root.child(f"nightly/{run_date}/report"), f"reinstrument-nightly {run_date}",
                      {"input commits": str(len(commits))}, {r["model"]: f"{r['point']}; decoder {r['vocoder']}" for r in runs}, {}, runs, inputs)


def run_batch(clips_url: str, batch: dict, root: Storage, logistics: TransformLogistics) -> list[dict]:
    """Transform one batch (a `pending` entry of the state) for its targets, then its report."""
    commits = batch["commits"]
    with keep_workers():  # targets that share their models share the actors too
        done = run_targets(clips_url, commits, batch["run_date"], batch["targets"], root, logistics)
    print(f"[nightly] {batch['run_date']}: report {nightly_report(root, batch['run_date'], clips_url, commits, done)}")
    return done


def nightly_job(inputs: str, targets: list[dict], out: str, *, actors: int = 2, steps: int | None = None,
                run_date: str | None = None, clips_per_task: int = 4, step: Step = inline) -> NightlyResult:
    """Transform what arrived under INPUTS since the last success, for each target {model, t_init?, lam?}.
    clips_per_task: clips per actor call and per committed shard (what a crash can lose)."""
    root = Storage(Storage(out).absolute_url())
    clips_url = run_ingest(inputs, root.child("nightly/ingested").url, IngestConfig()).clips_url
    state = _read_state(root)
    log = TransformLogistics(num_actors=actors, clips_per_task=clips_per_task, out_url=root.url)
    summary = []
    if state["pending"]:  # finish what a crashed run left, under its own run IDs and settings
        p = state["pending"]
        print(f"[nightly] finishing the batch of {p['run_date']} ({len(p['commits'])} commits) left by a crash")
        summary += step(run_batch, clips_url, p, root, log)
        state = {"done": state["done"] + p["commits"], "pending": None}
        root.write_bytes(STATE, json.dumps(state).encode())
    new = [c for c in ShardedDataset.at(clips_url, "clips").manifest().commits if c not in set(state["done"])]
    if new:
        date = run_date or dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H%M%S")
        pending = {"run_date": date, "commits": new, "targets": resolve_targets(targets, root, steps)}
        root.write_bytes(STATE, json.dumps({"done": state["done"], "pending": pending}).encode())
        summary += step(run_batch, clips_url, pending, root, log)
        root.write_bytes(STATE, json.dumps({"done": state["done"] + new, "pending": None}).encode())
    return NightlyResult(runs=summary, done_commits=len(_read_state(root)["done"]), new_commits=len(new))
