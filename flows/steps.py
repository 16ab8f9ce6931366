"""What Prefect adds to a job: each step as a task (retries for the steps that only read and
write idempotently through storage and MLflow), and table artifacts."""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from infra.storage import StorageError
from infra.tracking import is_server_fault

R = TypeVar("R")
# Steps that may safely run again after a transient failure (S3 or MLflow hiccups): each one
# skips the work already committed, so a retry resumes instead of redoing or duplicating.
RETRIED = {"corpus_job", "ingest_job", "augment_job", "features_job", "transform", "reference_stats"}


def transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's retry condition: retry only what a second try can fix (an S3 fault that outlived
    storage's own retries, a dropped connection, a timeout, an MLflow server error); a bad config
    or input fails at once instead of three times."""
    try:
        state.result()
    except (StorageError, ConnectionError, TimeoutError):
        return True
    except Exception as e:  # noqa: BLE001 - anything else is the input's or the code's fault
        return is_server_fault(e)
    return False


@functools.cache
def _task(fn: Callable[..., R]):
    return task(fn, name=fn.__name__.removesuffix("_job").replace("_", "-"), cache_policy=NO_CACHE,
                retries=2 if fn.__name__ in RETRIED else 0, retry_delay_seconds=[10, 60], retry_condition_fn=transient)


def prefect_step(fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
    """The jobs' Step runner under a flow: `fn` runs as a Prefect task of the same name."""
    return _task(fn)(*args, **kwargs)


def table_artifact(key: str, rows: list[dict], description: str) -> None:
    try:
        create_table_artifact(key=key, table=rows, description=description)
    except Exception as e:  # an artifact is a courtesy; never fail the flow over it
        print(f"could not create artifact {key}: {e}")
