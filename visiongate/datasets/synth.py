"""Deterministic synthetic "shapes" dataset in the canonical layout.

Each image gets a solid, gradient or textured background and 1..N flat-coloured shapes
painted in order. Annotations describe what is VISIBLE: an instance's mask minus the
objects painted after it. A placement is re-sampled when it would hide more than half of
an earlier instance or punch a hole into its visible region (COCO polygons cannot hold
holes), so every painted pixel belongs to exactly one annotation.

    python -m visiongate.datasets.synth --params params.yaml --out data/prepared/shapes
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import cv2
import numpy as np

from visiongate.config import SynthConfig, load_params
from visiongate.paths import SPLITS as SPLIT_ORDER  # the index seeds each split: independent
from visiongate.vocab import SHAPE_NAMES

MIN_VISIBLE = 0.5       # an instance must keep at least this fraction of its area visible
PLACEMENT_TRIES = 12
COLOUR_TRIES = 16
MIN_CONTRAST = 90.0     # RGB distance to (nearly) all pixels a shape covers


def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return points @ np.array([[c, s], [-s, c]])


def _on_circle(radii: np.ndarray, angle0: float) -> np.ndarray:
    t = angle0 + np.linspace(0, 2 * np.pi, len(radii), endpoint=False)
    return np.stack([radii * np.cos(t), radii * np.sin(t)], axis=1)


def _circle(d: float, rng: np.random.Generator) -> np.ndarray:
    return _on_circle(np.full(64, d / 2), 0.0)


def _square(d: float, rng: np.random.Generator) -> np.ndarray:
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * d / 2
    return _rotate(corners, rng.uniform(0, np.pi / 2))


def _triangle(d: float, rng: np.random.Generator) -> np.ndarray:
    # equilateral with side d: circumradius d / sqrt(3)
    return _on_circle(np.full(3, d / np.sqrt(3)), rng.uniform(0, 2 * np.pi))


def _ellipse(d: float, rng: np.random.Generator) -> np.ndarray:
    unit = _on_circle(np.ones(64), 0.0) * [d / 2, d / 2 * rng.uniform(0.45, 0.75)]
    return _rotate(unit, rng.uniform(0, np.pi))


def _star(d: float, rng: np.random.Generator) -> np.ndarray:
    radii = np.tile([d / 2, d / 2 * 0.45], 5)
    return _on_circle(radii, rng.uniform(0, 2 * np.pi))


# shape name -> outline (N, 2) centred on the origin, from a size in pixels
SHAPES = {"circle": _circle, "square": _square, "triangle": _triangle,
          "ellipse": _ellipse, "star": _star}
assert tuple(SHAPES) == SHAPE_NAMES, "params.yaml's shape names (vocab) and synth differ"


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """Float (size, size, 3) image: solid, linear gradient, or low-frequency texture."""
    base = rng.uniform(0, 255, 3)
    kind = rng.integers(3)
    if kind == 0:
        return np.broadcast_to(base, (size, size, 3)).astype(np.float32)
    if kind == 1:
        theta = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
        t = xx * np.cos(theta) + yy * np.sin(theta)
        t = (t - t.min()) / (t.max() - t.min())
        other = np.clip(base + rng.uniform(-90, 90, 3), 0, 255)
        return (base + t[..., None] * (other - base)).astype(np.float32)
    grid = rng.integers(3, 9)
    noise = rng.normal(0, rng.uniform(10, 25), (grid, grid, 3)).astype(np.float32)
    texture = cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
    return np.clip(base + texture, 0, 255).astype(np.float32)


def _rasterise(outline: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Place the outline at a random position that keeps it inside the image."""
    lo, hi = outline.min(axis=0), outline.max(axis=0)
    low, high = -lo, size - 1 - hi
    centre = np.where(low <= high, rng.uniform(low, np.maximum(low, high)), size / 2)
    mask = np.zeros((size, size), np.uint8)
    points = np.round((outline + centre) * 16).astype(np.int32)  # 4 fractional bits
    cv2.fillPoly(mask, [points], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def _edge_contours(mask: np.ndarray) -> tuple[list[np.ndarray], bool]:
    """Contours along pixel EDGES, in pixel units (pixel (x, y) spans [x, x+1] x [y, y+1]).

    Tracing a 2x grid where each pixel covers its corners makes the polygons rasterise
    back to exactly the mask (pycocotools agrees pixel for pixel). Also says whether the
    region has holes, which a list of COCO polygons cannot represent.
    """
    ys, xs = np.nonzero(mask)
    y0, x0 = ys.min(), xs.min()
    crop = mask[y0:ys.max() + 1, x0:xs.max() + 1].astype(np.uint8)
    h, w = crop.shape
    up = crop.repeat(2, axis=0).repeat(2, axis=1)
    grid = np.zeros((2 * h + 1, 2 * w + 1), np.uint8)
    for dy in (0, 1):
        for dx in (0, 1):
            grid[dy:dy + 2 * h, dx:dx + 2 * w] |= up
    contours, hierarchy = cv2.findContours(grid, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE,
                                           offset=(int(2 * x0), int(2 * y0)))
    has_holes = bool((hierarchy[0][:, 3] >= 0).any())
    outer = [c.reshape(-1, 2) / 2 for c, hier in zip(contours, hierarchy[0]) if hier[3] < 0]
    return [c for c in outer if len(c) >= 3], has_holes


def _keeps_earlier_visible(owner: np.ndarray, areas: list[int], mask: np.ndarray) -> bool:
    """Would painting `mask` on top leave every earlier instance >= MIN_VISIBLE and hole-free?"""
    before = np.bincount(owner.ravel(), minlength=len(areas) + 1)
    after = np.bincount(owner[~mask], minlength=len(areas) + 1)
    for k in np.flatnonzero(after[1:] < before[1:]) + 1:
        if after[k] < MIN_VISIBLE * areas[k - 1]:
            return False
        if _edge_contours((owner == k) & ~mask)[1]:
            return False
    return True


def _pick_colour(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random colour far (in RGB) from nearly all pixels it will cover: the first of a few
    candidates that clears MIN_CONTRAST, else the one with the largest gap."""
    candidates = rng.uniform(0, 255, (COLOUR_TRIES, 3)).astype(np.float32)
    under = image[mask][::max(1, int(mask.sum()) // 256)]  # a fixed subsample is plenty
    distances = np.linalg.norm(under[None, :, :] - candidates[:, None, :], axis=2)
    gaps = np.percentile(distances, 5, axis=1)
    good = np.flatnonzero(gaps >= MIN_CONTRAST)
    return candidates[good[0] if len(good) else int(np.argmax(gaps))]


def _render(cfg: SynthConfig, rng: np.random.Generator):
    """One image: (RGB uint8, instance-owner map with 0 = background, category id per instance)."""
    size = cfg.image_size
    image = _background(size, rng)
    owner = np.zeros((size, size), np.int32)
    areas: list[int] = []
    categories: list[int] = []
    for _ in range(rng.integers(cfg.objects_per_image[0], cfg.objects_per_image[1] + 1)):
        category = int(rng.integers(len(cfg.classes)))
        for _ in range(PLACEMENT_TRIES):
            diameter = rng.uniform(*cfg.object_size) * size
            mask = _rasterise(SHAPES[cfg.classes[category]](diameter, rng), size, rng)
            if mask.any() and _keeps_earlier_visible(owner, areas, mask):
                break
        else:
            continue  # no acceptable placement: the image gets one object fewer
        image[mask] = _pick_colour(image, mask, rng)
        areas.append(int(mask.sum()))
        categories.append(category + 1)
        owner[mask] = len(areas)
    image += rng.standard_normal(image.shape, np.float32) * rng.uniform(0, 4)  # sensor noise
    return np.clip(np.round(image), 0, 255).astype(np.uint8), owner, categories


def _annotation(visible: np.ndarray, category_id: int) -> dict:
    ys, xs = np.nonzero(visible)
    x0, y0 = int(xs.min()), int(ys.min())
    bbox = [float(x0), float(y0), float(xs.max() + 1 - x0), float(ys.max() + 1 - y0)]
    polygons = [c.flatten().tolist() for c in _edge_contours(visible)[0]]
    return {"category_id": category_id, "bbox": bbox, "area": float(visible.sum()),
            "iscrowd": 0, "segmentation": polygons}


def _write_split(cfg: SynthConfig, split: str, count: int, split_dir: Path) -> None:
    if split_dir.exists():
        shutil.rmtree(split_dir)
    (split_dir / "images").mkdir(parents=True)
    (split_dir / "masks").mkdir()
    images, annotations = [], []
    for index in range(count):
        rng = np.random.default_rng([cfg.seed, SPLIT_ORDER.index(split), index])
        pixels, owner, categories = _render(cfg, rng)
        name = f"{index:06d}.png"
        # cv2 encodes PNG several times faster than PIL; a 2-D uint8 array is mode "L"
        cv2.imwrite(str(split_dir / "images" / name), pixels[..., ::-1])
        cv2.imwrite(str(split_dir / "masks" / name), np.array([0, *categories], np.uint8)[owner])
        images.append({"id": index + 1, "file_name": f"images/{name}",
                       "width": cfg.image_size, "height": cfg.image_size})
        for k, category_id in enumerate(categories, start=1):
            ann = _annotation(owner == k, category_id)
            annotations.append({"id": len(annotations) + 1, "image_id": index + 1, **ann})
    categories_json = [{"id": i + 1, "name": name, "supercategory": "shape"}
                       for i, name in enumerate(cfg.classes)]
    coco = {"images": images, "annotations": annotations, "categories": categories_json}
    text = json.dumps(coco, sort_keys=True, separators=(",", ":"))  # one-shot C encoder: fast
    (split_dir / "annotations.json").write_text(text)


def generate(cfg: SynthConfig, out_dir: Path) -> dict[str, int]:
    """Write the splits in `cfg.splits` under out_dir (replacing them); return image counts."""
    out_dir = Path(out_dir)
    counts = {}
    for split in SPLIT_ORDER:
        if split in cfg.splits:
            _write_split(cfg, split, cfg.splits[split], out_dir / split)
            counts[split] = cfg.splits[split]
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params file (uses `synth`)")
    parser.add_argument("--out", default="data/prepared/shapes", help="dataset root to write")
    args = parser.parse_args(argv)
    cfg = load_params(args.params).synth
    start = time.perf_counter()
    counts = generate(cfg, Path(args.out))
    per_split = " ".join(f"{k}={v}" for k, v in counts.items())
    print(f"synth: {per_split} images at {cfg.image_size}px, classes {','.join(cfg.classes)}"
          f" -> {args.out} ({time.perf_counter() - start:.1f}s)")


if __name__ == "__main__":
    main()
