"""`reinstrument compare` / `compare-methods`: does warm initialization win? For each task
(timbre, midi2real, enhance), the same held-out inputs through every method (tasks/compare.py:
the guide as played, identity, warm init at the sweep's operating point and its neighbours,
DDIB, the conditional baseline, plain generation, the true target), each scored like a sweep's
grid point (FAD against the target domain's real clips, JD and melody JD against the guide, F1
against the MIDI, SI-SDR/LSD/mel-L1 against the clean clip) plus model evaluations per window
and seconds per audio-second. Enhancement is scored over all inputs and per degradation kind.

Outputs under <out>/compare/<compare_id>/ (schemas/compare.CompareLayout): the table, a FAD-vs-JD
plot of every method, a listening page, result.json; one MLflow parent run, a child per method."""
from __future__ import annotations

import datetime as dt
import io
import json
from contextlib import nullcontext
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from infra import tracking
from infra.datasets import ShardedDataset
from infra.settings import get_settings
from infra.storage import Storage
from jobs.decoders import pin_decoder, resolve_vocoder
from jobs.steps import Step, inline
from jobs.operating_point import newest_operating_point
from jobs.sweep import clip_items, output_items, real_reference
from jobs.transform import select_clips, transform_job
from ray_actors.pool import keep_workers
from schemas.compare import CompareConfig, CompareLayout as L
from schemas.diffusion import EDMConfig, RECOMMENDED_SAMPLER, SamplerConfig, WarmStartConfig
from schemas.probe import SHIPPED_PROBE
from schemas.records import RunLayout
from schemas.results import CompareResult
from schemas.tables import COMPARISON
from schemas.transform import InputSelection, TransformConfig, TransformLogistics
from tasks.audio import decode_audio_bytes
from tasks.builders import load_model, make_embedding
from tasks.compare import GUIDE_ROLES, Method, degradation_kind, evaluations_per_window, markdown, plan_methods
from tasks.compare import scatter_points, summary_rows, true_target_ids
from tasks.listening import ListeningInput, clip_title, write_page
from tasks.metrics.compute import point_rows, target_probe
from tasks.metrics.pitch import BasicPitch
from tasks.metrics.sources import AudioItem, is_clips_dataset
from tasks.metrics.table import GridPoint, aggregate
from tasks.plots import methods_png

EXPERIMENT = "reinstrument-compare"
SHOWN = ("fad", "jd", "jd_melody", "f1_midi", "si_sdr_db", "lsd_db", "mel_l1_db", "nfe", "s_per_audio_s")
DRAWN = ("warm", "ddib", "conditional", "generation")  # spectrograms on the page (the players show every method)
CLIP_COLS = ["clip_id", "clean_id", "source_id", "domain", "role", "split", "piece", "degradation", "midi", "audio_flac",
             "voice", "start_s", "duration_s"]


def operating_point(cfg: CompareConfig, root: Storage, version: str, task: str
                    ) -> tuple[WarmStartConfig, SamplerConfig, str]:
    """The point warm init runs at for `task`: the config's own, else the newest sweep's of this
    task for this model version (the nightly job applies the timbre one, through the same
    jobs/sweep.newest_operating_point), else the newest sweep's of any task, said so."""
    if cfg.t_init is not None:
        return (WarmStartConfig(t_init=cfg.t_init, lam=1.0 if cfg.lam is None else cfg.lam),
                cfg.sampler or RECOMMENDED_SAMPLER, "given")
    op, origin = newest_operating_point(root, version, task, cfg.target), f"the {task} sweep"
    if op is None:
        op, origin = (newest_operating_point(root, version, target=cfg.target),
                      f"a sweep of another task (no {task} sweep of {version})")
    if op is None:
        raise ValueError(f"no sweep of {version} under {root.url} has an operating point; run `reinstrument sweep` "
                         "(or the sweep-t-init deployment) with the same --out first, or pass --t-init")
    if op.t_init is None:
        raise ValueError(f"the newest sweep of {version} recommends sigma_start={op.sigma_start:g}; compare places its "
                         "neighbours in tau_init: pass --t-init")
    return op.warm(), op.sampler, f"{origin} (JD {op.jd:.3f}, FAD {op.fad:.2f}; {op.rule})"


def task_selection(cfg: CompareConfig, task: str, target_domain: str) -> InputSelection:
    # MIDI guides carry their synth's domain (e.g. midi-sine); degraded guides their clean clip's
    domain = {"timbre": cfg.timbre_domain, "midi2real": None, "enhance": target_domain}[task]
    return InputSelection(domain=domain, role=GUIDE_ROLES[task], split=cfg.split, limit=cfg.limit,
                          exclude_pieces_of=cfg.exclude_pieces_of)


