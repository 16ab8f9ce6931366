"""One-line, stable error text for quarantine reasons and user-facing errors."""
from __future__ import annotations

import re

from infra.secrets import redact

_ADDRESS = re.compile(r" (object )?at 0x[0-9a-fA-F]+")


def clean_reason(text: str, limit: int = 500) -> str:
    """One line, no memory addresses (`<_io.BytesIO object at 0x7f…>` differs on every run, so a
    reason would never compare equal across re-runs), no password of a URL (infra/secrets.py), at
    most `limit` characters."""
    one = " ".join(redact(_ADDRESS.sub("", str(text))).split())
    return one if len(one) <= limit else one[: limit - 1] + "…"


# Errors that describe the user's input or environment (a path, a config, an endpoint, a model
# URI): one line for the user, not a traceback. Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, OSError, TimeoutError)
USER_ERROR_PACKAGES = ("botocore", "aiobotocore", "s3fs", "mlflow")


def _unwrap(e: BaseException) -> BaseException:
    """What raised first, out of Ray's wrappers (read by attribute: tasks/ does not import Ray): a
    task's or actor call's error (`cause`), a Ray Train worker group's failures (lowest rank
    first) or its controller's failure."""
    for _ in range(5):  # wrappers nest (a worker's RayTaskError inside WorkerGroupError)
        failures = getattr(e, "worker_failures", None)
        if isinstance(failures, dict) and failures:
            inner = failures[min(failures)]
        else:
            inner = getattr(e, "cause", None) or getattr(e, "controller_failure", None)
        if not isinstance(inner, BaseException) or inner is e:
            return e
        e = inner
    return e


def user_error(e: BaseException) -> BaseException | None:
    """The user-facing error in `e` (Ray's wrappers unwrapped to the cause), else None."""
    e = _unwrap(e)
    if isinstance(e, USER_ERRORS) or type(e).__module__.split(".")[0] in USER_ERROR_PACKAGES:
        return e
    return None


def describe(e: BaseException) -> str:
    """`Type: message` on one line; a config validation error lists each field and its problem."""
    from pydantic import ValidationError

    if isinstance(e, ValidationError):
        text = f"invalid {e.title}: " + "; ".join(
            f"{'.'.join(map(str, x['loc'])) or 'value'}: {x['msg']}" for x in e.errors())
    else:
        text = str(e)
    return f"{type(e).__name__}: {clean_reason(text, 2000)}"
