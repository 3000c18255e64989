"""The data and the references of bench_real.py: the COCO128 split (and its train halves)
as YOLO folders, raw ultralytics on them, a plain torch loop of the U-Net, and the
checkpoint folder that lets visiongate's evaluator score a reference model.

The references run as subprocesses of bench_real.py (`--raw-yolo`, `--plain-unet`,
`--val`); each prints one JSON line last.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import time
from pathlib import Path

SPLITS = ("train", "val", "test")


def draw(stem: str, seed: int) -> int:
    """A seeded, order-free number in 0..99 for an image: its split and its half."""
    return int(hashlib.sha1(f"{seed}:{stem}".encode()).hexdigest(), 16) % 100


def coco_splits(src: Path, seed: int, limit: int = 0) -> dict[str, list[str]]:
    """{split: image stems} of coco128-seg: test 15 %, val 15 %, train the rest, by a
    seeded hash of the file name; `limit` > 0 keeps that many images (hash order)."""
    stems = sorted((p.stem for p in (src / "images" / "train2017").glob("*.jpg")),
                   key=lambda s: (draw(s, seed), s))
    if limit:
        stems = stems[:limit]
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    for stem in stems:
        d = int(hashlib.sha1(f"split:{seed}:{stem}".encode()).hexdigest(), 16) % 100
        out["test" if d < 15 else "val" if d < 30 else "train"].append(stem)
    return {s: sorted(v) for s, v in out.items()}


def halves(train: list[str], seed: int) -> tuple[list[str], list[str]]:
    """The train stems in two halves (A, B), by a seeded hash: deterministic."""
    ordered = sorted(train, key=lambda s: (draw(f"half:{s}", seed), s))
    mid = len(ordered) // 2
    return sorted(ordered[:mid]), sorted(ordered[mid:])


def write_yolo(src: Path, out: Path, splits: dict[str, list[str]]) -> Path:
    """`out/images/<split>/X.jpg` + `out/labels/<split>/X.txt` (as in coco128-seg; an image
    without a label file stays without one) + names.txt; returns out."""
    names = (src / "names.txt").read_text()
    for split, stems in splits.items():
        for kind in ("images", "labels"):
            (out / kind / split).mkdir(parents=True, exist_ok=True)
        for stem in stems:
            shutil.copy2(src / "images" / "train2017" / f"{stem}.jpg",
                         out / "images" / split / f"{stem}.jpg")
            label = src / "labels" / "train2017" / f"{stem}.txt"
            if label.is_file():
                shutil.copy2(label, out / "labels" / split / f"{stem}.txt")
    (out / "names.txt").write_text(names)
    return out


def mask_halves(src: Path, out: Path, prepared: Path, seed: int) -> list[tuple[Path, int]]:
    """isbi-a and isbi-b as mask folders (`image/<split>/X.png`, `label/<split>/X.png`): the
    prepared isbi split's val and test, its train split halved (halves); [(folder, train)]."""
    splits = {s: sorted(p.stem for p in (prepared / s / "images").iterdir()) for s in SPLITS}
    done = []
    for tag, half in zip("ab", halves(splits["train"], seed)):
        folder = out / f"isbi-{tag}"
        for split, stems in {**splits, "train": half}.items():
            for kind in ("image", "label"):
                (folder / kind / split).mkdir(parents=True, exist_ok=True)
                for stem in stems:
                    shutil.copy2(src / kind / f"{stem}.png", folder / kind / split / f"{stem}.png")
        done.append((folder, len(half)))
    return done


def same_split(prepared: Path, src: Path, images: str = "images") -> None:
    """Raise unless each prepared split holds exactly the source split's images."""
    for split in SPLITS:
        have = {p.stem for p in (prepared / split / "images").iterdir()}
        want = {p.stem for p in (src / images / split).iterdir()}
        if have != want:
            raise RuntimeError(f"{prepared}/{split}: {len(have ^ want)} image(s) differ from "
                               f"{src}/{images}/{split}; the comparison would not be fair")


def data_yaml(folder: Path) -> Path:
    """An ultralytics data.yaml for a write_yolo folder (train/val/test), in that folder."""
    import yaml

    names = [n for n in (folder / "names.txt").read_text().splitlines() if n.strip()]
    path = folder / "data.yaml"
    path.write_text(yaml.safe_dump({"path": str(folder), **{s: f"images/{s}" for s in SPLITS},
                                    "names": dict(enumerate(names))}, sort_keys=False))
    return path


def wrap(weights: Path, folder: Path, family: str, task: str, class_names: list[str],
         config: dict) -> Path:
    """A checkpoint folder (weights + meta.json) around a reference model, so that
    visiongate.evaluate scores it exactly as it scores the flow's candidate."""
    from visiongate.models.meta import CheckpointMeta

    folder.mkdir(parents=True, exist_ok=True)
    if weights != folder / "best.pt":
        shutil.copy2(weights, folder / "best.pt")
    CheckpointMeta(family=family, task=task, class_names=class_names, weights="best.pt",
                   config=config).write(folder)
    return folder


