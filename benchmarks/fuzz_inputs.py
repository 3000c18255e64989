"""Hostile inputs for the reader fuzz (benchmarks/fuzz_readers.py, and a slice of it in
tests/adversarial/test_bounded_readers.py): for each import format a tiny source written
from a structured-random draw (COCO JSON, YOLO lines + names, VOC XML, mask images), then
random mutations (a field replaced by a value of another type, NaN/inf, huge numbers and
strings, deep nesting, truncated or bloated bytes); for evaluate-coco a ground truth and
a results file drawn the same way.

Each writer takes hypothesis' `data` and a folder, writes its files and returns a short
label of the input's shape (counted in the fuzz report).
"""

from __future__ import annotations

import functools
import json
import struct
import zlib
from pathlib import Path

import numpy as np
from hypothesis import strategies as st
from PIL import Image

W, H = 32, 24
N_IMAGES = 3  # one per split, so a clean source passes prepare's split rules

LEAF = st.one_of(
    st.none(), st.booleans(), st.integers(-2**64, 2**64),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from([0, -1, 1, 2, 255, 256, 300, 65535, 2**31, 2**32, 10**9, 10**30, "",
                     "nan", "inf", "1e400", "0x1F", " 3 ", "[[", "x" * 3000]),
)
ANY = st.recursive(LEAF, lambda kids: st.lists(kids, max_size=4)
                   | st.dictionaries(st.text(max_size=8), kids, max_size=4), max_leaves=8)
NUMBER = st.one_of(st.floats(-40, 80), st.integers(-5, 60), LEAF)
TEXT_NUMBER = st.one_of(NUMBER.map(str), st.sampled_from(["", " ", "nan", "inf", "-inf",
                                                         "1e309", "12abc", "0" * 400]))


def _paths(obj, limit: int = 200) -> list[tuple]:
    """(container, key) of every value inside obj, breadth first (at most `limit`)."""
    found, queue = [], [obj]
    while queue and len(found) < limit:
        node = queue.pop(0)
        keys = list(node) if isinstance(node, dict) else range(len(node)) \
            if isinstance(node, list) else []
        for key in keys:
            found.append((node, key))
            queue.append(node[key])
    return found


def mutate(data, obj, most: int = 3) -> int:
    """Replace up to `most` values inside obj (in place) by ANY; the number replaced."""
    count = data.draw(st.integers(0, most), label="mutations")
    for _ in range(count):
        paths = _paths(obj)
        if not paths:
            return 0
        node, key = data.draw(st.sampled_from(paths), label="where")
        node[key] = data.draw(ANY, label="replacement")
    return count


def raw_mutation(data, text: bytes) -> tuple[bytes, str]:
    """Sometimes damage serialised bytes: truncate, inject bytes, or nest very deep."""
    kind = data.draw(st.sampled_from(["none"] * 6 + ["truncate", "inject", "deep"]), label="raw")
    if kind == "truncate":
        return text[:data.draw(st.integers(0, max(0, len(text) - 1)))], "truncated"
    if kind == "inject":
        at = data.draw(st.integers(0, len(text)))
        return text[:at] + data.draw(st.binary(min_size=1, max_size=8)) + text[at:], "bytes injected"
    if kind == "deep":
        depth = data.draw(st.sampled_from([40, 100, 3000, 20000]))
        return b"[" * depth + text + b"]" * depth, f"nested {depth} deep"
    return text, ""


def _label(parts: list[str]) -> str:
    return ", ".join(p for p in parts if p) or "well-formed"


