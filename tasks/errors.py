"""One-line, stable error text for quarantine reasons and user-facing errors."""
from __future__ import annotations

import re

_ADDRESS = re.compile(r" (object )?at 0x[0-9a-fA-F]+")


def clean_reason(text: str, limit: int = 500) -> str:
    """One line, no memory addresses (`<_io.BytesIO object at 0x7f…>` differs on every run, so a
    reason would never compare equal across re-runs), at most `limit` characters."""
    one = " ".join(_ADDRESS.sub("", str(text)).split())
    return one if len(one) <= limit else one[: limit - 1] + "…"
