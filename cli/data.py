"""Data commands: corpus build, ingest, augment, features, inspect, mel2audio, config show."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli.common import (ConfigOpt, PrefectOpt, console, fail, load_config, moved, old_argument, old_spelling, print_rows,
                        required, root, run, usage_error)

corpus_app = typer.Typer(help="The reference corpus rendered from music21 scores.", no_args_is_help=True)
config_app = typer.Typer(help="Typed configs: defaults and validation.", no_args_is_help=True)
CONFIG_KINDS = {"corpus": "CorpusConfig", "ingest": "IngestConfig", "augment": "AugmentConfig",
                "features": "FeatureConfig", "train": "TrainConfig", "transform": "TransformConfig",
                "sweep": "SweepConfig", "vocoder": "VocoderTrainConfig", "autoencoder": "AutoencoderTrainConfig",
                "compare": "CompareConfig", "nightly": "NightlyConfig"}


@corpus_app.command("build")
def corpus_build(
    out: str = typer.Option(None, help="Destination URL (local path or s3://); writes OUT/clips. Default DATA_ROOT/corpus."),
    pieces: int = typer.Option(None, help="How many pieces (default 16)."),
    collection: str = typer.Option(None, help="music21 collection, e.g. bach, palestrina, monteverdi."),
    midi_dir: str = typer.Option(None, help="A folder/S3 prefix of MIDI files to use instead of music21."),
    instrument: list[str] = typer.Option(None, help="GM instrument (repeat): flute, violin, cello, ..."),
    soundfont: list[str] = typer.Option(None, help="fluidr3, timgm6mb, musescore (repeat)."),
    voice: list[str] = typer.Option(None, help="soprano, alto, tenor, bass, mix, part<i> (repeat)."),
    processes: int = typer.Option(None, help="Processes rendering in parallel (default 2)."),
    config: Optional[Path] = ConfigOpt,
    prefect: bool = PrefectOpt,
    dest: str = old_spelling("--dest", "--out"),
    workers: int = old_spelling("--workers", "--processes"),
):
    """Render a reference corpus: clean clips per (voice, instrument, soundfont), MIDI guides
    and degraded guides, split by piece. Example:
    reinstrument corpus build --out ./data/corpus --pieces 16 --instrument flute --instrument violin"""
    from flows.pipeline import corpus_build_flow
    from jobs.data import corpus_job
    from schemas.configs import CorpusConfig

    cfg = load_config(CorpusConfig, config, max_pieces=pieces, collection=collection, midi_dir=midi_dir,
                      instruments=instrument, soundfonts=soundfont, voices=voice)
    out = moved("--dest", "--out", dest, out)
    processes = moved("--workers", "--processes", workers, processes)
    res = run(corpus_build_flow, corpus_job, prefect, out or f"{root()}/corpus", cfg, 2 if processes is None else processes)
    print_rows(res["summary"], "reference corpus")
    console.print(f"built {res['pieces_built']} pieces ({res['pieces_skipped']} already there), "
                  f"{res['clips_added']} clips added; out-of-range notes {res['out_of_range_notes']}")
    console.print(f"clips: {res['clips_url']}")


def ingest(
    src: str = typer.Argument(..., help="Folder or s3:// prefix of audio (wav/flac/ogg/mp3) and MIDI."),
    out: str = typer.Option(None, help="Destination root; writes OUT/clips and OUT/quarantine. Default DATA_ROOT/ingested."),
    sidecar: str = typer.Option(None, help="CSV/Parquet with columns path, domain[, split]."),
    domain_pattern: str = typer.Option(None, help="Regex on the relative path with group 'domain'."),
    clip_s: float = typer.Option(None, help="Clip length in seconds (default 10)."),
    overlap_s: float = typer.Option(None, help="Overlap between clips in seconds (default 1)."),
    sample_rate: int = typer.Option(None, help="Output sample rate in Hz (default 16000)."),
    config: Optional[Path] = ConfigOpt,
    prefect: bool = PrefectOpt,
    dest: str = old_argument("DEST", "--out"),
):
    """Ingest a corpus: bad files go to quarantine with a reason; re-runs add nothing. Example:
    reinstrument ingest s3://bucket/raw --out ./data/ingested --domain-pattern '^(?P<domain>[^/]+)/'"""
    from flows.pipeline import ingest_flow
    from jobs.data import ingest_job
    from schemas.configs import IngestConfig

    cfg = load_config(IngestConfig, config, domain_pattern=domain_pattern,
                      clip={"clip_s": clip_s, "overlap_s": overlap_s, "sample_rate_hz": sample_rate})
    out = moved("the positional DEST", "--out", dest, out)
    res = run(ingest_flow, ingest_job, prefect, src, out or f"{root()}/ingested", cfg, sidecar)
    console.print(f"sources {res['sources_seen']} (skipped {res['sources_skipped']} already done), "
                  f"clips added {res['clips_added']}, quarantined {res['quarantined']}")
    console.print(f"clips: {res['clips_url']}\nquarantine: {res['quarantine_url']}")


