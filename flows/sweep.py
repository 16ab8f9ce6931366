"""`sweep-t-init`: how far may a transformation stray from its input? For every (tau_init or
sigma_start, lambda) of the grid: transform the inputs (cached and resumable, tasks of
flows/transform.py) and measure realism (FAD vs the target domain's reference) and
faithfulness (pitch JD vs the guide; F1/JD vs the MIDI where known; SI-SDR/LSD vs the clean
clip for `enhance`). One MLflow parent run, a child run per grid point; the metrics table, the
trade-off plots and the recommended tau_init (tasks/tradeoff.py) are stored under
<out>/sweeps/<sweep_id>/ and logged to the parent run."""
from __future__ import annotations

import io
import json
import os
import tempfile

import pyarrow as pa
import pyarrow.parquet as pq
from prefect import flow, task

from flows.data import _table_artifact
from flows.transform import check_selection, transform_corpus
from infra import tracking
from infra.datasets import ShardedDataset
from infra.settings import get_settings
from infra.storage import Storage
from schemas.configs import config_hash
from schemas.diffusion import WarmStartConfig
from schemas.sweep import SweepConfig
from schemas.tables import METRICS
from schemas.transform import InputSelection, TransformConfig, TransformLogistics
from tasks.audio import decode_audio_bytes
from tasks.metrics.embeddings import make_embedding
from tasks.metrics.fad import cached_reference_stats, embed_set, fad
from tasks.metrics.pitch import BasicPitch
from tasks.metrics.sources import AudioItem, audio_items, is_clips_dataset, item_content_ids
from tasks.metrics.table import (ENHANCEMENT_METRICS, PITCH_METRICS, GridPoint, aggregate, enhancement_item_values,
                                 fad_rows, pitch_item_values)
from tasks.plots import tradeoff_png
from tasks.tradeoff import Point, recommend

EXPERIMENT = "reinstrument-sweep"


def point_config(cfg: SweepConfig, warm: WarmStartConfig) -> TransformConfig:
    return TransformConfig(task=cfg.task, method=cfg.method, model=cfg.model, source_model=cfg.source_model, warm=warm,
                           sampler=cfg.sampler, window=cfg.window, seed=cfg.seed, vocoder_iters=cfg.vocoder_iters)


def _outputs(result: dict) -> list[AudioItem]:
    run = Storage(result["run_url"])
    rows = ShardedDataset.at(result["outputs_url"], "outputs").read(["output_key", "clip_id"]).to_pylist()
    return [AudioItem(r["clip_id"], *decode_audio_bytes(run.read_bytes(f"audio/{r['output_key']}.flac"))) for r in rows]


def _clip_items(clips_url: str, ids: set[str], by: str = "clip_id") -> dict[str, AudioItem]:
    table = ShardedDataset.at(clips_url, "clips").read(["clip_id", "clean_id", "audio_flac", "midi"]).to_pylist()
    return {r[by]: AudioItem(r["clip_id"], *decode_audio_bytes(r["audio_flac"]), r["midi"]) for r in table if r[by] in ids}


@task(name="reference-statistics")
def reference_stats(cfg: SweepConfig, inputs: str, out: str, domain: str, logistics: TransformLogistics):
    """Gaussian of the target domain's reference clips (vocoded through the same path when asked)."""
    emb = make_embedding(cfg.embedding, get_settings().weights_dir)
    url = cfg.reference_url or inputs
    sel = InputSelection(domain=domain, role="clean", split=cfg.reference_split, limit=cfg.reference_limit)
    ids = item_content_ids(url, domain=domain, role="clean", split=cfg.reference_split, limit=cfg.reference_limit)
    if len(ids) < 2:
        raise ValueError(f"the reference set ({url}, domain={domain}, split={cfg.reference_split}) has {len(ids)} clips; "
                         "FAD needs a reference of the target domain")
    if cfg.vocoded_reference:
        identity = point_config(cfg, WarmStartConfig(t_init=1.0, lam=0.0)).model_copy(update={"method": "warm_init",
                                                                                            "source_model": None})
        res = transform_corpus(url, sel, identity, logistics.model_copy(update={"parent_run_id": None,
                                                                                "experiment": "reinstrument-transform"}))
        build = lambda: embed_set(_outputs(res), emb)  # noqa: E731
    else:
        build = lambda: embed_set(audio_items(url, domain=domain, role="clean", split=cfg.reference_split,  # noqa: E731
                                              limit=cfg.reference_limit), emb)
    stats, cached = cached_reference_stats(Storage(out).child("metrics/reference-stats"), domain, emb.name, ids, build,
                                           {"vocoded": cfg.vocoded_reference, "vocoder_iters": cfg.vocoder_iters})
    label = f"domain:{domain}" + (" (vocoded)" if cfg.vocoded_reference else "")
    return stats, label, cached


