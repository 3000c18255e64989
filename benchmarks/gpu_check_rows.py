"""The GPU check's (benchmarks/gpu_check.py) settings and result rows: one row per check,
rendered as a line of the BENCHMARKS.md table."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    """How every family trains: device spec, data size, epochs; imgsz/batch None = defaults."""

    device: str
    images: int
    epochs: int
    imgsz: int | None = None
    batch: int | None = None


@dataclass(frozen=True)
class Row:
    """One check's line of the results table."""

    check: str
    status: str
    train_s: float | None = None
    images_per_s: float | None = None
    amp: str = "–"
    peak_mib: float | str | None = None
    predict_ms: float | None = None
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.status.startswith("FAILED")

    def cells(self) -> list[str]:
        numbers = [(self.train_s, ".1f"), (self.images_per_s, ".1f"), (self.peak_mib, ".0f"),
                   (self.predict_ms, ".1f")]
        shown = ["–" if v is None else v if isinstance(v, str) else format(v, spec)
                 for v, spec in numbers]
        cells = [self.check, self.status, *shown[:2], self.amp, *shown[2:], self.detail]
        return [c.replace("|", "\\|") for c in cells]


def error_line(err: BaseException) -> str:
    """The error's type and first line, short enough for a table cell."""
    lines = str(err).strip().splitlines()
    return f"FAILED: {type(err).__name__}{': ' + lines[0] if lines else ''}"[:200]
