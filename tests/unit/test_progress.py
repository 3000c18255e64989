"""Progress bars on long steps: shown on a terminal from PROGRESS_FROM items, never for
small inputs; chunked prediction returns every image's answer in order."""

import io
import sys
from pathlib import Path

from visiongate import models, progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_shows_on_a_terminal_only_for_long_steps(monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    for _ in progress.bar(range(5), total=5, desc="short"):
        pass
    assert terminal.getvalue() == ""
    n = progress.PROGRESS_FROM
    for _ in progress.bar(range(n), total=n, desc="re-hash", unit="file"):
        pass
    assert "re-hash: 100%" in terminal.getvalue() and f"{n}/{n}" in terminal.getvalue()


def test_a_log_gets_whole_lines_not_a_flood(monkeypatch):
    log = io.StringIO()  # not a terminal: a worker's or CI's captured output
    monkeypatch.setattr(sys, "stderr", log)
    for _ in progress.bar(range(100_000), total=100_000, desc="validate"):
        pass
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert 2 <= len(lines) <= 4, lines  # the start, the end (a run this short: no middle)
    assert lines[0].startswith("validate:   0%") and "100000/100000" in lines[-1]


def test_predict_answers_every_image_in_order_in_chunks(monkeypatch):
    calls = []

    def fake_load(checkpoint, runtime):  # the model is not what this test is about
        def model(paths):
            calls.append(len(paths))
            return [p.name for p in paths]
        return model

    monkeypatch.setattr(models, "load", fake_load)
    paths = [Path(f"img{i}.png") for i in range(2 * models.PREDICT_CHUNK + 7)]
    assert models.predict(Path("ckpt"), paths) == [p.name for p in paths]
    assert calls == [models.PREDICT_CHUNK, models.PREDICT_CHUNK, 7]
    calls.clear()
    assert models.predict(Path("ckpt"), []) == [] and calls == []
