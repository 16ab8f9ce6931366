"""`sweep-t-init`: how far may a transformation stray from its input? For every (tau_init or
sigma_start, lambda) of the grid: transform the inputs (jobs/transform.py: cached, resumable)
and measure realism (FAD vs the target domain's reference) and faithfulness (pitch JD vs the
guide; F1/JD vs the MIDI where known; SI-SDR/LSD vs the clean clip for `enhance`). One MLflow
parent run, a child run per grid point; the metrics table, the trade-off plots, the listening
page and the recommendation (tasks/tradeoff.py) are stored under <out>/sweeps/<sweep_id>/
(schemas/records.SweepLayout) and logged to the parent run."""
from __future__ import annotations

import datetime as dt
import io

import pyarrow as pa
import pyarrow.parquet as pq

from infra import tracking
from infra.datasets import ShardedDataset
from infra.progress import progress
from infra.settings import get_settings
from infra.storage import Storage
from jobs.steps import Step, inline
from jobs.decoders import pin_decoder
from jobs.transform import check_selection, resolve_vocoder, transform_job
from ray_actors.pool import keep_workers
from schemas.configs import config_hash
from schemas.diffusion import WarmStartConfig
from schemas.records import LambdaRecommendation, OperatingPoint, Recommendation, RunLayout
from schemas.records import SweepLayout as L
from schemas.probe import SHIPPED_PROBE
from schemas.results import SweepResult
from schemas.sweep import SweepConfig
from schemas.tables import METRICS
from schemas.transform import InputSelection, TransformConfig, TransformLogistics
from tasks.audio import decode_audio_bytes
from tasks.builders import load_model, make_embedding
from tasks.compare import true_target_ids
from tasks.listening import ListeningInput, clip_title, write_page
from tasks.metrics.compute import point_rows, target_probe
from tasks.metrics.embeddings import Embedding
from tasks.metrics.fad import cached_reference_stats, embed_set
from tasks.metrics.frechet import GaussianStats
from tasks.metrics.pitch import BasicPitch
from tasks.metrics.sources import AudioItem, audio_items, is_clips_dataset, item_content_ids
from tasks.metrics.table import GridPoint
from tasks.plots import tradeoff_png
from tasks.tradeoff import Point, recommend

EXPERIMENT = "reinstrument-sweep"


def point_config(cfg: SweepConfig, warm: WarmStartConfig) -> TransformConfig:
    return TransformConfig(task=cfg.task, method=cfg.method, model=cfg.model, source_model=cfg.source_model, warm=warm,
                           sampler=cfg.sampler, window=cfg.window, seed=cfg.seed, vocoder=cfg.vocoder,
                           vocoder_iters=cfg.vocoder_iters, target=cfg.target, source=cfg.source, guidance=cfg.guidance,
                           decoder=cfg.decoder)


def output_items(run_url: str) -> list[AudioItem]:
    """A transform run's outputs as audio items named by their input's clip ID."""
    run = Storage(run_url)
    rows = ShardedDataset(run.child(RunLayout.OUTPUTS), "outputs").read(["output_key", "clip_id"]).to_pylist()
    return [AudioItem(r["clip_id"], *decode_audio_bytes(run.read_bytes(RunLayout.audio(r["output_key"])))) for r in rows]


def clip_items(clips_url: str, ids: set[str]) -> dict[str, AudioItem]:
    table = ShardedDataset.at(clips_url, "clips").read(["clip_id", "audio_flac", "midi"]).to_pylist()
    return {r["clip_id"]: AudioItem(r["clip_id"], *decode_audio_bytes(r["audio_flac"]), r["midi"]) for r in table
            if r["clip_id"] in ids}


def real_reference(url: str, domain: str, split: str | None, limit: int | None, emb: Embedding, out: str
                   ) -> tuple[GaussianStats, str, bool]:
    """The real clips of the target domain as FAD's reference: (statistics, label, from cache)."""
    ids = item_content_ids(url, domain=domain, role="clean", split=split, limit=limit)
    if len(ids) < 2:
        raise ValueError(f"the reference set ({url}, domain={domain}, split={split}) has {len(ids)} clips; "
                         "FAD needs a reference of the target domain")
    stats, cached = cached_reference_stats(
        Storage(out).child("metrics/reference-stats"), domain, emb.name, ids,
        lambda: embed_set(progress(audio_items(url, domain=domain, role="clean", split=split, limit=limit), len(ids),
                                   f"reference statistics, {domain}"), emb), {"vocoded": False})
    return stats, f"domain:{domain}", cached


