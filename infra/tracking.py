"""MLflow, behind one facade: `TrackedRun` (a run: params, metrics, artifacts from bytes, tables,
finish) and the model registry (log a model, resolve an alias once, read a model's checkpoint).
Nothing outside infra/ touches an MlflowClient. The tracking store is MLflow on a local sqlite
file by default (MLFLOW_TRACKING_URI for a server); the artifact root is a local folder by
default (REINSTRUMENT_MLFLOW_ARTIFACTS, e.g. s3://bucket/mlflow, with the endpoint from
AWS_ENDPOINT_URL / MLFLOW_S3_ENDPOINT_URL)."""
from __future__ import annotations

import io
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import mlflow.pyfunc
import numpy as np

from infra.secrets import redact, redact_obj
from infra.shipped import SHIPPED, pinned_shipped, shipped_names
from infra.settings import get_settings
from infra.storage import Storage

CHAMPION = "champion"
PIP_REQUIREMENTS = ["reinstrument", "torch==2.11.0", "torchaudio==2.11.0"]
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value


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


def client() -> mlflow.MlflowClient:
    """The raw client, for infra/ and tests only. MLflow's S3 artifact store reads
    MLFLOW_S3_ENDPOINT_URL alone, so it follows AWS_ENDPOINT_URL unless set on its own."""
    if os.environ.get("AWS_ENDPOINT_URL") and not os.environ.get("MLFLOW_S3_ENDPOINT_URL"):
        os.environ["MLFLOW_S3_ENDPOINT_URL"] = os.environ["AWS_ENDPOINT_URL"]
    uri = tracking_uri()
    if mlflow.get_tracking_uri() != uri:
        mlflow.set_tracking_uri(uri)
    return mlflow.MlflowClient(uri)


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