@task(name="grid-point")
def grid_point(cfg: SweepConfig, warm: WarmStartConfig, inputs: str, selection: InputSelection,
               logistics: TransformLogistics, stats, reference_label: str, sweep_id: str) -> list[dict]:
    pcfg = point_config(cfg, warm)
    res = transform_corpus(inputs, selection, pcfg, logistics)
    point = GridPoint(run_id=res["run_id"], method=cfg.method, task=cfg.task, t_init=warm.t_init,
                      sigma_start=warm.sigma_start, lam=warm.lam)
    outs = _outputs(res)
    emb = make_embedding(cfg.embedding, get_settings().weights_dir)
    rows = fad_rows(point, fad(embed_set(outs, emb), stats, emb.name, seed=cfg.seed), reference_label)
    guides = _clip_items(res["clips_url"], {o.item_id for o in outs})
    pairs = [(o, guides[o.item_id]) for o in outs if o.item_id in guides]
    values = pitch_item_values(pairs, BasicPitch(get_settings().weights_dir), cfg.jd_threshold)
    rows += aggregate(point, values, PITCH_METRICS, reference="guide", detail=f"basic-pitch threshold={cfg.jd_threshold}")
    if cfg.task == "enhance" and res["clips_url"] == inputs:  # a corpus knows each guide's clean clip
        clean_of = {r["clip_id"]: r["clean_id"] for r in
                    ShardedDataset.at(inputs, "clips").read(["clip_id", "clean_id"]).to_pylist()}
        clean = _clip_items(inputs, {c for c in clean_of.values() if c})
        epairs = [(o, clean[clean_of[o.item_id]]) for o in outs if clean_of.get(o.item_id) in clean]
        rows += aggregate(point, enhancement_item_values(epairs), ENHANCEMENT_METRICS, reference="clean")
    tracking.log_metrics_table(res["mlflow_run_id"], rows)
    return {"rows": rows, "run_url": res["run_url"], "outputs_url": res["outputs_url"], "clips_url": res["clips_url"],
            "t_init": warm.t_init, "sigma_start": warm.sigma_start, "lam": warm.lam}


def summarise(cfg: SweepConfig, rows: list[dict]) -> tuple[dict[str, list], dict[str, dict]]:
    """Per lambda: the (x, JD, FAD) curve and the recommendation (tasks/tradeoff.py)."""
    xkey = "t_init" if cfg.t_inits else "sigma_start"
    by = {}
    for r in rows:
        by.setdefault((r["lam"], r[xkey]), {})[r["metric"]] = r["mean"]
    curves: dict[str, list] = {}
    for (lam, x), m in sorted(by.items()):
        if "jd" in m and "fad" in m:
            curves.setdefault(f"{lam:g}", []).append((x, m["jd"], m["fad"]))
    recs = {}
    for lam, pts in curves.items():
        rec = recommend([Point(x, j, f) for x, j, f in pts])
        recs[lam] = {xkey: rec.t_init, "jd": rec.jd, "fad": rec.fad, "rule": rec.rule}
    return curves, recs


def operating_point(cfg: SweepConfig, curves: dict[str, list]) -> dict | None:
    """The one point to run with: the knee (tasks/tradeoff.py) of every grid point pooled over
    lambda, with everything that produced it (tau_init or sigma, lambda, sampler settings), so a
    consumer (the nightly job) applies it whole."""
    xkey = "t_init" if cfg.t_inits else "sigma_start"
    pooled = [(float(lam), Point(x, j, f)) for lam, pts in curves.items() for x, j, f in pts]
    if not pooled:
        return None
    rec = recommend([p for _, p in pooled])
    lam = next(lam for lam, p in pooled if (p.t_init, p.jd, p.fad) == (rec.t_init, rec.jd, rec.fad))
    return {xkey: rec.t_init, "lam": lam, "jd": rec.jd, "fad": rec.fad, "rule": rec.rule,
            "sampler": cfg.sampler.model_dump(mode="json")}


