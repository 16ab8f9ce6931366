"""What counts as a secret, and the one redaction rule applied wherever configuration leaves the
process (Ray's runtime_env and environment, MLflow params and tags, Prefect parameters and logs,
printed errors, run records).

Two kinds of secret:
- a variable whose *name* holds KEY, SECRET, TOKEN, PASSWORD or CREDENTIAL (any prefix:
  `AWS_SECRET_ACCESS_KEY`, `GITHUB_TOKEN`, `DB_PASSWORD`);
- a *value* that is a URL with userinfo (`postgresql://user:PASSWORD@host/db`,
  `http://user:PASSWORD@proxy`): the standard way to give MLflow or an endpoint a password.
A redacted URL keeps its scheme, host and path and loses its userinfo: `postgresql://***@host/db`.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL", re.IGNORECASE)
MASK = "***"
# Variables that only *point at* secrets (paths), named like secrets but safe to show.
POINTERS = frozenset({"AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", "REINSTRUMENT_WORKER_ENV_FILE"})
# userinfo of a URL (RFC 3986 3.2.1): everything between `scheme://` and the authority's last `@`.
# Two spellings are caught: `user:password@` where the password may hold any character but
# whitespace (an AWS secret key holds `/`, which a careless URL leaves unescaped; the `@` taken is
# the last one before the host), and a plain `user@` within the authority.
_USERINFO = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)"
    r"(?:[^\s/?#@:'\"]*:[^\s'\"]*|[^\s/?#@'\"]+)"
    r"@(?=[^\s@/'\"]*(?:[/?#\s'\"]|$))")


def redact(text: str) -> str:
    """`text` with the userinfo of every URL in it replaced by ***."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)


def has_userinfo(value: str) -> bool:
    return redact(value) != value


def is_secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(name)) and name not in POINTERS


def is_secret(name: str, value: str = "") -> bool:
    """A variable that must not leave the process in clear: by its name, or a URL with userinfo."""
    return is_secret_name(name) or has_userinfo(value)


def redact_value(name: str, value: str) -> str:
    """What may be shown of a variable: *** for a secret name, the URL without userinfo else."""
    return MASK if is_secret_name(name) else redact(value)


def redact_obj(obj):
    """Strings redacted inside nested dicts/lists/tuples (params, records); other values as they are.
    A key named like a secret has its value masked whole."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, Mapping):
        return {k: (MASK if isinstance(k, str) and is_secret_name(k) and isinstance(v, str) and v
                    else redact_obj(v)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact_obj(v) for v in obj)
    return obj


def refuse_userinfo(value: str, what: str) -> None:
    """A storage URL must not carry credentials: they would be stored with every record and log
    that names the URL. One error, the URL redacted, saying where credentials belong instead."""
    if has_userinfo(value):
        raise ValueError(f"{what} {redact(value)} holds credentials in the URL; expected a URL without "
                         "user:password@ (give S3 credentials as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
                         "or AWS_PROFILE)")


def redact_log_records() -> None:
    """Every log record this process creates from now on carries its message with no URL's
    password (its exception text included): one hook at record creation covers every logger and
    handler, Prefect's API handler (what its UI and database keep) as much as the console."""
    import logging

    make = logging.getLogRecordFactory()
    if getattr(make, "redacts", False):
        return

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = make(*args, **kwargs)
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is the logging module's to report
            return record
        clean = redact(msg)
        if clean != msg:
            record.msg, record.args = clean, ()
        if record.exc_info and record.exc_info[1] is not None:
            import traceback

            text = "".join(traceback.format_exception(*record.exc_info))
            if has_userinfo(text):
                record.exc_text = redact(text).rstrip("\n")
        return record

    factory.redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
