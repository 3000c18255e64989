"""Detection evaluation metrics: IoU and NMS (torchvision.ops), COCO box and mask mAP.
Pure functions over numpy arrays and dicts; only evaluate_coco_files reads files.

Prediction contract shared with the model code:
- detection: one dict per image, ``{"boxes": (N, 4) float xyxy pixels, "scores": (N,),
  "labels": (N,) int COCO category ids}``, plus for instance masks ``"masks"`` (N, H, W)
  bool or ``"segmentation"`` (N COCO RLE dicts);
- semantic: one (H, W) uint8 label map per image (0 = background, k = category id).

Undefined values are NaN, never COCO's -1: a metric over objects that do not exist in
the evaluated split (e.g. ``map_large`` with no large objects, ``ap/<class>`` for a
class absent from the ground truth) is NaN, and the key is still present so the metric
set is the same on every run. A gate treats NaN as a failure (see gates.py).
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import torch
from faster_coco_eval import COCO, COCOeval_faster
from pycocotools import mask as mask_utils
from torchvision import ops

from visiongate import coco_schema, geometry
from visiongate.datasets import safe_load
from visiongate.errors import DataError, NotFound
from visiongate.vocab import COCO_STAT_NAMES



def _boxes_tensor(boxes) -> torch.Tensor:
    return torch.as_tensor(np.asarray(boxes, dtype=np.float64).reshape(-1, 4))


def box_iou(a, b) -> float:
    """IoU of two xyxy boxes, via torchvision.ops.box_iou."""
    return float(ops.box_iou(_boxes_tensor(a), _boxes_tensor(b))[0, 0])


def nms(boxes, scores, iou_threshold: float, labels=None) -> np.ndarray:
    """Indices of the boxes kept by greedy NMS, highest score first.

    A box is dropped when its IoU with a kept, higher-scoring box is > iou_threshold.
    With ``labels`` boxes only suppress boxes of the same label (torchvision
    batched_nms); without, suppression is class-agnostic (torchvision nms).
    """
    b = _boxes_tensor(boxes)
    s = torch.as_tensor(np.asarray(scores, dtype=np.float64).reshape(-1))
    if labels is None:
        keep = ops.nms(b, s, iou_threshold)
    else:
        idx = torch.as_tensor(np.asarray(labels, dtype=np.int64).reshape(-1))
        keep = ops.batched_nms(b, s, idx, iou_threshold)
    return keep.numpy().astype(np.int64)


def _area(ann: dict, height: int, width: int, iou_type: str) -> float:
    """Object area for COCO's size ranges: mask area for "segm", else box area."""
    if iou_type == "segm" and ann.get("segmentation"):
        return float(mask_utils.area(geometry.to_rle(ann["segmentation"], height, width)))
    return float(ann["bbox"][2] * ann["bbox"][3])


def _coco_gt(gt: dict, iou_type: str = "bbox") -> COCO:
    """A COCO index over a copy of ``gt`` with the fields COCOeval needs.

    Annotation ids are renumbered 1..N because COCOeval treats id 0 as "unmatched";
    missing ``iscrowd`` becomes 0 and a missing ``area`` the box area (the mask area
    for ``iou_type="segm"``).
    """
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', not {iou_type!r}")
    sizes = {img["id"]: (img.get("height"), img.get("width")) for img in gt["images"]}
    anns = []
    for i, ann in enumerate(gt.get("annotations", []), start=1):
        ann = dict(ann, id=i)
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:
            ann["area"] = _area(ann, *sizes[ann["image_id"]], iou_type)
        anns.append(ann)
    coco = COCO()
    coco.dataset = {"images": list(gt["images"]), "categories": list(gt["categories"]),
                    "annotations": anns}
    coco.createIndex()
    return coco


def _mask_rles(pred: dict) -> list[dict]:
    """Per-instance RLEs (JSON-ready, str counts) from ``masks`` or ``segmentation``."""
    if "segmentation" in pred:
        return list(pred["segmentation"])
    if "masks" not in pred:
        raise ValueError("iou_type 'segm' needs 'masks' or 'segmentation' in each prediction")
    return geometry.encode_masks(pred["masks"])


