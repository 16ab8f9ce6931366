"""MLflow: where runs, metrics, artifacts and registered models go. The tracking store is MLflow
on a local sqlite file by default (MLFLOW_TRACKING_URI for a server); the artifact root is a
local folder by default (REINSTRUMENT_MLFLOW_ARTIFACTS, e.g. s3://bucket/mlflow, with the
endpoint from AWS_ENDPOINT_URL / MLFLOW_S3_ENDPOINT_URL)."""
from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import mlflow.pyfunc
import numpy as np

from infra.settings import get_settings

CHAMPION = "champion"
PIP_REQUIREMENTS = ["reinstrument", "torch==2.11.0", "torchaudio==2.11.0"]


def local_root() -> Path:
    root = get_settings().data_root
    return Path(root if "://" not in root else "./reinstrument-data").resolve()


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set, else sqlite in the local data root."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    root = local_root()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def artifact_root() -> str:
    return os.environ.get("REINSTRUMENT_MLFLOW_ARTIFACTS") or (local_root() / "mlartifacts").as_uri()


def client():
    # The S3 artifact store reads MLFLOW_S3_ENDPOINT_URL; default it to the AWS endpoint.
    if os.environ.get("AWS_ENDPOINT_URL") and not os.environ.get("MLFLOW_S3_ENDPOINT_URL"):
        os.environ["MLFLOW_S3_ENDPOINT_URL"] = os.environ["AWS_ENDPOINT_URL"]
    mlflow.set_tracking_uri(tracking_uri())
    return mlflow.MlflowClient(tracking_uri())


@contextmanager
def ends_failed_on_error(run_id: str) -> Iterator[None]:
    """A job's MLflow run ends FAILED (KILLED on Ctrl-C) when the job raises; otherwise it would
    show RUNNING forever. The job's own error is what the user needs, so a tracking error while
    marking the run is not allowed to replace it."""
    try:
        yield
    except BaseException as e:
        try:
            client().set_terminated(run_id, "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        except Exception:  # noqa: BLE001 - see the docstring
            pass
        raise


def experiment_id(name: str) -> str:
    c = client()
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return c.create_experiment(name, artifact_location=f"{artifact_root().rstrip('/')}/{name}")


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    """Nested config -> MLflow params ('edm.sigma_data': '1.0')."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = str(v)
    return out


class MetricLogger:
    """Batched metric logging to one run, usable from a Ray worker (plain tracking URI + run ID)."""

    def __init__(self, uri: str, run_id: str):
        self.client, self.run_id = mlflow.MlflowClient(uri), run_id

    def log(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])


def log_denoiser(run_id: str, checkpoint: bytes, n_mels: int, registered_name: str | None,
                 conditional: bool = False):
    """Log the checkpoint as an MLflow pyfunc model (frames dimension free) and register it.
    The model is logged from code (infra/mlflow_model.py), not as a pickled object."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec

    client()
    mel_spec = lambda name=None: TensorSpec(np.dtype(np.float32), (-1, n_mels, -1), name)  # noqa: E731
    inputs = Schema([mel_spec("x"), mel_spec("cond")] if conditional else [mel_spec()])
    sig = ModelSignature(inputs=inputs,
                         outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, n_mels, -1))]),
                         params=ParamSchema([ParamSpec("sigma", "double", 1.0)]))
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_id=run_id), warnings.catch_warnings():
        # The signature is given explicitly (tensor specs with free frame counts); MLflow's advice
        # to add an input example / predict type hints does not apply.
        warnings.filterwarnings("ignore", message=".*input example.*")
        warnings.filterwarnings("ignore", message=".*type hints to the `predict` method.*")
        path = Path(tmp) / "model.pt"
        path.write_bytes(checkpoint)
        return mlflow.pyfunc.log_model(name="denoiser", python_model=str(Path(__file__).with_name("mlflow_model.py")), artifacts={"checkpoint": str(path)},
                                       signature=sig, pip_requirements=PIP_REQUIREMENTS,
                                       registered_model_name=registered_name)


def load_denoiser(model_uri: str):
    """(EDMPrecond, metadata) from e.g. 'models:/reinstrument-flute@champion'."""
    client()
    wrapper = mlflow.pyfunc.load_model(model_uri).unwrap_python_model()
    return wrapper.model, wrapper.metadata


def registered_name(domain: str, cond_domain: str | None = None) -> str:
    """Unconditional models (warm start, DDIB) are `reinstrument-<domain>`; conditional-baseline
    models name their source too, so they never take an unconditional model's alias."""
    return f"reinstrument-{domain}" if cond_domain is None else f"reinstrument-cond-{cond_domain}-to-{domain}"


def resolve_model(uri: str) -> tuple[str, str]:
    """(pinned URI, 'name/version') for a registry URI; an alias is resolved once, so a champion
    promoted mid-run cannot mix two models into one run. Other URIs (runs:/...) pass as they are."""
    if not uri.startswith("models:/"):
        return uri, uri
    ref = uri[len("models:/"):]
    if "@" in ref:
        name, alias = ref.split("@", 1)
        from mlflow.exceptions import MlflowException

        try:
            version = client().get_model_version_by_alias(name, alias).version
        except MlflowException as e:
            raise ValueError(f"no model version {name!r} has alias {alias!r} in {tracking_uri()}; "
                             "train and register one first (reinstrument train ...)") from e
    else:
        name, version = ref.rsplit("/", 1)
    return f"models:/{name}/{version}", f"{name}/{version}"


def champion_version(name: str):
    from mlflow.exceptions import MlflowException

    try:
        return client().get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def log_metrics_table(run_id: str, rows: list[dict], artifact_name: str = "metrics.parquet") -> None:
    """Log a `metrics` table to one MLflow run: each row as a metric named after what it is
    (`fad_musicnn-msd`, `jd`, ... with `_ci_low`/`_ci_high`; grid coordinates appended when the
    table spans several points) and the whole table as a Parquet artifact."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from schemas.tables import METRICS

    c = client()
    points = {(r["method"], r["task"], r["t_init"], r["sigma_start"], r["lam"]) for r in rows}
    for r in rows:
        name = r["metric"] + (f"_{r['embedding']}" if r["embedding"] else "")
        if len(points) > 1:
            coords = {"t": r["t_init"], "s": r["sigma_start"], "l": r["lam"]}
            name += "/" + "_".join([r["method"], r["task"]] + [f"{k}{v:g}" for k, v in coords.items() if v is not None])
        c.log_metric(run_id, name, r["mean"])
        for bound in ("ci_low", "ci_high"):
            if r[bound] is not None:
                c.log_metric(run_id, f"{name}_{bound}", r[bound])
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, artifact_name)
        pq.write_table(pa.Table.from_pylist(rows, schema=METRICS), path)
        c.log_artifact(run_id, path)
