"""Suspected label mistakes: how many injected mistakes does visiongate.suspects find?

    .venv/bin/python benchmarks/bench_suspects.py --checkpoint DIR --split-dir DIR \
        [--seeds 5] [--write]
    .venv/bin/python benchmarks/bench_suspects.py --model models:/shapes-detect@champion \
        --root . --split-dir data/prepared/shapes/test

The model predicts the split once (models.load, as find_suspects does). Then, per seed, a
COPY of the split's labels gets seeded mistakes (the original is only read), each on a
different annotation or image: detection/instance — `--rate` (5 %) of the boxes labelled
another class, `--rate` dropped, `--rate` shifted by half their width and height (clipped
to the image); classify/multilabel — `--rate` of the images with a flipped label (another
class; multilabel: one class added or removed); segment — `--rate` of the masks with one
class erased. `score_predictions` (what find_suspects calls) scores each copy; for each
kind, the recall of the injected mistakes among its N lowest-scored rows (N = the number
injected; so also precision at N), and among all rows of the kind (what the method can flag
at all). A missing box counts as found when a missing_box row of its image overlaps it (IoU
>= 0.5). Detection is scored with visiongate's box thresholds and with cleanlab's defaults,
and every task with a "perfect model" (the original labels as predictions): the method's
ceiling on the data. Score a split the model did not train on (val or test). `--write`
updates BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.report import machine, update_section  # noqa: E402
from visiongate import suspects  # noqa: E402
from visiongate.datasets.coco import load_split  # noqa: E402
from visiongate.datasets.image_labels import labels_of  # noqa: E402
from visiongate.models import CheckpointMeta  # noqa: E402

SECTION = "## Suspected label mistakes"


@dataclass
class Injected:
    """What was changed: annotation ids, (file, annotation) of images, or dropped boxes."""
    keys: dict[str, set] = field(default_factory=dict)       # kind -> keys rows must name
    dropped: list[tuple[str, tuple]] = field(default_factory=list)  # (file, xyxy)

    def count(self, kind: str) -> int:
        return len(self.dropped) if kind == "missing_box" else len(self.keys.get(kind, ()))


def _pick(rng: np.random.Generator, items: list, rate: float, kinds: int) -> list[list]:
    """`kinds` disjoint random samples of round(rate * len(items)) items each (at least 1)."""
    n = min(max(1, round(rate * len(items))), len(items) // kinds)
    order = rng.permutation(len(items))
    return [[items[i] for i in order[k * n:(k + 1) * n]] for k in range(kinds)]


def _inject_boxes(coco: dict, rate: float, rng: np.random.Generator) -> Injected:
    anns = [a for a in coco["annotations"] if not a.get("iscrowd")]
    files = {im["id"]: im for im in coco["images"]}
    ids = [c["id"] for c in coco["categories"]]
    swap, drop, shift = _pick(rng, anns, rate, 3)
    for ann in swap:
        ann["category_id"] = int(rng.choice([c for c in ids if c != ann["category_id"]]))
    for ann in shift:
        x, y, w, h = ann["bbox"]
        image = files[ann["image_id"]]
        dx = w / 2 if x + 1.5 * w <= image["width"] else -w / 2  # stay inside when possible
        dy = h / 2 if y + 1.5 * h <= image["height"] else -h / 2
        x0, y0 = max(0.0, x + dx), max(0.0, y + dy)
        x1, y1 = min(image["width"], x + dx + w), min(image["height"], y + dy + h)
        ann["bbox"] = [x0, y0, x1 - x0, y1 - y0]
        ann.pop("segmentation", None)  # the polygon would still say where it was
    dropped = {id(a) for a in drop}
    coco["annotations"] = [a for a in coco["annotations"] if id(a) not in dropped]
    return Injected({"swapped_class": {a["id"] for a in swap},
                     "badly_placed": {a["id"] for a in shift}},
                    [(files[a["image_id"]]["file_name"],
                      (a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                       a["bbox"][1] + a["bbox"][3])) for a in drop])


def _inject_labels(split_dir: Path, coco: dict, task: str, rate: float,
                   rng: np.random.Generator) -> Injected:
    split, k = load_split(split_dir), len(coco["categories"])
    multi = task == "multilabel"
    images = [im for im in coco["images"] if multi or len(labels_of(split, im, False)) == 1]
    (flip,) = _pick(rng, images, rate, 1)
    for image in flip:
        labels = set(labels_of(split, image, multi))
        c = int(rng.integers(1, k + 1))
        while not multi and c in labels:
            c = int(rng.integers(1, k + 1))
        image["labels"] = sorted(labels ^ {c}) if multi else [c]
    where = [suspects._where("", image)[1:3] for image in flip]  # a crop names its source
    return Injected({"wrong_label": set(where)})


def _inject_masks(split_dir: Path, coco: dict, rate: float, rng) -> Injected:
    with_masks = [im for im in coco["images"]
                  if (split_dir / "masks" / (Path(im["file_name"]).stem + ".png")).is_file()]
    (spoil,) = _pick(rng, with_masks, rate, 1)
    for image in spoil:
        path = split_dir / "masks" / (Path(image["file_name"]).stem + ".png")
        mask = np.array(Image.open(path))
        present = [c for c in np.unique(mask) if c > 0]
        if present:
            mask[mask == rng.choice(present)] = 0
        Image.fromarray(mask).save(path)
    return Injected({"bad_mask": {(image["file_name"], None) for image in spoil}})


def inject(split_dir: Path, task: str, rate: float, seed: int) -> Injected:
    """Mistakes written into split_dir (a copy) for the model's task."""
    rng = np.random.default_rng(seed)
    coco = json.loads((split_dir / "annotations.json").read_text())
    if task in suspects.DETECTION_TASKS:
        injected = _inject_boxes(coco, rate, rng)
    elif task == "segment":
        injected = _inject_masks(split_dir, coco, rate, rng)
    else:
        injected = _inject_labels(split_dir, coco, task, rate, rng)
    (split_dir / "annotations.json").write_text(json.dumps(coco))
    return injected


