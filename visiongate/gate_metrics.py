"""Which metrics each task's evaluation produces, and the check that a gate names only
those. Kept apart from visiongate.metrics so that loading params.yaml imports no torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from visiongate.config import GateConfig

# Box/mask metrics that visiongate.metrics reports, in COCOeval.stats order (bbox or segm).
COCO_STAT_NAMES = (
    "map50_95", "map50", "map75", "map_small", "map_medium", "map_large",
    "mar1", "mar10", "mar100", "mar_small", "mar_medium", "mar_large",
)


def gate_metrics(task: str) -> tuple[set[str], set[str]]:
    """(metric names, per-class prefixes) the evaluator produces for a task."""
    if task == "segment":
        return {"miou", "dice", "pixel_acc"}, {"iou"}
    # box metrics, and precision/recall at the operating point (score_threshold)
    names, prefixes = {*COCO_STAT_NAMES, "precision", "recall"}, {"ap", "precision", "recall"}
    if task == "instance":
        names |= {f"mask_{n}" for n in names}
        prefixes |= {"mask_ap"}
    return names, prefixes


def check_gate(section: str, family: str, task: str, gate: GateConfig) -> None:
    """Every gated metric must be one the family's evaluation produces."""
    names, prefixes = gate_metrics(task)
    used = [*gate.floors, *gate.max_drop] + ([gate.robustness.metric] if gate.robustness else [])
    for name in used:
        base = name.split("/", 1)[0] if "/" in name else name
        if name not in names and not ("/" in name and base in prefixes):
            raise ValueError(f"{section}.gate: metric {name!r} is not produced by family "
                             f"{family!r} (task {task}); choose from {sorted(names)} or "
                             f"<prefix>/<class> with prefix in {sorted(prefixes)}")
    for prefix in gate.class_floors:
        if prefix not in prefixes:
            raise ValueError(f"{section}.gate.class_floors: prefix {prefix!r} does not exist for "
                             f"family {family!r}; choose from {sorted(prefixes)}")