def reference_stats(cfg: SweepConfig, inputs: str, out: str, domain: str, logistics: TransformLogistics
                    ) -> tuple[dict[str, tuple[GaussianStats, str]], bool]:
    """The target domain's reference Gaussians, metric name -> (statistics, label): `fad` against
    the real clips (or, with vocoded_reference, the clips through the same mel + vocoder), and
    `fad_vocoded` as a diagnostic when asked. Returns them and whether all came from the cache."""
    emb = make_embedding(cfg.embedding, get_settings().weights_dir)
    url = cfg.reference_url or inputs
    sel = InputSelection(domain=domain, role="clean", split=cfg.reference_split, limit=cfg.reference_limit)
    ids = item_content_ids(url, domain=domain, role="clean", split=cfg.reference_split, limit=cfg.reference_limit)
    if len(ids) < 2:
        raise ValueError(f"the reference set ({url}, domain={domain}, split={cfg.reference_split}) has {len(ids)} clips; "
                         "FAD needs a reference of the target domain")

    def one(vocoded: bool) -> tuple[GaussianStats, str, bool]:
        if not vocoded:
            return real_reference(url, domain, cfg.reference_split, cfg.reference_limit, emb, out)
        identity = point_config(cfg, WarmStartConfig(t_init=1.0, lam=0.0)).model_copy(
            update={"method": "warm_init", "source_model": None})
        res = transform_job(url, sel, identity, logistics.model_copy(update={"parent_run_id": None,
                                                                           "experiment": "reinstrument-transform"}))
        # the decoder is part of a vocoded reference's identity: a cache entry never serves another
        stats, cached = cached_reference_stats(Storage(out).child("metrics/reference-stats"), domain, emb.name, ids,
                                               lambda: embed_set(progress(output_items(res["run_url"]), len(ids),
                                                                          f"vocoded reference, {domain}"), emb),
                                               {"vocoded": True, "vocoder": cfg.vocoder, "vocoder_iters": cfg.vocoder_iters})
        return stats, f"domain:{domain} (vocoded: {cfg.vocoder})", cached

    wanted = {"fad": cfg.vocoded_reference} | ({"fad_vocoded": True} if cfg.vocoded_diagnostic else {})
    built = {metric: one(vocoded) for metric, vocoded in wanted.items()}
    return {m: (s, label) for m, (s, label, _) in built.items()}, all(c for *_, c in built.values())


def grid_point(cfg: SweepConfig, warm: WarmStartConfig, inputs: str, selection: InputSelection,
               logistics: TransformLogistics, references: dict[str, tuple[GaussianStats, str]],
               method: str | None = None, target_domain: str | None = None) -> dict:
    tcfg = point_config(cfg, warm)
    if method == "generation":  # from noise with the target model alone, whatever the sweep's method
        tcfg = tcfg.model_copy(update={"method": "warm_init", "source_model": None, "source": None})
    if method == "auto":  # tau_init chosen per clip (tasks/auto_t_init.py); the row shows their mean
        tcfg = tcfg.model_copy(update={"auto": cfg.auto})
    res = transform_job(inputs, selection, tcfg, logistics)
    t_init = warm.t_init
    if method == "auto":
        chosen = ShardedDataset.at(res["outputs_url"], "outputs").read(["t_init"]).column("t_init").to_pylist()
        t_init = round(sum(chosen) / len(chosen), 4) if chosen else None
    point = GridPoint(run_id=res["run_id"], method=method or cfg.method, task=cfg.task, t_init=t_init,
                      sigma_start=warm.sigma_start, lam=warm.lam)
    outs = output_items(res["run_url"])
    clean = None
    if cfg.task == "enhance" and res["clips_url"] == inputs:  # a corpus knows each guide's clean clip
        clean_of = {r["clip_id"]: r["clean_id"] for r in
                    ShardedDataset.at(inputs, "clips").read(["clip_id", "clean_id"]).to_pylist() if r["clean_id"]}
        items = clip_items(inputs, set(clean_of.values()))
        clean = {g: items[c] for g, c in clean_of.items() if c in items}
    rows = point_rows(point, outs, clip_items(res["clips_url"], {o.item_id for o in outs}), references,
                      make_embedding(cfg.embedding, get_settings().weights_dir), BasicPitch(get_settings().weights_dir),
                      threshold=cfg.jd_threshold, clean=clean, seed=cfg.seed,
                      probe=sweep_probe(cfg, target_domain))
    tracking.TrackedRun(res["mlflow_run_id"]).table(rows)
    return {"rows": rows, "run_url": res["run_url"], "clips_url": res["clips_url"],
            "t_init": warm.t_init, "sigma_start": warm.sigma_start, "lam": warm.lam}


