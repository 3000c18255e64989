"""Time visiongate's detection_metrics (faster-coco-eval) against plain pycocotools COCOeval,
and the gate's paired bootstrap (visiongate.bootstrap) against the evaluation itself.

Not a test: `make bench` runs it and rewrites BENCHMARKS.md. Generated data (seeded):
N images × 20 predictions each over 80 classes; both sides build their indexes and run
loadRes + evaluate + accumulate + summarize inside the timed region, in one process.

    python benchmarks/bench_evaluator.py [--images 5000] [--repeats 3] [--resamples 1000]
        [--out BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import statistics
import sys
import time
from collections import defaultdict
from importlib.metadata import version
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.report import machine, update_section  # noqa: E402
from visiongate import bootstrap, diagnostics  # noqa: E402
from visiongate.geometry import xywh_to_xyxy  # noqa: E402
from visiongate.metrics import COCO_STAT_NAMES, detection_metrics  # noqa: E402

N_CLASSES, PREDS_PER_IMAGE, SIZE = 80, 20, 640
BOOTSTRAP_THRESHOLD = 0.25   # the operating point (params: score_threshold)


def make_data(n_images: int, seed: int = 0):
    """GT (1–15 boxes per image) and 20 predictions per image: jittered GT plus noise."""
    rng = np.random.default_rng(seed)
    cats = [{"id": k, "name": f"class{k}"} for k in range(1, N_CLASSES + 1)]
    images, anns, ids, preds = [], [], [], []
    for image_id in range(1, n_images + 1):
        images.append({"id": image_id, "width": SIZE, "height": SIZE, "file_name": f"{image_id}"})
        n = int(rng.integers(1, 16))
        wh = rng.uniform(4, 300, (n, 2))
        xy = rng.uniform(0, SIZE - 300, (n, 2))
        labels = rng.integers(1, N_CLASSES + 1, n)
        for (x, y), (w, h), c in zip(xy, wh, labels):
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": int(c),
                         "bbox": [float(x), float(y), float(w), float(h)],
                         "area": float(w * h), "iscrowd": 0})
        k = min(n, PREDS_PER_IMAGE // 2)
        pxy = xy[:k] + rng.normal(0, 0.08, (k, 2)) * wh[:k]
        pwh = wh[:k] * rng.uniform(0.8, 1.2, (k, 2))
        m = PREDS_PER_IMAGE - k
        fwh = rng.uniform(4, 200, (m, 2))
        fxy = rng.uniform(0, SIZE - 200, (m, 2))
        xywh = np.vstack([np.hstack([pxy, pwh]), np.hstack([fxy, fwh])])
        boxes = xywh_to_xyxy(xywh)
        plabels = np.concatenate([labels[:k], rng.integers(1, N_CLASSES + 1, m)])
        scores = np.concatenate([rng.uniform(0.3, 1.0, k), rng.uniform(0.0, 0.7, m)])
        ids.append(image_id)
        preds.append({"boxes": boxes, "scores": scores, "labels": plabels})
    return {"images": images, "annotations": anns, "categories": cats}, ids, preds


def pycocotools_metrics(gt: dict, ids: list[int], preds: list[dict]) -> dict[str, float]:
    """The reference: plain pycocotools, including the result-dict conversion."""
    results = [{"image_id": i, "category_id": int(c), "score": float(s),
                "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]}
               for i, p in zip(ids, preds)
               for b, s, c in zip(p["boxes"], p["scores"], p["labels"])]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {k: list(v) for k, v in gt.items()}
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(results), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    out = {n: (math.nan if v < 0 else float(v)) for n, v in zip(COCO_STAT_NAMES, evaluator.stats)}
    for k, cat_id in enumerate(evaluator.params.catIds):
        p = evaluator.eval["precision"][:, :, k, 0, -1]
        out[f"ap/{coco_gt.cats[cat_id]['name']}"] = float(p[p > -1].mean()) if (p > -1).any() \
            else math.nan
    return out


def timed(fn, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, result


def bootstrap_figures(gt: dict, ids: list[int], preds: list[dict], resamples: int,
                      repeats: int) -> tuple[str, str]:
    """(table row, runs line): per repeat, in turn, the evaluation (detection_metrics),
    bootstrap.detection_records (given the operating-point matches, which evaluate
    computes anyway; their own time is shown apart) and metric_samples of map50 and
    map50_95 on `resamples` resamples; medians of wall and CPU seconds."""
    by_image = defaultdict(list)
    for ann in gt["annotations"]:
        by_image[ann["image_id"]].append(ann)
    start = time.perf_counter()
    matches = [diagnostics.match(diagnostics.gt_boxes(by_image[i]), p, BOOTSTRAP_THRESHOLD)
               for i, p in zip(ids, preds)]
    t_match = time.perf_counter() - start
    counts = bootstrap.resample_counts(len(ids), resamples, seed=0)
    steps = {
        "eval": lambda: detection_metrics(gt, ids, preds),
        "records": lambda: bootstrap.detection_records(gt, ids, preds, "detect",
                                                       BOOTSTRAP_THRESHOLD, matches),
        "samples": lambda: bootstrap.metric_samples(out["records"], counts,
                                                    ["map50", "map50_95"])}
    wall, cpu, out = defaultdict(list), defaultdict(list), {}
    for _ in range(repeats):
        for name, fn in steps.items():
            w, c = time.perf_counter(), time.process_time()
            out[name] = fn()
            wall[name].append(time.perf_counter() - w)
            cpu[name].append(time.process_time() - c)
    med = {k: statistics.median(v) for k, v in wall.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
    names = [k for k in out["eval"] if k in ("map50", "map50_95", "map75") or k.startswith("ap/")]
    once = bootstrap.metric_samples(out["records"], np.ones((1, len(ids)), np.int32), names)
    delta = max(0.0 if math.isnan(out["eval"][k]) and math.isnan(once[k][0]) else
                abs(out["eval"][k] - once[k][0]) for k in names)
    low, high = np.percentile(out["samples"]["map50_95"], [2.5, 97.5])
    both, both_cpu = med["records"] + med["samples"], cpu_med["records"] + cpu_med["samples"]
    row = (f"| {len(ids)} images, {resamples} resamples | {med['eval']:.2f} s "
           f"({cpu_med['eval']:.2f}) | {med['records']:.2f} s ({cpu_med['records']:.2f}) | "
           f"{med['samples']:.2f} s ({cpu_med['samples']:.2f}) | {both / med['eval']:.2f}× "
           f"({both_cpu / cpu_med['eval']:.2f}×) | {t_match:.2f} s | {delta:.1e} "
           f"({len(names)} values) | [{low:.4f}, {high:.4f}] |")
    runs = "; ".join(f"{k} {', '.join(f'{t:.2f}' for t in v)}" for k, v in wall.items())
    return row, runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1]
                        / "BENCHMARKS.md")
    args = parser.parse_args()
    load_start = os.getloadavg()[0]   # the machine may be shared: say how busy it was
    gt, ids, preds = make_data(args.images)
    print(f"{args.images} images, {len(gt['annotations'])} GT boxes, "
          f"{sum(len(p['scores']) for p in preds)} predictions, {N_CLASSES} classes", flush=True)
    t_fast, fast_runs, fast = timed(lambda: detection_metrics(gt, ids, preds), args.repeats)
    print(f"visiongate.detection_metrics: {fast_runs}", flush=True)
    t_ref, ref_runs, ref = timed(lambda: pycocotools_metrics(gt, ids, preds), args.repeats)
    print(f"pycocotools COCOeval: {ref_runs}", flush=True)
    # Both NaN (undefined) agrees; NaN on one side only is an infinite difference.
    max_delta = max(0.0 if math.isnan(fast[k]) and math.isnan(ref[k]) else
                    math.inf if math.isnan(fast[k]) or math.isnan(ref[k]) else
                    abs(fast[k] - ref[k]) for k in ref)
    ratio = t_ref / t_fast
    row = (f"| {args.images} × {PREDS_PER_IMAGE} ({sum(len(p['scores']) for p in preds)} dets, "
           f"{len(gt['annotations'])} GT, {N_CLASSES} classes) | {t_fast:.2f} s | {t_ref:.2f} s "
           f"| {ratio:.1f}× | {max_delta:.1e} ({len(ref)} values) | {ref['map50_95']:.4f} |")
    print(row)
    boot_row, boot_runs = bootstrap_figures(gt, ids, preds, args.resamples, args.repeats)
    print(boot_row)
    command = (f".venv/bin/python benchmarks/bench_evaluator.py --images {args.images} "
               f"--repeats {args.repeats} --resamples {args.resamples}")
    update_section(f"""## COCO box evaluation: faster-coco-eval vs pycocotools

