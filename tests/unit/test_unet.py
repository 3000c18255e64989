"""U-Net: model shape, loss, a tiny train/predict/resume round trip on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from visiongate.config import SegmentConfig
from visiongate.models import CheckpointMeta
from visiongate.models import unet

CLASSES = ["circle", "square", "triangle"]
METRIC_KEYS = {"train_loss", "val_loss", "val_miou", "lr"}


def _write_split(split_dir: Path, n: int, rng: np.random.Generator, size: int = 64) -> None:
    """n images with one or two flat shapes on a noisy background, canonical layout."""
    (split_dir / "images").mkdir(parents=True)
    (split_dir / "masks").mkdir(parents=True)
    images = []
    for i in range(n):
        noise = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
        img = Image.fromarray(noise)
        mask = Image.new("L", (size, size), 0)
        for _ in range(int(rng.integers(1, 3))):
            cat = int(rng.integers(1, 4))
            x0, y0 = (int(v) for v in rng.integers(0, size // 2, 2))
            box = [x0, y0, x0 + size // 3, y0 + size // 3]
            fill = tuple(int(v) for v in rng.integers(120, 256, 3))
            for draw, value in ((ImageDraw.Draw(img), fill), (ImageDraw.Draw(mask), cat)):
                if cat == 1:
                    draw.ellipse(box, fill=value)
                elif cat == 2:
                    draw.rectangle(box, fill=value)
                else:
                    apex = ((box[0] + box[2]) // 2, box[1])
                    draw.polygon([(box[0], box[3]), (box[2], box[3]), apex], fill=value)
        name = f"{i:06d}.png"
        img.save(split_dir / "images" / name)
        mask.save(split_dir / "masks" / name)
        images.append({"id": i + 1, "file_name": f"images/{name}", "width": size, "height": size})
    categories = [{"id": k + 1, "name": c} for k, c in enumerate(CLASSES)]
    coco = {"images": images, "annotations": [], "categories": categories}
    (split_dir / "annotations.json").write_text(json.dumps(coco))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(0)
    _write_split(root / "train", 8, rng)
    _write_split(root / "val", 4, rng)
    return root


def _cfg(**overrides) -> SegmentConfig:
    base = {"epochs": 1, "imgsz": 64, "batch": 4, "base_channels": 4, "lr": 0.01, "device": "cpu"}
    return SegmentConfig(**{**base, **overrides})


def _train(cfg: SegmentConfig, data_root: Path, out_dir: Path) -> list[tuple[int, dict]]:
    calls: list[tuple[int, dict]] = []
    unet.train(cfg, data_root, out_dir, lambda epoch, metrics: calls.append((epoch, metrics)))
    return calls


def test_forward_shape():
    model = unet.UNet(num_classes=4, base_channels=4)
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 4, 64, 64)


def test_loss_decreases_on_a_tiny_batch():
    torch.manual_seed(0)
    model = unet.UNet(num_classes=3, base_channels=4)
    x = torch.randn(2, 3, 32, 32)
    y = torch.zeros(2, 32, 32, dtype=torch.long)
    y[:, 8:20, 8:20], y[:, 22:, 22:] = 1, 2
    loss_fn = unet.SegLoss(torch.ones(3))
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    losses = []
    for _ in range(15):
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_class_weights_favour_rare_classes():
    masks = np.zeros((1, 10, 10), np.uint8)
    masks[0, :1, :] = 1  # class 1 covers 10% of pixels, class 2 none
    w = unet.class_weights(masks, 3)
    assert w.shape == (3,) and float(w.mean()) == pytest.approx(1.0)
    assert w[0] < w[1] < w[2]


def test_train_writes_loadable_checkpoints_and_reports_each_epoch(data_root, tmp_path):
    cfg = _cfg(epochs=2)
    calls = _train(cfg, data_root, tmp_path / "ckpt")
    assert [e for e, _ in calls] == [1, 2]
    assert all(set(m) == METRIC_KEYS for _, m in calls)
    assert all(0.0 <= m["val_miou"] <= 1.0 for _, m in calls)
    for name in ("last.pt", "best.pt"):
        state = torch.load(tmp_path / "ckpt" / name, map_location="cpu", weights_only=True)
        assert state["config"] == cfg.model_dump(mode="json")
        assert state["class_names"] == CLASSES
    assert torch.load(tmp_path / "ckpt" / "last.pt", weights_only=True)["epoch"] == 2
    meta = CheckpointMeta.read(tmp_path / "ckpt")
    assert meta.family == "unet" and meta.task == "segment" and meta.weights == "best.pt"
    assert meta.class_names == tuple(CLASSES) and meta.imgsz == 64 and meta.format_version == 2


def test_predict_returns_label_maps_at_each_image_size(data_root, tmp_path):
    ckpt = unet.train(_cfg(), data_root, tmp_path / "ckpt", lambda e, m: None)
    odd = tmp_path / "odd.png"
    Image.new("RGB", (50, 37), (200, 30, 30)).save(odd)
    paths = [odd, *sorted((data_root / "val" / "images").glob("*.png"))]
    maps = unet.predict(ckpt, paths)
    assert len(maps) == len(paths)
    assert maps[0].shape == (37, 50)
    assert all(m.shape == (64, 64) for m in maps[1:])
    assert all(m.dtype == np.uint8 and m.max() <= len(CLASSES) for m in maps)


def test_resume_continues_after_the_last_epoch(data_root, tmp_path):
    out = tmp_path / "ckpt"
    assert [e for e, _ in _train(_cfg(epochs=1), data_root, out)] == [1]
    assert [e for e, _ in _train(_cfg(epochs=2), data_root, out)] == [2]
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 2


def test_changed_config_starts_over(data_root, tmp_path):
    out = tmp_path / "ckpt"
    _train(_cfg(), data_root, out)
    assert [e for e, _ in _train(_cfg(lr=0.005), data_root, out)] == [1]
