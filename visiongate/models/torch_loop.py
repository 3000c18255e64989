"""The training loop shared by the plain-torch families (U-Net, torchvision detectors and
segmenters): AdamW with warm-up + cosine, AMP on CUDA, tqdm bars, `last.pt` every epoch and
`best.pt` on the best validation score, and resume from `last.pt` after a crash.

Checkpoints hold only tensors and primitives (they load with `weights_only=True`) and the
config they were trained with. A resumed run reseeds its per-epoch random streams as an
unbroken run would, so on the CPU it ends with the same weights.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from visiongate.devices import amp_enabled
from visiongate.errors import TrainingDiverged
from visiongate.models import OnEpoch, distributed
from visiongate.models.local_weights import (Rename, WeightsReport, load_weights_file,  # noqa: F401
                                             read_local_state)

# Keys that may change between a run and its resume without changing what was learned.
NOT_LEARNED = {"epochs", "device", "enabled", "gate", "conf", "nms_iou", "class_agnostic_nms",
               "score_threshold", "min_score", "target_precision"}


@dataclass
class Recipe:
    """What the loop needs from a family."""

    name: str                                           # for logs and progress bars
    model: nn.Module
    train_batches: Callable[[], Iterable]               # a fresh pass over the training data
    steps_per_epoch: int
    loss: Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, float]]]
    validate: Callable[[nn.Module], dict[str, float]]   # val metrics, model in eval mode
    best_key: str                                       # higher is better, e.g. "val_map50"
    reseed: Callable[[int], None] = lambda seed: None   # per-epoch data/augmentation streams
    extra: dict[str, Any] = field(default_factory=dict)  # stored in every checkpoint


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def warmup_cosine(total_steps: int, warmup_frac: float = 0.05):
    """lr factor per step: linear warm-up, then cosine to ~0. A plain function of `total_steps`,
    so a resumed run with more epochs stretches the remaining schedule instead of breaking."""
    warmup = max(1, int(total_steps * warmup_frac))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def same_run(a: dict, b: dict) -> bool:
    return {k: v for k, v in a.items() if k not in NOT_LEARNED} == {
        k: v for k, v in b.items() if k not in NOT_LEARNED}


def save(state: dict, path: Path) -> None:
    """Write-then-rename: a crash mid-save never leaves a truncated checkpoint behind."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_local_weights(model: nn.Module, path: str | Path | None, section: str,
                       pinned: str | None = None, renames: tuple[Rename, ...] = ()
                       ) -> WeightsReport | None:
    """Start from a local weights file: visiongate.models.local_weights.load_weights_file
    (tensors only; shape-mismatched tensors, e.g. a head for another class count, stay as
    built; `renames` match a backbone saved on its own); the report it printed."""
    return load_weights_file(model, path, section, pinned, renames)


