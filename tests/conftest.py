import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# Runners (`visiongate serve`) and workers look for due runs every 10 s by default; the
# server tests start dozens of runs, each waiting half a poll on average.
os.environ.setdefault("PREFECT_RUNNER_POLL_FREQUENCY", "1")
os.environ.setdefault("PREFECT_WORKER_QUERY_SECONDS", "1")

import json  # noqa: E402
import xml.etree.ElementTree as ET  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

# The real datasets live beside the project (../shared/data), never inside it;
# VISIONGATE_SHARED_DATA points elsewhere.
SHARED_DATA = Path(os.environ.get("VISIONGATE_SHARED_DATA",
                                  Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(autouse=True)
def _stack_environment_restored():
    """`flows.cli.main` points the process at a running `visiongate up` stack by setting
    MLFLOW_TRACKING_URI / PREFECT_API_URL in os.environ, as a CLI process should; a test that
    calls it in-process must not hand a server it has since stopped to the tests after it."""
    names = ("MLFLOW_TRACKING_URI", "PREFECT_API_URL")
    before = {name: os.environ.get(name) for name in names}
    yield
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def shared_data():
    """Root of the real test datasets; the test is skipped when they are absent."""
    def get(name: str) -> Path:
        path = SHARED_DATA / name
        if not path.is_dir():
            pytest.skip(f"real dataset {name} not found at {path} (set VISIONGATE_SHARED_DATA)")
        return path
    return get


# ---- tiny sources in each supported format -------------------------------------------
# A scene: image size (w, h) and objects [(class index, [x, y, w, h] in pixels)].
W, H = 64, 48
SCENE = [(0, [8.0, 6.0, 20.0, 12.0]), (1, [30.0, 20.0, 16.0, 20.0])]
NAMES = ["cat", "dog"]


def write_image(path: Path, size=(W, H), seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def yolo_line(klass: int, box, size=(W, H)) -> str:
    x, y, w, h = box
    return f"{klass} {(x + w / 2) / size[0]:.6f} {(y + h / 2) / size[1]:.6f} " \
           f"{w / size[0]:.6f} {h / size[1]:.6f}"


def yolo_polygon(klass: int, box, size=(W, H)) -> str:
    x, y, w, h = box
    points = [x, y, x + w, y, x + w, y + h, x, y + h]
    return f"{klass} " + " ".join(f"{v / size[i % 2]:.6f}" for i, v in enumerate(points))


def make_yolo(root: Path, n: int = 6, splits=("train",), polygons=False) -> Path:
    """root/images/<split>/imgK.png + labels/<split>/imgK.txt with SCENE, data.yaml names."""
    for s, split in enumerate(splits):
        for k in range(n):  # other pixels per split: the same photo twice is a split leak
            write_image(root / "images" / split / f"{split}{k}.png", seed=k + 1000 * s)
            line = yolo_polygon if polygons else yolo_line
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split / f"{split}{k}.txt").write_text(
                "".join(line(c, b) + "\n" for c, b in SCENE))
    (root / "data.yaml").write_text("names: {0: cat, 1: dog}\n")
    return root


def make_coco(root: Path, n: int = 6, splits=("train",), polygons=True) -> Path:
    """root/<split>/images/*.png + root/<split>/instances_<split>.json (category ids 10, 20)."""
    for s, split in enumerate(splits):
        images, anns = [], []
        for k in range(n):
            write_image(root / split / "images" / f"{split}{k}.png", seed=k + 1000 * s)
            images.append({"id": k + 1, "file_name": f"images/{split}{k}.png",
                           "width": W, "height": H})
            for c, (x, y, w, h) in SCENE:
                ann = {"id": len(anns) + 1, "image_id": k + 1, "category_id": 10 * (c + 1),
                       "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0}
                if polygons:
                    ann["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
                anns.append(ann)
        coco = {"images": images, "annotations": anns,
                "categories": [{"id": 10 * (c + 1), "name": n} for c, n in enumerate(NAMES)]}
        (root / split / f"instances_{split}.json").write_text(json.dumps(coco))
    return root


def voc_xml(file_name: str, objects, size=(W, H)) -> str:
    ann = ET.Element("annotation")
    ET.SubElement(ann, "filename").text = file_name
    s = ET.SubElement(ann, "size")
    for tag, v in (("width", size[0]), ("height", size[1]), ("depth", 3)):
        ET.SubElement(s, tag).text = str(v)
    for name, (x, y, w, h) in objects:
        obj = ET.SubElement(ann, "object")
        ET.SubElement(obj, "name").text = name
        box = ET.SubElement(obj, "bndbox")
        # VOC: 1-based inclusive corners
        for tag, v in (("xmin", x + 1), ("ymin", y + 1), ("xmax", x + w), ("ymax", y + h)):
            ET.SubElement(box, tag).text = f"{v:g}"
    return ET.tostring(ann, encoding="unicode")


def make_voc(root: Path, n: int = 6, image_sets: dict | None = None) -> Path:
    """root/VOC/{Annotations,JPEGImages,ImageSets/Main} with SCENE."""
    voc = root / "VOC"
    (voc / "Annotations").mkdir(parents=True, exist_ok=True)
    for k in range(n):
        write_image(voc / "JPEGImages" / f"img{k}.png", seed=k)
        (voc / "Annotations" / f"img{k}.xml").write_text(
            voc_xml(f"img{k}.png", [(NAMES[c], b) for c, b in SCENE]))
    for split, ids in (image_sets or {}).items():
        (voc / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


def scene_mask(size=(W, H), value: int = 255) -> np.ndarray:
    mask = np.zeros((size[1], size[0]), np.uint8)
    for _, (x, y, w, h) in SCENE:
        mask[int(y):int(y + h), int(x):int(x + w)] = value
    return mask


def make_masks(root: Path, n: int = 6) -> Path:
    """root/image/K.png + root/label/K.png (binary 0/255, two rectangles)."""
    for k in range(n):
        write_image(root / "image" / f"{k}.png", seed=k)
        (root / "label").mkdir(parents=True, exist_ok=True)
        Image.fromarray(scene_mask()).save(root / "label" / f"{k}.png")
    return root


@pytest.fixture
def sources():
    """Writers of tiny sources: make_yolo/make_coco/make_voc/make_masks(root, ...)."""
    return SimpleNamespace(make_yolo=make_yolo, make_coco=make_coco, make_voc=make_voc,
                           make_masks=make_masks, write_image=write_image, yolo_line=yolo_line,
                           yolo_polygon=yolo_polygon, voc_xml=voc_xml, scene_mask=scene_mask,
                           W=W, H=H, SCENE=SCENE, NAMES=NAMES)
