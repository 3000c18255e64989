"""What a process holds before it computes anything: the resident memory each library adds
when imported, in the order the retrain flow's process meets them, next to the raw
ultralytics training process's own three (torch, torchvision, ultralytics). Not a test.

Each side is a fresh `python -c` child importing one module after another and reading its
own RSS and PSS (psutil) after each; the flow side ends with flows.retrain and the modules
its tasks import later (MLflow, the exporters' runtimes, the explainers).

    python benchmarks/bench_imports.py [--write]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.report import machine, update_section  # noqa: E402

RAW = ("torch", "torchvision", "ultralytics")
FLOW = (*RAW, "prefect", "flows.retrain", "mlflow", "dvc.repo", "sklearn", "openvino",
        "onnxruntime", "albumentations", "cleanlab", "pytorch_grad_cam", "faster_coco_eval")
CHILD = """
import importlib, json, sys, psutil
me, out = psutil.Process(), []
def read(name):
    info = me.memory_full_info()
    out.append((name, info.rss, info.pss))
read("python")
for name in sys.argv[1:]:
    importlib.import_module(name)
    read(name)
print(json.dumps(out))
"""


def footprint(modules: tuple[str, ...]) -> list[tuple[str, int, int]]:
    """(module, RSS, PSS) in bytes after each import, in a fresh interpreter."""
    done = subprocess.run([sys.executable, "-c", CHILD, *modules], capture_output=True,
                          text=True, check=True, cwd=Path(__file__).resolve().parents[1])
    return [tuple(row) for row in json.loads(done.stdout.strip().splitlines()[-1])]


def section(raw: list, flow: list) -> str:
    mib = 2**20
    lines = ["## Memory: what each process imports", "",
             "Resident memory after each import, in a fresh interpreter (psutil; RSS counts "
             "every mapped page the process touched, PSS splits shared ones). The raw "
             "ultralytics training process imports the first three; the retrain flow's "
             "process all of them (flows.retrain pulls in visiongate's core; MLflow, DVC, "
             "the runtimes and explainers are imported by its tasks).", "",
             f"Machine: {machine()}.", "",
             "Command: `.venv/bin/python benchmarks/bench_imports.py --write`", "",
             "| import | adds (MiB RSS) | process RSS (MiB) | process PSS (MiB) |",
             "|---|---:|---:|---:|"]
    previous = None
    for name, rss, pss in flow:
        lines.append(f"| {name} | {'' if previous is None else f'{(rss - previous) / mib:+.0f}'}"
                     f" | {rss / mib:.0f} | {pss / mib:.0f} |")
        previous = rss
    raw_rss, flow_rss = raw[-1][1], flow[-1][1]
    lines += ["", f"The raw side's imports come to {raw_rss / mib:.0f} MiB; the flow's to "
              f"{flow_rss / mib:.0f} MiB, {(flow_rss - raw_rss) / mib:.0f} MiB more "
              f"({flow_rss / raw_rss:.2f}×) before either has read an image."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args(argv)
    text = section(footprint(RAW), footprint(FLOW))
    print(text)
    if args.write:
        print(f"wrote {update_section(text)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