def sweep_probe(cfg: SweepConfig, target_domain: str | None):
    """The instrument probe for the table's target accuracy (the one `auto` uses, if set)."""
    return target_probe(cfg.target or target_domain, cfg.auto.probe if cfg.auto else SHIPPED_PROBE)


def anchor_rows(cfg: SweepConfig, inputs: str, selection: InputSelection, logistics: TransformLogistics,
                references: dict[str, tuple[GaussianStats, str]], target_domain: str) -> list[dict]:
    """What the grid is read against, scored the same way: plain generation (tau_init 0, lambda 1:
    the model's realism when it ignores the guide) and the true target (each guide's segment as the
    target instrument really plays it, where the inputs are a corpus that has it). Their rows carry
    method 'generation' and 'target' and never enter the trade-off curve."""
    gen = grid_point(cfg, WarmStartConfig(t_init=0.0, lam=1.0), inputs, selection, logistics, references, "generation",
                     target_domain)
    rows = gen["rows"]
    clips = ShardedDataset.at(gen["clips_url"], "clips").read(["clip_id", "clean_id", "source_id", "domain", "role"]).to_pylist()
    guide_ids = {o.item_id for o in output_items(gen["run_url"])}
    target_of = true_target_ids([c for c in clips if c["clip_id"] in guide_ids], clips, target_domain)
    if target_of:
        audio = clip_items(gen["clips_url"], set(target_of.values()) | set(target_of))
        outs = [AudioItem(g, audio[t].audio, audio[t].sample_rate_hz) for g, t in sorted(target_of.items())]
        rows += point_rows(GridPoint(run_id="true-target", method="target", task=cfg.task), outs,
                           {g: audio[g] for g in target_of}, references, make_embedding(cfg.embedding, get_settings().weights_dir),
                           BasicPitch(get_settings().weights_dir), threshold=cfg.jd_threshold, seed=cfg.seed,
                           probe=sweep_probe(cfg, target_domain))
    return rows


ANCHOR_NAMES = {"generation": "plain generation", "target": "true target", "auto": "auto τ_init (per clip)"}


def _xkey(cfg: SweepConfig) -> str:
    return "t_init" if cfg.t_inits else "sigma_start"


def summarise(cfg: SweepConfig, rows: list[dict]) -> tuple[dict[str, list], dict[str, LambdaRecommendation]]:
    """Per lambda: the (x, JD, FAD) curve and the recommendation (tasks/tradeoff.py)."""
    xkey = _xkey(cfg)
    by: dict = {}
    for r in rows:
        if r.get("method", cfg.method) == cfg.method:  # not the anchors (plain generation, the true target)
            by.setdefault((r["lam"], r[xkey]), {})[r["metric"]] = r["mean"]
    curves: dict[str, list] = {}
    for (lam, x), m in sorted(by.items()):
        if "jd" in m and "fad" in m:
            curves.setdefault(f"{lam:g}", []).append((x, m["jd"], m["fad"]))
    recs = {}
    for lam, pts in curves.items():
        rec = recommend([Point(x, j, f) for x, j, f in pts])
        recs[lam] = LambdaRecommendation(**{xkey: rec.t_init}, jd=rec.jd, fad=rec.fad, rule=rec.rule)
    return curves, recs


def operating_point(cfg: SweepConfig, curves: dict[str, list]) -> OperatingPoint | None:
    """The one point to run with: the knee (tasks/tradeoff.py) of every grid point pooled over
    lambda, with everything that produced it (tau_init or sigma, lambda, sampler settings), so a
    consumer (the nightly job) applies it whole."""
    pooled = [(float(lam), Point(x, j, f)) for lam, pts in curves.items() for x, j, f in pts]
    if not pooled:
        return None
    rec = recommend([p for _, p in pooled])
    lam = next(lam for lam, p in pooled if (p.t_init, p.jd, p.fad) == (rec.t_init, rec.jd, rec.fad))
    return OperatingPoint(**{_xkey(cfg): rec.t_init}, lam=lam, jd=rec.jd, fad=rec.fad, rule=rec.rule, sampler=cfg.sampler)