def _iou(a, b) -> float:
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _found(rows: list, injected: Injected, kind: str) -> int:
    if kind != "missing_box":
        key = (lambda r: r.annotation) if kind in ("swapped_class", "badly_placed") else \
            (lambda r: (r.file, r.annotation))
        return len({key(r) for r in rows} & injected.keys[kind])
    return sum(any(r.file == file and r.model_box and _iou(r.model_box, box) >= 0.5
                   for r in rows) for file, box in injected.dropped)


def recall(rows: list, injected: Injected) -> dict[str, tuple[int, int, int, int]]:
    """kind -> (injected, found in its N lowest rows, found in all its rows, rows)."""
    out = {}
    for kind in [*injected.keys, *(["missing_box"] if injected.dropped else [])]:
        mine = sorted((r for r in rows if r.kind == kind), key=lambda r: r.score)
        n = injected.count(kind)
        out[kind] = (n, _found(mine[:n], injected, kind), _found(mine, injected, kind),
                     len(mine))
    return out


def oracle_predictions(split_dir: Path, task: str, k: int) -> list:
    """What a perfect model predicts on the copy: the ORIGINAL labels at 0.99 (the
    method's ceiling on this data, whatever the model)."""
    from visiongate import geometry
    from visiongate.datasets.coco import read_semantic_mask

    split, out = load_split(split_dir), []
    for image in split.images:
        if task in suspects.DETECTION_TASKS:
            anns = [a for a in split.annotations[image["id"]] if not a.get("iscrowd")]
            out.append({"boxes": geometry.xywh_to_xyxy([a["bbox"] for a in anns]).reshape(-1, 4),
                        "scores": np.full(len(anns), 0.99),
                        "labels": np.array([a["category_id"] for a in anns], int)})
        elif task == "segment":
            has_mask = split.mask_path(image).is_file()
            out.append(read_semantic_mask(split, image) if has_mask else None)
        else:
            probs = np.full(k, 0.01 if task == "multilabel" else 0.01 / max(k - 1, 1))
            probs[[c - 1 for c in labels_of(split, image, task == "multilabel")]] = 0.99
            out.append(probs)
    return out


def resolve_checkpoint(args: argparse.Namespace) -> Path:
    if args.checkpoint:
        return Path(args.checkpoint)
    from visiongate import registry, tracking
    from visiongate.config import load_params
    from visiongate.paths import Project

    root = Path(args.root).resolve()
    uri = tracking.tracking_uri(root, load_params(root / "params.yaml").mlflow)
    return registry.checkout(uri, registry.resolve(uri, args.model), Project(root).champions)


def predict_split(checkpoint: Path, split_dir: Path, task: str) -> list:
    """The model's predictions for every image of the ORIGINAL split (the injected mistakes
    change labels only, so one prediction serves every seed)."""
    from visiongate import models

    predict, split = models.load(checkpoint), load_split(split_dir)
    out = []
    for i in range(0, len(split.images), suspects.BATCH):
        batch = predict([split.image_path(im) for im in split.images[i:i + suspects.BATCH]])
        out += [{k: p[k] for k in ("boxes", "scores", "labels")}  # instance masks dropped
                if task in suspects.DETECTION_TASKS else p for p in batch]
    return out