def listening_page(cfg: SweepConfig, points: list[dict], out: Storage, recs: dict, rows: list[dict],
                   context: dict, n_examples: int = 3) -> str:
    """A few inputs' guides, every grid point's output and the true target next to the page,
    with spectrograms (tasks/listening.py); report.html. Returns its URI."""
    from tasks.listening import write_example
    from tasks.report import Report, render

    first = ShardedDataset.at(points[0]["outputs_url"], "outputs").read(["clip_id"]).to_pylist()
    ids = sorted(r["clip_id"] for r in first)[:n_examples]
    clips = ShardedDataset.at(points[0]["clips_url"], "clips").read(
        ["clip_id", "clean_id", "source_id", "domain", "role", "audio_flac"]).to_pylist()
    by_id = {c["clip_id"]: c for c in clips}
    # the true target: a guide's clean counterpart, else the target domain's clean render of the same segment
    same_segment = {c["source_id"]: c["clip_id"] for c in clips
                    if c["role"] == "clean" and c["domain"] == context.get("target_domain")}
    xkey = "t_init" if cfg.t_inits else "sigma_start"
    tables = {id(p): ShardedDataset.at(p["outputs_url"], "outputs").read(["clip_id", "output_key"]).to_pylist()
              for p in points}
    report, examples = out.child("report"), []
    for cid in ids:
        outs = []
        for p in sorted(points, key=lambda p: (p["lam"], -(p[xkey] or 0))):
            key = next((r["output_key"] for r in tables[id(p)] if r["clip_id"] == cid), None)
            if key is not None:
                outs.append((f"{'τ' if xkey == 't_init' else 'σ'} {p[xkey]:g}, λ {p['lam']:g}",
                             Storage(p["run_url"]).read_bytes(f"audio/{key}.flac"), p["lam"] == max(cfg.lams)))
        clean_id = by_id[cid].get("clean_id") or same_segment.get(by_id[cid]["source_id"])
        target = (decode_audio_bytes(by_id[clean_id]["audio_flac"]) if clean_id and clean_id in by_id and clean_id != cid
                  else None)
        examples.append(write_example(report, cid, decode_audio_bytes(by_id[cid]["audio_flac"]), outs, target))
    report.write_bytes("tradeoff.png", out.read_bytes("tradeoff.png"))
    table = [{k: r[k] for k in ("t_init", "sigma_start", "lam", "metric", "reference", "n", "mean", "ci_low", "ci_high")}
             for r in rows]
    rec = {f"λ={lam}": ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items() if k != "rule")
           for lam, r in recs.items()} | {"rule": next(iter(recs.values()))["rule"] if recs else "no point with JD and FAD"}
    page = render(Report(f"sweep-t-init {out.url.rsplit('/', 1)[-1]}", cfg.model_dump(mode="json"), context, rec,
                         "tradeoff.png", table, examples))
    report.write_bytes("report.html", page.encode())
    return report.uri("report.html")