def _point_label(xkey: str, x: float | None, lam: float) -> str:
    return f"{'τ' if xkey == 't_init' else 'σ'} {x or 0:g}, λ {lam:g}"


def griffin_lim_companion(cfg: SweepConfig, op: OperatingPoint, inputs: str, selection: InputSelection,
                          logistics: TransformLogistics, n: int = 3) -> str:
    """The listening page's first `n` inputs transformed at the operating point again, decoded by
    Griffin-Lim: the same mels as the vocoder's outputs (same model, seed and settings), so the
    page puts the two decoders side by side. Returns the run's URL."""
    warm = WarmStartConfig(t_init=op.t_init, sigma_start=op.sigma_start, lam=op.lam)
    gl = point_config(cfg, warm).model_copy(update={"vocoder": "griffin-lim"})
    # a run of its own (like the vocoded reference), not a grid point under the sweep's parent
    return transform_job(inputs, selection.model_copy(update={"limit": min(n, selection.limit or n)}), gl,
                         logistics.model_copy(update={"parent_run_id": None, "experiment": "reinstrument-transform"})
                         )["run_url"]


def listening_inputs(cfg: SweepConfig, points: list[dict], target_domain: str | None, n: int = 3,
                     companion: tuple[str, str] | None = None) -> list[ListeningInput]:
    """A few inputs: their guide, every grid point's output (and, given `companion` = (point
    label, run URL), that point's Griffin-Lim decode next to it), and the true target (a guide's
    clean counterpart, else the target domain's clean render of the same segment)."""
    clips = ShardedDataset.at(points[0]["clips_url"], "clips").read(
        ["clip_id", "clean_id", "source_id", "domain", "role", "audio_flac", "piece", "voice", "start_s",
         "duration_s"]).to_pylist()
    by_id = {c["clip_id"]: c for c in clips}
    same_segment = {c["source_id"]: c["clip_id"] for c in clips if c["role"] == "clean" and c["domain"] == target_domain}
    xkey = _xkey(cfg)
    keys = {id(p): {r["clip_id"]: r["output_key"] for r in ShardedDataset(
        Storage(p["run_url"]).child(RunLayout.OUTPUTS), "outputs").read(["clip_id", "output_key"]).to_pylist()} for p in points}
    gl: dict[str, bytes] = {}
    if companion:
        run = Storage(companion[1])
        gl = {r["clip_id"]: run.read_bytes(RunLayout.audio(r["output_key"])) for r in ShardedDataset(
            run.child(RunLayout.OUTPUTS), "outputs").read(["clip_id", "output_key"]).to_pylist()}
    decoder = "Griffin-Lim" if cfg.vocoder == "griffin-lim" else "vocoder"
    out = []
    for cid in sorted(keys[id(points[0])])[:n]:
        outs = []
        for p in sorted(points, key=lambda p: (p["lam"], -(p[xkey] or 0))):
            if cid not in keys[id(p)]:
                continue
            label = _point_label(xkey, p[xkey], p["lam"])
            both = companion is not None and label == companion[0] and cid in gl
            outs.append((label + (f" · {decoder}" if both else ""),
                         Storage(p["run_url"]).read_bytes(RunLayout.audio(keys[id(p)][cid])), p["lam"] == max(cfg.lams)))
            if both:
                outs.append((label + " · Griffin-Lim", gl[cid], True))
        clean_id = by_id[cid].get("clean_id") or same_segment.get(by_id[cid]["source_id"])
        target = (decode_audio_bytes(by_id[clean_id]["audio_flac"]) if clean_id and clean_id in by_id and clean_id != cid
                  else None)
        out.append(ListeningInput(cid, decode_audio_bytes(by_id[cid]["audio_flac"]), outs, target,
                                  title=clip_title(by_id[cid])))
    return out


