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
from infra.shipped import SHIPPED
from infra.datasets import ShardedDataset
from infra.settings import get_settings
from infra.storage import Storage
from jobs.steps import Step, inline
from jobs.decoders import resolve_vocoder
from jobs.operating_point import operating_point_for
from jobs.recordings import EXCERPT_S, excerpt
from jobs.transform import transform_job
from ray_actors.pool import keep_workers
from schemas.configs import IngestConfig
from schemas.diffusion import RECOMMENDED_SAMPLER, SamplerConfig, WarmStartConfig
from schemas.probe import AutoStart
from schemas.nightly import NightlyConfig, NightlyTarget
from schemas.records import RunLayout
from schemas.results import NightlyResult
from schemas.transform import DEFAULT_VOCODER, InputSelection, TransformConfig, TransformLogistics, WholeOutputs
from tasks.audio import decode_audio_bytes, encode_flac
from tasks.ingest import run_ingest
from tasks.listening import ListeningInput, write_page

STATE = "nightly/state.json"


def _read_state(root: Storage) -> dict:
    return json.loads(root.read_bytes(STATE)) if root.exists(STATE) else {"done": [], "pending": None}


def resolve_targets(targets: tuple[NightlyTarget, ...], root: Storage, steps: int | None = None,
                    vocoder: str = DEFAULT_VOCODER, seed: int = 0) -> list[dict]:
    """Pin each target's model version and operating point now: a batch is finished, after a crash,
    with exactly the settings it started with (other settings would give other output keys, so a
    committed input would be transformed twice). A target's own `t_init` (0.0 included: plain
    generation is a choice) wins, with `lam` (default 1); else the newest sweep's operating point
    is applied whole; else the default (jobs/operating_point.DEFAULT_WARM). `steps` overrides the
    sampler's N."""
    resolved = []
    for t in targets:
        pinned_uri, version = tracking.resolve_model(t.model)
        auto = None
        if t.t_init is not None and t.t_init != "auto":
            warm, sampler, origin = {"t_init": t.t_init, "lam": 1.0 if t.lam is None else t.lam}, None, "given"
        else:  # arrivals are re-instrumented: the timbre sweep's point, else the default
            point, sampler, origin = operating_point_for(root, version, "timbre", t.target)
            warm = point.model_dump(exclude_none=True)
            if t.t_init == "auto":  # tau_init per clip; lambda and sampler from the operating point
                auto, origin = AutoStart().model_dump(mode="json"), f"auto per clip, λ from {origin}"
        sampler = sampler or RECOMMENDED_SAMPLER
        sampler = sampler.model_copy(update={"steps": steps}) if steps else sampler
        WarmStartConfig(**warm)  # validated now, not mid-batch
        resolved.append({"model": pinned_uri, "version": version, "warm": warm, "target": t.target, "origin": origin,
                         "sampler": sampler.model_dump(mode="json"), "seed": seed,
                         # the decoder pinned for the night (the target's, else the night's: by
                         # default the champion vocoder, else the shipped one, else Griffin-Lim),
                         # kept in the state so that a crashed night is finished with the same one
                         "vocoder": resolve_vocoder(t.vocoder or vocoder)[0] or "griffin-lim"}
                        | ({"auto": auto} if auto else {}))
    return resolved


def run_name(version: str) -> str:
    """A model version as a folder name: reinstrument-flute/3 -> reinstrument-flute, and a shipped
    file's pinned URI (shipped:instruments-latent@50a65d90...) -> instruments-latent."""
    name = version.split("/")[0]
    if name.startswith(SHIPPED):
        name = name[len(SHIPPED):].split("@")[0]
    return name


def _label(t: dict) -> str:
    w = t["warm"]
    s = SamplerConfig.model_validate(t["sampler"])  # older states name the churn settings as before issue 17
    x = f"τ {w['t_init']:g}" if w.get("t_init") is not None else f"σ {w['sigma_start']:g}"
    x = "τ auto (per clip)" if t.get("auto") else x
    churn = f", S_churn {s.S_churn:g}" if s.S_churn else ""
    return f"{x}, λ {w['lam']:g}, {s.name} {s.steps}{churn}"


