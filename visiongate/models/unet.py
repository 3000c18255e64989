"""U-Net for semantic segmentation (plain torch, trained from scratch, nothing downloaded).

Loss = class-weighted cross-entropy + soft multi-class Dice. Checkpoints (`last.pt` every
epoch, `best.pt` on the best val mIoU) hold only tensors and primitives, so they load with
`torch.load(..., weights_only=True)`; each stores the config it was trained with.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from visiongate.datasets.coco import load_split, read_semantic_mask
from visiongate.devices import amp_enabled, select_device
from visiongate.metrics import semantic_metrics
from visiongate.models import OnEpoch, read_meta, write_meta

DEPTH = 4  # resolution levels; the bottleneck sits at imgsz / 2**(DEPTH-1)


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for c in (c_in, c_out):  # conv-BN-ReLU twice; BN makes the conv bias redundant
        layers += [nn.Conv2d(c, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                   nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class UNet(nn.Module):
    """Encoder/decoder with skip connections; channels double at each level down."""

    def __init__(self, num_classes: int, base_channels: int = 16, depth: int = DEPTH):
        super().__init__()
        chans = [base_channels * 2**i for i in range(depth)]
        self.down = nn.ModuleList(_conv_block(c_in, c) for c_in, c in zip([3, *chans[:-1]], chans))
        self.up = nn.ModuleList(nn.ConvTranspose2d(c * 2, c, 2, stride=2) for c in chans[:-1])
        self.fuse = nn.ModuleList(_conv_block(c * 2, c) for c in chans[:-1])
        self.head = nn.Conv2d(chans[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for up, fuse in zip(reversed(self.up), reversed(self.fuse)):
            x = fuse(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


class SegLoss(nn.Module):
    """Cross-entropy (class weights for imbalance) + soft Dice averaged over classes."""

    def __init__(self, class_weights: torch.Tensor):
        super().__init__()
        self.register_buffer("class_weights", class_weights.float())

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()  # Dice sums overflow fp16 under autocast
        ce = F.cross_entropy(logits, target, weight=self.class_weights)
        probs = logits.softmax(dim=1)
        onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).float()
        inter = (probs * onehot).sum(dim=(0, 2, 3))
        total = probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
        dice = (2 * inter + 1.0) / (total + 1.0)
        return ce + (1 - dice).mean()


def _read_split(split_dir: Path, imgsz: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """All images (N,S,S,3 uint8) and masks (N,S,S uint8) of a split, resized, + class names."""
    split = load_split(split_dir)
    ids = sorted(c["id"] for c in split.categories)
    if ids != list(range(1, len(ids) + 1)):
        raise ValueError(f"{split_dir}: category ids must be 1..K for label maps, got {ids}")
    images, masks = [], []
    for image in sorted(split.images, key=lambda i: i["id"]):
        with Image.open(split.image_path(image)) as im:
            images.append(np.asarray(im.convert("RGB").resize((imgsz, imgsz), Image.BILINEAR)))
        mask = Image.fromarray(read_semantic_mask(split, image))
        masks.append(np.asarray(mask.resize((imgsz, imgsz), Image.NEAREST)))
    return np.stack(images), np.stack(masks), ["background", *split.class_names]


def class_weights(masks: np.ndarray, num_classes: int) -> torch.Tensor:
    """Inverse square-root pixel frequency, normalised to mean 1 (absent classes count 1)."""
    counts = np.bincount(masks.ravel(), minlength=num_classes)[:num_classes].astype(np.float64)
    w = 1.0 / np.sqrt(np.maximum(counts, 1.0) / counts.sum())
    return torch.tensor(w / w.mean(), dtype=torch.float32)


class _Arrays(Dataset):
    """In-memory (image, mask) pairs; the transform is applied jointly to both."""

    def __init__(self, images: np.ndarray, masks: np.ndarray, transform: A.Compose | None = None):
        self.images, self.masks, self.transform = images, masks, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.images[i], self.masks[i]
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        return image, torch.from_numpy(np.ascontiguousarray(mask)).long()


def _augment(seed: int) -> A.Compose:
    """Joint image+mask flips/rotations: shapes look the same any way up."""
    flips = [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5), A.RandomRotate90(p=0.5)]
    return A.Compose(flips, seed=seed)


def _to_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (B,3,H,W) -> float, roughly zero-centred."""
    return (images.to(device, non_blocking=True).float() / 255.0 - 0.5) / 0.25


