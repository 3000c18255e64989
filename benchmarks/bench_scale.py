"""Scale: import + validate, the retrain's data re-hash and the evaluation at N images.

    .venv/bin/python benchmarks/bench_scale.py [--sizes 1000 10000 50000] [--write]

For each N, a fresh project (`dvc init`) and N generated 64 × 64 PNG images (side:
`--image-size`; a flat background, 1–3 filled rectangles or ellipses, classes `rect` and
`ellipse`; YOLO box labels, no split folders, so the importer draws its seeded 70/15/15
split). Each step is
its own process, timed as a whole with its process tree's summed RSS sampled every 0.2 s
(benchmarks/measured_run.py):
1. `visiongate data import --format yolo` (copy to data/raw, `dvc add`, the prepare stage:
   parse, validate, write the canonical splits; DVC hashes its outputs);
2. `visiongate data validate` (the stage brought up to date, every split checked);
3. the retrain's "is the data unchanged" re-hash, as visiongate.nochange does it before
   a retrain: `dvc status` of the prepare stage (versioning.up_to_date), the split md5s
   from dvc.lock, every pinned file re-hashed in the workspace and in DVC's cache
   (versioning.verify);
4. the evaluation of one fixed checkpoint on the test split, as the flow's evaluate_model
   task calls it (visiongate.evaluate.evaluate, with the report's plots and the gate's
   per-image records). The checkpoint: YOLOv8n trained once (`--train-epochs`, 64 px, not
   timed) on the smallest N.
Linear growth: seconds per 1000 images at the largest N over that at the smallest (1 =
linear; above 1 grows faster). Progress: whether the step's output (a file, not a
terminal) shows progress lines (visiongate.progress). `--write` updates BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.bench_retrain import CLI, cli_env, make_project  # noqa: E402
from benchmarks.measured_run import run_measured  # noqa: E402
from benchmarks.report import machine, update_section  # noqa: E402

SECTION = "## Scale: import, re-hash and evaluation at 1k–50k images"
STEPS = ("import", "validate", "re-hash", "evaluate")
CLASSES = ("rect", "ellipse")
# a tqdm bar (`12%|█▏ | 120/1000`), a rate, or an "N/M" count on a progress line
PROGRESS = re.compile(r"\d+%\|| \d+(\.\d+)?(it|img|file|files)/s|\b\d+/\d+ \[")


def generate(out: Path, n: int, seed: int, size: int = 64) -> Path:
    """n images with YOLO labels in out/images, out/labels; names.txt."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    (out / "images").mkdir(parents=True)
    (out / "labels").mkdir()
    for i in range(n):
        image = Image.new("RGB", (size, size), tuple(rng.randrange(256) for _ in range(3)))
        draw, lines = ImageDraw.Draw(image), []
        for _ in range(rng.randint(1, 3)):
            w, h = rng.randint(8, size // 2), rng.randint(8, size // 2)
            x, y = rng.randint(0, size - w), rng.randint(0, size - h)
            klass = rng.randrange(len(CLASSES))
            shape = draw.rectangle if klass == 0 else draw.ellipse
            shape((x, y, x + w - 1, y + h - 1), fill=tuple(rng.randrange(256) for _ in range(3)))
            lines.append(f"{klass} {(x + w / 2) / size:.6f} {(y + h / 2) / size:.6f} "
                         f"{w / size:.6f} {h / size:.6f}")
        image.save(out / "images" / f"{i:06d}.png")
        (out / "labels" / f"{i:06d}.txt").write_text("\n".join(lines) + "\n")
    (out / "names.txt").write_text("\n".join(CLASSES) + "\n")
    return out


def rehash(project: str, dataset: str) -> None:
    """(Subprocess) step 3: what visiongate.nochange checks of the data; prints JSON."""
    from visiongate import versioning

    root = Path(project)
    if not versioning.up_to_date(root, dataset):
        raise SystemExit(f"{dataset}: `dvc status` says the prepare stage is out of date")
    md5s = versioning.split_md5s(root, dataset)
    print(json.dumps({"files": versioning.verify(root, dataset, md5s)}))


def train_tiny(data_root: str, out: str, epochs: int) -> None:
    """(Subprocess, untimed) the fixed checkpoint: YOLOv8n, 64 px, through visiongate."""
    from visiongate.config import DetectConfig
    from visiongate.models import yolo

    cfg = DetectConfig(epochs=epochs, imgsz=64, batch=32, augment=[], device="cpu")
    yolo.train(cfg, Path(data_root), Path(out), lambda epoch, metrics: None)


def evaluate(checkpoint: str, split: str, out: str) -> None:
    """(Subprocess) step 4, as the flow's evaluate_model task; prints JSON."""
    from visiongate.evaluate import evaluate as score

    metrics = score(Path(checkpoint), Path(split), Path(out) / "plots",
                    Path(out) / "records.npz")
    print(json.dumps({"map50": metrics["map50"]}))


def measure(cmd: list[str], cwd: Path, env: dict, log: Path, images: int, tty: bool) -> dict:
    """A step's wall, CPU, peak RSS and whether its output shows progress. `tty`: run it
    under a pseudo-terminal (util-linux `script`), as a user at a terminal sees it."""
    if tty:  # a terminal of 120 columns: tqdm draws nothing on one of 0 (a bare pty's size)
        cmd = ["script", "-qefc", f"stty cols 120 rows 40; exec {shlex.join(cmd)}", "/dev/null"]
    run = run_measured(cmd, cwd, env, log)
    return {"s": run.wall, "cpu": run.cpu, "images": images, "peak": run.peak_rss / 2**20,
            "progress": bool(PROGRESS.search(run.log.replace("\r", "\n")))}


def last_json(log: Path) -> dict:
    """The JSON line a child printed last (a pseudo-terminal may add lines after it)."""
    text = log.read_text(errors="replace")
    for line in reversed(text.splitlines()):
        if line.strip().startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"{log}: no JSON result; the output ends:\n{text[-2000:]}")


