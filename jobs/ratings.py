"""`reinstrument ratings import`: a listening test's ratings, exported by a report page's blind
form, stored with the report they were made on (report/ratings/<sha256>.json: a file imported
twice is stored once), checked against what that page played, aggregated over every listener so
far (post-screened, tasks/ratings.py), shown on the page again next to FAD and JD, and logged to
the page's MLflow run."""
from __future__ import annotations

import hashlib
import re

from pydantic import ValidationError

from infra import tracking
from infra.storage import Storage
from schemas.ratings import RatingsFile, RatingsSummary
from tasks.listening import REPORT_DATA
from tasks.ratings import check_against_page, summarise
from tasks.report import Report, render

RATINGS = "ratings"


def _report_folder(report_url: str) -> Storage:
    url = report_url.rstrip("/")
    folder = Storage(url.rsplit("/", 1)[0] if url.endswith(".html") else url)
    if not folder.exists(REPORT_DATA):
        raise ValueError(f"{report_url} is not a report folder written by this version (no {REPORT_DATA} there): "
                         "expected the folder of a sweep's or comparison's report.html, e.g. OUT/sweeps/<id>/report")
    return folder


def _slug(condition: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", condition).strip("_")[:200]


def ratings_import_job(ratings_url: str, report_url: str) -> RatingsSummary:
    """Store RATINGS_URL's file with the report at REPORT_URL, then aggregate and re-render."""
    folder = _report_folder(report_url)
    report = Report.from_json(folder.read_bytes(REPORT_DATA).decode())
    parent, _, name = ratings_url.rpartition("/")
    source = Storage(parent or ".")
    if not source.exists(name):
        raise FileNotFoundError(f"no ratings file at {ratings_url} (the form's export: ratings-<page>-<name>.json)")
    data = source.read_bytes(name)
    try:
        ratings = RatingsFile.model_validate_json(data)
    except ValidationError as e:
        raise ValueError(f"{ratings_url} is not a ratings file exported by a report's form: "
                         f"{e.errors()[0]['loc']}: {e.errors()[0]['msg']}") from None
    check_against_page(ratings, report.page_id, report.conditions())
    folder.write_bytes(f"{RATINGS}/{hashlib.sha256(data).hexdigest()[:16]}.json", data)
    files = [RatingsFile.model_validate_json(folder.read_bytes(rel)) for rel in sorted(folder.find(RATINGS))
             if rel.endswith(".json")]
    order = [c for conds in report.conditions().values() for c in conds]
    summary = summarise(files, order=list(dict.fromkeys(order)))
    report.ratings = summary.model_dump(mode="json")
    folder.write_bytes(REPORT_DATA, report.to_json().encode())
    folder.write_bytes("report.html", render(report).encode())
    if report.mlflow_run_id:
        run = tracking.TrackedRun(report.mlflow_run_id)
        run.metrics({f"mushra_{_slug(r.condition)}": r.mean for r in summary.rows} | {"mushra_listeners": summary.listeners})
        run.artifact(f"{hashlib.sha256(data).hexdigest()[:16]}.json", data, "ratings")
    return summary
