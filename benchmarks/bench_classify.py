"""Classification on real photos: visiongate's retrain flow vs raw ultralytics, one split.

    .venv/bin/python benchmarks/bench_classify.py [--epochs 10] [--classes 6] [--write]

The dataset: every object of ../shared/data/coco128-seg whose box is at least `--min-side`
pixels on each side, cropped (10 % margin) into an ImageFolder `<split>/<class>/*.jpg` for
the `--classes` most frequent classes, split 70/15/15 per class by a seeded hash of the
file name. Then, each in its own process on the same folder, same epochs, image size,
batch, optimiser, learning rate and seed:

1. visiongate: a fresh project (`dvc init`), `visiongate data import --format folders`,
   `visiongate retrain --dataset coco-crops` with only `classify` enabled (family yolo,
   `yolov8n-cls.yaml`, augment [] so ultralytics applies its own default augmentation as
   the raw run does); test accuracy from the registered version's MLflow run;
2. raw: `YOLO("yolov8n-cls.yaml").train(data=FOLDER, ...)`, then top-1 accuracy of its
   best.pt on the same test images (scikit-learn accuracy_score).

Wall = the whole process (import included for visiongate; train() + test prediction for
raw). `--write` updates BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.bench_retrain import CLI, cli_env, make_project, run_measured  # noqa: E402
from benchmarks.report import machine, update_section  # noqa: E402

SECTION = "## Classification on real photos (COCO128 crops)"
SHARED = Path(os.environ.get("VISIONGATE_SHARED_DATA", REPO.parent / "shared" / "data"))
COCO = SHARED / "coco128-seg"
SETTINGS = {"imgsz": 64, "batch": 16, "lr": 0.002, "seed": 0}


def build_crops(src: Path, out: Path, n_classes: int, min_side: int) -> dict[str, Counter]:
    """The ImageFolder of object crops; {split: Counter(class)}."""
    from PIL import Image

    names = [n for n in (src / "names.txt").read_text().splitlines()]
    crops = []
    for label in sorted((src / "labels" / "train2017").glob("*.txt")):
        image = src / "images" / "train2017" / f"{label.stem}.jpg"
        if not image.is_file():  # coco128-seg has labels without their image
            continue
        with Image.open(image) as im:
            width, height = im.size
        for n, line in enumerate(label.read_text().splitlines()):
            values = line.split()
            xs = [float(x) * width for x in values[1::2]]
            ys = [float(y) * height for y in values[2::2]]
            box = min(xs), min(ys), max(xs), max(ys)
            if min(box[2] - box[0], box[3] - box[1]) >= min_side:
                crops.append((image, n, names[int(values[0])], box))
    keep = {c for c, _ in Counter(c for *_, c, _ in crops).most_common(n_classes)}
    counts: dict[str, Counter] = {s: Counter() for s in ("train", "val", "test")}
    for image, n, klass, (x1, y1, x2, y2) in crops:
        if klass not in keep:
            continue
        name = f"{image.stem}_{n}.jpg"
        draw = int(hashlib.sha1(name.encode()).hexdigest(), 16) % 100
        split = "train" if draw < 70 else "val" if draw < 85 else "test"
        mx, my = 0.1 * (x2 - x1), 0.1 * (y2 - y1)
        with Image.open(image) as im:
            crop = im.convert("RGB").crop((int(max(0, x1 - mx)), int(max(0, y1 - my)),
                                           int(min(im.width, x2 + mx)),
                                           int(min(im.height, y2 + my))))
        folder = out / split / klass.replace(" ", "_")
        folder.mkdir(parents=True, exist_ok=True)
        crop.save(folder / name, quality=95)
        counts[split][klass] += 1
    return counts


def raw(folder: Path, out: Path, epochs: int) -> None:
    """(Subprocess) raw ultralytics train() + top-1 on the test split; prints JSON."""
    from sklearn.metrics import accuracy_score

    from visiongate.models import yolo

    t0 = time.perf_counter()
    ultralytics = yolo._ultralytics()  # offline, ultralytics' own MLflow callback off
    model = ultralytics.YOLO("yolov8n-cls.yaml", task="classify")
    with yolo._all_cores():
        model.train(data=str(folder), epochs=epochs, imgsz=SETTINGS["imgsz"],
                    batch=SETTINGS["batch"], nbs=SETTINGS["batch"], optimizer="AdamW",
                    lr0=SETTINGS["lr"], seed=SETTINGS["seed"], deterministic=True, device="cpu",
                    amp=False, project=str(out), name="raw", exist_ok=True, plots=False,
                    workers=0, verbose=False, pretrained=False)
        train_s = time.perf_counter() - t0
        best = ultralytics.YOLO(str(model.trainer.best), task="classify")
        classes = sorted(p.name for p in (folder / "test").iterdir())
        paths = sorted((folder / "test").glob("*/*.jpg"))
        results = best.predict([str(p) for p in paths], imgsz=SETTINGS["imgsz"], verbose=False)
    truth = [classes.index(p.parent.name) for p in paths]
    guess = [classes.index(r.names[int(r.probs.top1)]) for r in results]
    print(json.dumps({"train_s": train_s, "accuracy": accuracy_score(truth, guess)}))


def flow_project(root: Path, epochs: int) -> Path:
    """A fresh project with only `classify` on: yolo, the raw run's settings."""
    def classify_only(params: dict) -> None:
        params["detect"]["enabled"] = False
        params["classify"] = {"enabled": True, "family": "yolo", "epochs": epochs,
                              "augment": [], **SETTINGS, "gate": {"floors": {"accuracy": 0.0}}}

    return make_project(root, epochs, segment=False, edit=classify_only)


