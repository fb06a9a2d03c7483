"""Benchmark edgec's int8 codegen: QDQ models against edgec fp32 and onnxruntime.

    .venv/bin/python benchmarks/int8.py [--models mobilenet_v2,resnet18] [--seconds 6]
                                        [--calibration 8]

For each zoo model (models/): the fp32 ONNX (BatchNorms folded), and the same model quantized
by onnxruntime's
quantize_static (QDQ, per-channel int8 weights, uint8 activations, calibrated on
`--calibration` random inputs). edgec compiles both for the host; edgec fp32, edgec int8 and
onnxruntime on the QDQ model (all graph optimizations: its int8 kernels) are each timed alone
in fresh processes, taking turns (harness/latency.round_robin, the same thread count). Prints
edgec int8 / edgec fp32 and edgec int8 / onnxruntime int8 latency ratios and max output
differences: edgec int8 against onnxruntime on the QDQ model (optimized, and unoptimized: the
fake-quantized graph, the reference the tests hold edgec to), in steps of the output's
quantization scale where the output is dequantized, and edgec int8 against edgec fp32 (the
quantization error). Random weights and inputs: latency and agreement only, not accuracy.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

DEFAULT_MODELS = ["mobilenet_v2", "resnet18"]


def quantize_qdq(src: Path, dst: Path, feeds: list[dict[str, np.ndarray]]) -> Path:
    """onnxruntime's static QDQ quantization of `src`: per-channel int8 weights, uint8
    activations, calibrated on `feeds`."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)
    return dst


def folded(src: Path) -> Path:
    """`src` with edgec's exact cleanup and BatchNorm folding applied (what compile does to an
    fp32 model; quantized with the BatchNorms in place, each would stay an fp32 op between a
    dequantize and a quantize)."""
    import onnx

    from edgec.compiler.passes import cleanup, fold_batchnorm

    model, _ = fold_batchnorm(cleanup(onnx.load(str(src)))[0])
    dst = src.with_name(f"{src.stem}-folded.onnx")
    onnx.save(model, str(dst))
    return dst


def output_step(path: Path) -> float | None:
    """The scale of the quantize whose dequantize is the model's (first) output, else None."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    out = model.graph.output[0].name
    last = next((n for n in model.graph.node if out in n.output), None)
    if last is None or last.op_type != "DequantizeLinear" or last.input[1] not in inits:
        return None
    return float(inits[last.input[1]].reshape(-1)[0])


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


def agreement(int8_dir: Path, fp32_dir: Path, qdq: Path, feed: dict[str, np.ndarray]) -> dict:
    """Max |diff| of edgec int8's first output against onnxruntime (optimized and not) on the
    QDQ model and against edgec fp32."""
    from edgec import runtime
    from edgec.harness.ort import ort_session

    got = next(iter(runtime.load(int8_dir)(**feed).values()))
    fp32 = next(iter(runtime.load(fp32_dir)(**feed).values()))
    ort_opt = ort_session(qdq, 0, optimize=True).run(None, feed)[0]
    ort_ref = ort_session(qdq, 0, optimize=False).run(None, feed)[0]
    return {"vs_ort_int8": max_diff(got, ort_opt), "vs_ort_fake_quant": max_diff(got, ort_ref),
            "vs_edgec_fp32": max_diff(got, fp32), "max_ref": float(np.abs(fp32).max())}


def bench_model(name: str, folder: Path, seconds: float, calibration: int) -> dict:
    import edgec
    from edgec import models, runtime, targets
    from edgec.harness.latency import round_robin

    src = folded(models.export(name, folder / f"{name}.onnx"))
    fp32_dir, int8_dir = folder / f"{name}-fp32", folder / f"{name}-int8"
    edgec.compile(src, output=fp32_dir, target="host", validate=False, latency=False)
    inputs = runtime.load(fp32_dir).inputs
    feeds = [runtime.random_inputs(inputs, seed=s) for s in range(calibration)]
    qdq = quantize_qdq(src, folder / f"{name}-qdq.onnx", feeds)
    edgec.compile(qdq, output=int8_dir, target="host", validate=False, latency=False)
    feed = runtime.random_inputs(inputs, seed=1000)
    threads = targets.get("host").effective_threads()

    fp32_t, int8_t, ort_t = round_robin(
        [("edgec", fp32_dir, threads), ("edgec", int8_dir, threads),
         ("onnxruntime", qdq, threads)], feed, seconds)
    return {"fp32_ms": fp32_t["median_ms"], "int8_ms": int8_t["median_ms"],
            "ort_int8_ms": ort_t["median_ms"], "step": output_step(qdq),
            **agreement(int8_dir, fp32_dir, qdq, feed)}


def _line(name: str, r: dict) -> str:
    step = r["step"]
    steps = f" ({r['vs_ort_int8'] / step:.1f} / {r['vs_ort_fake_quant'] / step:.1f} steps)" \
        if step else ""
    return (f"{name:<14} edgec int8 {r['int8_ms']:7.2f} ms  edgec fp32 {r['fp32_ms']:7.2f} ms  "
            f"ORT int8 {r['ort_int8_ms']:7.2f} ms  int8/fp32 {r['int8_ms'] / r['fp32_ms']:5.2f}x  "
            f"int8/ORT int8 {r['int8_ms'] / r['ort_int8_ms']:5.2f}x  max|diff| vs ORT int8 "
            f"{r['vs_ort_int8']:.3g}, vs ORT fake-quant {r['vs_ort_fake_quant']:.3g}{steps}, "
            f"vs edgec fp32 {r['vs_edgec_fp32']:.3g} (max|ref| {r['max_ref']:.3g})")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(DEFAULT_MODELS))
    p.add_argument("--seconds", type=float, default=6.0, help="timing per runtime, in all")
    p.add_argument("--calibration", type=int, default=8, help="random calibration inputs")
    p.add_argument("--out", help="write the results as BENCHMARKS.md's int8 section")
    args = p.parse_args()
    lines = []
    with tempfile.TemporaryDirectory(prefix="edgec-int8-") as tmp:
        for name in args.models.split(","):
            r = bench_model(name, Path(tmp), args.seconds, args.calibration)
            lines.append(_line(name, r))
            print(lines[-1], flush=True)
    if args.out:
        from sections import write_section

        write_section(args.out, "int8", [
            "", "## int8 kernels: edgec int8 against edgec fp32 and onnxruntime int8 (host)", "",
            f"Command: `python benchmarks/int8.py {' '.join(sys.argv[1:])}`", "",
            __doc__.split("\n\n", 2)[2].strip(), "", "```", *lines, "```"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
