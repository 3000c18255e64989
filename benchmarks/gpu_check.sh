#!/usr/bin/env bash
# GPU check (benchmarks/gpu_check.py): device selection, AMP, train speed, predict latency
# and peak GPU memory of every model family on one CUDA device, YOLO through visiongate vs
# raw ultralytics, exported artifacts; under 8 minutes, offline, in a temporary directory.
# Writes the "## GPU check" section of BENCHMARKS.md; exit 1 if any check failed, 2 without
# CUDA.
#   bash benchmarks/gpu_check.sh [--images 256] [--epochs 1]
#   bash benchmarks/gpu_check.sh --dry-run [--out FILE]   # CPU; says which checks need CUDA
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
python=.venv/bin/python
[ -x "$python" ] || python=python3
export HF_HUB_OFFLINE=1 YOLO_OFFLINE=1 YOLO_AUTOINSTALL=false MLFLOW_DISABLE_TELEMETRY=true \
  DO_NOT_TRACK=1 PYTHONUNBUFFERED=1
timeout --kill-after=15 480 "$python" benchmarks/gpu_check.py "$@"
rc=$?
[ "$rc" -eq 124 ] && echo "gpu_check: stopped at the 480 s limit" >&2
exit "$rc"