@torch.inference_mode()
def _evaluate(model: nn.Module, loader: DataLoader, loss_fn: SegLoss, device: torch.device,
              class_names: list[str]) -> tuple[float, float]:
    """(val loss, val mIoU) — mIoU from the project's evaluator, as the gate will see it."""
    model.eval()
    total, preds, targets = 0.0, [], []
    for images, masks in loader:
        masks = masks.to(device)
        with torch.autocast(device.type, enabled=amp_enabled(device)):
            logits = model(_to_input(images, device))
        total += float(loss_fn(logits, masks)) * len(masks)
        preds += list(logits.argmax(1).to(torch.uint8).cpu().numpy())
        targets += list(masks.to(torch.uint8).cpu().numpy())
    return total / max(len(targets), 1), semantic_metrics(preds, targets, class_names)["miou"]


def _train_epoch(model, loader, loss_fn, opt, sched, scaler, device, desc: str) -> float:
    model.train()
    total, n = 0.0, 0
    bar = tqdm(loader, desc=desc, leave=False, disable=None)
    for images, masks in bar:
        masks = masks.to(device)
        with torch.autocast(device.type, enabled=amp_enabled(device)):
            loss = loss_fn(model(_to_input(images, device)), masks)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sched.step()
        total += loss.item() * len(masks)
        n += len(masks)
        bar.set_postfix(loss=f"{total / n:.3f}")
    return total / max(n, 1)


def _warmup_cosine(total_steps: int, warmup_frac: float = 0.05):
    """lr factor per step: linear warm-up, then cosine to ~0. A plain function of `total_steps`,
    so a resumed run with more epochs stretches the remaining schedule instead of breaking."""
    warmup = max(1, int(total_steps * warmup_frac))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1 + math.cos(math.pi * progress))

    return factor


_NOT_LEARNED = {"epochs", "device", "enabled", "gate"}  # keys that may change on resume


def _same_run(a: dict, b: dict) -> bool:
    return {k: v for k, v in a.items() if k not in _NOT_LEARNED} == {
        k: v for k, v in b.items() if k not in _NOT_LEARNED}


