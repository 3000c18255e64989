"""The "Real data" section of BENCHMARKS.md, rendered from bench_real.py's results."""

from __future__ import annotations

import argparse
import math
import sys

from benchmarks.report import machine

SECTION = "## Real data: COCO128 and ISBI membranes, visiongate vs raw"
GOAL_WALL = 1.05  # the issue: visiongate's wall at most 1.05x the reference's


def _f(value, digits: int = 3) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.{digits}f}"


def _s(seconds) -> str:
    return "—" if seconds is None else f"{seconds:.1f} s"


def _wall(side: dict) -> str:
    """Wall seconds and, in brackets, CPU seconds (steadier on a shared machine)."""
    return f"{side['wall']:.1f} s ({side['cpu']:.0f})"


def _mib(n) -> str:
    return f"{n / 2**20:.0f} MiB"


def intro(r: dict, a: argparse.Namespace) -> list[str]:
    argv, kept = r.get("argv", sys.argv[1:]), []
    for i, x in enumerate(argv):  # the run's own arguments, without --write / --save FILE
        if x not in ("--write", "--save") and (i == 0 or argv[i - 1] != "--save"):
            kept.append(x)
    args = " ".join(kept)
    sp = r["splits"]
    lines = [SECTION, ""]
    if a.smoke:
        lines += ["**Smoke run** (`--smoke`: 40 images, 1 epoch, 64 px; U-Net 1 epoch, 64 px): "
                  "it shows the benchmark runs end to end; its numbers measure nothing.", ""]
    lines += [
        "`visiongate retrain` in a fresh project against raw ultralytics / a plain torch loop "
        "on the same splits, epochs, image size, batch, AdamW lr and seed, each in its own "
        f"process. COCO128-seg split 70/15/15 by a seeded hash: train {sp['train']}, val "
        f"{sp['val']}, test {sp['test']} images (the importer keeps a source's split; raw "
        "ultralytics trains on the same folders). YOLO: from scratch "
        f"(`{'`, `'.join(('yolov8n.yaml', 'yolov8n-seg.yaml'))}`), {a.epochs} epochs, "
        f"{a.imgsz} px, batch {a.batch}, lr {a.lr}, nbs = batch, ultralytics' default "
        f"augmentation on both sides. U-Net: base {a.base_channels} channels, "
        f"{a.unet_epochs} epochs, {a.unet_imgsz} px, batch {a.unet_batch}; the plain loop "
        "uses the same UNet class and loss (AdamW + cosine, joint flips / 90° turns, best "
        "val mIoU kept). Every test figure is visiongate's evaluator on the prepared test "
        "split (for a reference: its best weights in a checkpoint folder); ultralytics' own "
        "`val(split=\"test\")` of both best.pt files is the cross-check. Flow: "
        + ("with `--extras` in (a) and (b): the repo's robustness (4 corruptions), ONNX + "
           "OpenVINO export and parity check, heatmaps, test map and suspects." if a.extras
           else "training, evaluation, gate, MLflow logging and registration; its extras "
           "(robustness, exports, heatmaps, test map, suspects) off — `--extras` turns them "
           "on in (a) and (b).")
        + " Wall: the whole process (visiongate: `retrain`, import excluded; reference: "
        "train + evaluation of the test split); \"training\": the flow's `train_model` task "
        "span vs the reference's training alone.", "",
        f"Machine: {machine()}; load average (1 min) {r['load'][0]:.1f} at the start, "
        f"{r['load'][1]:.1f} at the end; whole benchmark {r['total_s'] / 60:.1f} min.", "",
        f"Command: `.venv/bin/python benchmarks/bench_real.py {args} --write`".replace(
            "  ", " "), ""]
    return lines


