"""What a retrain run shows beside its numbers, for flows/retrain.py: heatmaps, the
test-split map, suspected label mistakes (params.yaml `insight:`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from prefect import get_run_logger

from tasks.insight import explain_candidate, find_suspects
from tasks.tracking import log_insight
from visiongate.outcomes import Insight

if TYPE_CHECKING:
    from flows.retrain import Job


def show_insight(job: Job, checkpoint: str, champion: str | None, run_id: str) -> Insight:
    """What the run shows beside its numbers (params.yaml `insight:`): heatmaps of the
    worst test images (the champion's beside the candidate's), the test-split map, and the
    suspected label mistakes of train and val. Logged under `map/` and `suspects/`. None
    of it decides anything: a part that fails is a warning and a line in the report."""
    cfg, out = job.params.insight, job.project.insight(run_id)
    written, count, flagged, top, problems = [], 0, 0, (), []
    try:
        if cfg.heatmaps or cfg.test_map:
            written = explain_candidate(checkpoint, champion, job.split("test"),
                                        str(job.project.plots(run_id)), str(out / "map"),
                                        cfg.heatmaps, cfg.test_map, cfg.method)
    except Exception as err:  # noqa: BLE001 — diagnostics never block the gate
        problems.append(f"heatmaps / test-split map: {type(err).__name__}: {err}"[:500])
    try:
        if cfg.suspects:
            count, flagged, top = find_suspects(
                checkpoint, job.data_root, str(job.project.prepared(job.params.dataset)),
                str(out / "suspects"))
    except Exception as err:  # noqa: BLE001
        problems.append(f"suspected label mistakes: {type(err).__name__}: {err}"[:500])
    for problem in problems:
        get_run_logger().warning("%s: %s", job.name, problem)
    log_insight(job.uri, run_id, str(out))
    names = {Path(p).name for p in written}
    return Insight(*(f"{where}/{name}" if name in names else None for where, name in (
        ("plots", "heatmaps.png"), ("plots", "test_map.png"), ("map", "embeddings.npz"))),
        "suspects/suspects.csv" if (out / "suspects" / "suspects.csv").is_file() else None,
        count, flagged, top, tuple(problems))
