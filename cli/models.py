"""Model commands: train, warm-probe, train-probe, shipped (list, register, ship)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli.common import USAGE, PrefectOpt, console, fail, load_config, moved, old_spelling, print_rows, root, run, usage_error


ClipsArg = typer.Argument(..., help="Clips datasets to learn from (their clean clips).")
DomainsOpt = typer.Option(None, help="Only these domains (repeat; default every clean clip).")
TrainStepsOpt = typer.Option(None, "--train-steps", help="Optimisation steps (preset default otherwise).")
OldStepsOpt = old_spelling("--steps", "--train-steps")
SeedOpt = typer.Option(None, help="Run seed (every draw derives from it).")
WorkersOpt = typer.Option(None, help="Ray Train workers, DDP (0: train in this process). Default: this process on "
                                      "one machine's CPUs (fastest there), one per visible GPU with --gpu, 2 on a "
                                      "cluster (RAY_ADDRESS).")
GpuOpt = typer.Option(False, help="GPU workers (bf16 autocast unless --precision fp32).")
PrecisionOpt = typer.Option("auto", help="auto | fp32 | bf16.")
OutOpt = typer.Option(None, help="Root of run folders; default DATA_ROOT/training.")
ResumeOpt = typer.Option(True, "--resume/--no-resume", help="Continue the run with the same identity.")


def train(
    features_url: str = typer.Argument(..., help="A feature set URL (…/features/logmel-<hash>)."),
    domain: str = typer.Option(..., help="Target domain to model, e.g. flute."),
    cond_domain: str = typer.Option(None, help="Conditional baseline: train DOMAIN from this paired source domain."),
    cond_role: str = typer.Option("clean", help="Role of the paired source rows (clean, midi_guide, degraded)."),
    instrument: Optional[list[str]] = typer.Option(
        None, "--instrument", help="Repeatable: one instrument-conditional model of these domains "
        "(class labels in this order); --domain then names the model, e.g. instruments."),
    preset: str = typer.Option("cpu-demo", help="Training preset: tiny, cpu-demo (log-mel), cpu-latent (latent sets), gpu."),
    train_steps: int = TrainStepsOpt,
    batch_size: int = typer.Option(None, help="Global batch, split across workers."),
    lr: float = typer.Option(None, help="Peak learning rate."),
    seed: int = typer.Option(None, help="Run seed (every draw derives from it)."),
    checkpoint_every: int = typer.Option(None, help="Steps between checkpoints."),
    workers: Optional[int] = WorkersOpt,
    gpu: bool = GpuOpt,
    precision: str = typer.Option("auto", help="auto | fp32 | bf16."),
    out: str = typer.Option(None, help="Root of run folders; default DATA_ROOT/training."),
    resume: bool = typer.Option(True, "--resume/--no-resume",
                                help="Continue a run with the same identity from its last checkpoint."),
    register: bool = typer.Option(True, "--register/--no-register", help="Register the model in MLflow."),
    config: Optional[Path] = typer.Option(None, "--config", help="TrainConfig JSON (overrides the preset)."),
    prefect: bool = PrefectOpt,
    steps: int = OldStepsOpt,
):
    """Train the EDM denoiser of one domain (in this process on one machine; on Ray Train workers on
    a cluster or GPUs) and register it as reinstrument-<domain> (alias `champion` if it validates
    better). Example:
    reinstrument train ./data/features/logmel-… --domain flute --preset cpu-demo --train-steps 5000"""
    import json

    from flows.pipeline import train_flow
    from infra.storage import Storage
    from jobs.train import train_job
    from schemas.training import TRAIN_PRESETS, TrainConfig, TrainLogistics

    if preset not in TRAIN_PRESETS:
        usage_error(f"unknown preset {preset!r}; expected one of {sorted(TRAIN_PRESETS)}")
    # Absolute, so the run's identity (and its Ray workers) do not depend on the working directory.
    cfg = load_config(TrainConfig, config, TRAIN_PRESETS[preset], domain=domain,
                      features_url=Storage(features_url).absolute_url(), cond_domain=cond_domain,
                      cond_role=cond_role if cond_domain else None, labels=tuple(instrument) if instrument else None,
                      steps=moved("--steps", "--train-steps", steps, train_steps), batch_size=batch_size, lr=lr,
                      seed=seed, checkpoint_every=checkpoint_every)
    logistics = load_config(TrainLogistics, None, num_workers=workers, use_gpu=gpu, precision=precision,
                            resume=resume, register_model=register, out_url=out or f"{root()}/training")
    res = run(train_flow, train_job, prefect, cfg, logistics)
    console.print_json(json.dumps(res, default=str))


def _train_on_clips(kind: str, preset: str, config: Path | None, clips: list[str], domain: list[str] | None,
                    overrides: dict, workers: int | None, gpu: bool, precision: str, out: str | None, resume: bool,
                    register: bool, prefect: bool) -> None:
    """The vocoder's and the autoencoder's commands: a preset, the clean clips of CLIPS, one run."""
    import json

    from flows.pipeline import train_autoencoder_flow, train_vocoder_flow
    from infra.storage import Storage
    from jobs.train import train_job
    from schemas.autoencoder import AUTOENCODER_PRESETS, AutoencoderTrainConfig
    from schemas.training import TrainLogistics
    from schemas.vocoder import VOCODER_PRESETS, VocoderTrainConfig

    config_type, presets, flow = {"vocoder": (VocoderTrainConfig, VOCODER_PRESETS, train_vocoder_flow),
                                  "autoencoder": (AutoencoderTrainConfig, AUTOENCODER_PRESETS, train_autoencoder_flow)}[kind]
    if preset not in presets:
        usage_error(f"unknown preset {preset!r}; expected one of {sorted(presets)}")
    cfg = load_config(config_type, config, presets[preset], clips_urls=tuple(Storage(c).absolute_url() for c in clips),
                      domains=tuple(domain) if domain else None,
                      # the run's name and log label say what it learns from ("all" when every domain)
                      **({"domain": "-".join(domain)} if domain else {}), **overrides)
    logistics = load_config(TrainLogistics, None, num_workers=workers, use_gpu=gpu, precision=precision,
                            resume=resume, register_model=register, out_url=out or f"{root()}/training",
                            experiment=f"reinstrument-{kind}")
    res = run(flow, train_job, prefect, cfg, logistics)
    console.print_json(json.dumps(res, default=str))


def train_vocoder(
    clips: list[str] = ClipsArg,
    domain: list[str] = DomainsOpt,
    preset: str = typer.Option("cpu", help="tiny | cpu (2 cores, about 45 min) | gpu."),
    train_steps: int = TrainStepsOpt,
    seed: int = SeedOpt,
    workers: Optional[int] = WorkersOpt,
    gpu: bool = GpuOpt,
    precision: str = PrecisionOpt,
    out: str = OutOpt,
    resume: bool = ResumeOpt,
    register: bool = typer.Option(True, "--register/--no-register", help="Register as reinstrument-vocoder."),
    config: Optional[Path] = typer.Option(None, "--config", help="VocoderTrainConfig JSON (overrides the preset)."),
    init_from: str = typer.Option(None, help="Fine-tune: start from this vocoder (e.g. shipped:vocoder, "
                                             "models:/reinstrument-vocoder@champion); same preset."),
    prefect: bool = PrefectOpt,
    steps: int = OldStepsOpt,
):
    """Train the neural vocoder (Vocos-style, spectral losses) on the clean clips of CLIPS and
    register it as reinstrument-vocoder. Example:
    reinstrument train-vocoder ./data/corpus/clips --preset cpu"""
    train_steps = moved("--steps", "--train-steps", steps, train_steps)
    _train_on_clips("vocoder", preset, config, clips, domain, dict(steps=train_steps, seed=seed, init_from=init_from),
                    workers, gpu, precision, out, resume, register, prefect)


def train_autoencoder(
    clips: list[str] = ClipsArg,
    domain: list[str] = DomainsOpt,
    preset: str = typer.Option("cpu", help="tiny | cpu (2 cores, under 2 h) | gpu."),
    train_steps: int = TrainStepsOpt,
    seed: int = SeedOpt,
    workers: Optional[int] = WorkersOpt,
    gpu: bool = GpuOpt,
    precision: str = PrecisionOpt,
    out: str = OutOpt,
    resume: bool = ResumeOpt,
    register: bool = typer.Option(True, "--register/--no-register", help="Register as reinstrument-autoencoder."),
    config: Optional[Path] = typer.Option(None, "--config", help="AutoencoderTrainConfig JSON (overrides the preset)."),
    init_from: str = typer.Option(None, help="Fine-tune: start from this autoencoder (same preset)."),
    prefect: bool = PrefectOpt,
    steps: int = OldStepsOpt,
):
    """Train the mel autoencoder (the latent of `features --kind latent`) on the clean clips of CLIPS
    and register it as reinstrument-autoencoder. Example:
    reinstrument train-autoencoder ./data/corpus/clips --preset cpu"""
    train_steps = moved("--steps", "--train-steps", steps, train_steps)
    _train_on_clips("autoencoder", preset, config, clips, domain, dict(steps=train_steps, seed=seed, init_from=init_from),
                    workers, gpu, precision, out, resume, register, prefect)


def warm_probe(
    features_url: str = typer.Argument(..., help="A feature set holding both domains."),
    model: str = typer.Option(..., help="MLflow model URI, e.g. models:/reinstrument-flute@champion."),
    guide_domain: str = typer.Option(..., help="Domain of the guides, e.g. violin."),
    t_init: list[float] = typer.Option([1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.0], help="tau_init values (repeat)."),
    steps: int = typer.Option(None, help="Reverse steps N of the full grid (default: SamplerConfig's, 35)."),
    segments: int = typer.Option(32, help="Guide segments (valid/test split)."),
):
    """Warm-start guides of another domain with a trained model and report, per tau_init, the
    probability a timbre probe gives the model's domain and how far outputs moved from guides."""
    from jobs.probe import probe_job

    print_rows(probe_job(model, features_url, guide_domain, list(t_init), steps=steps, segments=segments),
               f"warm start: {guide_domain} guides -> {model}")