class TrackedRun:
    """One MLflow run, as every job uses it: start (or resume by ID), params from a config,
    metrics, artifacts from bytes or a storage folder, a metrics table, finish. As a context
    manager it ends FAILED (KILLED on Ctrl-C) when the job raises, FINISHED never implicitly:
    a job says when it is done (`finish`), so a resumable job can leave its run open."""

    def __init__(self, run_id: str):
        self.id = run_id

    @classmethod
    def start(cls, experiment: str, name: str, *, tags: dict[str, str] | None = None,
              parent: str | None = None) -> "TrackedRun":
        tags = redact_obj(dict(tags or {})) | ({"mlflow.parentRunId": parent} if parent else {})
        return cls(client().create_run(experiment_id(experiment), run_name=redact(name), tags=tags).info.run_id)

    def params(self, values: dict) -> "TrackedRun":
        """Nested dicts are flattened ('edm.sigma_data'); values are cut to MLflow's limit; no
        URL keeps its password (infra/secrets.py)."""
        c = client()
        for k, v in flatten(redact_obj(values)).items():
            c.log_param(self.id, k, v[:MAX_PARAM_CHARS])
        return self

    def metrics(self, values: dict[str, float | None], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step or 0) for k, v in values.items() if v is not None]
        for i in range(0, len(batch), 1000):  # MLflow's limit per log_batch call
            client().log_batch(self.id, metrics=batch[i:i + 1000])

    def tag(self, key: str, value: str) -> None:
        client().set_tag(self.id, key, redact(value))

    def tags(self) -> dict[str, str]:
        return client().get_run(self.id).data.tags

    def artifact(self, name: str, data: bytes, folder: str | None = None) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_bytes(data)
            client().log_artifact(self.id, str(path), folder)

    def artifacts_from(self, storage: Storage, prefix: str, folder: str) -> None:
        """Every object under `prefix` of a storage folder, keeping its relative layout."""
        with tempfile.TemporaryDirectory() as tmp:
            for rel in storage.find(prefix):
                path = Path(tmp) / Path(rel).relative_to(prefix)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(storage.read_bytes(rel))
            if any(Path(tmp).iterdir()):
                client().log_artifacts(self.id, tmp, folder)

    def table(self, rows: list[dict], artifact_name: str = "metrics.parquet") -> None:
        """A `metrics` table: each row as a metric named after what it is (`fad_musicnn-msd`,
        `jd`, ... with `_ci_low`/`_ci_high`; grid coordinates appended when the table spans
        several points) and the whole table as a Parquet artifact."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from schemas.tables import METRICS

        points = {(r["method"], r["task"], r["t_init"], r["sigma_start"], r["lam"]) for r in rows}
        values: dict[str, float | None] = {}
        for r in rows:
            name = r["metric"] + (f"_{r['embedding']}" if r["embedding"] else "")
            if len(points) > 1:
                coords = {"t": r["t_init"], "s": r["sigma_start"], "l": r["lam"]}
                name += "/" + "_".join([r["method"], r["task"]] + [f"{k}{v:g}" for k, v in coords.items() if v is not None])
            values |= {name: r["mean"], f"{name}_ci_low": r["ci_low"], f"{name}_ci_high": r["ci_high"]}
        self.metrics(values)
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows, schema=METRICS), buf)
        self.artifact(artifact_name, buf.getvalue())

    def finish(self, status: str = "FINISHED") -> None:
        client().set_terminated(self.id, status)

    @contextmanager
    def failed_on_error(self) -> Iterator["TrackedRun"]:
        """Ends the run FAILED (KILLED on Ctrl-C) if the block raises, with the error as a tag and
        its traceback as `error.txt`; otherwise it would show RUNNING forever. The job's own error is what the user needs, so a tracking error while
        marking the run is not allowed to replace it."""
        try:
            yield self
        except BaseException as e:
            try:  # what the command printed as one line, whole here (no URL's password)
                import traceback

                self.tag("reinstrument.error", f"{type(e).__name__}: {str(e)[:MAX_PARAM_CHARS]}")
                self.artifact("error.txt", redact("".join(traceback.format_exception(e))).encode())
            except Exception:  # noqa: BLE001 - see the docstring
                pass
            try:
                self.finish("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
            except Exception:  # noqa: BLE001 - see the docstring
                pass
            raise


class MetricLogger:
    """Batched metric logging to one run, usable from a Ray worker (tracking URI + run ID; no URI:
    this process's own, which a worker takes from the driver's private environment file)."""

    def __init__(self, uri: str | None, run_id: str):
        self.client, self.run_id = mlflow.MlflowClient(uri or tracking_uri()), run_id

    def log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])


# -- the model registry ---------------------------------------------------------------------
CHECKPOINT_ARTIFACT = "model.pt"


class _DropPipVersionNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Failed to resolve installed pip version" not in record.getMessage()


@contextmanager
def _without_pip_version_notice():
    """The environment is uv-made and holds no pip; MLflow then warns, on every model logged, that
    conda.yaml names pip without a version. The model's requirements are pinned (PIP_REQUIREMENTS)."""
    log, notice = logging.getLogger("mlflow.utils.environment"), _DropPipVersionNotice()
    log.addFilter(notice)
    try:
        yield
    finally:
        log.removeFilter(notice)


def log_model(run: TrackedRun, checkpoint: bytes, *, code: Path, artifact: str, n_bins: int,
              conditional: bool, registered_name: str | None) -> str:
    """Log a checkpoint as an MLflow pyfunc model logged from code (`code`: the python model file,
    which lives above tasks/; no pickled objects) with a signature whose frame axis is free, and
    register it. Returns the new version ('' when not registered)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec

    client()
    spec = lambda name=None: TensorSpec(np.dtype(np.float32), (-1, n_bins, -1), name)  # noqa: E731
    sig = ModelSignature(inputs=Schema([spec("x"), spec("cond")] if conditional else [spec()]),
                         outputs=Schema([spec()]), params=ParamSchema([ParamSpec("sigma", "double", 1.0)]))
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_id=run.id), warnings.catch_warnings(), \
            _without_pip_version_notice():
        # The signature is given explicitly (tensor specs with free frame counts); MLflow's advice
        # to add an input example does not apply.
        warnings.filterwarnings("ignore", message=".*input example.*")
        path = Path(tmp) / CHECKPOINT_ARTIFACT
        path.write_bytes(checkpoint)
        info = mlflow.pyfunc.log_model(name=artifact, python_model=str(code), artifacts={"checkpoint": str(path)},
                                       signature=sig, pip_requirements=PIP_REQUIREMENTS,
                                       registered_model_name=registered_name)
    return str(info.registered_model_version or "")


def model_checkpoint(model_uri: str) -> bytes:
    """The checkpoint bytes of a logged model (models:/name/version, models:/name@alias, runs:/…)
    or a shipped one (shipped:<kind>), read as a file: the model's python code is not executed."""
    if model_uri.startswith(SHIPPED):
        return pinned_shipped(model_uri)[1]
    from mlflow.exceptions import MlflowException

    client()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
        except MlflowException as e:  # MLflow's own text spans lines ('##### File x #####')
            first = next((ln for ln in str(e).splitlines() if ln.strip() and not ln.startswith("#")), type(e).__name__)
            raise ValueError(f"no model at {model_uri} in {tracking_uri()} ({first.strip()})") from None
        found = list(local.rglob(CHECKPOINT_ARTIFACT))
        if len(found) != 1:
            raise ValueError(f"{model_uri} is not a reinstrument model (expected one {CHECKPOINT_ARTIFACT} artifact, "
                             f"found {len(found)})")
        return found[0].read_bytes()


