"""`reinstrument metrics fad|jd`."""
from __future__ import annotations

import typer

from cli.common import console, fail, print_rows, root

metrics_app = typer.Typer(help="Realism (FAD) and faithfulness (pitch JD) of audio sets.", no_args_is_help=True)
SHOWN = ("metric", "embedding", "reference", "n", "mean", "ci_low", "ci_high")


def _said(title: str, rows: list[dict], out: str | None, mlflow_run: str | None) -> None:
    print_rows([{k: r[k] for k in SHOWN} for r in rows], title)
    if out:
        console.print(f"metrics table: {out}")
    if mlflow_run:
        console.print(f"logged to MLflow run {mlflow_run}")


@metrics_app.command("fad")
def metrics_fad(
    evaluated: str = typer.Argument(..., help="Set to score: a folder/s3:// prefix of audio, or a clips dataset."),
    reference: str = typer.Argument(..., help="Reference set of the target domain (folder or clips dataset)."),
    embedding: str = typer.Option("musicnn", help="musicnn (MSD, default) | musicnn-mtt | vggish."),
    vggish_weights: str = typer.Option(None, help="VGGish state-dict file (needed for --embedding vggish)."),
    domain: str = typer.Option(None, help="Reference clips dataset: keep this domain (and name it in the table)."),
    role: str = typer.Option("clean", help="Reference clips dataset: keep this role."),
    split: str = typer.Option(None, help="Reference clips dataset: keep this split."),
    eval_domain: str = typer.Option(None, help="Evaluated clips dataset: keep this domain."),
    eval_role: str = typer.Option(None, help="Evaluated clips dataset: keep this role."),
    eval_split: str = typer.Option(None, help="Evaluated clips dataset: keep this split."),
    limit: int = typer.Option(None, help="At most this many clips per set."),
    cache: str = typer.Option(None, help="Cache reference statistics under this URL (default DATA_ROOT/metrics/reference-stats)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Recompute the reference statistics (neither read nor "
                                  "write the cache)."),
    boot: int = typer.Option(200, help="Bootstrap resamples for the CI."),
    out: str = typer.Option(None, help="Write the metrics table (Parquet) to this URL."),
    mlflow_run: str = typer.Option(None, help="Log the table to this MLflow run ID."),
):
    """FAD of EVALUATED against REFERENCE: both loudness-normalised, one embedding, bootstrap CI and FAD_inf."""
    from jobs.metrics import SetFilter, fad_job

    try:
        res = fad_job(evaluated, reference, embedding=embedding, vggish_weights=vggish_weights,
                      ref_filter=SetFilter(domain, role, split), eval_filter=SetFilter(eval_domain, eval_role, eval_split),
                      limit=limit, cache_url=None if no_cache else (cache or f"{root()}/metrics/reference-stats"),
                      n_boot=boot, out=out, mlflow_run=mlflow_run)
    except (ValueError, FileNotFoundError) as e:
        fail(e)
    r = res.result
    console.print(f"reference statistics {'from cache' if res.reference_cached else 'computed'}; "
                  f"{r.n_clips} clips, {r.n_embeddings} embeddings, {r.silent_clips} silent, "
                  f"{r.short_clips} shorter than one patch (skipped)")
    if r.fad_inf is None:
        console.print("[yellow]fewer embeddings than the embedding has dimensions: FAD is biased upward at this size "
                      "and FAD_inf cannot be extrapolated; compare only sets of equal size[/yellow]")
    _said(f"FAD ({r.embedding})", res.rows, out, mlflow_run)


@metrics_app.command("jd")
def metrics_jd(
    a: str = typer.Argument(..., help="Outputs: folder/s3:// prefix of audio, or a clips dataset."),
    b: str = typer.Argument(..., help="Guides, paired with A by relative path (extension ignored) or clip ID; "
                                      "a <stem>.mid next to a guide adds F1/JD against that MIDI."),
    threshold: float = typer.Option(0.3, help="Basic Pitch note-activation threshold."),
    limit: int = typer.Option(None, help="At most this many items per side."),
    per_item: bool = typer.Option(False, help="Also print every pair's values."),
    out: str = typer.Option(None, help="Write the metrics table (Parquet) to this URL."),
    mlflow_run: str = typer.Option(None, help="Log the table to this MLflow run ID."),
):
    """Pitch Jaccard distance between paired audio (Basic Pitch, ONNX): polyphonic and melody; F1 vs MIDI."""
    from jobs.metrics import jd_job

    try:
        values, rows = jd_job(a, b, threshold=threshold, limit=limit, out=out, mlflow_run=mlflow_run)
    except (ValueError, FileNotFoundError) as e:
        fail(e)
    if per_item:
        print_rows(values, "per pair")
    _said(f"pitch metrics (Basic Pitch, threshold {threshold})", rows, out, mlflow_run)