def train_probe(
    clips_url: str = typer.Argument(..., help="A clips dataset (a corpus): the probe learns its train split's clean clips."),
    out: str = typer.Option(..., help="Folder for probe.pt and card.json (e.g. weights/instrument-probe to ship it)."),
    heldout: list[str] = typer.Option(None, help="Clips datasets never trained on: the card scores the probe on each "
                                                 "(per instrument and soundfont). Repeat."),
    instrument: list[str] = typer.Option(None, help="Labels to learn (repeat; default every instrument of the corpus)."),
    config: Optional[Path] = typer.Option(None, "--config", help="A ProbeConfig JSON (crop_frames, crops_per_clip, l2, seed)."),
):
    """Fit the instrument probe (which instrument a clip sounds like) that `--t-init auto` and the
    sweep and compare tables' target accuracy use, and write it with its card."""
    import shlex
    import sys

    from jobs.probe import train_probe_job
    from schemas.probe import ProbeConfig

    cfg = load_config(ProbeConfig, config, **({"instruments": tuple(instrument)} if instrument else {}))
    try:
        card = train_probe_job(clips_url, out, cfg, tuple(heldout or ()),
                               command="reinstrument " + shlex.join(sys.argv[1:]))
    except ValueError as e:
        fail(e)
    print_rows([r.model_dump() for r in card.accuracy], f"instrument probe -> {out} (fitted in {card.wall_time_s:.0f} s)")


