"""`visiongate evaluate-coco` (faster-coco-eval) against a direct pycocotools COCOeval."""

from __future__ import annotations

import contextlib
import io
import json
import os
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from flows.cli import main
from visiongate.metrics import COCO_STAT_NAMES, detection_metrics

# The real datasets live beside the project (../shared/data), never inside it;
# VISIONGATE_SHARED_DATA points elsewhere.
SHARED_DATA = Path(os.environ.get("VISIONGATE_SHARED_DATA",
                                  Path(__file__).resolve().parents[3] / "shared" / "data"))
COCO128 = SHARED_DATA / "coco128-seg"
CATEGORIES = [{"id": k, "name": f"class{k}"} for k in (1, 2, 3, 4)]


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def _reference(gt_path: Path, pred_path: Path, iou_type: str) -> dict[str, float]:
    """Plain pycocotools: the 12 stats and AP@[.5:.95] per class, -1 -> NaN."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_path))
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(str(pred_path)), iouType=iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    out = {n: (math.nan if v < 0 else float(v)) for n, v in zip(COCO_STAT_NAMES, evaluator.stats)}
    for k, cat_id in enumerate(evaluator.params.catIds):
        p = evaluator.eval["precision"][:, :, k, 0, -1]
        out[f"ap/{coco_gt.cats[cat_id]['name']}"] = float(p[p > -1].mean()) if (p > -1).any() \
            else math.nan
    return out


def _assert_same(got: dict, expected: dict) -> None:
    assert set(got) == set(expected)
    for name, value in expected.items():
        g = math.nan if got[name] is None else got[name]
        assert g == pytest.approx(value, abs=1e-4, nan_ok=True), name


def _write(tmp_path: Path, gt: dict, results: list[dict]) -> tuple[Path, Path]:
    gt_path, pred_path = tmp_path / "gt.json", tmp_path / "pred.json"
    gt_path.write_text(json.dumps(gt))
    pred_path.write_text(json.dumps(results))
    return gt_path, pred_path


def _check_cli(tmp_path, capsys, gt, results, iou_type) -> dict:
    gt_path, pred_path = _write(tmp_path, gt, results)
    rc, out, err = _cli(["evaluate-coco", str(gt_path), str(pred_path), "--iou-type", iou_type],
                        capsys)
    assert rc == 0, err
    got = json.loads(out)
    _assert_same(got, _reference(gt_path, pred_path, iou_type))
    return got


def _box_gt(rng: np.random.Generator, n_images: int, size: int = 640) -> dict:
    images, anns = [], []
    for image_id in range(1, n_images + 1):
        images.append({"id": image_id, "file_name": f"{image_id}.png", "width": size,
                       "height": size})
        for _ in range(rng.integers(1, 8)):
            w, h = rng.uniform(6, 250, size=2)
            x, y = rng.uniform(0, size - 250, size=2)
            anns.append({"id": len(anns) + 1, "image_id": image_id, "iscrowd": 0,
                         "category_id": int(rng.integers(1, 5)), "bbox": [x, y, w, h],
                         "area": float(w * h)})
    return {"images": images, "annotations": anns, "categories": CATEGORIES}


def _perturbed_boxes(gt: dict, rng: np.random.Generator, n_cats: int) -> list[dict]:
    """Jittered GT boxes (some dropped, some relabelled) plus false positives, random scores."""
    results = []
    for a in gt["annotations"]:
        if rng.random() < 0.15:
            continue
        x, y, w, h = a["bbox"]
        x, y = x + rng.normal(0, 0.08) * w, y + rng.normal(0, 0.08) * h
        w, h = w * rng.uniform(0.8, 1.2), h * rng.uniform(0.8, 1.2)
        cat = a["category_id"] if rng.random() > 0.1 else int(rng.integers(1, n_cats + 1))
        results.append({"image_id": a["image_id"], "category_id": cat,
                        "bbox": [x, y, w, h], "score": float(rng.uniform(0.2, 1.0))})
    for img in gt["images"]:
        for _ in range(rng.integers(0, 4)):
            w, h = rng.uniform(4, img["width"] / 3), rng.uniform(4, img["height"] / 3)
            results.append({"image_id": img["id"], "category_id": int(rng.integers(1, n_cats + 1)),
                            "bbox": [float(rng.uniform(0, img["width"] - w)),
                                     float(rng.uniform(0, img["height"] - h)), w, h],
                            "score": float(rng.uniform(0.0, 0.6))})
    return results


def test_bbox_matches_pycocotools(tmp_path, capsys):
    rng = np.random.default_rng(7)
    gt = _box_gt(rng, 40)
    got = _check_cli(tmp_path, capsys, gt, _perturbed_boxes(gt, rng, 4), "bbox")
    assert 0.1 < got["map50"] < 0.99                       # a non-trivial case


def _polygon(rng: np.random.Generator, size: int) -> list[float]:
    """A random convex-ish polygon (8 vertices around a centre), flat x, y list."""
    cx, cy = rng.uniform(10, size - 10, size=2)
    r = rng.uniform(3, size / 3)
    angles = np.sort(rng.uniform(0, 2 * np.pi, 8))
    radii = r * rng.uniform(0.6, 1.0, 8)
    xs = np.clip(cx + radii * np.cos(angles), 0, size - 1)
    ys = np.clip(cy + radii * np.sin(angles), 0, size - 1)
    return [float(v) for xy in zip(xs, ys) for v in xy]


def _segm_case(rng: np.random.Generator, n_images: int = 20, size: int = 128):
    """GT polygons; predictions as masks of jittered polygons, plus false positives."""
    gt = {"images": [], "annotations": [], "categories": CATEGORIES[:3]}
    ids, preds = [], []
    for image_id in range(1, n_images + 1):
        gt["images"].append({"id": image_id, "file_name": f"{image_id}.png",
                             "width": size, "height": size})
        masks, scores, labels = [], [], []
        for _ in range(rng.integers(1, 6)):
            poly, cat = _polygon(rng, size), int(rng.integers(1, 4))
            rle = mask_utils.merge(mask_utils.frPyObjects([poly], size, size))
            gt["annotations"].append({
                "id": len(gt["annotations"]) + 1, "image_id": image_id, "category_id": cat,
                "segmentation": [poly], "area": float(mask_utils.area(rle)), "iscrowd": 0,
                "bbox": [float(v) for v in mask_utils.toBbox(rle)]})
            if rng.random() < 0.15:
                continue
            shifted = np.asarray(poly) + rng.normal(0, 2.0, len(poly))
            masks.append(_raster(list(shifted), size))
            labels.append(cat if rng.random() > 0.1 else int(rng.integers(1, 4)))
            scores.append(float(rng.uniform(0.2, 1.0)))
        for _ in range(rng.integers(0, 3)):
            masks.append(_raster(_polygon(rng, size), size))
            labels.append(int(rng.integers(1, 4)))
            scores.append(float(rng.uniform(0.0, 0.6)))
        ids.append(image_id)
        preds.append({"masks": np.asarray(masks, dtype=bool).reshape(-1, size, size),
                      "scores": np.asarray(scores), "labels": np.asarray(labels)})
    return gt, ids, preds


def _raster(poly: list[float], size: int) -> np.ndarray:
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([poly], size, size))) > 0


def test_segm_matches_pycocotools(tmp_path, capsys):
    gt, ids, preds = _segm_case(np.random.default_rng(11))
    results = []
    for image_id, p in zip(ids, preds):
        for m, s, c in zip(p["masks"], p["scores"], p["labels"]):
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            results.append({"image_id": image_id, "category_id": int(c), "score": float(s),
                            "segmentation": dict(rle, counts=rle["counts"].decode("ascii"))})
    got = _check_cli(tmp_path, capsys, gt, results, "segm")
    assert 0.1 < got["map50"] < 0.99
    # The in-memory API with (N, H, W) masks gives the same numbers as the results file.
    direct = detection_metrics(gt, ids, preds, iou_type="segm")
    _assert_same(got, direct)


def _coco128_gt() -> dict:
    """COCO GT from coco128-seg's YOLO polygons; boxes and areas derived from the polygons."""
    names = (COCO128 / "names.txt").read_text().split("\n")
    names = [n.strip() for n in names if n.strip()]
    gt = {"images": [], "annotations": [],
          "categories": [{"id": k + 1, "name": n} for k, n in enumerate(names)]}
    for image_id, path in enumerate(sorted((COCO128 / "images" / "train2017").glob("*.jpg")), 1):
        with Image.open(path) as im:
            width, height = im.size
        gt["images"].append({"id": image_id, "file_name": path.name, "width": width,
                             "height": height})
        label = COCO128 / "labels" / "train2017" / f"{path.stem}.txt"
        lines = label.read_text().splitlines() if label.exists() else []
        for line in filter(str.strip, lines):
            cls, *xy = line.split()
            poly = [float(v) * (width if i % 2 == 0 else height) for i, v in enumerate(xy)]
            rle = mask_utils.merge(mask_utils.frPyObjects([poly], height, width))
            xs, ys = poly[0::2], poly[1::2]
            gt["annotations"].append({
                "id": len(gt["annotations"]) + 1, "image_id": image_id,
                "category_id": int(cls) + 1, "segmentation": [poly], "iscrowd": 0,
                "area": float(mask_utils.area(rle)),
                "bbox": [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]})
    return gt