def _resume(path: Path, config: dict, model, opt, sched, scaler) -> tuple[int, float]:
    """(first epoch to run, best val mIoU so far); starts over when the config differs."""
    if not path.exists():
        return 1, -1.0
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not _same_run(state.get("config", {}), config):
        print(f"unet: {path} was trained with another config; starting over")
        return 1, -1.0
    model.load_state_dict(state["state_dict"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    print(f"unet: resuming after epoch {state['epoch']} from {path}")
    return state["epoch"] + 1, state["best_miou"]


@dataclass
class _Data:
    train: DataLoader
    val: DataLoader
    class_names: list[str]
    class_weights: torch.Tensor
    generator: torch.Generator
    augment: A.Compose

    def reseed(self, seed: int) -> None:
        """Per-epoch random streams, so a resumed run sees the batches an unbroken one would."""
        self.generator.manual_seed(seed)
        self.augment.set_random_seed(seed)


def _load_data(cfg, data_root: Path) -> _Data:
    train_x, train_y, class_names = _read_split(data_root / "train", cfg.imgsz)
    val_x, val_y, _ = _read_split(data_root / "val", cfg.imgsz)
    augment, gen = _augment(cfg.seed), torch.Generator().manual_seed(cfg.seed)
    train_dl = DataLoader(_Arrays(train_x, train_y, augment), cfg.batch, shuffle=True,
                          generator=gen)
    val_dl = DataLoader(_Arrays(val_x, val_y), cfg.batch)
    weights = class_weights(train_y, len(class_names))
    return _Data(train_dl, val_dl, class_names, weights, gen, augment)


def _save(state: dict, path: Path) -> None:
    """Write-then-rename: a crash mid-save never leaves a truncated checkpoint behind."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train(cfg, data_root: Path, out_dir: Path, on_epoch: OnEpoch) -> Path:
    """Train on <data_root>/train; keep the epoch with the best <data_root>/val mIoU."""
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    device, config, out_dir = select_device(cfg.device), cfg.model_dump(mode="json"), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = _load_data(cfg, Path(data_root))
    model = UNet(len(data.class_names), cfg.base_channels, DEPTH).to(device)
    loss_fn = SegLoss(data.class_weights).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _warmup_cosine(cfg.epochs * len(data.train)))
    scaler = torch.amp.GradScaler(device.type, enabled=amp_enabled(device))
    start, best = _resume(out_dir / "last.pt", config, model, opt, sched, scaler)
    for epoch in range(start, cfg.epochs + 1):
        data.reseed(cfg.seed + epoch)
        t0, lr = time.perf_counter(), opt.param_groups[0]["lr"]
        train_loss = _train_epoch(model, data.train, loss_fn, opt, sched, scaler, device,
                                  f"unet {epoch}/{cfg.epochs}")
        val_loss, val_miou = _evaluate(model, data.val, loss_fn, device, data.class_names)
        metrics = {"train_loss": train_loss, "val_loss": val_loss, "val_miou": val_miou, "lr": lr}
        print(f"unet epoch {epoch}/{cfg.epochs} train_loss {train_loss:.4f} val_loss {val_loss:.4f}"
              f" val_miou {val_miou:.4f} ({time.perf_counter() - t0:.1f}s)", flush=True)
        improved, best = val_miou > best, max(best, val_miou)
        state = {"state_dict": model.state_dict(), "config": config, "depth": DEPTH,
                 "class_names": data.class_names, "epoch": epoch, "best_miou": best,
                 "metrics": metrics, "optimizer": opt.state_dict(),
                 "scheduler": sched.state_dict(), "scaler": scaler.state_dict()}
        if improved:
            _save(state, out_dir / "best.pt")
        _save(state, out_dir / "last.pt")
        on_epoch(epoch, metrics)
    write_meta(out_dir, family="unet", task="segment", class_names=data.class_names,
               config=config, weights="best.pt", imgsz=cfg.imgsz)
    return out_dir


def _load_image(path: Path, imgsz: int) -> tuple[np.ndarray, tuple[int, int]]:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((imgsz, imgsz), Image.BILINEAR)), im.size


@torch.inference_mode()
def predict(checkpoint: Path, image_paths: list[Path], device: str = "auto") -> list[np.ndarray]:
    """One (H,W) uint8 label map per image, at the image's own size (0 = background, k = id k)."""
    checkpoint = Path(checkpoint)
    weights = checkpoint / read_meta(checkpoint)["weights"] if checkpoint.is_dir() else checkpoint
    state = torch.load(weights, map_location="cpu", weights_only=True)
    config, dev = state["config"], select_device(device)
    model = UNet(len(state["class_names"]), config["base_channels"], state["depth"]).to(dev)
    model.load_state_dict(state["state_dict"])
    model.eval()
    out: list[np.ndarray] = []
    paths = [Path(p) for p in image_paths]
    for i in range(0, len(paths), config["batch"]):
        loaded = [_load_image(p, config["imgsz"]) for p in paths[i : i + config["batch"]]]
        batch = torch.from_numpy(np.stack([a for a, _ in loaded])).permute(0, 3, 1, 2)
        with torch.autocast(dev.type, enabled=amp_enabled(dev)):
            logits = model(_to_input(batch, dev)).float()
        for one, (_, (w, h)) in zip(logits, loaded):
            # bilinear logits then argmax: smoother edges than a nearest-resized label map
            up = F.interpolate(one[None], size=(h, w), mode="bilinear", align_corners=False)
            out.append(up[0].argmax(0).to(torch.uint8).cpu().numpy())
    return out
