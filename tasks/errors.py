"""One-line, stable error text for quarantine reasons and user-facing errors."""
from __future__ import annotations

import re

_ADDRESS = re.compile(r" (object )?at 0x[0-9a-fA-F]+")


def clean_reason(text: str, limit: int = 500) -> str:
    """One line, no memory addresses (`<_io.BytesIO object at 0x7f…>` differs on every run, so a
    reason would never compare equal across re-runs), at most `limit` characters."""
    one = " ".join(_ADDRESS.sub("", str(text)).split())
    return one if len(one) <= limit else one[: limit - 1] + "…"


# Errors that describe the user's input or environment (a path, a config, an endpoint, a model
# URI): one line for the user, not a traceback. Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, OSError, TimeoutError)
USER_ERROR_PACKAGES = ("botocore", "aiobotocore", "s3fs", "mlflow")


def user_error(e: BaseException) -> BaseException | None:
    """The user-facing error in `e` (a Ray task error is unwrapped to its cause), else None."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, BaseException) and cause is not e:
        e = cause
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