def run_targets(clips_url: str, commits: list[str], run_date: str, resolved: list[dict], root: Storage,
                logistics: TransformLogistics) -> list[dict]:
    done = []
    for t in resolved:
        # a state written before the decoder was resolved per night decoded with Griffin-Lim
        cfg = TransformConfig(model=t["model"], warm=WarmStartConfig(**t["warm"]), sampler=SamplerConfig(**t["sampler"]),
                              vocoder=t.get("vocoder", "griffin-lim"), target=t.get("target"), seed=t.get("seed", 0),
                              auto=t.get("auto"))
        name = run_name(t["version"]) + (f"-{t['target']}" if t.get("target") else "")
        log = logistics.model_copy(update={"run_id": f"nightly-{run_date}-{name}",
                                           "out_url": root.child(f"nightly/{run_date}").url,
                                           "operating_point": t.get("origin", "given")})
        res = transform_job(clips_url, InputSelection(commits=tuple(commits)), cfg, log, whole=WholeOutputs())
        done.append({"date": run_date, "model": t["version"] + (f" → {t['target']}" if t.get("target") else ""),
                     "point": _label(t), "transformed": res["transformed"],
                     "vocoder": t.get("vocoder", "griffin-lim"),
                     "skipped": res["skipped"], "failed": res["failed"], "recordings": res["recordings_written"],
                     "outputs": res["outputs_url"], "run": res["run_url"]})
    return done


def nightly_report(root: Storage, run_date: str, clips_url: str, commits: list[str], runs: list[dict],
                   n_examples: int = 3) -> str:
    """nightly/<date>/report/report.html: a few of the night's recordings, each titled by its file,
    next to each target's whole output (its first half-minute)."""
    ds = ShardedDataset.at(clips_url, "clips")
    firsts: dict[str, dict] = {}
    for e in ds.commit_shards(commits):
        for r in ds.read_shard(e, ["source_id", "source_uri", "piece", "start_s", "audio_flac"]).to_pylist():
            if r["source_id"] not in firsts or r["start_s"] < firsts[r["source_id"]]["start_s"]:
                firsts[r["source_id"]] = r
    made = [(r, {x["source_id"]: x for x in ShardedDataset.at(r["run"] + "/" + RunLayout.RECORDING_ROWS, "recordings")
                 .read(["source_id", "name", "output_uri", "duration_s", "t_init"]).to_pylist()})
            for r in runs if Storage(r["run"]).exists(RunLayout.RECORDING_ROWS)]
    inputs = []
    for sid, first in sorted(firsts.items(), key=lambda kv: kv[1]["piece"] or "")[:n_examples]:
        try:
            guide = excerpt(first["source_uri"])
        except (OSError, RuntimeError, ValueError):  # a MIDI source, or a file since removed: its first clip
            guide = decode_audio_bytes(first["audio_flac"])
        # t_init auto: the recording's own tau_init (the mean of its clips') beside the rule
        outs = [(f"{r['model']}, {r['point']}"
                 + (f" (this recording: τ {rec[sid]['t_init']:.2f})" if "auto" in r["point"] else ""),
                 encode_flac(*excerpt(rec[sid]["output_uri"])), True)
                for r, rec in made if sid in rec]
        inputs.append(ListeningInput(sid, guide, outs, title=f"{first['piece']} (first {EXCERPT_S:.0f} s)"))
    return write_page(root.child(f"nightly/{run_date}/report"), f"reinstrument-nightly {run_date}",
                      {"input commits": str(len(commits))}, {r["model"]: f"{r['point']}; decoder {r['vocoder']}" for r in runs}, {}, runs, inputs)


def run_batch(clips_url: str, batch: dict, root: Storage, logistics: TransformLogistics) -> list[dict]:
    """Transform one batch (a `pending` entry of the state) for its targets, then its report."""
    commits = batch["commits"]
    with keep_workers():  # targets that share their models share the actors too
        done = run_targets(clips_url, commits, batch["run_date"], batch["targets"], root, logistics)
    print(f"[nightly] {batch['run_date']}: report {nightly_report(root, batch['run_date'], clips_url, commits, done)}")
    return done


def nightly_job(cfg: NightlyConfig, *, run_date: str | None = None, step: Step = inline) -> NightlyResult:
    """Transform what arrived under cfg.inputs since the last success, for each of cfg.targets."""
    inputs, out = cfg.inputs, cfg.out or get_settings().data_root
    root = Storage(Storage(out).absolute_url())
    clips_url = run_ingest(inputs, root.child("nightly/ingested").url, IngestConfig()).clips_url
    state = _read_state(root)
    log = TransformLogistics(num_actors=cfg.actors, clips_per_task=cfg.clips_per_task, out_url=root.url)
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
        pending = {"run_date": date, "commits": new, "targets": resolve_targets(cfg.targets, root, cfg.steps, cfg.vocoder, cfg.seed)}
        root.write_bytes(STATE, json.dumps({"done": state["done"], "pending": pending}).encode())
        summary += step(run_batch, clips_url, pending, root, log)
        root.write_bytes(STATE, json.dumps({"done": state["done"] + new, "pending": None}).encode())
    return NightlyResult(runs=summary, done_commits=len(_read_state(root)["done"]), new_commits=len(new))