@metrics_app.command("copy-synthesis")
def metrics_copy_synthesis(
    clips: str = typer.Argument(..., help="A clips dataset holding held-out and train clips of each domain."),
    domain: list[str] = typer.Option(..., help="Domain to measure (repeat), e.g. --domain flute --domain violin."),
    vocoder: list[str] = typer.Option(None, help="A trained vocoder's model URI (repeat: side by side), e.g. "
                                                 "models:/reinstrument-vocoder@champion."),
    phase: list[str] = typer.Option(None, help="Decode each vocoder with this phase instead of its own setting "
                                               "(repeat): head (its predicted phase) or pghi (from its magnitude)."),
    split: str = typer.Option("test", help="The clips decoded (held out from the vocoder's training)."),
    reference_split: str = typer.Option("train", help="The real clips FAD is measured against."),
    limit: int = typer.Option(None, help="At most this many held-out clips per domain."),
    griffin_lim_iters: int = typer.Option(32, help="Griffin-Lim iterations."),
    autoencoder: str = typer.Option(None, help="Also decode through this autoencoder first (encode, decode, then "
                                               "the vocoder), e.g. models:/reinstrument-autoencoder@champion."),
):
    """What a decoder alone costs: held-out clips through log-mel and back (Griffin-Lim, the
    vocoder, the autoencoder then the vocoder), FAD against real clips, LSD and multi-resolution
    STFT distance, pitch JD against the original clip, speed."""
    from jobs.copy_synthesis import copy_synthesis_job

    try:
        rows = copy_synthesis_job(clips, list(domain), vocoders=tuple(vocoder or ()), phases=tuple(phase or ()),
                                  split=split, reference_split=reference_split,
                                  limit=limit, griffin_lim_iters=griffin_lim_iters, autoencoder=autoencoder)
    except (ValueError, FileNotFoundError) as e:
        fail(e)
    print_rows([{"domain": r.domain, "decoder": r.decoder, "clips": r.clips,
                 "FAD (95 % CI)": f"{r.fad:.2f} ({r.fad_ci[0]:.2f}–{r.fad_ci[1]:.2f})",
                 "LSD dB": "-" if r.lsd_db is None else f"{r.lsd_db:.2f}",
                 "MR-STFT": "-" if r.mr_stft is None else f"{r.mr_stft:.3f}",
                 "JD": "-" if r.jd is None else f"{r.jd:.3f}",
                 "× real time": "-" if r.realtime is None else f"{r.realtime:.0f}"} for r in rows],
               f"copy-synthesis on {split} clips; FAD vs real {reference_split} clips of the same domain")


ratings_app = typer.Typer(help="Listening tests: ratings from a report page's blind form.", no_args_is_help=True)


@ratings_app.command("import")
def ratings_import(
    ratings: str = typer.Argument(..., help="The JSON file the page's form exported (ratings-<page>-<name>.json)."),
    report: str = typer.Argument(..., help="The report it was made on: its folder (e.g. OUT/sweeps/<id>/report, "
                                           "local or s3://) or its report.html."),
):
    """Store a listener's ratings with the report, aggregate every listener's (MUSHRA: mean and 95 %
    interval per condition, post-screened), show them on the page next to FAD and JD, and log them to
    the page's MLflow run. Example: reinstrument ratings import ratings-1a2b-ana.json out/sweeps/sw-1/report"""
    from jobs.ratings import ratings_import_job

    try:
        summary = ratings_import_job(ratings, report)
    except (ValueError, FileNotFoundError) as e:
        fail(e)
    print_rows([{"condition": r.condition, "mean": round(r.mean, 1),
                 "95 % interval": "–" if r.ci_low is None else f"{r.ci_low:.1f}–{r.ci_high:.1f}",
                 "scores": r.scores, "listeners": r.listeners} for r in summary.rows],
               f"listening test: {summary.listeners} listener(s) kept, {len(summary.excluded)} left out")
    for why in summary.excluded:
        console.print(f"left out: {why}")
