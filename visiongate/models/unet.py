"""U-Net for semantic segmentation (plain torch, trained from scratch, nothing downloaded),
and the semantic data/loss/prediction pieces the torchvision segmenters share with it.

Loss = class-weighted cross-entropy + soft multi-class Dice. The loop (checkpoints every
epoch, best val mIoU, resume) is `visiongate.models.torch_loop`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from visiongate import augment
from visiongate.datasets.coco import load_split, read_semantic_mask
from visiongate.devices import amp_enabled, select_device
from visiongate.errors import DataError
from visiongate.semantic import label_names, semantic_metrics
from visiongate.models import OnEpoch
from visiongate.models.meta import CheckpointMeta
from visiongate.models.torch_loop import Recipe, fit, load_local_weights, seed_everything

EXPORTS = True  # predicts with ONNX / OpenVINO artifacts too (visiongate.export)
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


def read_split(split_dir: Path, imgsz: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """All images (N,S,S,3 uint8) and masks (N,S,S uint8, 0 = unlabelled, k = category id k)
    of a split, resized, + the split's class names (category-id order, no added background)."""
    split = load_split(split_dir)
    ids = sorted(c["id"] for c in split.categories)
    if ids != list(range(1, len(ids) + 1)):
        raise DataError(f"{split_dir}: category ids must be 1..K for label maps, got {ids}")
    images, masks = [], []
    for image in sorted(split.images, key=lambda i: i["id"]):
        with Image.open(split.image_path(image)) as im:
            images.append(np.asarray(im.convert("RGB").resize((imgsz, imgsz), Image.BILINEAR)))
        mask = Image.fromarray(read_semantic_mask(split, image))
        masks.append(np.asarray(mask.resize((imgsz, imgsz), Image.NEAREST)))
    return np.stack(images), np.stack(masks), list(split.class_names)


def class_weights(masks: np.ndarray, num_classes: int) -> torch.Tensor:
    """Inverse square-root pixel frequency, normalised to mean 1 (absent classes count 1)."""
    counts = np.bincount(masks.ravel(), minlength=num_classes)[:num_classes].astype(np.float64)
    w = 1.0 / np.sqrt(np.maximum(counts, 1.0) / counts.sum())
    return torch.tensor(w / w.mean(), dtype=torch.float32)


class ArrayDataset(Dataset):
    """In-memory (image, mask) pairs; the augmentation is applied jointly to both."""

    def __init__(self, images: np.ndarray, masks: np.ndarray, transform: A.Compose | None = None):
        self.images, self.masks, self.transform = images, masks, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.images[i], self.masks[i]
        if self.transform is not None:
            out = augment.apply(self.transform, "segment", image, mask=mask)
            image, mask = out["image"], out["mask"]
        image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        return image, torch.from_numpy(np.ascontiguousarray(mask)).long()


def to_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (B,3,H,W) -> float, roughly zero-centred."""
    return (images.to(device, non_blocking=True).float() / 255.0 - 0.5) / 0.25


Logits = Callable[[nn.Module, torch.Tensor], list[torch.Tensor]]
"""model, input -> [main logits, *auxiliary logits] (B,C,H,W) at input size."""


@dataclass
class SemanticData:
    train: DataLoader
    val: DataLoader
    class_names: list[str]  # the dataset's categories; label k + 1 is class_names[k]
    class_weights: torch.Tensor
    generator: torch.Generator
    augment: A.Compose

    def reseed(self, seed: int) -> None:
        """Per-epoch random streams, so a resumed run sees the batches an unbroken one would."""
        self.generator.manual_seed(seed)
        self.augment.set_random_seed(seed)

    @property
    def num_labels(self) -> int:
        """Output channels: label 0 (unlabelled pixels) and one per category."""
        return len(self.class_names) + 1


def load_semantic_data(cfg, data_root: Path, drop_last: bool = False) -> SemanticData:
    train_x, train_y, class_names = read_split(data_root / "train", cfg.imgsz)
    val_x, val_y, _ = read_split(data_root / "val", cfg.imgsz)
    transform, gen = augment.pipeline(cfg.augment, "segment", cfg.seed), torch.Generator()
    gen.manual_seed(cfg.seed)
    train_dl = DataLoader(ArrayDataset(train_x, train_y, transform), cfg.batch, shuffle=True,
                          generator=gen, drop_last=drop_last and len(train_x) > cfg.batch)
    val_dl = DataLoader(ArrayDataset(val_x, val_y), cfg.batch)
    weights = class_weights(train_y, len(class_names) + 1)
    return SemanticData(train_dl, val_dl, class_names, weights, gen, transform)


def semantic_recipe(name: str, cfg, data: SemanticData, model: nn.Module, device: torch.device,
                    logits: Logits, extra: dict) -> Recipe:
    """Loss = main + 0.4 x auxiliary heads (CE + Dice each); best epoch on val mIoU."""
    loss_fn = SegLoss(data.class_weights).to(device)

    def loss(model, batch):
        images, masks = batch
        masks = masks.to(device)
        outs = logits(model, to_input(images, device))
        total = loss_fn(outs[0], masks) + sum(0.4 * loss_fn(o, masks) for o in outs[1:])
        return total, {}

    def validate(model) -> dict[str, float]:
        total, preds, targets = 0.0, [], []
        for images, masks in data.val:
            masks = masks.to(device)
            with torch.autocast(device.type, enabled=amp_enabled(device)):
                out = logits(model, to_input(images, device))[0]
            total += float(loss_fn(out, masks)) * len(masks)
            preds += list(out.argmax(1).to(torch.uint8).cpu().numpy())
            targets += list(masks.to(torch.uint8).cpu().numpy())
        miou = semantic_metrics(preds, targets, label_names(data.class_names))["miou"]
        return {"val_loss": total / max(len(targets), 1), "val_miou": miou}

    return Recipe(name, model, lambda: data.train, len(data.train), loss, validate, "val_miou",
                  data.reseed, {"class_names": data.class_names, **extra})


def initial_model(cfg, num_labels: int):
    """(the U-Net training starts from, the report of its `weights:` file or None): a whole
    U-Net's state dict, checked against the weights rule (no backbone of its own)."""
    model = UNet(num_labels, cfg.base_channels, DEPTH)
    return model, load_local_weights(model, cfg.weights_file(), "segment", cfg.weights_sha256)