def augment(
    clips: str = typer.Argument(..., help="Clips dataset URL to read."),
    out: str = typer.Option(None, help="Clips dataset URL to write the shifted clips to (default DATA_ROOT/augmented)."),
    shift: list[int] = typer.Option(None, help="Semitone shift (repeat), e.g. --shift -12 --shift 7."),
    split: list[str] = typer.Option(None, help="Splits to augment (default train)."),
    role: list[str] = typer.Option(None, help="Roles to augment (default clean)."),
    config: Optional[Path] = ConfigOpt,
    prefect: bool = PrefectOpt,
    old_out: str = old_argument("OUT", "--out"),
):
    """Pitch-augment clips: MIDI-backed clips are re-rendered transposed (exact), audio-only
    clips use librosa's phase vocoder. Example: reinstrument augment ./data/corpus/clips --out ./data/aug --shift -12 --shift 12"""
    from flows.pipeline import augment_flow
    from jobs.data import augment_job
    from schemas.configs import AugmentConfig

    cfg = load_config(AugmentConfig, config, shifts_semitones=shift, splits=split, roles=role)
    out = moved("the positional OUT", "--out", old_out, out) or f"{root()}/augmented"
    res = run(augment_flow, augment_job, prefect, clips, out, cfg)
    console.print(f"augmented clips added {res['clips_added']}, skipped {res['clips_skipped']}: {res['out_url']}")


def features(
    clips: list[str] = typer.Argument(..., help="One or more clips dataset URLs."),
    out: str = typer.Option(None, help="Feature root; the set lands in OUT/<kind>-<config hash>."),
    actors: int = typer.Option(2, min=0, help="Ray actors (RAY_ADDRESS selects a cluster); 0: in this process, "
                                           "without Ray."),
    segment_frames: int = typer.Option(None, help="Frames per segment (default 128)."),
    segment_hop_frames: int = typer.Option(None, help="Hop between segments (default 128)."),
    kind: str = typer.Option(None, help="logmel (default) | latent (log-mel segments through --encoder)."),
    encoder: str = typer.Option(None, help="kind latent: the autoencoder (default auto: the champion "
                                           "reinstrument-autoencoder, else the shipped one)."),
    dtype: str = typer.Option(None, help="Storage precision: float16 (default; half the bytes) or float32."),
    config: Optional[Path] = ConfigOpt,
    prefect: bool = PrefectOpt,
    local: bool = typer.Option(False, "--local", hidden=True, help="Deprecated spelling of --actors 0."),
):
    """Extract log-mel (or latent) segments into Parquet shards with normalisation statistics. Examples:
    reinstrument features ./data/corpus/clips --out ./data/features
    reinstrument features ./data/corpus/clips --kind latent --encoder models:/reinstrument-autoencoder@champion"""
    from flows.pipeline import features_flow
    from jobs.data import features_job
    from schemas.configs import FeatureConfig

    if encoder is not None and kind not in (None, "latent"):
        usage_error(f"--encoder is for --kind latent (got --kind {kind})")
    latent = kind == "latent" or (kind is None and encoder is not None)
    cfg = load_config(FeatureConfig, config, segment_frames=segment_frames, segment_hop_frames=segment_hop_frames,
                      kind=kind, encoder=(encoder or "auto") if latent else None, dtype=dtype)
    actors = 0 if moved("--local", "--actors 0", local, None) else actors
    res = run(features_flow, features_job, prefect, list(clips), out or f"{root()}/features", cfg, actors, actors == 0)
    console.print(f"feature shards added {res['shards_added']} (inputs already done {res['skipped']}), "
                  f"rows {res['rows']}\nfeatures: {res['features_url']}")


