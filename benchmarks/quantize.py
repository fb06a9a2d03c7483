"""Benchmark `edgec quantize`: accuracy of the int8 model, per range method.

    .venv/bin/python benchmarks/quantize.py [--models digits_vgg,digits_resnet]
        [--methods minmax,percentile,entropy,mse] [--zoo mobilenet_v2,resnet18] [--out FILE]

Trained digits models: quantize (host target: uint8 activations, per-channel int8 weights,
equalization and bias correction on, a 0.5-point budget) calibrates and searches on the
training split (1437 images, scikit-learn's digits as models/train_digits.py splits them)
and is judged on the test split it never saw (360 images): top-1 of the fp32 model, of the
QDQ model in onnxruntime (its own int8 kernels), and of edgec's int8 build of it (host,
untuned), with each int8 model's top-1 agreement with fp32 and the layers kept in fp32.

Zoo models (random weights, so agreement with fp32, not accuracy): quantize on seeded
random inputs, then top-1 agreement with the fp32 model and output SQNR on other random
inputs. A random-weight net gives most random inputs the same class, so agreement moves
little; the SQNR is the figure to read.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _top1_ort(model: Path, x: np.ndarray) -> np.ndarray:
    return _outputs(model, "input", x).argmax(1)


def _top1_edgec(model: Path, x: np.ndarray, folder: Path) -> np.ndarray:
    import edgec
    from edgec.runtime import load

    art = edgec.compile(model, output=folder / f"{model.stem}-host", validate=False)
    run = load(art.artifact)
    return np.array([next(iter(run(x[i:i + 1]).values())).argmax() for i in range(len(x))])


def digits_table(names: list[str], methods: list[str], budget: float) -> list[str]:
    from edgec.compiler.quantize import QuantizeOptions, quantize
    from edgec.models import digits, train_digits

    tr_x, tr_y, te_x, te_y = train_digits.load_split()
    lines = ["| model | method | fp32 top-1 | int8 top-1 (onnxruntime) | int8 top-1 (edgec) | "
             "agreement (edgec) | int8 layers | quantize s | onnxruntime quantize_static "
             "top-1 |", "|---|---|---|---|---|---|---|---|---|"]
    verdicts = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "train.npz"
        np.savez(data, input=digits.model_inputs(tr_x), labels=tr_y)
        x = digits.model_inputs(te_x)
        for name in names:
            src = Path(tmp) / f"{name}.onnx"  # a copy: the tool writes beside it
            shutil.copy(digits.TRAINED_DIR / f"{name}.onnx", src)
            fp32 = _top1_ort(src, x)
            order = np.random.default_rng(0).permutation(len(tr_x))[:256]
            tool = _top1_ort(_ort_tool(src, "input", digits.model_inputs(tr_x[order]),
                                       Path(tmp) / f"{name}.ort.onnx"), x)
            for method in methods:
                out = Path(tmp) / f"{name}.{method}.int8.onnx"
                t0 = time.perf_counter()
                result = quantize(src, output=out, options=QuantizeOptions(
                    data=data, method=method, max_accuracy_drop=budget))
                secs = time.perf_counter() - t0
                ort8 = _top1_ort(out, x)
                ours = _top1_edgec(out, x, Path(tmp) / method)
                n8 = sum(r["int8"] for r in result.layers)
                acc = [float(np.mean(p == te_y)) for p in (fp32, ort8, ours)]
                lines.append(f"| {name} | {method} | {acc[0]:.2%} | {acc[1]:.2%} | {acc[2]:.2%}"
                             f" | {np.mean(ours == fp32):.2%} | {n8}/{len(result.layers)} | "
                             f"{secs:.1f} | {np.mean(tool == te_y):.2%} |")
                print(lines[-1], flush=True)
                ok = acc[0] - acc[2] <= 0.005 + 1e-9
                verdicts.append(f"- {name}, {method}: <= 0.5 point test top-1 drop (edgec int8)"
                                f" {'met' if ok else '**not met**'}")
    return [*lines, "", *verdicts]


def _ort_tool(src: Path, name: str, x: np.ndarray, out: Path) -> Path:
    """onnxruntime's own quantize_static (benchmarks/int8.py: QDQ, per-channel int8 weights,
    uint8 activations, MinMax ranges) on the model with BatchNorm folded, calibrated on `x`."""
    from int8 import folded, quantize_qdq

    logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process, once per layer
    return quantize_qdq(folded(src), out, [{name: x[i:i + 1]} for i in range(len(x))])


def zoo_table(names: list[str], samples: int) -> list[str]:
    from compress import random_draw, zoo_data

    from edgec.compiler.compress.score import sqnr_db
    from edgec.compiler.quantize import QuantizeOptions, quantize

    lines = ["| model | top-1 agreement | output SQNR | int8 layers | quantize s | "
             "onnxruntime quantize_static: agreement, SQNR |", "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            path, data, spec = zoo_data(name, Path(tmp), samples)
            t0 = time.perf_counter()
            result = quantize(path, output=Path(tmp) / f"{name}.int8.onnx", options=(
                QuantizeOptions(data=data, max_accuracy_drop=1.0, calibration=samples // 2,
                                held_out=samples // 2)))
            secs = time.perf_counter() - t0
            test = random_draw(spec, range(1000, 1000 + samples))
            calib = np.load(data)[spec["name"]][:samples // 2]
            tool = _ort_tool(path, spec["name"], calib, Path(tmp) / f"{name}.ort.onnx")
            ref, ours, theirs = (_outputs(p, spec["name"], test)
                                 for p in (path, result.output, tool))
            n8 = sum(r["int8"] for r in result.layers)
            lines.append(f"| {name} | {_agree(ref, ours):.2%} | {sqnr_db(_noise(ref, ours)):.1f} "
                         f"dB | {n8}/{len(result.layers)} | {secs:.0f} | "
                         f"{_agree(ref, theirs):.2%}, {sqnr_db(_noise(ref, theirs)):.1f} dB |")
            print(lines[-1], flush=True)
    return lines


def _outputs(model: Path, name: str, x: np.ndarray) -> np.ndarray:
    from edgec.harness.ort import ort_session

    sess = ort_session(str(model), threads=0, optimize=True)
    return np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


def _agree(ref: np.ndarray, got: np.ndarray) -> float:
    return float(np.mean(ref.argmax(1) == got.argmax(1)))


def _noise(ref: np.ndarray, got: np.ndarray) -> float:
    return float(np.sum((got - ref) ** 2) / np.sum(ref ** 2))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="digits_vgg,digits_resnet")
    ap.add_argument("--methods", default="minmax,percentile,entropy,mse")
    ap.add_argument("--max-accuracy-drop", type=float, default=0.5)
    ap.add_argument("--zoo", default="")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--out", help="write the results as BENCHMARKS.md's quantize section")
    args = ap.parse_args()
    names = [n for n in args.models.split(",") if n]
    out = digits_table(names, args.methods.split(","), args.max_accuracy_drop) if names else []
    zoo = zoo_table([n for n in args.zoo.split(",") if n], args.samples) if args.zoo else []
    print("\n".join(out + zoo))
    if args.out:
        from sections import write_section

        digits_doc, zoo_doc = __doc__.split("\n\n", 3)[2:]
        write_section(args.out, "quantize", [
            "", "## Quantize: int8 accuracy per range method", "",
            f"Command: `python benchmarks/quantize.py {' '.join(sys.argv[1:])}`", "",
            digits_doc.strip(), "", *out, "", zoo_doc.strip(), "", *zoo])
    return 0


if __name__ == "__main__":
    sys.exit(main())
