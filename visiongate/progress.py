"""Progress on the long steps (validate, write, the data re-hash, prediction for
evaluation), from PROGRESS_FROM items up: a tqdm bar on a terminal; in a log (a worker's
output, CI, a file) one plain line at the start, then at most every LOG_EVERY_S seconds,
and one at the end — never a flood of carriage returns."""

from __future__ import annotations

import sys
from collections.abc import Iterable

from tqdm import tqdm

PROGRESS_FROM = 200  # items: fewer show nothing
LOG_EVERY_S = 15.0


class _Lines:
    """A stream for tqdm that turns its carriage-return redraws into whole lines."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.strip("\r\n")
        if text.strip():
            self.stream.write(text.rstrip() + "\n")

    def flush(self) -> None:
        self.stream.flush()


def bar(iterable: Iterable | None = None, *, desc: str, unit: str = "img",
        total: int | None = None) -> tqdm:
    """`total`: len(iterable) unless given (a bar updated by hand has no iterable)."""
    total = len(iterable) if total is None else total
    if total < PROGRESS_FROM:
        return tqdm(iterable, total=total, disable=True)
    stream = sys.stderr
    if getattr(stream, "isatty", lambda: False)():
        return tqdm(iterable, total=total, desc=desc, unit=unit, file=stream)
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=_Lines(stream), ascii=True,
                ncols=100, mininterval=LOG_EVERY_S, maxinterval=LOG_EVERY_S * 4)