def _xywh_per_image(predictions: list[dict]) -> list[list[list[float]]]:
    """Each prediction's xyxy ``boxes`` as COCO xywh lists, converted in one call."""
    boxes = [np.asarray(p["boxes"], dtype=np.float64).reshape(-1, 4) for p in predictions]
    xywh = geometry.xyxy_to_xywh(np.concatenate(boxes) if boxes else [])
    return [chunk.tolist() for chunk in np.split(xywh, np.cumsum([len(b) for b in boxes])[:-1])]


def _to_coco_results(image_ids: list[int], predictions: list[dict],
                     iou_type: str = "bbox") -> list[dict]:
    """Predictions -> COCO result dicts: ``bbox`` (xyxy -> xywh) or ``segmentation`` (RLE).

    Segm results carry no ``bbox``: given one, COCO's loadRes takes the box area as the
    object area and so changes the small/medium/large split (detectron2 drops it too).
    """
    boxes = None if iou_type == "segm" else _xywh_per_image(predictions)
    results = []
    for i, (image_id, pred) in enumerate(zip(image_ids, predictions, strict=True)):
        scores = np.asarray(pred["scores"], dtype=np.float64).reshape(-1)
        labels = np.asarray(pred["labels"]).reshape(-1)
        if boxes is None:
            shapes = [{"segmentation": rle} for rle in _mask_rles(pred)]
        else:
            shapes = [{"bbox": box} for box in boxes[i]]
        for shape, score, label in zip(shapes, scores, labels, strict=True):
            results.append({"image_id": int(image_id), "category_id": int(label),
                            "score": float(score), **shape})
    return results


def _nan_if_undefined(value: float) -> float:
    """COCO reports -1 for "no such objects"; we report NaN."""
    return float("nan") if value < 0 else float(value)


def _per_class_ap(evaluator: COCOeval_faster, coco_gt: COCO) -> dict[str, float]:
    """AP@[.5:.95] per category from COCOeval's accumulated precision table.

    precision has shape [iou thresholds, recall points, categories, area ranges, max
    dets]; like COCOeval.summarize, average the defined (> -1) entries for area "all"
    and the largest max-dets.
    """
    precision = evaluator.eval["precision"]
    out = {}
    for k, cat_id in enumerate(evaluator.params.catIds):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        name = coco_gt.cats[cat_id]["name"]
        out[f"ap/{name}"] = float(p.mean()) if p.size else float("nan")
    return out


def _cocoeval(coco_gt: COCO, results: list[dict], iou_type: str,
              image_ids: list[int]) -> COCOeval_faster:
    """faster-coco-eval's COCOeval over ``image_ids``, evaluated and summarized."""
    coco_dt = coco_gt.loadRes(results)
    evaluator = COCOeval_faster(coco_gt, coco_dt, iouType=iou_type,
                                print_function=lambda *_: None)
    evaluator.params.imgIds = sorted(set(int(i) for i in image_ids))
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def _evaluate(coco_gt: COCO, results: list[dict], iou_type: str,
              image_ids: list[int]) -> dict[str, float]:
    """The 12 COCO stats and AP per class."""
    evaluator = _cocoeval(coco_gt, results, iou_type, image_ids)
    metrics = {name: _nan_if_undefined(v) for name, v in zip(COCO_STAT_NAMES, evaluator.stats)}
    metrics.update(_per_class_ap(evaluator, coco_gt))
    return metrics


