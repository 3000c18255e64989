"""GPU check: device selection, AMP, train speed, predict latency and peak GPU memory of
every model family on one CUDA device; YOLO through visiongate vs raw ultralytics; exports.

    bash benchmarks/gpu_check.sh [--images 256] [--epochs 1]  # CUDA; updates BENCHMARKS.md
    bash benchmarks/gpu_check.sh --dry-run [--out FILE]        # CPU: the mechanics, in minutes

Each family trains `--epochs` epoch(s) on `--images` synthetic shapes images with its default
image size and batch and `device: cuda:0` (AMP has no config key: visiongate turns it on
wherever the device is CUDA), then its checkpoint predicts the test split through
`models.load`. One row per check; a check that fails is a row with its error, and the exit
status is 1 if any failed. `--dry-run` runs a small subset on the CPU at 32 px (4 train
images, AMP off), marks what needs CUDA, and writes the section to `--out`, not BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_families import FAMILIES as DETECT_SEGMENT  # noqa: E402
from benchmarks.bench_families import bench_yolo_overhead  # noqa: E402
from benchmarks.gpu_check_rows import Row, Settings, error_line  # noqa: E402
from benchmarks.report import BENCHMARKS, machine, update_section  # noqa: E402
from visiongate import export, models  # noqa: E402
from visiongate.config import ClassifyConfig, DetectConfig, SegmentConfig, SynthConfig  # noqa: E402
from visiongate.datasets.synth import generate  # noqa: E402
from visiongate.devices import select_device, ultralytics_device  # noqa: E402
from visiongate.evaluate import evaluate  # noqa: E402

SECTION = "## GPU check"
FAMILIES = DETECT_SEGMENT + [("classify", f) for f in
                             ("yolo", "resnet18", "mobilenet_v3_small", "efficientnet_b0")]
CONFIGS = {"detect": DetectConfig, "segment": SegmentConfig, "classify": ClassifyConfig}
DRY_SUBSET = {("detect", "yolo"), ("segment", "unet"), ("classify", "resnet18")}
EXPORT_FORMATS = ("onnx", "openvino")
PARITY_TOLERANCE = 0.005  # serve.parity_tolerance's default
BUDGET_S = 400  # later checks are skipped (and fail) so the table lands inside the 480 s timeout
NEEDS_CUDA = "needs CUDA — skipped in dry run"


def check_device(cuda_run: bool) -> Row:
    """`device: auto` and `cuda:0` resolve to CUDA (torch and ultralytics spellings)."""
    name = "device selection (auto, cuda:0)"
    if not cuda_run:
        return Row(name, NEEDS_CUDA, detail=f"here auto -> {select_device('auto')}")
    try:
        found = {spec: (str(select_device(spec)), ultralytics_device(spec))
                 for spec in ("auto", "cuda:0")}
    except Exception as err:  # a ConfigError here is the finding
        return Row(name, error_line(err))
    detail = "; ".join(f"{s} -> {d} (ultralytics {u!r})" for s, (d, u) in found.items())
    ok = all(d == "cuda:0" and u == "0" for d, u in found.values())
    return Row(name, "ok" if ok else "FAILED: not CUDA", detail=detail)


@contextmanager
def autocast_spy() -> Iterator[set[tuple[str, bool]]]:
    """Every (device type, enabled) that torch.autocast is entered with inside the block."""
    cls, seen = torch.amp.autocast_mode.autocast, set()
    enter = cls.__enter__

    def spying_enter(self):
        seen.add((self.device, bool(self._enabled)))
        return enter(self)

    cls.__enter__ = spying_enter
    try:
        yield seen
    finally:
        cls.__enter__ = enter


def amp_label(seen: set[tuple[str, bool]]) -> str:
    """'on (cuda)' when autocast ran enabled, 'off' when only disabled, else 'not seen'."""
    enabled = sorted({device for device, on in seen if on})
    return f"on ({', '.join(enabled)})" if enabled else "off" if seen else "not seen"


def predict_ms(checkpoint: Path, images: list[Path]) -> float:
    """ms/image predicting `images` in one call through models.load, after a warm-up call
    on the same images (ultralytics sets up again when the batch changes)."""
    predictor = models.load(checkpoint)
    predictor(images)
    t0 = time.perf_counter()
    predictor(images)
    return 1000 * (time.perf_counter() - t0) / len(images)


def check_family(section: str, family: str, data: Path, work: Path,
                 s: Settings) -> tuple[Row, Path | None]:
    """Train one short run with the family's defaults (this run's device, epochs and sizes),
    then predict the test split: the row and the checkpoint."""
    name, cuda = f"{section} {family}", s.device != "cpu"
    sizes = {k: v for k, v in (("imgsz", s.imgsz), ("batch", s.batch)) if v is not None}
    try:
        cfg = CONFIGS[section](family=family, epochs=s.epochs, device=s.device, **sizes)
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        with autocast_spy() as seen:
            t0 = time.perf_counter()
            checkpoint = models.train(cfg, data, work / f"{section}-{family}")
            train_s = time.perf_counter() - t0
        latency = predict_ms(checkpoint, sorted((data / "test" / "images").glob("*.png")))
    except Exception as err:  # one family failing must not stop the others
        return Row(name, error_line(err)), None
    amp = amp_label(seen)
    status = "FAILED: AMP not active on CUDA" if cuda and not amp.startswith("on") else "ok"
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else "needs CUDA"
    detail = f"{cfg.model or cfg.backbone or family}, {cfg.imgsz} px, batch {cfg.batch}"
    return Row(name, status, train_s, s.images * s.epochs / train_s, amp, peak, latency,
               detail), checkpoint


def check_yolo_overhead(data: Path, work: Path, s: Settings) -> list[Row]:
    """YOLOv8n through models.train vs raw ultralytics (bench_families' side-by-side)."""
    try:
        r = bench_yolo_overhead(data, work, s.epochs)
    except Exception as err:  # a row, like a family's failure
        return [Row("YOLO train: visiongate vs raw ultralytics", error_line(err))]
    ips = s.images * s.epochs
    return [Row("YOLO train: visiongate", "ok", r["ours_s"], ips / r["ours_s"],
                detail=f"mAP50 {r['ours_map50']:.3f}"),
            Row("YOLO train: raw ultralytics", "ok", r["raw_s"], ips / r["raw_s"],
                detail=f"mAP50 {r['raw_map50']:.3f}; visiongate/raw time {r['ratio']:.2f}")]


def check_exports(name: str, checkpoint: Path, test_dir: Path) -> list[Row]:
    """Export, parity-check and time each artifact as registration does (`export.prepare`):
    single-image ms of PyTorch and of each runtime; an artifact refused on parity is noted."""
    try:
        reference = evaluate(checkpoint, test_dir)
        deployment = export.prepare(checkpoint, test_dir, reference, EXPORT_FORMATS,
                                    PARITY_TOLERANCE)
    except Exception as err:  # a failed export is a row, never the end of the check
        return [Row(f"export: {name}", error_line(err))]
    rows = [Row(f"latency torch: {name}", "ok", predict_ms=deployment.torch_ms,
                detail="PyTorch checkpoint, single image (median)")]
    for c in deployment.checks:
        status = "ok" if c.ms_per_image is not None else f"FAILED: {c.problem}"
        parity = f"; refused: {c.problem}" if c.problem and c.ms_per_image is not None else ""
        rows.append(Row(f"latency {c.runtime}: {name}", status, predict_ms=c.ms_per_image,
                        detail=f"{c.artifact}, single image (median), CPU runtime{parity}"))
    return rows


def make_data(work: Path, s: Settings) -> Path:
    """The synthetic shapes dataset: `images` train, a quarter of that (>= 2) val and test."""
    other = max(2, s.images // 4)
    generate(SynthConfig(image_size=s.imgsz or 128,
                         splits={"train": s.images, "val": other, "test": other}), work / "data")
    return work / "data"


def print_plan(s: Settings, dry_run: bool) -> None:
    """What runs, and (in a dry run) which checks need CUDA."""
    where = "CPU dry run" if dry_run else f"CUDA ({torch.cuda.get_device_name(0)})"
    print(f"GPU check plan — {where}: {s.images} train images, {s.epochs} epoch(s), "
          f"device {s.device}, {'32 px' if s.imgsz else 'family default sizes'}")
    on_cpu = "needs CUDA — runs on the CPU in this dry run (no AMP, no GPU memory)"
    plan = [("device selection", NEEDS_CUDA)]
    plan += [(f"{section} {family}", on_cpu if (section, family) in DRY_SUBSET else NEEDS_CUDA)
             for section, family in FAMILIES]
    plan += [("YOLO visiongate vs raw ultralytics", on_cpu),
             (f"export {'/'.join(EXPORT_FORMATS)}", "runs on the CPU (exporting families)")]
    for check, mode in plan:
        print(f"  {check:36s}{mode if dry_run else 'run'}", flush=True)


def run_checks(work: Path, s: Settings, dry_run: bool) -> list[Row]:
    """Every check in order, each row printed as it lands; past BUDGET_S the rest fail."""
    start, rows, checkpoints = time.monotonic(), [], {}
    over = f"FAILED: skipped, over the {BUDGET_S} s budget"

    def late() -> bool:
        return time.monotonic() - start > BUDGET_S

    def add(row: Row) -> None:
        rows.append(row)
        print(f"gpu_check: {' | '.join(row.cells())}", flush=True)

    add(check_device(not dry_run))
    data = make_data(work, s)
    for section, family in FAMILIES:
        name = f"{section} {family}"
        if dry_run and (section, family) not in DRY_SUBSET:
            add(Row(name, NEEDS_CUDA))
            continue
        row, checkpoint = (Row(name, over), None) if late() else \
            check_family(section, family, data, work, s)
        add(row)
        if checkpoint is not None:
            checkpoints[name] = checkpoint
    for row in ([Row("YOLO train: visiongate vs raw", over)] if late() else
                check_yolo_overhead(data, work / "overhead", s)):
        add(row)
    for name, checkpoint in checkpoints.items():
        if export.exportable(models.CheckpointMeta.read(checkpoint)):
            for row in [Row(f"export: {name}", over)] if late() else \
                    check_exports(name, checkpoint, data / "test"):
                add(row)
    return rows


def section_text(rows: list[Row], s: Settings, command: str, seconds: float, dry_run: bool) -> str:
    """The `## GPU check` section: what was measured, machine, command, date, the table."""
    lines = [SECTION, "", "Each family trains one short run on synthetic shapes with `device: "
             f"{s.device}` ({s.images} train images, {s.epochs} epoch(s), "
             f"{f'{s.imgsz} px' if s.imgsz else 'its default image size and batch'}), then "
             "predicts the test split through `models.load`. img/s = train images x epochs / "
             "train wall time (validation included); AMP = what `torch.autocast` was entered "
             "with while training; peak = `torch.cuda.max_memory_allocated` over train and "
             "predict, reset per family; predict = ms/image, one call over the test images "
             "after a warm-up call. `latency` rows (ultralytics families): what registration runs, "
             "`visiongate.export.prepare` — ONNX and OpenVINO export, parity with PyTorch on "
             "the test split, median single-image ms of PyTorch (on the device) and of each "
             "artifact (CPU runtimes).", ""]
    if dry_run:
        lines += ["**Dry run on the CPU**: only the mechanics; checks marked *needs CUDA* were "
                  "skipped.", ""]
    lines += [f"Machine: {machine()}.", "",
              f"Command: `{command}` ({datetime.date.today().isoformat()}, {seconds:.0f} s)", "",
              "| check | status | train s | img/s | AMP | peak GPU MiB | predict ms/img | detail |",
              "|---|---|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, small subset, 32 px")
    parser.add_argument("--out", type=Path, help="dry run: section file (default: a temp file)")
    parser.add_argument("--images", type=int, help="train images (256; dry run 4)")
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    if not args.dry_run and not torch.cuda.is_available():
        print(f"gpu_check: CUDA is not available here (torch {torch.__version__}, CUDA build "
              f"{torch.version.cuda}); this check needs a CUDA GPU. To exercise it on the CPU: "
              "bash benchmarks/gpu_check.sh --dry-run", file=sys.stderr)
        return 2
    s = Settings("cpu", args.images or 4, args.epochs, 32, 4) if args.dry_run else \
        Settings("cuda:0", args.images or 256, args.epochs)
    command = " ".join(["bash benchmarks/gpu_check.sh", *sys.argv[1:]])
    print_plan(s, args.dry_run)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        rows = run_checks(Path(tmp), s, args.dry_run)
    text = section_text(rows, s, command, time.perf_counter() - t0, args.dry_run)
    print("\n" + text)
    target = (args.out or Path(tempfile.mkdtemp(prefix="gpu-check-")) / "gpu_check.md") \
        if args.dry_run else BENCHMARKS
    print(f"gpu_check: wrote {update_section(text, target)}")
    failed = [row.check for row in rows if row.failed]
    print(f"gpu_check: {len(failed)} check(s) failed{': ' + ', '.join(failed) if failed else ''}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