def raw_yolo(spec: dict) -> None:
    """(Subprocess) raw ultralytics train() on the YOLO folder, then its best.pt scored on
    the prepared test split by visiongate's evaluator; prints JSON."""
    from visiongate.datasets.coco import load_split
    from visiongate.evaluate import evaluate
    from visiongate.models import yolo

    t0 = time.perf_counter()
    ultralytics = yolo._ultralytics()  # offline, ultralytics' own MLflow callback off
    task = "segment" if spec["task"] == "instance" else "detect"
    model = ultralytics.YOLO(spec["model"], task=task)
    with yolo._all_cores():  # the thread count visiongate trains with
        model.train(data=spec["data"], epochs=spec["epochs"], imgsz=spec["imgsz"],
                    batch=spec["batch"], nbs=spec["batch"], optimizer="AdamW", lr0=spec["lr"],
                    seed=spec["seed"], deterministic=True, device="cpu", amp=False,
                    project=spec["out"], name="raw", exist_ok=True, plots=False, workers=0,
                    verbose=False, pretrained=False, **spec["ultralytics_args"])
    train_s = time.perf_counter() - t0
    test = Path(spec["test"])
    folder = wrap(Path(model.trainer.best), Path(spec["out"]) / "checkpoint", "yolo",
                  spec["task"], list(load_split(test).class_names), spec["config"])
    t1 = time.perf_counter()
    metrics = evaluate(folder, test)
    print(json.dumps({"train_s": train_s, "eval_s": time.perf_counter() - t1,
                      "checkpoint": str(folder), "metrics": metrics}))


def ultralytics_val(weights: str, data: str, task: str, imgsz: int, batch: int) -> None:
    """(Subprocess) ultralytics' own val() on the test split: the cross-check; prints JSON."""
    from visiongate.models import yolo

    ultralytics = yolo._ultralytics()
    model = ultralytics.YOLO(weights, task="segment" if task == "instance" else "detect")
    with yolo._all_cores():
        result = model.val(data=data, split="test", imgsz=imgsz, batch=batch, device="cpu",
                           plots=False, verbose=False, workers=0, project=str(Path(data).parent),
                           name="val", exist_ok=True)
    out = {"map50": float(result.box.map50)}
    if task == "instance":
        out["mask_map50"] = float(result.seg.map50)
    print(json.dumps(out))


def plain_unet(spec: dict) -> None:
    """(Subprocess) the U-Net class trained by a plain torch loop on the prepared train
    split: AdamW + cosine, the model's own loss (class-weighted CE + Dice), random joint
    flips / 90° turns, the epoch with the best val mIoU kept; then scored on the test
    split by visiongate's evaluator; prints JSON."""
    import numpy as np
    import torch

    from visiongate.evaluate import evaluate
    from visiongate.models.unet import DEPTH, SegLoss, UNet, class_weights, read_split, to_input

    t0 = time.perf_counter()
    random.seed(spec["seed"])
    np.random.seed(spec["seed"])
    torch.manual_seed(spec["seed"])
    root, imgsz, batch = Path(spec["data"]), spec["imgsz"], spec["batch"]
    train_x, train_y, names = read_split(root / "train", imgsz)
    val_x, val_y, _ = read_split(root / "val", imgsz)
    k = len(names) + 1
    model = UNet(k, spec["base_channels"], DEPTH)
    loss_fn = SegLoss(class_weights(train_y, k))
    steps = spec["epochs"] * math.ceil(len(train_x) / batch)
    opt = torch.optim.AdamW(model.parameters(), lr=spec["lr"], weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    x_all = torch.from_numpy(train_x).permute(0, 3, 1, 2)
    y_all = torch.from_numpy(train_y).long()
    best, best_state = -1.0, None
    for epoch in range(1, spec["epochs"] + 1):
        model.train()
        order = torch.randperm(len(x_all))
        for i in range(0, len(order), batch):
            x, y = _flip_jointly(x_all[order[i:i + batch]], y_all[order[i:i + batch]])
            loss = loss_fn(model(to_input(x, torch.device("cpu"))), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        miou = _val_miou(model, val_x, val_y, k, batch)
        print(f"plain unet epoch {epoch}/{spec['epochs']} loss {loss.item():.4f} "
              f"val_miou {miou:.4f}", flush=True)
        if miou > best:
            best, best_state = miou, {n: t.clone() for n, t in model.state_dict().items()}
    train_s = time.perf_counter() - t0
    folder = Path(spec["out"]) / "checkpoint"
    folder.mkdir(parents=True, exist_ok=True)
    config = {"imgsz": imgsz, "batch": batch, "base_channels": spec["base_channels"]}
    torch.save({"state_dict": best_state, "config": config, "class_names": names,
                "depth": DEPTH}, folder / "best.pt")
    wrap(folder / "best.pt", folder, "unet", "segment", names, config)
    t1 = time.perf_counter()
    metrics = evaluate(folder, root / "test")
    print(json.dumps({"train_s": train_s, "eval_s": time.perf_counter() - t1,
                      "checkpoint": str(folder), "metrics": metrics}))


def _flip_jointly(x, y):
    """Each image and its mask: horizontal flip, vertical flip, 90° turn, each p = 0.5."""
    import torch

    xs, ys = [], []
    for image, mask in zip(x, y):
        if random.random() < 0.5:
            image, mask = image.flip(-1), mask.flip(-1)
        if random.random() < 0.5:
            image, mask = image.flip(-2), mask.flip(-2)
        if random.random() < 0.5:
            image, mask = image.rot90(1, (-2, -1)), mask.rot90(1, (-2, -1))
        xs.append(image)
        ys.append(mask)
    return torch.stack(xs), torch.stack(ys)


def _val_miou(model, images, masks, k: int, batch: int) -> float:
    """mIoU over the classes present, all val pixels pooled (at the training size)."""
    import numpy as np
    import torch

    from visiongate.models.unet import to_input

    model.eval()
    cm = np.zeros((k, k), np.int64)
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            x = torch.from_numpy(images[i:i + batch]).permute(0, 3, 1, 2)
            pred = model(to_input(x, torch.device("cpu"))).argmax(1).numpy()
            cm += np.bincount(masks[i:i + batch].astype(np.int64).ravel() * k + pred.ravel(),
                              minlength=k * k).reshape(k, k)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    return float(np.mean(tp[union > 0] / union[union > 0]))
