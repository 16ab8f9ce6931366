"""Prefect flows of the data plane. Thin: each calls the pure function in tasks/ (or the Ray
adapter) with a typed config and returns a JSON-able summary; Prefect adds retries, logs and
run history. Business logic is tested through `.fn()` without a server."""
from __future__ import annotations

import dataclasses

from prefect import flow, task
from prefect.artifacts import create_table_artifact

from infra.settings import get_settings
from schemas.configs import AugmentConfig, CorpusConfig, FeatureConfig, IngestConfig
from tasks.augment import run_augment
from tasks.corpus import run_corpus
from tasks.ingest import run_ingest


@task(name="build-corpus")
def build_corpus_task(config: CorpusConfig, dest: str, workers: int) -> dict:
    return dataclasses.asdict(run_corpus(config, dest, shard_rows=get_settings().shard_rows, workers=workers))


@flow(name="corpus-build", log_prints=True)
def corpus_build_flow(dest: str, config: CorpusConfig = CorpusConfig(), workers: int = 2) -> dict:
    """Render the reference corpus (clean clips, MIDI guides, degraded guides) into DEST/clips."""
    result = build_corpus_task(config, dest, workers)
    _table_artifact("corpus-summary", result["summary"], "Reference corpus: pieces, clips, minutes")
    return result


@task(name="ingest-sources")
def ingest_task(src: str, dest: str, config: IngestConfig, sidecar: str | None) -> dict:
    return dataclasses.asdict(run_ingest(src, dest, config, sidecar, shard_rows=get_settings().shard_rows))


@flow(name="ingest", log_prints=True)
def ingest_flow(src: str, dest: str, config: IngestConfig = IngestConfig(), sidecar: str | None = None) -> dict:
    """Decode, validate, resample, loudness-normalise and clip SRC into DEST/clips."""
    return ingest_task(src, dest, config, sidecar)


@task(name="augment-clips")
def augment_task(clips: str, out: str, config: AugmentConfig) -> dict:
    return dataclasses.asdict(run_augment(clips, out, config, shard_rows=get_settings().shard_rows))


@flow(name="augment", log_prints=True)
def augment_flow(clips: str, out: str, config: AugmentConfig = AugmentConfig()) -> dict:
    """Pitch-shift selected clips of CLIPS into the clips dataset OUT."""
    return augment_task(clips, out, config)


@task(name="extract-features")
def features_task(clips: list[str], out: str, config: FeatureConfig, actors: int, local: bool) -> dict:
    from ray_actors.features import extract_features

    return extract_features(clips, out, config, num_actors=actors, local=local)


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