def train(cfg, data_root: Path, out_dir: Path, on_epoch: OnEpoch) -> Path:
    """Train on <data_root>/train; keep the epoch with the best <data_root>/val mIoU."""
    seed_everything(cfg.seed)
    device, out_dir = select_device(cfg.device), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = load_semantic_data(cfg, Path(data_root))
    model, report = initial_model(cfg, data.num_labels)
    if report:
        report.write(out_dir)
    recipe = semantic_recipe("unet", cfg, data, model.to(device), device,
                             lambda m, x: [m(x)], {"depth": DEPTH})
    fit(recipe, cfg, device, out_dir, on_epoch)
    CheckpointMeta(family="unet", task="segment", class_names=data.class_names,
                   config=cfg.model_dump(mode="json"), weights="best.pt").write(out_dir)
    return out_dir


def _load_image(path: Path, imgsz: int) -> tuple[np.ndarray, tuple[int, int]]:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((imgsz, imgsz), Image.BILINEAR)), im.size


@torch.inference_mode()
def predict_label_maps(model: nn.Module | None, paths: list[Path], imgsz: int, batch: int,
                       device: torch.device, logits: Logits) -> list[np.ndarray]:
    """One (H,W) uint8 label map per image, at the image's own size (0 = background);
    `model` None: `logits` runs a deployment artifact on the CPU."""
    if model is not None:
        model.to(device).eval()
    out: list[np.ndarray] = []
    for i in range(0, len(paths), batch):
        loaded = [_load_image(p, imgsz) for p in paths[i : i + batch]]
        images = torch.from_numpy(np.stack([a for a, _ in loaded])).permute(0, 3, 1, 2)
        with torch.autocast(device.type, enabled=amp_enabled(device)):
            scores = logits(model, to_input(images, device))[0].float()
        for one, (_, (w, h)) in zip(scores, loaded):
            # bilinear logits then argmax: smoother edges than a nearest-resized label map
            up = F.interpolate(one[None], size=(h, w), mode="bilinear", align_corners=False)
            out.append(up[0].argmax(0).to(torch.uint8).cpu().numpy())
    return out


def network(checkpoint: Path) -> tuple[nn.Module, dict]:
    """(the trained module in eval mode, its config): what `load` predicts with, and what
    visiongate.explain looks inside."""
    checkpoint = Path(checkpoint)
    weights = CheckpointMeta.read(checkpoint).weights_path(checkpoint) if checkpoint.is_dir() \
        else checkpoint
    state = torch.load(weights, map_location="cpu", weights_only=True)
    config = state["config"]
    model = UNet(len(state["class_names"]) + 1, config["base_channels"], state["depth"])
    model.load_state_dict(state["state_dict"])
    return model.eval(), config


def load(checkpoint: Path, device: str = "auto", runtime: str = "torch"):
    """predict(image_paths) with the weights (or a deployment artifact, on the CPU) loaded
    once: one (H,W) uint8 label map per image, at the image's own size (0 = background,
    k = id k)."""
    if runtime != "torch":
        from visiongate.runtimes import session

        meta = CheckpointMeta.read(checkpoint)
        run, config = session(meta.artifact_path(checkpoint, runtime), runtime), meta.config
        return lambda image_paths: predict_label_maps(
            None, [Path(p) for p in image_paths], config["imgsz"], config["batch"],
            torch.device("cpu"), lambda _, x: [torch.from_numpy(run(x.numpy()))])
    model, config = network(checkpoint)
    dev = select_device(device)
    return lambda image_paths: predict_label_maps(
        model, [Path(p) for p in image_paths], config["imgsz"], config["batch"], dev,
        lambda m, x: [m(x)])


def predict(checkpoint: Path, image_paths: list[Path], device: str = "auto") -> list[np.ndarray]:
    return load(checkpoint, device)(image_paths)
