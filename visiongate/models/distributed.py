"""Data-parallel training of the plain-torch families (U-Net, torchvision detectors,
segmenters and classifiers) with torch.distributed on one machine: `nproc: N` in a task's
section starts N processes, gloo on the CPU, NCCL on CUDA (rank r on cuda:r).

The calling process is rank 0, so per-epoch reporting (MLflow) stays live; the other ranks
are spawned processes running the same family `train`. torch_loop.fit shards each epoch
with a DistributedSampler and wraps the model in DistributedDataParallel; rank 0 alone
validates, prints and writes checkpoints, and every rank resumes from the same `last.pt`.
The result is one checkpoint folder that loads and predicts like a single-process one.
Ultralytics families have their own DDP (`device: 0,1`, CUDA only).
"""

from __future__ import annotations

import importlib
import multiprocessing as mp
import os
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from visiongate.errors import ModelError

TIMEOUT = timedelta(minutes=10)  # a rank stuck longer than this fails the run


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def _device_of(cfg, r: int):
    """Rank r's config: on CUDA its own GPU; on the CPU unchanged."""
    use_cuda = cfg.device.startswith("cuda") or (cfg.device == "auto" and
                                                 torch.cuda.is_available())
    return cfg.model_copy(update={"device": f"cuda:{r}"}) if use_cuda else cfg


def _join(r: int, world: int, port: int, cuda: bool) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    dist.init_process_group("nccl" if cuda else "gloo", rank=r, world_size=world,
                            timeout=TIMEOUT)


def _rank_main(module: str, r: int, world: int, port: int, cfg, data_root: Path,
               out_dir: Path) -> None:
    """A spawned rank: the family's train, reporting nothing (rank 0 reports)."""
    cfg = _device_of(cfg, r)
    _join(r, world, port, cfg.device.startswith("cuda"))
    try:
        importlib.import_module(module).train(cfg, data_root, out_dir, lambda e, m: None)
    finally:
        dist.destroy_process_group()


def train(module, cfg, data_root: Path, out_dir: Path, on_epoch) -> Path:
    """`module.train` on cfg.nproc processes of this machine; returns rank 0's checkpoint."""
    from visiongate.stack import free_port

    world, port = cfg.nproc, free_port()
    ctx = mp.get_context("spawn")
    others = [ctx.Process(target=_rank_main, args=(module.__name__, r, world, port, cfg,
                                                   data_root, out_dir)) for r in range(1, world)]
    for process in others:
        process.start()
    cfg0, finished = _device_of(cfg, 0), False
    try:
        _join(0, world, port, cfg0.device.startswith("cuda"))
        checkpoint = module.train(cfg0, data_root, out_dir, on_epoch)
        finished = True
    finally:
        if active():
            dist.destroy_process_group()
        for process in others:  # after a failure here, the others would only wait: stop them
            process.join(timeout=TIMEOUT.total_seconds() if finished else 5)
            if process.is_alive():
                process.terminate()
                process.join()
    failed = [r for r, p in enumerate(others, 1) if p.exitcode != 0]
    if failed:
        raise ModelError(f"{cfg.family}: distributed training rank(s) {failed} failed "
                         f"(exit codes {[others[r - 1].exitcode for r in failed]})")
    return checkpoint
