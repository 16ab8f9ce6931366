"""Prefect flows of the data plane. Thin: each calls the pure function in tasks/ (or the Ray
adapter) with a typed config and returns a JSON-able summary; Prefect adds retries, logs and
run history. Each job is a plain function (`*_job`) that the CLI calls directly with
--no-prefect (no Prefect API is started) and that the Prefect task wraps."""
from __future__ import annotations

import dataclasses

from prefect import flow, task
from prefect.artifacts import create_table_artifact

from infra.settings import get_settings
from schemas.configs import AugmentConfig, CorpusConfig, FeatureConfig, IngestConfig
from tasks.augment import run_augment
from tasks.corpus import run_corpus
from tasks.ingest import run_ingest


def corpus_job(dest: str, config: CorpusConfig, workers: int) -> dict:
    return dataclasses.asdict(run_corpus(config, dest, shard_rows=get_settings().shard_rows, workers=workers))


def ingest_job(src: str, dest: str, config: IngestConfig, sidecar: str | None) -> dict:
    return dataclasses.asdict(run_ingest(src, dest, config, sidecar, shard_rows=get_settings().shard_rows))


def augment_job(clips: str, out: str, config: AugmentConfig) -> dict:
    return dataclasses.asdict(run_augment(clips, out, config, shard_rows=get_settings().shard_rows))


def features_job(clips: list[str], out: str, config: FeatureConfig, actors: int, local: bool) -> dict:
    from ray_actors.features import extract_features

    return extract_features(clips, out, config, num_actors=actors, local=local)


build_corpus_task = task(name="build-corpus")(corpus_job)
ingest_task = task(name="ingest-sources")(ingest_job)
augment_task = task(name="augment-clips")(augment_job)
features_task = task(name="extract-features")(features_job)


@flow(name="corpus-build", log_prints=True)
def corpus_build_flow(dest: str, config: CorpusConfig = CorpusConfig(), workers: int = 2) -> dict:
    """Render the reference corpus (clean clips, MIDI guides, degraded guides) into DEST/clips."""
    result = build_corpus_task(dest, config, workers)
    _table_artifact("corpus-summary", result["summary"], "Reference corpus: pieces, clips, minutes")
    return result


@flow(name="ingest", log_prints=True)
def ingest_flow(src: str, dest: str, config: IngestConfig = IngestConfig(), sidecar: str | None = None) -> dict:
    """Decode, validate, resample, loudness-normalise and clip SRC into DEST/clips."""
    return ingest_task(src, dest, config, sidecar)


@flow(name="augment", log_prints=True)
def augment_flow(clips: str, out: str, config: AugmentConfig = AugmentConfig()) -> dict:
    """Pitch-shift selected clips of CLIPS into the clips dataset OUT."""
    return augment_task(clips, out, config)


@flow(name="features", log_prints=True)
def features_flow(clips: list[str], out: str, config: FeatureConfig = FeatureConfig(),
                  actors: int = 2, local: bool = False) -> dict:
    """Log-mel segments of every clips dataset in CLIPS, on Ray, into OUT/<kind>-<config hash>."""
    return features_task(clips, out, config, actors, local)


def _table_artifact(key: str, rows: list[dict], description: str) -> None:
    try:
        create_table_artifact(key=key, table=rows, description=description)
    except Exception as e:  # an artifact is a courtesy; never fail the flow over it
        print(f"could not create artifact {key}: {e}")