def inspect(url: str = typer.Argument(..., help="A dataset URL (the folder holding _commits/).")):
    """Show a dataset's manifest: table, shards, rows, and a per-column breakdown."""
    from jobs.data import inspect_job

    about, counts = inspect_job(url)
    console.print(f"{about['table']} v{about['schema_version']}: {about['commits']} commits, {about['shards']} shards, "
                  f"{about['rows']} rows listed, updated {about['updated_at']}; extra keys {about['extra_keys']}")
    print_rows(counts, about["table"])


def mel2audio(
    features_url: str = typer.Argument(..., help="Feature set URL (…/logmel-<hash>)."),
    out: str = typer.Option(None, help="WAV to write (local path or s3://); required."),
    feature_id: str = typer.Option(None, help="Segment to invert (default: the first)."),
    n_iter: int = typer.Option(32, help="Griffin-Lim iterations (when the decoder is Griffin-Lim)."),
    vocoder: str = typer.Option("auto", help="auto (champion, else shipped, else Griffin-Lim) | griffin-lim | "
                                             "shipped:vocoder | a vocoder model URI."),
    out_wav: str = old_argument("OUT_WAV", "--out"),
):
    """Listen to a feature segment: its log-mel decoded to a WAV (the vocoder, else Griffin-Lim)."""
    from jobs.data import mel2audio_job

    out_wav = required("--out", moved("the positional OUT_WAV", "--out", out_wav, out))
    try:
        fid, seconds, decoder = mel2audio_job(features_url, out_wav, feature_id, n_iter, vocoder)
    except ValueError as e:
        fail(e)
    console.print(f"wrote {out_wav} ({seconds:.2f} s) from {fid}, decoded by {decoder}")


@config_app.command("show")
def config_show(kind: str = typer.Argument(..., help=" | ".join(CONFIG_KINDS))):
    """Print a config's defaults as JSON (a starting point for --config)."""
    import schemas.autoencoder
    import schemas.compare
    import schemas.configs
    import schemas.nightly
    import schemas.sweep
    import schemas.training
    import schemas.transform
    import schemas.vocoder

    if kind not in CONFIG_KINDS:
        usage_error(f"unknown config {kind!r}; expected one of {sorted(CONFIG_KINDS)}")
    modules = (schemas.autoencoder, schemas.compare, schemas.configs, schemas.nightly, schemas.sweep, schemas.training,
               schemas.transform, schemas.vocoder)
    cls = next(getattr(m, CONFIG_KINDS[kind]) for m in modules if hasattr(m, CONFIG_KINDS[kind]))
    # the fields with no default, as placeholders to fill in
    required = {"train": {"features_url": "FEATURES_URL", "domain": "DOMAIN"}, "transform": {"model": "MODEL_URI"},
                "sweep": {"model": "MODEL_URI"}, "compare": {"model": "MODEL_URI"}, "vocoder": {"clips_urls": ["CLIPS_URL"]},
                "autoencoder": {"clips_urls": ["CLIPS_URL"]},
                "nightly": {"inputs": "s3://BUCKET/incoming", "targets": [{"model": "MODEL_URI"}]}}.get(kind, {})
    print(cls.model_validate(required).model_dump_json(indent=2))