def write_images(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        pixels = np.full((H, W, 3), 40 * k, np.uint8)
        Image.fromarray(pixels).save(folder / name)


def huge_png(path: Path, width: int = 20000, height: int = 10000) -> Path:
    """A valid PNG of width x height black pixels (grey), compressed in row chunks: a few
    hundred KB on disk, width * height bytes once decoded."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_huge_png_bytes(width, height))
    return path


@functools.cache
def _huge_png_bytes(width: int, height: int) -> bytes:
    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(
            ">I", zlib.crc32(tag + body) & 0xFFFFFFFF)
    packer, row, parts = zlib.compressobj(9), b"\0" * (width + 1), []
    for start in range(0, height, 1000):
        parts.append(packer.compress(row * min(1000, height - start)))
    parts.append(packer.flush())
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))


# ---- COCO ---------------------------------------------------------------------------
def _rle(data) -> dict:
    size = data.draw(st.sampled_from([[H, W]] * 4 + [[W, H], [0, 0], [H, W + 1], [10**5, 10**5]]))
    counts = data.draw(st.one_of(
        st.lists(st.integers(-3, H * W + 5), max_size=6),
        st.text(alphabet=[chr(c) for c in range(46, 115)], max_size=12),
        st.just([H * W]), st.just([5, 10, H * W - 15]), st.just("0`0"),
        st.just([100, 50, H * W - 150])))
    return {"size": size, "counts": counts}


def _annotation(data, k: int, n_images: int) -> dict:
    ann = {"id": k + 1, "image_id": data.draw(st.sampled_from([*range(1, n_images + 1)] * 3 + [99])),
           "category_id": data.draw(st.sampled_from([1, 2] * 4 + [7])),
           "bbox": data.draw(st.lists(st.floats(-10, 50), min_size=4, max_size=4)),
           "iscrowd": data.draw(st.sampled_from([0, 0, 1])), "area": 10.0}
    kind = data.draw(st.sampled_from(["none", "polygon", "rle"]))
    if kind == "polygon":
        ann["segmentation"] = [data.draw(st.lists(st.floats(-5, 40), min_size=0, max_size=12))]
    elif kind == "rle":
        ann["segmentation"] = _rle(data)
    return ann


def coco_dict(data, n_images: int = N_IMAGES) -> dict:
    """A small COCO ground truth over img0..img{n-1}.png, categories 1 and 2."""
    images = [{"id": k + 1, "file_name": f"img{k}.png", "width": W, "height": H}
              for k in range(n_images)]
    anns = [_annotation(data, k, n_images) for k in range(data.draw(st.integers(0, 6)))]
    return {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}


def write_coco(data, root: Path) -> str:
    write_images(root / "train" / "images", [f"img{k}.png" for k in range(N_IMAGES)])
    coco = coco_dict(data)
    mutated = mutate(data, coco)
    text, raw = raw_mutation(data, json.dumps(coco).encode())
    (root / "train" / "instances_train.json").write_bytes(text)
    return _label([f"{mutated} field(s) mutated" if mutated else "", raw])


# ---- YOLO ---------------------------------------------------------------------------
NAMES_YAML = [
    "names: [a, b]\n", "names: {0: a, 1: b}\n", "names: {0: a, 2: b}\n", "names: a\n",
    "names: [[a, b], {c: d}]\n", "- a\n- b\n", "names: [" + "x" * 400 + "]\n",
    "a: &a [x, x, x]\nb: &b [*a, *a, *a]\nnames: [*b, *b]\n", "names: " + "[" * 200 + "]" * 200,
    "names: !!python/object/apply:os.system [echo]\n", "names: [a, b\n", "\tnames: [a]\n",
]


def _yolo_line(data) -> str:
    klass = data.draw(st.one_of(st.integers(-2, 3).map(str), TEXT_NUMBER), label="class")
    values = data.draw(st.lists(st.one_of(st.floats(-0.5, 1.5).map(str), TEXT_NUMBER),
                                max_size=12), label="values")
    return " ".join([klass, *values])


def write_yolo(data, root: Path) -> str:
    names = [f"img{k}.png" for k in range(N_IMAGES)]
    write_images(root / "images" / "train", names)
    (root / "labels" / "train").mkdir(parents=True)
    raws = []
    for name in names:
        lines = data.draw(st.integers(0, 4), label="lines")
        text, raw = raw_mutation(data, "\n".join(_yolo_line(data) for _ in range(lines)).encode())
        (root / "labels" / "train" / name.replace(".png", ".txt")).write_bytes(text)
        raws.append(raw)
    names_file = data.draw(st.sampled_from(["none", "data.yaml", "names.txt"]))
    if names_file == "data.yaml":
        (root / "data.yaml").write_text(data.draw(st.sampled_from(NAMES_YAML)))
    elif names_file == "names.txt":
        (root / "names.txt").write_text(data.draw(st.sampled_from(["a\nb\n", "", "x" * 300])))
    return _label([f"names: {names_file}", *sorted(set(raws))])


# ---- VOC ----------------------------------------------------------------------------
def _voc_xml(data, k: int) -> str:
    objects = []
    for _ in range(data.draw(st.integers(0, 3))):
        corners = "".join(f"<{c}>{data.draw(TEXT_NUMBER)}</{c}>" for c in
                          data.draw(st.sampled_from([("xmin", "ymin", "xmax", "ymax"),
                                                     ("xmin", "ymin", "xmax")])))
        name = data.draw(st.sampled_from(["a", "b", "", "c" * 300, "<x/>"]))
        objects.append(f"<object><name>{name}</name><bndbox>{corners}</bndbox></object>")
    file_name = data.draw(st.sampled_from([f"img{k}.png", "", "../x.png", "/etc/hostname",
                                           "nope.png", "y" * 2000]))
    size = data.draw(st.sampled_from(["", f"<size><width>{W}</width><height>{H}</height></size>",
                                      "<size><width>{}</width><height>{}</height></size>"]))
    size = size.format(data.draw(TEXT_NUMBER), data.draw(TEXT_NUMBER))
    return f"<annotation><filename>{file_name}</filename>{size}{''.join(objects)}</annotation>"


BOMB = ('<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
        + "".join(f'<!ENTITY {c} "{("&" + p + ";") * 10}">' for p, c in zip("abcdefgh", "bcdefghi"))
        + ']><annotation><filename>&i;</filename></annotation>')


def write_voc(data, root: Path) -> str:
    voc = root / "VOC"
    write_images(voc / "JPEGImages", [f"img{k}.png" for k in range(N_IMAGES)])
    (voc / "Annotations").mkdir(parents=True)
    shapes = []
    for k in range(N_IMAGES):
        special = data.draw(st.sampled_from(["none"] * 8 + ["bomb", "deep"]))
        text = {"bomb": BOMB, "deep": "<a>" * 5000 + "</a>" * 5000}.get(special) or _voc_xml(data, k)
        text, raw = raw_mutation(data, text.encode())
        (voc / "Annotations" / f"img{k}.xml").write_bytes(text)
        shapes += [special if special != "none" else "", raw]
    if data.draw(st.booleans()):
        (root / "labels.txt").write_text("a\nb\n")
    return _label(sorted(set(shapes)))


# ---- masks --------------------------------------------------------------------------
MASK_VALUES = [0, 1, 2, 3, 255, 256, 300, 65535, 2**31 - 1, -1]


def write_masks(data, root: Path) -> str:
    write_images(root / "image", [f"{k}.png" for k in range(N_IMAGES)])
    (root / "label").mkdir()
    shapes = []
    for k in range(N_IMAGES):
        kind = data.draw(st.sampled_from(["L", "L", "I;16", "I", "P", "1", "RGB", "F", "huge"]))
        if kind == "huge":
            huge_png(root / "label" / f"{k}.png")
            shapes.append("200 MP header")
            continue
        size = data.draw(st.sampled_from([(W, H)] * 4 + [(H, W), (1, 1)]))
        values = data.draw(st.lists(st.sampled_from(MASK_VALUES), min_size=1, max_size=4))
        rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
        mask = rng.choice(np.asarray(values, np.int64), (size[1], size[0]))
        path = root / "label" / f"{k}.{'tif' if kind in ('I', 'F') else 'png'}"
        _save_mask(mask, kind, path)
        damaged, raw = raw_mutation(data, path.read_bytes())
        path.write_bytes(damaged)
        shapes.append(f"mode {kind}" + (" (size mismatch)" if size != (W, H) else "")
                      + (f" {raw}" if raw else ""))
    if data.draw(st.booleans()):
        (root / "labels.txt").write_text(data.draw(st.sampled_from(["a\nb\n", "bg\na\n", ""])))
    return _label(sorted(set(shapes)))


def _save_mask(mask: np.ndarray, mode: str, path: Path) -> None:
    if mode in ("L", "P", "1", "RGB"):
        image = Image.fromarray(np.clip(mask, 0, 255).astype(np.uint8))
        image = image.convert(mode) if mode in ("1", "RGB") else image
        if mode == "P":
            image = image.convert("P")
    elif mode == "I;16":
        image = Image.fromarray(np.clip(mask, 0, 65535).astype(np.uint16))
    elif mode == "I":
        image = Image.fromarray(mask.astype(np.int32))
    else:
        image = Image.fromarray(mask.astype(np.float32))
    image.save(path)


# ---- evaluate-coco ------------------------------------------------------------------
def _result(data, n_images: int, segm: bool) -> dict:
    result = {"image_id": data.draw(st.sampled_from([*range(1, n_images + 1)] * 3 + [99])),
              "category_id": data.draw(st.sampled_from([1, 2] * 4 + [9])),
              "score": data.draw(st.floats(0, 1))}
    if segm:
        result["segmentation"] = _rle(data)
    else:
        result["bbox"] = data.draw(st.lists(st.floats(-10, 50), min_size=4, max_size=4))
    return result


def write_evaluate(data, root: Path) -> tuple[str, str]:
    """gt.json and pred.json under root; (iou_type, shape label)."""
    segm = data.draw(st.booleans(), label="segm")
    gt = coco_dict(data)
    results = [_result(data, N_IMAGES, segm) for _ in range(data.draw(st.integers(0, 6)))]
    mutated = mutate(data, gt, 2) + mutate(data, results, 2)
    gt_text, raw_gt = raw_mutation(data, json.dumps(gt).encode())
    pred_text, raw_pred = raw_mutation(data, json.dumps(results).encode())
    root.mkdir(parents=True, exist_ok=True)
    (root / "gt.json").write_bytes(gt_text)
    (root / "pred.json").write_bytes(pred_text)
    return ("segm" if segm else "bbox"), _label([
        "segm" if segm else "bbox", f"{mutated} field(s) mutated" if mutated else "",
        raw_gt and f"gt {raw_gt}", raw_pred and f"results {raw_pred}"])