def _resume(path: Path, config: dict, name: str, model, opt, sched, scaler) -> tuple[int, float]:
    """(first epoch to run, best score so far); starts over when the config differs."""
    if not path.exists():
        return 1, -math.inf
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not same_run(state.get("config", {}), config):
        print(f"{name}: {path} was trained with another config; starting over")
        return 1, -math.inf
    model.load_state_dict(state["state_dict"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    print(f"{name}: resuming after epoch {state['epoch']} from {path}")
    return state["epoch"] + 1, state["best"]


def _train_epoch(recipe: Recipe, model: nn.Module, batches: Iterable, steps: int, opt, sched,
                 scaler, device, epoch: int, epochs: int) -> dict[str, float]:
    """One pass; `model` is recipe.model, or its DistributedDataParallel wrapper and `batches`
    this rank's shard in a distributed run (visiongate.models.distributed)."""
    model.train()
    sums: dict[str, float] = {}
    n = 0
    bar = tqdm(batches, desc=f"{recipe.name} {epoch}/{epochs}", total=steps, leave=False,
               disable=None if distributed.rank() == 0 else True)
    for step, batch in enumerate(bar, 1):
        with torch.autocast(device.type, enabled=amp_enabled(device)):
            loss, parts = recipe.loss(model, batch)
        if not _finite_everywhere(loss):  # as torchvision's reference engine: stop, don't save
            raise TrainingDiverged(
                f"{recipe.name}: loss is {loss.item()} at epoch {epoch}, step {step} "
                f"(parts: {', '.join(f'{k} {float(v):.4g}' for k, v in parts.items())}); "
                "training stopped, the last good checkpoint is kept — lower `lr`, check the "
                "labels, or turn AMP off")
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        nn.utils.clip_grad_norm_(recipe.model.parameters(), 10.0)  # from-scratch detectors spike
        scaler.step(opt)
        scaler.update()
        sched.step()
        n += 1
        for key, value in {"train_loss": loss.item(), **parts}.items():
            sums[key] = sums.get(key, 0.0) + float(value)
        bar.set_postfix(loss=f"{sums['train_loss'] / n:.3f}")
    return {k: v / max(n, 1) for k, v in sums.items()}


def _finite_everywhere(loss: torch.Tensor) -> bool:
    """The loss is finite on this rank and, in a distributed run, on every rank (all stop
    together instead of leaving the others waiting in the gradient exchange)."""
    ok = torch.isfinite(loss.detach()).float().reshape(1)
    if distributed.active():
        torch.distributed.all_reduce(ok, op=torch.distributed.ReduceOp.MIN)
    return bool(ok.item())


def _parallel(recipe: Recipe, device: torch.device, seed: int):
    """(model to train, DistributedSampler or None, batches, steps per epoch): the recipe's
    own outside a distributed run; else DDP and this rank's shard of the training set."""
    if not distributed.active():
        return recipe.model, None, recipe.train_batches, recipe.steps_per_epoch
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader, DistributedSampler

    loader = recipe.train_batches()
    sampler = DistributedSampler(loader.dataset, shuffle=True, seed=seed, drop_last=True)
    shard = DataLoader(loader.dataset, loader.batch_size, sampler=sampler,
                       collate_fn=loader.collate_fn)
    model = DistributedDataParallel(recipe.model, find_unused_parameters=True,
                                    device_ids=[device.index] if device.type == "cuda" else None)
    return model, sampler, lambda: shard, len(shard)


def fit(recipe: Recipe, cfg, device: torch.device, out_dir: Path, on_epoch: OnEpoch) -> None:
    """Train `cfg.epochs` epochs (resuming from out_dir/last.pt when it is the same run). In a
    distributed run, rank 0 alone validates, reports and writes the checkpoints."""
    config, model = cfg.model_dump(mode="json"), recipe.model
    trained, sampler, batches, steps = _parallel(recipe, device, cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(cfg.epochs * steps))
    scaler = torch.amp.GradScaler(device.type, enabled=amp_enabled(device))
    start, best = _resume(out_dir / "last.pt", config, recipe.name, model, opt, sched, scaler)
    writer = distributed.rank() == 0
    for epoch in range(start, cfg.epochs + 1):
        recipe.reseed(cfg.seed + epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        t0, lr = time.perf_counter(), opt.param_groups[0]["lr"]
        metrics = _train_epoch(recipe, trained, batches(), steps, opt, sched, scaler, device,
                               epoch, cfg.epochs)
        if writer:
            best = _close_epoch(recipe, cfg, config, epoch, metrics, lr, best, t0, opt, sched,
                                scaler, out_dir, on_epoch)
        if distributed.active():
            torch.distributed.barrier()  # the others wait while rank 0 validates and saves


def _close_epoch(recipe: Recipe, cfg, config: dict, epoch: int, metrics: dict, lr: float,
                 best: float, t0: float, opt, sched, scaler, out_dir: Path,
                 on_epoch: OnEpoch) -> float:
    """Validate, print, save last.pt (and best.pt when it improved), report; the new best."""
    model = recipe.model
    model.eval()
    with torch.inference_mode():
        metrics.update(recipe.validate(model))
    metrics["lr"] = lr
    score = metrics[recipe.best_key]
    improved = score > best or (math.isnan(best) and not math.isnan(score))
    best = score if improved else best
    print(f"{recipe.name} epoch {epoch}/{cfg.epochs} " + " ".join(
        f"{k} {v:.4f}" for k, v in metrics.items()) + f" ({time.perf_counter() - t0:.1f}s)",
        flush=True)
    state = {"state_dict": model.state_dict(), "config": config, "epoch": epoch, "best": best,
             "metrics": metrics, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "scaler": scaler.state_dict(), **recipe.extra}
    if improved or not (out_dir / "best.pt").exists():
        save(state, out_dir / "best.pt")
    save(state, out_dir / "last.pt")
    on_epoch(epoch, metrics)
    return best