def one_size(n: int, work: Path, env: dict, a: argparse.Namespace, checkpoint: Path | None
             ) -> tuple[dict, Path | None]:
    """The four steps at N images (the checkpoint trained first when there is none yet)."""
    t0 = time.perf_counter()
    src = generate(work / f"src-{n}", n, a.seed, a.image_size)
    print(f"N = {n}: generated in {time.perf_counter() - t0:.1f} s", flush=True)
    project = make_project(work / f"project-{n}", None, segment=False)
    name, me = f"syn{n}", [sys.executable, __file__]
    prepared = project / "data" / "prepared" / name
    steps: dict[str, dict] = {}
    steps["import"] = measure([*CLI, "data", "import", "--format", "yolo", str(src), "--name",
                               name, "--root", str(project)], project, env,
                              work / f"import-{n}.log", n, a.tty)
    steps["validate"] = measure([*CLI, "data", "validate", name, "--root", str(project)],
                                project, env, work / f"validate-{n}.log", n, a.tty)
    steps["re-hash"] = measure([*me, "--rehash", str(project), name], REPO, env,
                               work / f"rehash-{n}.log", 0, a.tty)
    steps["re-hash"]["images"] = last_json(work / f"rehash-{n}.log")["files"]
    if checkpoint is None:
        print(f"  training the fixed checkpoint on {name} ({a.train_epochs} epochs) ...",
              flush=True)
        checkpoint = work / "checkpoint"
        run = run_measured([*me, "--train", str(prepared), str(checkpoint),
                            str(a.train_epochs)], REPO, env, work / "train.log")
        print(f"    {run.wall:.1f} s", flush=True)
    test = prepared / "test"
    n_test = len(list((test / "images").iterdir()))
    steps["evaluate"] = measure([*me, "--evaluate", str(checkpoint), str(test),
                                 str(work / f"eval-{n}")], REPO, env,
                                work / f"evaluate-{n}.log", n_test, a.tty)
    steps["evaluate"]["map50"] = last_json(work / f"evaluate-{n}.log")["map50"]
    for step, m in steps.items():
        print(f"  {step:<9} {m['images']:>6} files/images {m['s']:8.1f} s ({m['cpu']:.0f} CPU s) "
              f"{m['peak']:7.0f} MiB progress {'yes' if m['progress'] else 'no'}", flush=True)
    if not a.keep:
        for path in (src, project, work / f"eval-{n}"):
            shutil.rmtree(path, ignore_errors=True)
    return steps, checkpoint