def labels_copy(split_dir: Path, dst: Path) -> Path:
    """annotations.json and masks/ of a split (what inject changes); images stay put."""
    dst.mkdir(parents=True)
    shutil.copy2(split_dir / "annotations.json", dst / "annotations.json")
    if (split_dir / "masks").is_dir():
        shutil.copytree(split_dir / "masks", dst / "masks")
    return dst


def _add(total: dict, results: dict) -> None:
    for kind, counts in results.items():
        total[kind] = tuple(a + b for a, b in zip(total.get(kind, (0,) * 4), counts, strict=True))


def run(args, checkpoint: Path, meta: CheckpointMeta, settings: dict) -> tuple[dict, float]:
    """{setting: {kind: (injected, top N, flagged, rows)}} summed over the seeds, and the
    seconds spent scoring (all settings, all seeds)."""
    preds = predict_split(checkpoint, args.split_dir, meta.task)
    oracle = oracle_predictions(args.split_dir, meta.task, len(meta.class_names))
    totals: dict[str, dict] = {name: {} for name in [*settings, "perfect model"]}
    seconds = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seed, args.seed + args.seeds):
            copy = labels_copy(args.split_dir, Path(tmp) / str(seed) / args.split_dir.name)
            injected = inject(copy, meta.task, args.rate, seed)
            scored = load_split(copy)  # scoring reads labels and masks, never the images
            for name, th in [*settings.items(), ("perfect model", suspects.BoxThresholds())]:
                t0 = time.perf_counter()
                rows = suspects.score_predictions(
                    scored, oracle if name == "perfect model" else preds, meta.task, "bench", th)
                seconds += time.perf_counter() - t0
                _add(totals[name], recall(rows, injected))
    return totals, seconds


def render(args, meta: CheckpointMeta, totals: dict, seconds: float) -> str:
    source = args.checkpoint or args.model
    epochs = meta.config.get("epochs", "?")
    names = list(totals)
    try:  # the split as the command was typed in the project (--root)
        where = Path(args.split_dir).resolve().relative_to(Path(args.root).resolve())
    except ValueError:
        where = args.split_dir
    intro = (f"`benchmarks/bench_suspects.py --split-dir {where} --rate {args.rate} "
             f"--seed {args.seed} --seeds {args.seeds}` with {source} ({meta.family} "
             f"{meta.task}, {epochs} epochs, imgsz {meta.imgsz}) on {machine()}. Mistakes "
             "injected into copies of the split's labels, one per seed, counts summed over "
             "the seeds; recall@N = share of the injected mistakes among the N lowest-scored "
             "rows of the kind (N = injected, so also precision at N); flagged = found among "
             "all rows of the kind; perfect model = predictions equal to the original labels "
             "at 0.99 (the method's ceiling on this data). Box thresholds (high, low): "
             + "; ".join(names[:-1]) + ", both with visiongate's neighbour rule for "
             "badly_placed (suspects._evidence_iou). Scoring took "
             f"{seconds:.1f} s in all.")
    head = " | ".join(f"recall@N {n}" for n in names)
    lines = [f"{SECTION}: {meta.family} {meta.task}, {args.split_dir.name} split", "", intro, "",
             f"| kind | injected N | {head} | flagged | rows |",
             "|---|---:|" + "---:|" * len(names) + "---:|---:|"]
    for kind, (n, _, anywhere, rows) in totals[names[0]].items():
        cells = " | ".join(f"{totals[s][kind][1] / max(n, 1):.2f}" for s in names)
        lines.append(f"| {kind} | {n} | {cells} | {anywhere} | {rows} |")
    return "\n".join(lines + [""])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", help="a checkpoint folder (meta.json + weights)")
    which.add_argument("--model", help="models:/NAME@ALIAS or models:/NAME/VERSION")
    parser.add_argument("--root", default=".", help="project root for --model")
    parser.add_argument("--split-dir", type=Path, default=REPO / "data/prepared/shapes/test")
    parser.add_argument("--rate", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=1, help="injections to sum over")
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args(argv)
    checkpoint = resolve_checkpoint(args)
    meta = CheckpointMeta.read(checkpoint)
    default, cleanlab = suspects.BoxThresholds(), suspects.BoxThresholds(0.95, 0.5)
    settings = {f"visiongate ({default.high}, {default.low})": default}
    if meta.task in suspects.DETECTION_TASKS:
        settings[f"cleanlab's defaults ({cleanlab.high}, {cleanlab.low})"] = cleanlab
    totals, seconds = run(args, checkpoint, meta, settings)
    text = render(args, meta, totals, seconds)
    print(text)
    if args.write:
        update_section(text)


if __name__ == "__main__":
    main()