def flow_accuracy(project: Path) -> float:
    from mlflow.tracking import MlflowClient

    from visiongate.config import load_params
    from visiongate.tracking import tracking_uri

    client = MlflowClient(tracking_uri(project, load_params(project / "params.yaml").mlflow))
    version = client.get_model_version_by_alias("coco-crops-classify", "challenger")
    return client.get_run(version.run_id).data.metrics["test/accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--min-side", type=int, default=24)
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--raw", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw:
        return raw(Path(args.raw[0]), Path(args.raw[1]), int(args.raw[2]))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        counts = build_crops(COCO, work / "crops", args.classes, args.min_side)
        env = cli_env(work / "prefect-home")
        project = flow_project(work / "project", args.epochs)
        t0 = time.perf_counter()
        run_measured([*CLI, "data", "import", "--format", "folders",
                      str(work / "crops"), "--name", "coco-crops", "--root",
                      str(project)], project, env, work / "import.log")
        run_measured([*CLI, "retrain", "--dataset", "coco-crops", "--root", str(project)],
                     project, env, work / "flow.log")
        flow_wall = time.perf_counter() - t0
        accuracy = flow_accuracy(project)
        raw_run = run_measured([sys.executable, __file__, "--raw", str(work / "crops"),
                                str(work / "raw"), str(args.epochs)], REPO, env, work / "raw.log")
        raw_result = json.loads(raw_run.log.strip().splitlines()[-1])
    text = render(counts, args, flow_wall, accuracy, raw_run.wall, raw_result)
    print(text)
    if args.write:
        update_section(text)


def render(counts, args, flow_wall, accuracy, raw_wall, raw_result) -> str:
    sizes = ", ".join(f"{s} {sum(c.values())}" for s, c in counts.items())
    classes = ", ".join(f"{k} {v}" for k, v in (counts["train"] + counts["val"] +
                                                counts["test"]).most_common())
    return "\n".join([
        SECTION, "",
        f"`benchmarks/bench_classify.py --epochs {args.epochs} --classes {args.classes}` on "
        f"{machine()}: crops of COCO128 objects ≥ {args.min_side} px ({sizes} images; "
        f"{classes}); yolov8n-cls from scratch, {args.epochs} epochs, imgsz "
        f"{SETTINGS['imgsz']}, batch {SETTINGS['batch']}, AdamW lr {SETTINGS['lr']}, seed "
        f"{SETTINGS['seed']}; each run its own process.", "",
        "| | test top-1 accuracy | wall | |", "|---|---:|---:|---|",
        f"| visiongate (`data import` + `retrain`) | {accuracy:.3f} | {flow_wall:.1f} s | "
        f"{flow_wall / raw_wall:.2f}× raw |",
        f"| raw ultralytics (train() + test predict) | {raw_result['accuracy']:.3f} | "
        f"{raw_wall:.1f} s | train() alone {raw_result['train_s']:.1f} s |", ""])


if __name__ == "__main__":
    main()