def finish(cfg: SweepConfig, points: list[dict], out: Storage, parent: str, sweep_id: str, context: dict,
           companion: tuple[str, str] | None = None, anchors: list[dict] | None = None) -> SweepResult:
    rows = [r for p in points for r in p["rows"]] + (anchors or [])
    curves, recs = summarise(cfg, rows)
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=METRICS), buf)
    out.write_bytes(L.METRICS, buf.getvalue())
    emb_name = next((r["embedding"] for r in rows if r["embedding"]), cfg.embedding)
    levels: dict = {}
    for r in anchors or []:
        levels.setdefault(r["method"], {})[r["metric"]] = r["mean"]
    xkey = _xkey(cfg)
    bounds: dict = {}  # (lam label, x) -> metric -> (lo, hi), the 95 % intervals drawn as error bars
    for r in rows:
        if r.get("method", cfg.method) == cfg.method:
            bounds.setdefault((f"{r['lam']:g}", r[xkey]), {})[r["metric"]] = (r["ci_low"], r["ci_high"])
    intervals: dict = {}
    for (lam, x), b in bounds.items():
        if "jd" in b and "fad" in b:
            intervals.setdefault(lam, {})[x] = (*b["jd"], *b["fad"])
    anchor_fad = {ANCHOR_NAMES[r["method"]]: (r["ci_low"], r["ci_high"]) for r in anchors or [] if r["metric"] == "fad"}
    png = tradeoff_png(curves, recommended={k: v.t_init if v.t_init is not None else v.sigma_start for k, v in recs.items()},
                       embedding=emb_name, anchors={ANCHOR_NAMES[m]: (v["jd"], v["fad"]) for m, v in levels.items()
                                                    if {"jd", "fad"} <= set(v)},
                       intervals=intervals, anchor_intervals=anchor_fad)
    out.write_bytes(L.PLOT, png)
    table = [{k: r[k] for k in ("method", "t_init", "sigma_start", "lam", "metric", "reference", "n", "mean", "ci_low",
                                "ci_high")} for r in rows]
    shown = {f"λ={lam}": ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                   for k, v in r.model_dump(exclude_none=True).items() if k != "rule")
             for lam, r in recs.items()} | {"rule": next(iter(recs.values())).rule if recs else "no point with JD and FAD"}
    report = write_page(out.child(L.REPORT), f"sweep-t-init {sweep_id}", cfg.model_dump(mode="json"), context, shown, table,
                        listening_inputs(cfg, points, context.get("target_domain"), companion=companion), curves_png=png,
                        condition_of=lambda r: ANCHOR_NAMES.get(r["method"]) or _point_label(xkey, r[xkey], r["lam"]),
                        mlflow_run_id=parent)
    rec = Recommendation(sweep_id=sweep_id, model_version=context["model"], recommended=recs,
                         operating_point=operating_point(cfg, curves), vocoder=cfg.vocoder,
                         finished_at=dt.datetime.now(dt.timezone.utc).isoformat(), metrics_url=out.uri(L.METRICS),
                         plot_url=out.uri(L.PLOT), report_url=report, mlflow_run_id=parent, points=len(cfg.grid()),
                         task=cfg.task, target=cfg.target)
    out.write_bytes(L.RECOMMENDATION, rec.model_dump_json(indent=2, exclude_none=True).encode())
    tracked = tracking.TrackedRun(parent)
    tracked.table(rows)
    for name in (L.PLOT, L.RECOMMENDATION):
        tracked.artifact(name, out.read_bytes(name))
    tracked.artifacts_from(out, L.REPORT, "report")
    tracked.metrics({f"recommended_{k}_lam{lam}": v for lam, r in recs.items()
                     for k, v in (("t_init", r.t_init), ("sigma_start", r.sigma_start))})
    tracked.finish()
    return SweepResult(**rec.model_dump(mode="json", exclude_none=True))