def detection_metrics(gt: dict, image_ids: list[int], predictions: list[dict],
                      iou_type: str = "bbox") -> dict[str, float]:
    """COCO mAP / mAR of ``predictions`` against the COCO dict ``gt`` (faster-coco-eval).

    ``predictions[i]`` belongs to ``image_ids[i]``; only those images are evaluated.
    ``iou_type="bbox"`` scores ``boxes``; ``"segm"`` scores ``masks`` ((N, H, W) bool)
    or ``segmentation`` (one COCO RLE dict per instance) against the GT polygons/RLEs.
    Returns ``map50_95, map50, map75, map_small, map_medium, map_large, mar1, mar10,
    mar100, mar_small, mar_medium, mar_large`` and ``ap/<category name>`` (AP@[.5:.95])
    for every category in ``gt``. Values COCO marks undefined (-1: no ground-truth
    objects of that kind) are NaN. No predictions at all give 0.0 wherever ground truth
    exists. Equal to pycocotools' COCOeval (tests/unit/test_evaluate_coco.py).
    """
    if len(image_ids) != len(predictions):
        raise ValueError(f"{len(image_ids)} image ids but {len(predictions)} predictions")
    coco_gt = _coco_gt(gt, iou_type)
    unknown = sorted(set(image_ids) - set(coco_gt.getImgIds()))
    if unknown:
        raise ValueError(f"image ids not in the ground truth: {unknown[:10]}")
    results = _to_coco_results(image_ids, predictions, iou_type)
    return _evaluate(coco_gt, results, iou_type, image_ids)


def pr_curves(gt: dict, image_ids: list[int], predictions: list[dict],
              iou_type: str = "bbox") -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """COCO's interpolated precision at IoU 0.5 per class: (101 recall points,
    {class name: precision at each point, NaN where the class has no ground truth})."""
    coco_gt = _coco_gt(gt, iou_type)
    evaluator = _cocoeval(coco_gt, _to_coco_results(image_ids, predictions, iou_type), iou_type,
                          image_ids)
    precision = evaluator.eval["precision"][0, :, :, 0, -1]  # IoU .5, all areas, max dets
    curves = {coco_gt.cats[c]["name"]: np.where(precision[:, k] < 0, np.nan, precision[:, k])
              for k, c in enumerate(evaluator.params.catIds)}
    return np.asarray(evaluator.params.recThrs), curves


def _read_json(path, kind: type, what: str):
    """JSON from ``path`` that must be a ``kind``, read bounded (size and nesting checked
    before parsing: safe_load.load_json); errors name the file."""
    try:
        data = safe_load.load_json(path)
    except FileNotFoundError:
        raise NotFound(f"{path}: no such file") from None
    except (OSError, DataError) as err:
        reason = str(err).removeprefix(f"{path}: ")
        raise DataError(f"{path}: not a readable JSON file ({safe_load.cut(reason)})") from None
    if not isinstance(data, kind):
        raise DataError(f"{path}: expected {what}, found a JSON {type(data).__name__}")
    return data


def evaluate_coco_files(gt_path, pred_path, iou_type: str = "bbox") -> dict[str, float]:
    """Score a COCO results file against a COCO ground-truth file, over all GT images.

    ``pred_path`` holds the standard results list ``[{image_id, category_id, bbox |
    segmentation, score}, ...]``; for ``"segm"`` a result's ``bbox`` is ignored (see
    _to_coco_results) and its segmentation (RLE with string or list counts, or polygons)
    is scored as a compressed RLE. Same keys and NaN rules as detection_metrics. A missing file, one
    that is not such JSON, a mistyped field, a result for an unknown image or category, or
    an RLE not of its image's size raises NotFound / DataError naming the file
    (visiongate.coco_schema).
    """
    if iou_type not in ("bbox", "segm"):
        raise DataError(f"iou_type must be 'bbox' or 'segm', not {iou_type!r}")
    gt = _read_json(gt_path, dict, "a COCO dataset object")
    results = _read_json(pred_path, list, "a list of COCO results")
    sizes = coco_schema.check_ground_truth(gt, gt_path, iou_type)
    category_ids = {c["id"] for c in gt["categories"]}
    coco_schema.check_results(results, pred_path, sizes, category_ids, iou_type)
    key = "segmentation" if iou_type == "segm" else "bbox"
    results = [{f: r[f] for f in ("image_id", "category_id", "score", key)} for r in results]
    for r in results if iou_type == "segm" else []:  # polygons, list counts -> compressed RLE
        rle = geometry.to_rle(r["segmentation"], *sizes[r["image_id"]])
        r["segmentation"] = {"size": [int(v) for v in rle["size"]],
                             "counts": bytes(rle["counts"]).decode("ascii")}
    coco_gt = _coco_gt(gt, iou_type)
    return _evaluate(coco_gt, results, iou_type, coco_gt.getImgIds())
