"""Real data: visiongate's retrain flow vs raw ultralytics / a plain torch loop, same splits.

    .venv/bin/python benchmarks/bench_real.py --epochs 120 --unet-epochs 30 --write  # ~1 h
    .venv/bin/python benchmarks/bench_real.py --smoke [--parts ...]  # ~3 min: does it run?

In one fresh temporary project (`dvc init`; the repo's params.yaml, one params file per
run with only that run's task enabled; the flow's extras — robustness, ONNX/OpenVINO
export and parity, heatmaps, test map, suspects — off unless `--extras`: they do not
change the model, and their cost is measured in BENCHMARKS.md's "Retrain flow" and "Cost
of heatmaps" sections):
(a) detect and instance-segment on ../shared/data/coco128-seg, split here 70/15/15 by a
    seeded hash of the file name into `images/<split>/` folders (the importer keeps a
    source's own split): `visiongate data import --format yolo`, then `visiongate
    retrain --dataset coco` (yolov8n.yaml / yolov8n-seg.yaml, from scratch), against raw
    `YOLO(yaml).train(...)` on the same folders with the same epochs, image size, batch,
    AdamW lr, nbs = batch, seed, workers 0, `ultralytics_args` and ultralytics' default
    augmentation (the flow's `augment: []`). Both models are scored on the prepared test
    split by visiongate's evaluator (raw's best.pt in a checkpoint folder); ultralytics'
    own `val(split="test")` of both best.pt files is the cross-check column.
(b) ../shared/data/isbi-membrane (`--format masks`, the importer's seeded 70/15/15): the
    U-Net through the flow against the same UNet class in a plain torch loop
    (benchmarks/real_data.py) on the prepared splits, same epochs, size, batch, lr, seed;
    both scored by visiongate's evaluator (test mIoU at full size).
(c) fine-tuning: coco's train split in two seeded halves A and B (same val and test).
    The flow trains on A; its best.pt is copied to the project's `weights/` folder; then
    B from scratch and B with `detect.weights: weights/<A>.pt`, same epochs (never
    with the extras). (d) the same for the U-Net (`unet-finetune`): isbi's prepared train
    split in two seeded halves, val and test as in (b); `segment.weights` is A's best.pt.
Wall: each `visiongate retrain` process and each reference process (train + visiongate's
evaluation of the test split); imports are timed apart. `--write` updates BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks import real_data  # noqa: E402
from benchmarks.bench_retrain import CLI, cli_env, make_project, migrate_prefect_home, phases  # noqa: E402,E501
from benchmarks.measured_run import run_measured  # noqa: E402
from benchmarks.real_section import render  # noqa: E402
from benchmarks.report import update_section  # noqa: E402

SHARED = Path(os.environ.get("VISIONGATE_SHARED_DATA", REPO.parent / "shared" / "data"))
MODELS = {"detect": "yolov8n.yaml", "instance": "yolov8n-seg.yaml"}
PARTS = ("detect", "instance", "unet", "finetune", "unet-finetune")
HEADLINE = {"detect": "map50", "instance": "mask_map50", "unet": "miou"}
ULTRALYTICS_ARGS = {"cache": "ram"}  # the repo's detect section has it; the raw run gets it too


def section(kind: str, a: argparse.Namespace, weights: str | None = None) -> tuple[str, dict]:
    """(params.yaml section name, its content) of one run: only that task enabled."""
    metric = "miou" if kind.startswith("unet") else HEADLINE.get(kind, "map50")
    gate: dict = {"floors": {metric: 0.0}}
    if a.extras and kind in HEADLINE:
        gate["robustness"] = {"metric": metric, "max_relative_drop": 1.0,
                              "corruptions": {"low_light": 1, "blur": 1, "noise": 1, "fog": 1}}
    common = {"enabled": True, "epochs": a.epochs, "lr": a.lr, "seed": a.seed, "gate": gate}
    if kind.startswith("unet"):  # unet, unet-pretrain, unet-finetune
        return "segment", {**common, "family": "unet", "base_channels": a.base_channels,
                           "imgsz": a.unet_imgsz, "batch": a.unet_batch,
                           "epochs": a.unet_epochs_b if kind == "unet-finetune" else
                           a.unet_epochs, "weights": weights}
    yolo = {**common, "family": "yolo", "imgsz": a.imgsz, "batch": a.batch, "augment": [],
            "ultralytics_args": ULTRALYTICS_ARGS}
    if kind == "instance":
        return "segment", {**yolo, "model": MODELS["instance"]}
    return "detect", {**yolo, "model": MODELS["detect"], "weights": weights,
                      "epochs": a.epochs_a if kind == "pretrain" else a.epochs}


def write_params(project: Path, tag: str, name: str, body: dict, full: bool) -> str:
    """params-<tag>.yaml: the project's params.yaml with one task on; returns its name."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    for task in ("detect", "segment", "classify"):
        params[task] = {"enabled": False}
    params[name] = body
    if not full:
        params["insight"] = {"heatmaps": False, "test_map": False, "suspects": False}
        params["serve"] = {**params["serve"], "export": []}
    (project / f"params-{tag}.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return f"params-{tag}.yaml"


class Bench:
    def __init__(self, work: Path, a: argparse.Namespace):
        self.work, self.a = work, a
        self.env = cli_env(work / "prefect-home")
        self.project: Path | None = None

    def cli(self, args: list[str], tag: str):
        print(f"  visiongate {' '.join(args)} ...", flush=True)
        run = run_measured([*CLI, *args, "--root", str(self.project)], self.project, self.env,
                           self.work / f"{tag}.log")
        print(f"    {run.wall:.1f} s", flush=True)
        return run

    def child(self, flag: str, payload, tag: str) -> tuple:
        """A reference subprocess of this script; (Run, its last JSON line)."""
        args = [flag, *payload] if isinstance(payload, list) else [flag, json.dumps(payload)]
        print(f"  reference {tag} ...", flush=True)
        run = run_measured([sys.executable, __file__, *args], REPO, self.env,
                           self.work / f"{tag}.log")
        print(f"    {run.wall:.1f} s", flush=True)
        return run, json.loads(run.log.strip().splitlines()[-1])

    def retrain(self, kind: str, dataset: str, tag: str, weights: str | None = None) -> dict:
        """One flow run; its wall, training span, test metrics and checkpoint."""
        name, body = section(kind, self.a, weights)
        params = write_params(self.project, tag, name, body, self.a.extras and kind in HEADLINE)
        run = self.cli(["retrain", "--dataset", dataset, "--params", params], tag)
        metrics, checkpoint = self.flow_result(params, f"{dataset}-{name}")
        return {"wall": run.wall, "cpu": run.cpu, "peak": run.peak_rss,
                "train_s": phases(run).get("training"),
                "metrics": metrics, "checkpoint": checkpoint}

    def flow_result(self, params_file: str, registered: str) -> tuple[dict, str]:
        """The challenger's test metrics (MLflow) and its checkpoint folder (newest)."""
        from mlflow.tracking import MlflowClient

        from visiongate.config import load_params
        from visiongate.tracking import tracking_uri

        params = load_params(self.project / params_file)
        client = MlflowClient(tracking_uri(self.project, params.mlflow))
        version = client.get_model_version_by_alias(registered, "challenger")
        metrics = client.get_run(version.run_id).data.metrics
        folders = sorted((self.project / ".cache" / "train").glob(f"{registered}-*"),
                         key=lambda p: (p / "meta.json").stat().st_mtime)
        return ({k[5:]: v for k, v in metrics.items() if k.startswith("test/")},
                str(folders[-1]))

    def eval_config(self, kind: str) -> dict:
        from visiongate.config import DetectConfig, SegmentConfig

        name, body = section(kind, self.a)
        cls = DetectConfig if name == "detect" else SegmentConfig
        return cls(**{**body, "gate": {"floors": {}}}).model_dump(mode="json")

    def yolo_part(self, kind: str, yaml_path: Path) -> dict:
        """(a) one ultralytics task: the flow, raw ultralytics, the cross-check."""
        flow = self.retrain(kind, "coco", f"flow-{kind}")
        spec = {"task": kind, "model": MODELS[kind], "data": str(yaml_path),
                "epochs": self.a.epochs, "imgsz": self.a.imgsz, "batch": self.a.batch,
                "lr": self.a.lr, "seed": self.a.seed, "ultralytics_args": ULTRALYTICS_ARGS,
                "out": str(self.work / f"raw-{kind}"), "config": self.eval_config(kind),
                "test": str(self.project / "data" / "prepared" / "coco" / "test")}
        run, raw = self.child("--raw-yolo", spec, f"raw-{kind}")
        raw.update(wall=run.wall, cpu=run.cpu, peak=run.peak_rss)
        for side in (flow, raw):
            _, side["val"] = self.child("--val", [str(Path(side["checkpoint"]) / "best.pt"),
                                                  str(yaml_path), kind, str(self.a.imgsz),
                                                  str(self.a.batch)], f"val-{kind}")
        return {"flow": flow, "raw": raw}

    def unet_part(self) -> dict:
        """(b) the U-Net through the flow and in a plain torch loop."""
        flow = self.retrain("unet", "isbi", "flow-unet")
        spec = {"data": str(self.project / "data" / "prepared" / "isbi"),
                "imgsz": self.a.unet_imgsz, "batch": self.a.unet_batch,
                "epochs": self.a.unet_epochs, "lr": self.a.lr, "seed": self.a.seed,
                "base_channels": self.a.base_channels, "out": str(self.work / "plain-unet")}
        run, plain = self.child("--plain-unet", spec, "plain-unet")
        plain.update(wall=run.wall, cpu=run.cpu, peak=run.peak_rss)
        return {"flow": flow, "raw": plain}

    def finetune_part(self, data: str, kind: str) -> dict:
        """(c) / (d): A, then B from scratch and B from A's weights."""
        a_run = self.retrain(kind.replace("finetune", "pretrain"), f"{data}-a", f"{kind}-a")
        weights = self.project / "weights" / f"{data}-a.pt"
        weights.parent.mkdir(exist_ok=True)
        shutil.copy2(Path(a_run["checkpoint"]) / "best.pt", weights)
        scratch = self.retrain(kind, f"{data}-b", f"{kind}-b-scratch")
        tuned = self.retrain(kind, f"{data}-b", f"{kind}-b-tuned",
                             weights=weights.relative_to(self.project).as_posix())
        return {"a": a_run, "scratch": scratch, "tuned": tuned}


def run_all(work: Path, a: argparse.Namespace) -> dict:
    coco = SHARED / "coco128-seg"
    for folder in (coco, SHARED / "isbi-membrane"):
        if not folder.is_dir():
            raise SystemExit(f"no {folder}: set VISIONGATE_SHARED_DATA to the real datasets")
    splits = real_data.coco_splits(coco, a.seed, a.limit)
    half_a, half_b = real_data.halves(splits["train"], a.seed)
    bench = Bench(work, a)
    out: dict = {"splits": {s: len(v) for s, v in splits.items()},
                 "halves": (len(half_a), len(half_b)), "migrate_s": migrate_prefect_home(bench.env)}
    bench.project = make_project(work / "project", None, segment=False)
    sources = {"coco": ("yolo", real_data.write_yolo(coco, work / "src" / "coco", splits))}
    if "unet" in a.parts or "unet-finetune" in a.parts:
        sources["isbi"] = ("masks", SHARED / "isbi-membrane")
    if "finetune" in a.parts:
        for name, half in (("coco-a", half_a), ("coco-b", half_b)):
            sources[name] = ("yolo", real_data.write_yolo(
                coco, work / "src" / name, {**splits, "train": half}))
    out["imports"], pending = {}, list(sources)
    while pending:  # (d) appends isbi's two train halves once isbi is imported
        name = pending.pop(0)
        fmt, src = sources[name]
        run = bench.cli(["data", "import", "--format", fmt, str(src), "--name", name],
                        f"import-{name}")
        out["imports"][name] = (run.wall, run.cpu)
        if name == "isbi" and "unet-finetune" in a.parts:
            halves = real_data.mask_halves(src, work / "src", bench.project / "data" /
                                           "prepared" / "isbi", a.seed)
            out["unet_halves"] = [n for _, n in halves]
            for half, (folder, _) in zip(("isbi-a", "isbi-b"), halves):
                sources[half] = ("masks", folder)
                pending.append(half)
        elif name != "isbi":  # the importer kept the source's split, image for image
            real_data.same_split(bench.project / "data" / "prepared" / name, src,
                                 "image" if fmt == "masks" else "images")
    raw_yaml = real_data.data_yaml(real_data.write_yolo(coco, work / "raw-data", splits))
    for kind in ("detect", "instance"):
        if kind in a.parts:
            out[kind] = bench.yolo_part(kind, raw_yaml)
    if "unet" in a.parts:
        out["unet"] = bench.unet_part()
    if "finetune" in a.parts:
        out["finetune"] = bench.finetune_part("coco", "finetune")
    if "unet-finetune" in a.parts:
        out["unet-finetune"] = bench.finetune_part("isbi", "unet-finetune")
    return out


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", nargs="+", choices=PARTS, help="default: all (--smoke: detect)")
    p.add_argument("--epochs", type=int, default=3, help="YOLO epochs: (a), and B in (c)")
    p.add_argument("--epochs-a", type=int, help="(c) epochs on half A (default: --epochs)")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--unet-epochs", type=int, default=15)
    p.add_argument("--unet-epochs-b", type=int, help="(d) epochs on B (default: --unet-epochs)")
    p.add_argument("--unet-imgsz", type=int, default=256)
    p.add_argument("--unet-batch", type=int, default=4)
    p.add_argument("--base-channels", type=int, default=16)
    p.add_argument("--lr", type=float, default=0.002)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=0, help="use only this many COCO images")
    p.add_argument("--extras", action="store_true", help="(a), (b): the flow with the repo's "
                   "robustness, exports and insight (default: off)")
    p.add_argument("--smoke", action="store_true", help="tiny settings; (a) detect alone")
    p.add_argument("--write", action="store_true", help="update its section of BENCHMARKS.md")
    p.add_argument("--save", type=Path, help="also write the results as JSON to this file")
    p.add_argument("--render", type=Path, help="no run: render a --save file (with the "
                   "arguments it was run with)")
    p.add_argument("--raw-yolo", help=argparse.SUPPRESS)
    p.add_argument("--plain-unet", help=argparse.SUPPRESS)
    p.add_argument("--val", nargs=5, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.smoke:
        a.epochs, a.imgsz, a.batch, a.limit = 1, 64, 8, 40
        a.parts = a.parts or ["detect"]
        a.unet_epochs, a.unet_imgsz, a.unet_batch, a.base_channels = 1, 64, 4, 8
    a.epochs_a, a.parts = a.epochs_a or a.epochs, a.parts or list(PARTS)
    a.unet_epochs_b = a.unet_epochs_b or a.unet_epochs
    return a


def main() -> None:
    a = parse()
    if a.raw_yolo:
        return real_data.raw_yolo(json.loads(a.raw_yolo))
    if a.plain_unet:
        return real_data.plain_unet(json.loads(a.plain_unet))
    if a.val:
        w, d, task, imgsz, batch = a.val
        return real_data.ultralytics_val(w, d, task, int(imgsz), int(batch))
    if a.render:
        results = json.loads(a.render.read_text())
        a = argparse.Namespace(**{**results["args"], "write": a.write})
    else:
        load0, t0 = os.getloadavg()[0], time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="vg-bench-real-") as tmp:
            results = run_all(Path(tmp), a)
        results.update(load=(load0, os.getloadavg()[0]), total_s=time.perf_counter() - t0,
                       argv=sys.argv[1:], args={k: v if not isinstance(v, Path) else str(v)
                                                for k, v in vars(a).items()})
        if a.save:
            a.save.write_text(json.dumps(results, indent=1))
    text = render(results, a)
    print(text)
    if a.write:
        print(f"wrote {update_section(text)}")


if __name__ == "__main__":
    main()