def task_inputs(inputs: str, sel: InputSelection, task: str, target_domain: str) -> dict:
    """The task's guides, their true targets (by guide clip ID: the clean clip a guide stands for,
    else the target domain's clean render of the same segment) and degradation kinds."""
    rows = select_clips(inputs, sel, task, False, CLIP_COLS)
    clips = ShardedDataset.at(inputs, "clips").read(["clip_id", "source_id", "domain", "role"]).to_pylist()
    target_of = true_target_ids(rows, clips, target_domain)
    audio = clip_items(inputs, set(target_of.values()))  # only the targets' audio is decoded
    return {"guides": {r["clip_id"]: AudioItem(r["clip_id"], *decode_audio_bytes(r["audio_flac"]), r["midi"])
                       for r in rows},
            "targets": {g: replace(audio[t], item_id=g, midi=None) for g, t in target_of.items()},
            "kinds": {r["clip_id"]: degradation_kind(r["degradation"]) for r in rows},
            "pieces": sorted({r["piece"] for r in rows if r["piece"]}),
            "titles": {r["clip_id"]: clip_title(r) for r in rows}}


def run_method(task: str, m: Method, inputs: str, sel: InputSelection, data: dict, references: dict, cfg: CompareConfig,
               edm: EDMConfig, scorers: tuple, log: TransformLogistics) -> dict:
    """One method on one task: its outputs scored over all inputs (and per degradation kind for
    enhance); returns the rows and, for a transform, its run's URL and output key per input (the
    listening page reads them)."""
    run_url, speed, nfe, keys = None, None, None, {}
    if m.kind == "transform":
        res = transform_job(inputs, sel, m.config, log)
        run_url, mlflow_id = res["run_url"], res["mlflow_run_id"]
        outs = output_items(run_url)
        table = ShardedDataset(Storage(run_url).child(RunLayout.OUTPUTS), "outputs").read(
            ["clip_id", "output_key", "seconds_spent", "duration_s"]).to_pylist()
        keys = {r["clip_id"]: r["output_key"] for r in table}
        speed = [{"s_per_audio_s": r["seconds_spent"] / r["duration_s"]} for r in table if r["duration_s"]]
        nfe = evaluations_per_window(m.config, edm)
    else:
        outs = list((data["guides"] if m.kind == "guide" else data["targets"]).values())
        if not outs:  # no true target among the inputs: nothing to score, and no child run left RUNNING
            return {"rows": [], "run_url": None, "keys": {}}
        mlflow_id = tracking.TrackedRun.start(EXPERIMENT, f"{task}/{m.key}", parent=log.parent_run_id,
                                              tags={"reinstrument.kind": "compare-method"}).id
    if not outs:
        return {"rows": [], "run_url": None, "keys": {}}
    tracked = tracking.TrackedRun(mlflow_id)
    # a reference's own child run ends FAILED if scoring fails (a transform's run is its job's)
    with tracked.failed_on_error() if m.kind != "transform" else nullcontext():
        rows = _score(task, m, outs, point_of(m, task, run_url), data, references, cfg, scorers, speed, nfe)
        tracked.table([r for r in rows if r["subset"] == "all"])  # per-kind rows live in the comparison table
        if m.kind != "transform":
            tracked.finish()
    print(f"[compare] {task}: {m.label}: " + ", ".join(f"{r['metric']} {r['mean']:.3g}" for r in rows
                                                       if r["subset"] == "all" and r["metric"] in ("fad", "jd")))
    return {"rows": rows, "run_url": run_url, "keys": keys}


def point_of(m: Method, task: str, run_url: str | None) -> GridPoint:
    c = m.config
    return GridPoint(run_id=run_url.rstrip("/").rsplit("/", 1)[-1] if run_url else m.key,
                     method=c.method if c else "reference", task=task,
                     t_init=c.warm.t_init if c and c.auto is None else None, lam=c.warm.lam if c else None)


def _score(task: str, m: Method, outs: list, point: GridPoint, data: dict, references: dict, cfg: CompareConfig,
           scorers: tuple, speed: list | None, nfe: int | None) -> list[dict]:
    """A method's rows: every metric over all its outputs, and per degradation kind for enhance.
    `scorers`: the FAD embedding, the pitch tracker and the instrument probe (or None)."""
    emb, tracker, probe = scorers
    clean = data["targets"] if task == "enhance" else None
    subsets = {"all": outs}
    if task == "enhance":
        for o in outs:
            subsets.setdefault(data["kinds"].get(o.item_id) or "unknown", []).append(o)
    rows = []
    for subset, items in subsets.items():
        # FAD needs two clips: a degradation kind with one input gets its paired metrics only
        got = point_rows(point, items, data["guides"], references if len(items) >= 2 else {}, emb, tracker,
                         threshold=cfg.jd_threshold, clean=clean, seed=cfg.seed,
                         probe=probe if task != "enhance" else None)
        if subset == "all" and speed:
            got += aggregate(point, speed, ("s_per_audio_s",), reference="wall clock", seed=cfg.seed)
            got += aggregate(point, [{"nfe": float(nfe)}], ("nfe",), reference="per window")
        rows += [r | {"key": m.key, "label": m.label, "subset": subset} for r in got]
    return rows