def test_coco128_seg_ground_truth_matches_pycocotools(tmp_path, capsys):
    if not COCO128.is_dir():
        pytest.skip(f"real data not present: {COCO128}")
    gt = _coco128_gt()
    assert len(gt["images"]) == 128 and len(gt["categories"]) == 80
    results = _perturbed_boxes(gt, np.random.default_rng(128), 80)
    got = _check_cli(tmp_path, capsys, gt, results, "bbox")
    assert 0.1 < got["map50"] < 0.99


def test_coco128_seg_masks_match_pycocotools(tmp_path, capsys):
    if not COCO128.is_dir():
        pytest.skip(f"real data not present: {COCO128}")
    gt = _coco128_gt()
    sizes = {img["id"]: (img["height"], img["width"]) for img in gt["images"]}
    rng = np.random.default_rng(129)
    results = []
    for a in gt["annotations"]:
        if rng.random() < 0.15:
            continue
        height, width = sizes[a["image_id"]]
        scale = max(2.0, 0.05 * math.sqrt(a["area"]))
        flat = np.asarray(a["segmentation"][0])
        poly = [float(v) for v in flat + rng.normal(0, scale, len(flat))]
        rle = mask_utils.merge(mask_utils.frPyObjects([poly], height, width))
        results.append({"image_id": a["image_id"], "category_id": a["category_id"],
                        "score": float(rng.uniform(0.2, 1.0)),
                        "segmentation": dict(rle, counts=rle["counts"].decode("ascii"))})
    got = _check_cli(tmp_path, capsys, gt, results, "segm")
    assert 0.1 < got["map50_95"] < 0.99


@pytest.mark.parametrize("which, content, message", [
    ("gt", None, "no such file"),
    ("pred", None, "no such file"),
    ("gt", "{not json", "not a readable JSON"),
    ("pred", '{"image_id": 1}', "expected a list"),
    ("gt", '{"images": [{"id": 1}]}', "not a COCO dataset"),
    ("pred", '[{"image_id": 1, "score": 1}]', "every result needs"),
])
def test_bad_file_exits_1_naming_it(tmp_path, capsys, which, content, message):
    gt_path, pred_path = _write(tmp_path, _box_gt(np.random.default_rng(0), 2), [])
    bad = gt_path if which == "gt" else pred_path
    if content is None:
        bad.unlink()
    else:
        bad.write_text(content)
    rc, out, err = _cli(["evaluate-coco", str(gt_path), str(pred_path)], capsys)
    assert rc == 1 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert str(bad) in err and message in err
