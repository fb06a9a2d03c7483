#!/bin/sh
# The CUDA proof on a machine with an NVIDIA GPU: builds every zoo model for the `cuda` target
# (the GPU's arch from nvidia-smi), checks fp32 and fp16 against onnxruntime, times edgec
# against onnxruntime-gpu's CUDA execution provider and writes section `gpu` of BENCHMARKS.md
# (benchmarks/gpu.py). Needs: nvidia-smi and a CUDA 13 driver, nvcc 13 ($CUDA_PATH or
# /usr/local/cuda), edgec's venv (.venv, or $PYTHON), and `pip install onnxruntime-gpu` in it
# for the comparison (without it the rows say so). Arguments go to gpu.py (--models, --runs).
set -e
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$here/.venv/bin/python}
command -v nvidia-smi >/dev/null 2>&1 || { echo "gpu.sh: no nvidia-smi: run it on a machine with an NVIDIA GPU (or gpu.py --build-only)" >&2; exit 2; }
nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader
export CUDA_PATH=${CUDA_PATH:-/usr/local/cuda}
cd "$here"
PYTHONUNBUFFERED=1 exec "$python" benchmarks/gpu.py "$@"