def listening(task: str, methods: list[Method], results: list[dict], data: dict, n: int) -> list[ListeningInput]:
    keys = {m.key: res["keys"] for m, res in zip(methods, results) if res["run_url"]}
    runs = {m.key: Storage(res["run_url"]) for m, res in zip(methods, results) if res["run_url"]}
    # τ_init auto: the page names the tau_init chosen for each input (per clip, so not in the
    # method's label: ratings pool a condition over inputs)
    chosen = ({r["clip_id"]: r["t_init"] for r in ShardedDataset(runs["warm-auto"].child(RunLayout.OUTPUTS), "outputs")
               .read(["clip_id", "t_init"]).to_pylist()} if "warm-auto" in runs else {})
    out = []
    for cid in sorted(data["guides"])[:n]:
        g = data["guides"][cid]
        outs = [(m.label, runs[m.key].read_bytes(RunLayout.audio(keys[m.key][cid])), m.key in DRAWN)
                for m in methods if m.key in keys and cid in keys[m.key]]
        t = data["targets"].get(cid)
        title = data["titles"].get(cid)
        if cid in chosen:
            title = f"{title or cid[:12]} · τ_init auto chose {chosen[cid]:g}"
        out.append(ListeningInput(f"{task}-{cid[:12]}", (g.audio, g.sample_rate_hz), outs,
                                  (t.audio, t.sample_rate_hz) if t else None, title=f"{task}: {title}" if title else None,
                                  group=task))
    return out


def compare_job(inputs: str, cfg: CompareConfig, logistics: TransformLogistics, *, step: Step = inline) -> CompareResult:
    """Every method of every task of `cfg` on the held-out inputs of the clips dataset INPUTS."""
    if not is_clips_dataset(inputs):
        raise ValueError(f"{inputs} is not a clips dataset; compare reads a corpus (`reinstrument corpus build`, or "
                         "`reinstrument ingest` of a folder) so that guides, true targets and pieces are known")
    model_uri, version = tracking.resolve_model(cfg.model)
    cfg = cfg.model_copy(update={"model": model_uri, "vocoder": resolve_vocoder(cfg.vocoder)[0] or "griffin-lim",
                                 "decoder": pin_decoder(cfg.decoder, model_uri, version).get("decoder_uri", "own")})
    root = Storage(Storage(logistics.out_url).absolute_url())
    points = {task: operating_point(cfg, root, version, task) for task in cfg.tasks}
    pinned = {"source_models": {t: tracking.resolve_model(u)[0] for t, u in cfg.source_models.items()},
              "conditional_models": {t: tracking.resolve_model(u)[0] for t, u in cfg.conditional_models.items()}}
    compare_id = "cmp-" + tracking_hash(inputs, cfg, points, pinned)
    out = root.child(f"{L.COMPARE}/{compare_id}")
    if out.exists(L.RESULT):
        print(f"[compare] {compare_id} is finished: reusing it ({out.url})")
        return CompareResult(**json.loads(out.read_bytes(L.RESULT)))
    target = load_model(tracking.model_checkpoint(model_uri), version)
    target.card.label_of(cfg.target)  # a labelled model without --target (or a wrong one) fails here
    domain = cfg.target or target.card.domain
    parent = tracking.TrackedRun.start(EXPERIMENT, compare_id, tags={"reinstrument.kind": "compare",
                                                                     "reinstrument.compare_folder": out.url})
    with parent.failed_on_error():
        parent.params(cfg.model_dump(mode="json") | {"inputs": inputs, "model_version": version}
                      | {f"operating_point.{t}": o for t, (_, _, o) in points.items()})
        log = logistics.model_copy(update={"parent_run_id": parent.id, "experiment": EXPERIMENT, "run_id": None})
        emb, tracker = make_embedding(cfg.embedding, get_settings().weights_dir), BasicPitch(get_settings().weights_dir)
        probe = target_probe(domain, cfg.auto.probe if cfg.auto else SHIPPED_PROBE)  # the tables' target accuracy
        stats, label, _ = real_reference(cfg.reference_url or inputs, domain, cfg.reference_split, cfg.reference_limit,
                                         emb, root.url)
        rows, pages, inputs_per_task = [], [], {}
        for task in cfg.tasks:
            point, sampler, _ = points[task]
            base = TransformConfig(task=task, model=model_uri, warm=point, sampler=sampler, window=cfg.window,
                                   seed=cfg.seed, vocoder=cfg.vocoder, vocoder_iters=cfg.vocoder_iters,
                                   target=cfg.target, guidance=cfg.guidance, decoder=cfg.decoder)
            sel = task_selection(cfg, task, domain)
            data = task_inputs(inputs, sel, task, domain)
            inputs_per_task[task] = {"inputs": len(data["guides"]), "with_true_target": len(data["targets"]),
                                     "pieces": len(data["pieces"])}
            methods = plan_methods(task, base, point, cfg.neighbours,
                                   source_model=pinned["source_models"].get(task),
                                   conditional_model=pinned["conditional_models"].get(task),
                                   source_label=cfg.timbre_domain if task == "timbre" else None, auto=cfg.auto)
            print(f"[compare] {task}: {len(data['guides'])} inputs from {len(data['pieces'])} pieces; "
                  f"{len(methods)} methods")
            with keep_workers():  # methods of one model (warm, neighbours, identity, generation) share actors
                results = [step(run_method, task, m, inputs, sel, data, {"fad": (stats, label)}, cfg, target.model.cfg,
                                (emb, tracker, probe), log.model_copy(update={"run_id": None})) for m in methods]
            rows += [r for res in results for r in res["rows"]]
            pages += listening(task, methods, results, data, cfg.listen)
        shown = {t: f"{p.model_dump(exclude_none=True)} {s.name} {s.steps} steps, S_churn {s.S_churn:g} (from {o})"
                 for t, (p, s, o) in points.items()}
        return step(finish, cfg, rows, pages, out, parent.id, compare_id,
                    {"model": version, "reference": label, "inputs": inputs}
                    | {f"operating point: {t}": v for t, v in shown.items()}
                    | {f"inputs: {t}": json.dumps(v) for t, v in inputs_per_task.items()},
                    {"operating_points": {t: p.model_dump(exclude_none=True) | {"sampler": s.model_dump(mode="json"),
                                                                                "from": o}
                                          for t, (p, s, o) in points.items()},
                     "inputs_per_task": inputs_per_task, "inputs": inputs, "target": cfg.target})