def registered_name(domain: str, cond_domain: str | None = None, latent: bool = False) -> str:
    """Unconditional models (warm start, DDIB) are `reinstrument-<domain>`; conditional-baseline
    models name their source too, so they never take an unconditional model's alias; latent models
    end in `-latent` (their validation losses are not comparable with a log-mel model's)."""
    source = "any" if cond_domain == "*" else cond_domain  # "*": any other of a labelled model's instruments
    name = f"reinstrument-{domain}" if cond_domain is None else f"reinstrument-cond-{source}-to-{domain}"
    return f"{name}-latent" if latent else name


def registered_name_of(card: dict) -> str:
    """The registry name a model card belongs under: `reinstrument-vocoder`, `reinstrument-autoencoder`,
    or a denoiser's registered_name (the train job registers by it; so does shipping a file)."""
    kind = card.get("kind")
    if kind in ("vocoder", "autoencoder"):
        return f"reinstrument-{kind}"
    if kind == "denoiser":
        return registered_name(card["domain"], card.get("cond_domain"), latent=card.get("representation") == "latent")
    raise ValueError(f"checkpoint of kind {kind!r}: expected a denoiser, a vocoder or an autoencoder")


def resolve_model(uri: str) -> tuple[str, str]:
    """(pinned URI, 'name/version') for a registry URI; an alias is resolved once, so a champion
    promoted mid-run cannot mix two models into one run. A shipped model is pinned by its file's
    checksum. A run's artifact (runs:/<run id>/<path>) passes as it is. Anything else is refused
    here, before a run or a worker exists, with the forms a model URI takes."""
    from mlflow.exceptions import MlflowException

    if uri.startswith(SHIPPED):
        pinned, _ = pinned_shipped(uri)
        return pinned, pinned
    if uri.startswith("runs:/") and len(uri) > len("runs:/"):
        return uri, uri
    ref = uri[len("models:/"):] if uri.startswith("models:/") else ""
    if "@" in ref:
        name, alias = ref.split("@", 1)
        try:
            version = client().get_model_version_by_alias(name, alias).version
        except MlflowException:
            raise ValueError(f"no model version {name!r} has alias {alias!r} in {tracking_uri()}; "
                             "train and register one first (reinstrument train ...)") from None
    elif "/" in ref.strip("/"):  # a version: its existence is checked where its checkpoint is read
        name, version = ref.rsplit("/", 1)
    else:
        raise ValueError(f"model {uri!r}: expected models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/PATH or "
                         f"shipped:NAME (shipped: {', '.join(shipped_names()) or 'none'})")
    return f"models:/{name}/{version}", f"{name}/{version}"


def champion_version(name: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client().get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None


def set_champion(name: str, version: str) -> None:
    client().set_registered_model_alias(name, CHAMPION, version)


def tag_model_version(name: str, version: str, key: str, value: str) -> None:
    client().set_model_version_tag(name, version, key, value)


def version_tag(name: str, version: str, key: str) -> str | None:
    return client().get_model_version(name, version).tags.get(key)


def find_version(name: str, key: str, value: str) -> str | None:
    """The version of a registered model that carries tag key=value (the newest if several)."""
    found = [int(v.version) for v in client().search_model_versions(f"name='{name}'") if v.tags.get(key) == value]
    return str(max(found)) if found else None


def is_server_fault(e: BaseException) -> bool:
    """An MLflow error a second try may not see: the tracking server's 5xx (not a missing model,
    a bad parameter, or anything that is not MLflow's)."""
    from mlflow.exceptions import MlflowException

    return isinstance(e, MlflowException) and e.get_http_status_code() >= 500
