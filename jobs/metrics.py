"""`reinstrument metrics fad|jd`: FAD of one audio set against a reference, pitch JD of paired
sets; the metrics table optionally written (Parquet, through the storage module) and logged to
an MLflow run."""
from __future__ import annotations

import io
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from infra.settings import get_settings
from infra.storage import Storage
from infra.tracking import TrackedRun
from schemas.tables import METRICS
from tasks.builders import make_embedding
from tasks.metrics.compute import SetSpec, fad_between, fad_table_rows, jd_between
from tasks.metrics.fad import FadResult
from tasks.metrics.pitch import BasicPitch
from tasks.metrics.sources import is_clips_dataset


@dataclass(frozen=True)
class SetFilter:
    domain: str | None = None
    role: str | None = None
    split: str | None = None


@dataclass
class FadOutcome:
    result: FadResult
    reference_cached: bool
    rows: list[dict]


def emit(rows: list[dict], out: str | None, mlflow_run: str | None) -> None:
    """Write the metrics table to `out` and/or log it to an MLflow run."""
    if out:
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows, schema=METRICS), buf)
        parent, name = out.rsplit("/", 1) if "/" in out else (".", out)
        Storage(parent).write_bytes(name, buf.getvalue())
    if mlflow_run:
        TrackedRun(mlflow_run).table(rows)


def fad_job(evaluated: str, reference: str, *, embedding: str = "musicnn", vggish_weights: str | None = None,
            ref_filter: SetFilter = SetFilter(role="clean"), eval_filter: SetFilter = SetFilter(),
            limit: int | None = None, cache_url: str | None = None, n_boot: int = 200,
            out: str | None = None, mlflow_run: str | None = None) -> FadOutcome:
    """FAD of EVALUATED against REFERENCE: both loudness-normalised, one embedding, bootstrap CI and
    FAD_inf. On a plain folder the reference filter's domain only names the reference."""
    emb = make_embedding(embedding, get_settings().weights_dir, vggish_weights)
    rf = ref_filter if is_clips_dataset(reference) else SetFilter()
    ref = SetSpec(reference, rf.domain, rf.role, rf.split, limit, "reference")
    ev = SetSpec(evaluated, eval_filter.domain, eval_filter.role, eval_filter.split, limit, "evaluated")
    result, cached = fad_between(ev, ref, emb, cache_url=cache_url, reference_domain=ref_filter.domain, n_boot=n_boot)
    rows = fad_table_rows(result, ref, domain=ref_filter.domain)
    emit(rows, out, mlflow_run)
    return FadOutcome(result, cached, rows)


def jd_job(a: str, b: str, *, threshold: float = 0.3, limit: int | None = None, out: str | None = None,
           mlflow_run: str | None = None) -> tuple[list[dict], list[dict]]:
    """Pitch Jaccard distance between paired audio (Basic Pitch): (per-pair values, metrics rows)."""
    values, rows = jd_between(SetSpec(a, limit=limit, label="A"), SetSpec(b, limit=limit, label="B"),
                              BasicPitch(get_settings().weights_dir), threshold=threshold)
    emit(rows, out, mlflow_run)
    return values, rows
