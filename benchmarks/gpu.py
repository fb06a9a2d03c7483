"""CUDA on a real NVIDIA GPU: every zoo model built for `cuda`, checked, timed.

    benchmarks/gpu.sh [--models a,b] [--runs 200]       # on a machine with an NVIDIA GPU
    .venv/bin/python benchmarks/gpu.py --build-only      # anywhere: the build checks alone

With a GPU, for each model: `edgec compile --target cuda` (its check against onnxruntime on
the CPU runs, the GPU being here), then the `--precision fp16` build, run on the GPU and held to
fp32 onnxruntime within FP16_RTOL; latency of edgec's call and of onnxruntime-gpu's CUDA
execution provider, both fed and read as numpy arrays (the copies to and from the GPU included),
each the median of --runs calls after warm-up, in this process. Writes section `gpu` of
BENCHMARKS.md naming the GPU, its driver and arch. A model that fails is a row saying why.

--build-only builds each model for `cuda` and `jetson-orin` (fp32 and fp16): the compile
checks (every kernel on the GPU, the target's machine code in model.so, no CUDA source) run
and nothing is executed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FP16_RTOL = 2e-2  # fp16 builds: max|edgec - ort| <= FP16_RTOL * max|ort|, per output
ROOT = Path(__file__).resolve().parent.parent


def gpu_name() -> str:
    done = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,compute_cap",
                           "--format=csv,noheader"], capture_output=True, text=True)
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 else "unknown GPU"


def median_ms(call, feed: dict, runs: int) -> float:
    for _ in range(5):
        call(feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        call(feed)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def ort_cuda(path: Path):
    """An onnxruntime-gpu session on the CUDA execution provider, or None where absent."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return None
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CUDAExecutionProvider"])
    return lambda feed: sess.run(None, feed)


def fp16_check(path: Path, folder: Path, feed: dict) -> str:
    """The fp16 artifact against fp32 onnxruntime: 'ok (rel R)' or why not."""
    from edgec import runtime
    from edgec.compiler.validate import compare_outputs
    from edgec.harness.ort import ort_session

    sess = ort_session(path, 1, optimize=False)
    ref = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))
    rows = compare_outputs(runtime.load(folder)(**feed), ref, {}, rtol=FP16_RTOL)
    worst = max(r["rel"] for r in rows)
    return f"{'ok' if all(r['ok'] for r in rows) else 'FAILED'} (rel {worst:.1e})"


def one_model(name: str, tmp: Path, runs: int) -> list[str]:
    """The table row of one model on this GPU."""
    import edgec
    from edgec import models, runtime

    path = models.export(name, tmp / f"{name}.onnx")
    fp32 = edgec.compile(path, output=tmp / f"{name}-fp32", target="cuda", latency=False)
    check = fp32.manifest["validation"]
    fp16_dir = tmp / f"{name}-fp16"
    edgec.compile(path, output=fp16_dir, target="cuda", precision="fp16")
    model = runtime.load(fp32.folder)
    feed = runtime.random_inputs(fp32.manifest["inputs"])
    ours = median_ms(lambda f: model(**f), feed, runs)
    fp16_model = runtime.load(fp16_dir)
    ours16 = median_ms(lambda f: fp16_model(**f), feed, runs)
    ort = ort_cuda(path)
    theirs = median_ms(ort, feed, runs) if ort else None
    return [name, "ok" if check.get("ok") else f"FAILED: {check}", fp16_check(path, fp16_dir, feed),
            f"{ours:.3f}", f"{ours16:.3f}",
            f"{theirs:.3f}" if theirs else "no onnxruntime-gpu",
            f"{theirs / ours:.2f}" if theirs else "-"]


def build_only(names: list[str]) -> int:
    import edgec
    from edgec import models

    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            path = models.export(name, Path(tmp) / f"{name}.onnx")
            for target in ("cuda", "jetson-orin"):
                for precision in ("fp32", "fp16"):
                    try:
                        edgec.compile(path, output=Path(tmp) / "out", target=target,
                                      precision=precision, validate=False)
                        print(f"{name:24} {target:12} {precision}: built, checks passed")
                    except Exception as err:  # a row per failure, the rest still built
                        failed += 1
                        print(f"{name:24} {target:12} {precision}: FAILED {err}")
    return 1 if failed else 0


def main() -> int:
    from edgec import models, targets

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", help="comma-separated zoo models (default: all)")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--build-only", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    args = ap.parse_args()
    names = args.models.split(",") if args.models else list(models.MODELS)
    if args.build_only:
        return build_only(names)
    if not targets.device_present("cuda"):
        print("gpu.py: no CUDA GPU TVM can open here; use --build-only", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            try:
                rows.append(one_model(name, Path(tmp), args.runs))
            except Exception as err:
                rows.append([name, f"FAILED: {str(err).splitlines()[0][:120]}", "-", "-", "-",
                             "-", "-"])
            print(" | ".join(rows[-1]), flush=True)
    write(rows, args)
    return 0 if all(r[1] == "ok" and r[2].startswith("ok") for r in rows) else 1


def write(rows: list[list[str]], args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from sections import write_section

    lines = ["## NVIDIA GPU (CUDA): the zoo on " + gpu_name(), "",
             f"`benchmarks/gpu.sh --runs {args.runs}`, {time.strftime('%Y-%m-%d')}. fp32: "
             "compile's check against onnxruntime (CPU). fp16: max|edgec - ort fp32| <= "
             f"{FP16_RTOL} x max|ort| per output. ms: median call, numpy in and out.", "",
             "| model | fp32 check | fp16 check | edgec fp32 ms | edgec fp16 ms | "
             "ort-gpu CUDA EP ms | ort / edgec fp32 |", "|---|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    write_section(args.out, "gpu", lines)


if __name__ == "__main__":
    sys.exit(main())