def tracking_hash(inputs: str, cfg: CompareConfig, points: dict, pinned: dict) -> str:
    """The comparison's identity: inputs, config, the points applied and every pinned model version."""
    from schemas.configs import config_hash

    return config_hash({"inputs": Storage(inputs).absolute_url(), "config": cfg.identity(),
                        "points": {t: [p.model_dump(), s.model_dump(mode="json")] for t, (p, s, _) in points.items()},
                        "pinned": pinned})


def finish(cfg: CompareConfig, rows: list[dict], pages: list[ListeningInput], out: Storage,
           parent_id: str, compare_id: str, context: dict, extra: dict) -> CompareResult:
    parent = tracking.TrackedRun(parent_id)
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=COMPARISON), buf)
    out.write_bytes(L.TABLE, buf.getvalue())
    png = methods_png(scatter_points(rows), embedding=next((r["embedding"] for r in rows if r["embedding"]), cfg.embedding))
    out.write_bytes(L.PLOT, png)
    summary = summary_rows(rows, SHOWN)
    report = write_page(out.child(L.REPORT), f"compare {compare_id}", cfg.model_dump(mode="json"), context,
                        {k: v for k, v in context.items() if k.startswith("operating point")}, summary, pages,
                        curves_png=png, mlflow_run_id=parent.id)
    result = CompareResult(compare_id=compare_id, table_url=out.uri(L.TABLE), plot_url=out.uri(L.PLOT), report_url=report,
                           mlflow_run_id=parent.id, finished_at=dt.datetime.now(dt.timezone.utc).isoformat(),
                           summary=summary, markdown={t: markdown(summary, t) for t in cfg.tasks}, **extra)
    out.write_bytes(L.RESULT, json.dumps(result, indent=2).encode())
    for name in (L.TABLE, L.PLOT, L.RESULT):
        parent.artifact(name, out.read_bytes(name))
    parent.artifacts_from(out, L.REPORT, "report")
    fad = {f"fad_{r['task']}_{r['key']}": r["mean"] for r in rows if r["metric"] == "fad" and r["subset"] == "all"}
    parent.metrics({k: v for k, v in fad.items() if np.isfinite(v)})
    parent.finish()
    return result