def sweep_job(inputs: str, selection: InputSelection, cfg: SweepConfig, logistics: TransformLogistics,
              *, step: Step = inline) -> SweepResult:
    """Trace realism (FAD) against faithfulness (JD) over a tau_init x lambda grid and recommend
    an operating point. The same inputs, grid and model version reuse a finished sweep."""
    # every alias resolved once: a champion (model, DDIB source or vocoder) promoted mid-sweep cannot
    # mix into later grid points; as pinned URIs in the config they are the sweep's identity and every point's
    model_uri, model_name = tracking.resolve_model(cfg.model)
    cfg = cfg.model_copy(update={"model": model_uri, "vocoder": resolve_vocoder(cfg.vocoder)[0] or "griffin-lim",
                                 "decoder": pin_decoder(cfg.decoder, model_uri, model_name).get("decoder_uri", "own")}
                         | ({"source_model": tracking.resolve_model(cfg.source_model)[0]} if cfg.source_model else {}))
    if is_clips_dataset(inputs):  # an empty selection fails now, not after the reference statistics
        check_selection(inputs, selection, cfg.task, False)
    sweep_id = "sw-" + config_hash({"inputs": Storage(inputs).absolute_url(), "selection": selection.identity(),
                                    "model": model_name, "config": cfg.identity()})
    root = Storage(Storage(logistics.out_url).absolute_url())
    out = root.child(f"{L.SWEEPS}/{sweep_id}")
    if out.exists(L.RECOMMENDATION):  # the same inputs, grid and model version: results are deterministic
        done = Recommendation.model_validate_json(out.read_bytes(L.RECOMMENDATION))
        print(f"[sweep] {sweep_id} finished at {done.finished_at}: reusing its results ({out.url})")
        return SweepResult(**done.model_dump(mode="json", exclude_none=True),
                           rows=pq.read_table(io.BytesIO(out.read_bytes(L.METRICS))).to_pylist())
    parent = tracking.TrackedRun.start(EXPERIMENT, sweep_id, tags={"reinstrument.kind": "sweep",
                                                                   "reinstrument.sweep_folder": out.url})
    with parent.failed_on_error():
        parent.params(cfg.model_dump(mode="json") | {"inputs": inputs, "model_version": model_name})
        domain = cfg.reference_domain or cfg.target or load_model(tracking.model_checkpoint(cfg.model),
                                                                  model_name).card.domain
        child_log = logistics.model_copy(update={"parent_run_id": parent.id, "experiment": EXPERIMENT, "run_id": None})
        references, cached = step(reference_stats, cfg, inputs, root.url, domain, child_log)
        label = references["fad"][1]
        print(f"[sweep] {sweep_id}: {len(cfg.grid())} grid points; decoder {cfg.vocoder}; reference {label} "
              f"({'cached' if cached else 'computed'} statistics)")
        points = []
        with keep_workers():  # one set of actors (models loaded once) for every grid point
            for k, warm in enumerate(cfg.grid()):
                where = f"t_init={warm.t_init}" if warm.sigma_start is None else f"sigma_start={warm.sigma_start:g}"
                print(f"[sweep] point {k + 1}/{len(cfg.grid())}: {where} lam={warm.lam}")
                points.append(step(grid_point, cfg, warm, inputs, selection, child_log, references, None, domain))
        context = ({"inputs": inputs, "model": model_name, "decoder": cfg.vocoder, "reference": label,
                    "target_domain": domain} | selection.model_dump())
        companion = None
        op = operating_point(cfg, summarise(cfg, [r for p in points for r in p["rows"]])[0])
        if op is not None and cfg.vocoder != "griffin-lim":
            print("[sweep] the listening page's inputs at the operating point, decoded by Griffin-Lim too")
            companion = (_point_label(_xkey(cfg), op.t_init if op.t_init is not None else op.sigma_start, op.lam),
                         step(griffin_lim_companion, cfg, op, inputs, selection, child_log))
        anchors = None
        if cfg.anchors:
            print("[sweep] anchors: plain generation and the true target, scored like the grid")
            anchors = step(anchor_rows, cfg, inputs, selection, child_log, references, domain)
        if cfg.auto is not None:  # drawn beside the fixed-tau_init curve, never part of it
            warm = WarmStartConfig(t_init=op.t_init if op is not None and op.t_init is not None else 0.6,
                                   lam=op.lam if op is not None else cfg.grid()[0].lam)
            print(f"[sweep] t_init auto: chosen per clip by the instrument probe ({cfg.auto.probe}), lambda {warm.lam:g}")
            anchors = (anchors or []) + step(grid_point, cfg, warm, inputs, selection, child_log, references, "auto",
                                             domain)["rows"]
        return (step(finish, cfg, points, out, parent.id, sweep_id, context, companion, anchors)
                | {"rows": [r for p in points for r in p["rows"]] + (anchors or [])})
