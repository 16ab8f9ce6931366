"""Progress for long work: a rich bar on a terminal, periodic log lines otherwise (CI, Prefect
logs), nothing when REINSTRUMENT_PROGRESS=0."""
from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from infra.settings import get_settings

T = TypeVar("T")


def progress(items: Iterable[T], total: int | None, desc: str, every_s: float = 10.0) -> Iterator[T]:
    if not get_settings().progress:
        yield from items
        return
    if sys.stderr.isatty():
        from rich.progress import track
        yield from track(items, total=total, description=desc, transient=False)
        return
    start = last = time.monotonic()
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        if now - last >= every_s or done == total:
            of = f"/{total}" if total else ""
            print(f"[{desc}] {done}{of} in {now - start:.0f} s", file=sys.stderr, flush=True)
            last = now
