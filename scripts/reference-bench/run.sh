#!/usr/bin/env bash
# Times the official EfficientViT-SAM (PyPI package `efficientsam`) in PyTorch eager, in ONNX
# Runtime and (its encoder's ONNX export) in OpenVINO at fp32 ("openvino-fp32") and at its default
# precision for the CPU ("openvino": bf16 with AVX512_BF16/AMX), and SAM's original ViT encoders
# (PyPI package `segment-anything`: sam-vit-b, sam-vit-l, sam-vit-h; PyTorch eager only, ViT-H
# being beyond ONNX's 2 GB limit), for
# `evsam bench --with-reference` (or by hand; then pass the JSON to `evsam bench --reference FILE`).
#
# ON REQUEST ONLY: the first run creates a Python virtual environment (default
# <repo>/.venv-ref, override with EVSAM_REFERENCE_VENV) and installs torch, onnxruntime, openvino
# and the official packages from PyPI into it — several GB. It refuses to run under CI.
#
# Usage: scripts/reference-bench/run.sh [--models l0,xl1,sam-vit-b] [--threads 2] [--runs 5]
#          [--decoder-runs 20] [--image FILE] [--skip-everything] [--skip-onnx] [--skip-openvino]
#          [--out DIR]
#          (models: l0 l1 l2 xl0 xl1 sam-vit-b sam-vit-l sam-vit-h)
#        scripts/reference-bench/run.sh --serve pytorch|onnxruntime|openvino-fp32|openvino
#          --one MODEL [--out DIR]
#          (an encoder server for `evsam bench`'s interleaved timing; see bench.py;
#          sam-vit-* with pytorch only; OpenVINO needs a run without --skip-openvino first)
#        scripts/reference-bench/run.sh --train [--models l0,xl1] [--runs 3] [--images 2]
#          [--masks-per-image 16] [--parts full,encoder,decoder] [--out DIR]
#          (the official training step, for `evsam bench-train --reference`; see train_step.py)
#        scripts/reference-bench/run.sh --serve-train decoder --one MODEL [--images 2]
#          [--masks-per-image 16] (a training-step server for `evsam bench-train --interleave`)
set -euo pipefail

if [ -n "${CI:-}" ]; then
  echo "reference-bench: not in CI (it downloads PyTorch, ONNX Runtime and OpenVINO); run it by hand." >&2
  exit 2
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${EVSAM_REFERENCE_VENV:-$root/.venv-ref}"

if ! "$venv/bin/python" -c "import efficientsam, segment_anything, torch, onnxruntime, onnx, openvino" >/dev/null 2>&1; then
  echo "reference-bench: setting up $venv (PyTorch, ONNX Runtime, OpenVINO, efficientsam, segment-anything; this takes a while)" >&2
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -r "$here/requirements.txt"
fi

exec "$venv/bin/python" "$here/bench.py" "$@"
