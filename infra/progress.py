"""Progress for long work: a rich bar on a terminal, periodic log lines otherwise (CI, Prefect
logs), nothing when REINSTRUMENT_PROGRESS=0."""
from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from infra.settings import get_settings

T = TypeVar("T")


def time_left(seconds: float) -> str:
    """An ETA as a person reads it: '~40 s left', '~12 min left', '~1 h 05 min left'."""
    if seconds < 90:
        return f"~{seconds:.0f} s left"
    minutes = round(seconds / 60)
    return f"~{minutes} min left" if minutes < 60 else f"~{minutes // 60} h {minutes % 60:02d} min left"


def left_note(eta_s: float | None, done: int, total: int | None) -> str:
    """The tail of a progress line: ', ~12 min left' while work remains and an ETA is known."""
    return f", {time_left(eta_s)}" if eta_s is not None and total and done < total else ""


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
            eta_s = (now - start) / done * (total - done) if total else None
            print(f"[{desc}] {done}{of} in {now - start:.0f} s{left_note(eta_s, done, total)}", file=sys.stderr,
                  flush=True)
            last = now