shipped_app = typer.Typer(help="Models the repository ships (weights/): list, register in MLflow, ship a new one.",
                          no_args_is_help=True)


@shipped_app.command("list")
def shipped_list():
    """Each shipped model: folder, card's model, kind, size, training time, checksum."""
    import json

    from infra.settings import get_settings
    from jobs.ship import shipped_folders

    rows = []
    for f in shipped_folders():
        card = json.loads((Path(get_settings().shipped_dir) / f / "card.json").read_text())
        rows.append({"folder": f, "uri": f"shipped:{f}", "model": card.get("model"), "kind": card.get("kind"),
                     "MB": round(card.get("bytes", 0) / 2**20, 1), "wall min": card.get("wall_time_min"),
                     "sha256": card.get("sha256", "")[:16]})
    print_rows(rows, f"shipped models ({get_settings().shipped_dir})")


@shipped_app.command("register")
def shipped_register(folder: list[str] = typer.Argument(None, help="Folders of weights/ (default: all).")):
    """Register shipped models in MLflow (once per file; champion where the name has none)."""
    from jobs.ship import register_shipped_job

    try:
        done = register_shipped_job(tuple(folder) if folder else None)
    except ValueError as e:
        fail(e)
    print_rows([dict(m) | {"sha256": m["sha256"][:16]} for m in done.values()], "registered shipped models")


@shipped_app.command("ship")
def shipped_ship(
    model: str = typer.Argument(..., help="A registered model, e.g. models:/reinstrument-flute-latent/1."),
    folder: str = typer.Option(..., help="Folder under weights/ (its shipped: name), e.g. flute-latent."),
    card: Path = typer.Option(..., exists=True, help="JSON with how to reproduce it: corpus_command, "
                                                     "training_command, seed, steps, wall_time_min, metrics."),
    float16: bool = typer.Option(False, help="Store the weights in float16 (half the bytes; loaded as float32)."),
    set_: list[str] = typer.Option(None, "--set", help="KEY=JSON: a decode-time field of the model's architecture "
                                                       "config (repeat), e.g. --set 'phase=\"pghi\"'."),
):
    """Write weights/FOLDER/model.pt and card.json (machine, checksum and size added); refuses > 20 MB."""
    import json

    from infra.settings import get_settings
    from jobs.ship import ship_job

    overrides = {}
    for item in set_ or []:
        key, sep, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            sep = ""
        if not sep or not key:
            fail(ValueError(f"--set {item!r}: expected KEY=JSON, e.g. --set 'phase=\"pghi\"'"), USAGE)
    try:
        path = ship_job(model, str(Path(get_settings().shipped_dir) / folder), json.loads(card.read_text()),
                        float16=float16, architecture=overrides)
    except ValueError as e:
        fail(e)
    console.print(f"shipped {model} -> {path}")