def comparison(r: dict) -> list[str]:
    rows = ["| task | test metric | visiongate | reference | Δ | ultralytics val: flow / "
            "raw | wall (CPU s): visiongate | wall (CPU s): reference | wall ratio (goal ≤ "
            "1.05×) | training: flow / reference | peak RSS: flow / reference |",
            "|---|---|---:|---:|---:|---|---:|---:|---:|---|---|"]
    wanted = [("detect", "box mAP50", "map50"), ("instance", "box mAP50", "map50"),
              ("instance", "mask mAP50", "mask_map50"), ("unet", "mIoU", "miou")]
    for part, label, key in wanted:
        if part not in r:
            continue
        flow, ref = r[part]["flow"], r[part]["raw"]
        mine, theirs = flow["metrics"].get(key), ref["metrics"].get(key)
        delta = None if mine is None or theirs is None else mine - theirs
        cross = (f"{_f(flow['val'].get(key))} / {_f(ref['val'].get(key))}"
                 if "val" in flow else "—")
        ratio = flow["wall"] / ref["wall"]
        name = {"detect": "detect (YOLOv8n)", "instance": "instance (YOLOv8n-seg)",
                "unet": "semantic (U-Net, ISBI)"}[part]
        rows.append(
            f"| {name} | {label} | {_f(mine)} | {_f(theirs)} | "
            f"{'—' if delta is None else f'{delta:+.3f}'} | {cross} | {_wall(flow)} | "
            f"{_wall(ref)} | **{ratio:.2f}×** (CPU {flow['cpu'] / ref['cpu']:.2f}×) | "
            f"{_s(flow['train_s'])} / {_s(ref['train_s'])} | {_mib(flow['peak'])} / "
            f"{_mib(ref['peak'])} |")
    return rows + [""] if len(rows) > 2 else []


FINETUNES = {  # part: (opening words, metric key, its label, params key, A's / B's epochs arg)
    "finetune": ("(c) Fine-tuning, detect (YOLOv8n): coco's", "map50", "mAP50",
                 "detect.weights", "epochs_a", "epochs"),
    "unet-finetune": ("(d) Fine-tuning, semantic (U-Net): isbi's", "miou", "mIoU",
                      "segment.weights", "unet_epochs", "unet_epochs_b")}


def finetune(r: dict, a: argparse.Namespace, part: str) -> list[str]:
    if part not in r:
        return []
    label, key, shown, param, epochs_a, epochs_b = FINETUNES[part]
    f = r[part]
    na, nb = r["halves"] if part == "finetune" else r["unet_halves"]
    scratch, tuned = f["scratch"]["metrics"][key], f["tuned"]["metrics"][key]
    gain = tuned - scratch
    rel = f"{tuned / scratch:.2f}× " if scratch > 0 else ""
    second = "mAP50-95" if key == "map50" else "Dice"
    rows = [f"{label} train split in two seeded halves, A {na} and B {nb} images, the same "
            f"val and test. A from scratch, {getattr(a, epochs_a)} epochs; its best.pt "
            f"copied to the project's `weights/` and given as `{param}`; B "
            f"{getattr(a, epochs_b, None) or a.unet_epochs} epochs each way.", "",
            f"| model | test {shown} | test {second} | wall (CPU s), visiongate retrain |",
            "|---|---:|---:|---:|"]
    for name, run in (("A, from scratch", "a"), ("B, from scratch", "scratch"),
                      ("B, from A's weights", "tuned")):
        m = f[run]["metrics"]
        other = m.get("map50_95") if key == "map50" else m.get("dice")
        rows.append(f"| {name} | {_f(m.get(key))} | {_f(other)} | {_wall(f[run])} |")
    verdict = "better" if gain > 0 else "not better"
    return rows + ["", f"- Fine-tuned from A's weights vs from scratch on B: {shown} "
                       f"{gain:+.3f} ({rel}the scratch model's): {verdict}.", ""]


def notes(r: dict) -> list[str]:
    imports = ", ".join(f"{k} {w:.1f} s ({c:.0f} CPU s)" for k, (w, c) in r["imports"].items())
    lines = [f"- Imports (`visiongate data import`, not in the walls above): {imports}."]
    for part in ("detect", "instance", "unet"):
        if part in r:
            ratio = r[part]["flow"]["wall"] / r[part]["raw"]["wall"]
            lines.append(f"- {part}: the flow takes {ratio:.2f}× the reference "
                         f"({'meets' if ratio <= GOAL_WALL else 'misses'} the ≤ "
                         f"{GOAL_WALL}× goal).")
    return lines + [""]


def render(r: dict, a: argparse.Namespace) -> str:
    return "\n".join(intro(r, a) + comparison(r) + finetune(r, a, "finetune")
                     + finetune(r, a, "unet-finetune") + notes(r))