def render(results: dict[int, dict], a: argparse.Namespace, load: tuple, total: float) -> str:
    sizes = sorted(results)
    lines = [SECTION, ""]
    if a.smoke_note:
        lines += [f"**{a.smoke_note}**", ""]
    lines += [
        f"Generated {a.image_size} × {a.image_size} PNG images (1–3 boxes each, 2 classes, "
        "YOLO labels), a fresh "
        "project per N; each step its own process: wall time and the peak summed RSS of its "
        "process tree (sampled every 0.2 s). Steps: `visiongate data import` (copy, `dvc add`, "
        "the prepare stage), `visiongate data validate`, the retrain's data re-hash "
        "(`dvc status` + every pinned file re-hashed in workspace and cache, as "
        "visiongate.nochange), and the evaluation of one fixed YOLOv8n checkpoint on the "
        "test split with plots and per-image records (as the flow's evaluate_model task). "
        "\"per 1k\": seconds per 1000 of the files/images the step handles (the re-hash counts "
        "pinned files, the evaluation test images). Progress: a bar or progress lines in the "
        + ("step's output on a pseudo-terminal (`--tty`)." if a.tty else "step's output, "
           "which is a file here: visiongate.progress writes plain lines there (start, at "
           "most every 15 s, end); on a terminal a tqdm bar (`--tty` runs the steps on a "
           "pseudo-terminal)."), "",
        f"Machine: {machine()}; load average (1 min) {load[0]:.1f} at the start, "
        f"{load[1]:.1f} at the end; whole benchmark {total / 60:.1f} min.", "",
        f"Command: `.venv/bin/python benchmarks/bench_scale.py --sizes "
        f"{' '.join(map(str, sizes))}{' --tty' if a.tty else ''}"
        f"{f' --image-size {a.image_size}' if a.image_size != 64 else ''} --write`", "",
        "| step | N | files/images | seconds (CPU) | s per 1k | peak RSS | progress shown |",
        "|---|---:|---:|---:|---:|---:|---|"]
    for step in STEPS:
        for n in sizes:
            m = results[n][step]
            lines.append(f"| {step} | {n} | {m['images']} | {m['s']:.1f} ({m['cpu']:.1f}) | "
                         f"{1000 * m['s'] / max(m['images'], 1):.2f} | {m['peak']:.0f} MiB | "
                         f"{'yes' if m['progress'] else 'no'} |")
    lines += ["", "The fixed checkpoint's test mAP50: " + ", ".join(
        f"N = {n} {results[n]['evaluate']['map50']:.3f}" for n in sizes) + ".", ""]
    if len(sizes) > 1:
        lo, hi = sizes[0], sizes[-1]
        for step in STEPS:
            a_, b_ = results[lo][step], results[hi][step]
            growth = (b_["s"] / max(b_["images"], 1)) / (a_["s"] / max(a_["images"], 1))
            kib = (b_["peak"] - a_["peak"]) * 1024 / max(b_["images"] - a_["images"], 1)
            lines.append(f"- {step}: per-image time at N = {hi} is {growth:.2f}× that at "
                         f"N = {lo} ({'~linear or better' if growth <= 1.2 else 'superlinear'}); "
                         f"peak RSS {a_['peak']:.0f} → {b_['peak']:.0f} MiB "
                         f"({kib:.1f} KiB per added file/image).")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000])
    parser.add_argument("--train-epochs", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=64, help="side of the generated "
                        "images (the evaluation holds every decoded test image at once)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep each N's files (disk)")
    parser.add_argument("--tty", action="store_true", help="run each step under a pseudo-"
                        "terminal (`script`): progress as a user at a terminal sees it")
    parser.add_argument("--write", action="store_true", help="update its section of BENCHMARKS.md")
    parser.add_argument("--smoke-note", default="", help="a line above the table (e.g. "
                        "that this is a smoke run on a shared machine)")
    parser.add_argument("--rehash", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--train", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--evaluate", nargs=3, help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.rehash:
        return rehash(*a.rehash)
    if a.train:
        return train_tiny(a.train[0], a.train[1], int(a.train[2]))
    if a.evaluate:
        return evaluate(*a.evaluate)
    load0, t0 = os.getloadavg()[0], time.perf_counter()
    results, checkpoint = {}, None
    with tempfile.TemporaryDirectory(prefix="vg-bench-scale-") as tmp:
        work = Path(tmp)
        env = cli_env(work / "prefect-home")
        for n in sorted(a.sizes):
            results[n], checkpoint = one_size(n, work, env, a, checkpoint)
    text = render(results, a, (load0, os.getloadavg()[0]), time.perf_counter() - t0)
    print(text)
    if a.write:
        print(f"wrote {update_section(text)}")


if __name__ == "__main__":
    main()
