"""A tiny progress bar on stderr, without a tqdm dependency.

Validation over a user's data set can take minutes; a bar says it is moving. It stays silent
for loops that end within ~2 seconds, and when stderr is not a terminal (logs, CI) unless
EDGEC_PROGRESS=1 asks for it (EDGEC_PROGRESS=0 silences it on a terminal too).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TextIO, TypeVar

T = TypeVar("T")

DELAY_S = 2.0  # nothing is printed before the loop has run this long
INTERVAL_S = 0.2  # at most 5 updates a second
WIDTH = 24


def _enabled(stream: TextIO) -> bool:
    flag = os.environ.get("EDGEC_PROGRESS")
    if flag in ("0", "1"):
        return flag == "1"
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _line(label: str, done: int, total: int, elapsed: float) -> str:
    frac = min(done / total, 1.0) if total > 0 else 0.0
    bar = "#" * int(frac * WIDTH)
    return (f"\r{label} [{bar:<{WIDTH}}] {done}/{total} {frac:4.0%} "
            f"{elapsed:.0f}s")


def progress(iterable: Iterable[T], total: int, label: str,
             stream: TextIO | None = None) -> Iterator[T]:
    """Yields the items of iterable, drawing `label [###   ] done/total pct elapsed` on stderr
    (or stream) once the loop has run ~2 s; `total` counts items. Ends with a newline when
    anything was drawn, also when the loop stops early."""
    out = stream if stream is not None else sys.stderr
    enabled = _enabled(out)
    start = time.monotonic()
    last = 0.0
    shown = False
    done = 0
    try:
        for item in iterable:
            yield item
            done += 1
            if not enabled:
                continue
            now = time.monotonic()
            if now - start >= DELAY_S and now - last >= INTERVAL_S:
                out.write(_line(label, done, total, now - start))
                out.flush()
                shown, last = True, now
    finally:
        if shown:
            out.write(_line(label, done, total, time.monotonic() - start) + "\n")
            out.flush()