`visiongate.metrics.detection_metrics` (faster-coco-eval {version("faster-coco-eval")},
`COCOeval_faster`) against plain pycocotools {version("pycocotools")} `COCOeval` in the
same process, on seeded generated data: ground truth 1–15 boxes per 640 px image, 20
predictions per image (up to 10 jittered ground-truth boxes, the rest random), 80
classes. Each timing covers everything from the in-memory dicts/arrays to the numbers:
building the ground-truth index, result conversion and `loadRes`, `evaluate`,
`accumulate`, `summarize` (visiongate also computes AP per class). Median of
{args.repeats} runs. Max |Δ| is over the 12 COCO stats and the {N_CLASSES} per-class APs.

Machine: {machine()}; load average (1 min) {load_start:.1f} at the start,
{os.getloadavg()[0]:.1f} at the end (above the core count, other jobs shared the CPUs and
every time here is longer than on an idle machine).

Command: `make bench` (= `{command}`)

| data | visiongate (faster-coco-eval) | pycocotools | speed-up | max \\|Δ\\| | mAP50-95 |
|---|---|---|---|---|---|
{row}

Individual runs (s): visiongate {', '.join(f'{t:.2f}' for t in fast_runs)}; pycocotools
{', '.join(f'{t:.2f}' for t in ref_runs)}.

### The gate's paired bootstrap against the evaluation

The gate puts a paired-bootstrap interval on every gated number without evaluating
again per resample: `visiongate.bootstrap.detection_records` stores per-detection match
records once (the COCO matching per image, category and IoU threshold, as
`COCOeval.evaluateImg`), then `metric_samples` reruns COCO's accumulation with image
weights on every resample. Same data; per repeat, in turn: the evaluation
(`detection_metrics`), the records (given the operating-point matches at score ≥
{BOOTSTRAP_THRESHOLD}, which `evaluate` computes anyway; computing them here takes the
time in the "matches" column), and `map50` + `map50_95` on {args.resamples} resamples.
Median wall seconds, CPU seconds in brackets (this machine is shared with other jobs:
wall times vary; the CPU ratio is the steadier figure). Max |Δ| compares the records with
every image drawn once against faster-coco-eval (mAP50, mAP50-95, mAP75, AP per class).
Goal: records + samples ≤ 1× the evaluation.

| data | evaluation | records | samples (2 metrics) | (records + samples) / evaluation | matches | max \\|Δ\\| | 95% interval mAP50-95 |
|---|---|---|---|---|---|---|---|
{boot_row}

Individual runs (s): {boot_runs}.
""", args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