@task(name="sweep-report")
def finish(cfg: SweepConfig, points: list[dict], out: Storage, parent_run_id: str, sweep_id: str, context: dict) -> dict:
    rows = [r for p in points for r in p["rows"]]
    curves, recs = summarise(cfg, rows)
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=METRICS), buf)
    out.write_bytes("metrics.parquet", buf.getvalue())
    emb_name = next((r["embedding"] for r in rows if r["embedding"]), cfg.embedding)
    png = tradeoff_png(curves, recommended={k: v.get("t_init", v.get("sigma_start")) for k, v in recs.items()},
                       embedding=emb_name)
    out.write_bytes("tradeoff.png", png)
    report = listening_page(cfg, points, out, recs, rows, context)
    import datetime as dt

    summary = {"sweep_id": sweep_id, "model_version": context["model"], "recommended": recs,
               "operating_point": operating_point(cfg, curves),
               "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(), "metrics_url": out.uri("metrics.parquet"),
               "plot_url": out.uri("tradeoff.png"), "report_url": report, "mlflow_run_id": parent_run_id,
               "points": len(cfg.grid())}
    out.write_bytes("recommendation.json", json.dumps(summary, indent=2).encode())
    c = tracking.client()
    tracking.log_metrics_table(parent_run_id, rows)
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("tradeoff.png", "recommendation.json"):
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(out.read_bytes(name))
            c.log_artifact(parent_run_id, os.path.join(tmp, name))
        for rel in out.find("report"):  # the listening page with its audio and images
            path = os.path.join(tmp, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(out.read_bytes(rel))
        c.log_artifacts(parent_run_id, os.path.join(tmp, "report"), "report")
    for lam, rec in recs.items():
        for k in ("t_init", "sigma_start"):
            if k in rec:
                c.log_metric(parent_run_id, f"recommended_{k}_lam{lam}", rec[k])
    c.set_terminated(parent_run_id)
    return summary


def sweep(inputs: str, selection: InputSelection, cfg: SweepConfig, logistics: TransformLogistics,
          *, use_prefect_tasks: bool = False) -> dict:
    call = (lambda t, *a: t(*a)) if use_prefect_tasks else (lambda t, *a: t.fn(*a))
    _, model_name = tracking.resolve_model(cfg.model)
    if is_clips_dataset(inputs):  # an empty selection fails now, not after the reference statistics
        check_selection(inputs, selection, cfg.task, False)
    sweep_id = "sw-" + config_hash({"inputs": Storage(inputs).absolute_url(), "selection": selection.model_dump(),
                                    "model": model_name, "config": cfg.model_dump(mode="json")})
    root = Storage(Storage(logistics.out_url).absolute_url())
    out = root.child(f"sweeps/{sweep_id}")
    if out.exists("recommendation.json"):  # the same inputs, grid and model version: results are deterministic
        done = json.loads(out.read_bytes("recommendation.json"))
        print(f"[sweep] {sweep_id} finished at {done['finished_at']}: reusing its results ({out.url})")
        return done | {"rows": pq.read_table(io.BytesIO(out.read_bytes("metrics.parquet"))).to_pylist()}
    c = tracking.client()
    parent = c.create_run(tracking.experiment_id(EXPERIMENT), run_name=sweep_id,
                          tags={"reinstrument.kind": "sweep", "reinstrument.sweep_folder": out.url})
    pid = parent.info.run_id
    with tracking.ends_failed_on_error(pid):
        return _sweep_points(call, cfg, inputs, selection, logistics, root, out, pid, sweep_id, model_name)


def _sweep_points(call, cfg: SweepConfig, inputs: str, selection: InputSelection, logistics: TransformLogistics,
                  root: Storage, out: Storage, pid: str, sweep_id: str, model_name: str) -> dict:
    c = tracking.client()
    for k, v in (tracking.flatten(cfg.model_dump(mode="json")) | {"inputs": inputs, "model_version": model_name}).items():
        c.log_param(pid, k, str(v)[:6000])
    from infra.tracking import load_denoiser

    domain = cfg.reference_domain or load_denoiser(tracking.resolve_model(cfg.model)[0])[1]["domain"]
    child_log = logistics.model_copy(update={"parent_run_id": pid, "experiment": EXPERIMENT, "run_id": None})
    stats, label, cached = call(reference_stats, cfg, inputs, root.url, domain, child_log)
    print(f"[sweep] {sweep_id}: {len(cfg.grid())} grid points; reference {label} "
          f"({'cached' if cached else 'computed'} statistics)")
    points = []
    for k, warm in enumerate(cfg.grid()):
        print(f"[sweep] point {k + 1}/{len(cfg.grid())}: t_init={warm.t_init} sigma_start={warm.sigma_start} lam={warm.lam}")
        points.append(call(grid_point, cfg, warm, inputs, selection, child_log, stats, label, sweep_id))
    rows = [r for p in points for r in p["rows"]]
    return call(finish, cfg, points, out, pid, sweep_id, {"inputs": inputs, "model": model_name,
                                                          "reference": label, "target_domain": domain} | selection.model_dump()) | {"rows": rows}


def sweep_job(inputs: str, model: str, task_name: str = "timbre", domain: str | None = None,
              split: str | None = "test", limit: int | None = None, config: SweepConfig | None = None,
              out: str | None = None, actors: int = 2, *, use_prefect_tasks: bool = False) -> dict:
    """The deployment's parameters as a plain job (the CLI's --no-prefect and the demo call it)."""
    cfg = config or SweepConfig(model=model, task=task_name)
    log = TransformLogistics(num_actors=actors, out_url=out or get_settings().data_root)
    return sweep(inputs, InputSelection(domain=domain, split=split, limit=limit), cfg, log,
                 use_prefect_tasks=use_prefect_tasks)


@flow(name="sweep-t-init", log_prints=True)
def sweep_t_init(inputs: str, model: str, task_name: str = "timbre", domain: str | None = None,
                 split: str | None = "test", limit: int | None = None, config: SweepConfig | None = None,
                 out: str | None = None, actors: int = 2) -> dict:
    """Trace realism (FAD) against faithfulness (JD) over a tau_init x lambda grid and recommend a tau_init."""
    result = sweep_job(inputs, model, task_name, domain, split, limit, config, out, actors, use_prefect_tasks=True)
    table = [{k: r[k] for k in ("t_init", "sigma_start", "lam", "metric", "n", "mean", "ci_low", "ci_high")}
             for r in result["rows"]]
    _table_artifact("sweep-metrics", table, f"sweep {result['sweep_id']}: metrics per grid point")
    return {k: v for k, v in result.items() if k != "rows"}
