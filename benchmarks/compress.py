"""Benchmark `edgec compress` on models with real accuracy, and its trade-off on the zoo.

    .venv/bin/python benchmarks/compress.py [--models digits_vgg,digits_resnet]
        [--max-accuracy-drop 0.5] [--zoo vgg11,resnet18] [--seconds 4]

Trained digits models: compress (host target, latency check on) fits and searches on the
training split (1437 images, scikit-learn's digits as models/train_digits.py splits them):
the models were trained on it, so its held-out part flatters them, and the budget is set
below the 1-point goal to leave room for that. It is then judged on the test split compress
never saw (360 images, onnxruntime): top-1 before and after. The original and the compressed
model are compiled for the host, untuned (a tuning database could hold records for one and not
the other), and each is timed alone in fresh processes (the best process's median call, every
process's listed; onnxruntime on the original beside them), taking turns.

Zoo models (random weights, so agreement, not accuracy): compress on seeded random inputs
with --curve plans measured, printing conv MACs against top-1 agreement with the original and
the output SQNR. A random-weight net gives most random inputs the same class, so agreement
moves little; the SQNR is the curve to read.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _digits_data(folder: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    from edgec.models import digits, train_digits

    tr_x, tr_y, te_x, te_y = train_digits.load_split()
    path = folder / "digits_train.npz"
    np.savez(path, input=digits.model_inputs(tr_x), labels=tr_y)
    return path, te_x, te_y


def _top1(model: Path, images: np.ndarray, labels: np.ndarray) -> float:
    from edgec.harness.ort import ort_session
    from edgec.models import digits

    sess = ort_session(str(model), threads=0, optimize=True)
    x = digits.model_inputs(images)
    return float(np.mean([sess.run(None, {"input": x[i:i + 1]})[0].argmax() == labels[i]
                          for i in range(len(x))]))


def _latency(original: Path, small: Path, folder: Path, seconds: float
             ) -> tuple[list[float], list[list[float]]]:
    """edgec dense, edgec compressed, onnxruntime dense: each alone, taking turns; the best
    process's median call of each, and every process's."""
    from edgec.compiler import compile as compile_model
    from edgec.harness.latency import round_robin

    arts = []
    for src in (original, small):
        out = folder / f"{src.stem}-host"
        compile_model(src, output=out, validate=False, latency=False, use_tuned=False)
        arts.append(out)
    feed = {"input": np.random.default_rng(0).standard_normal((1, 1, 32, 32))
            .astype(np.float32)}
    runs = round_robin([("edgec", arts[0], 0), ("edgec", arts[1], 0),
                        ("onnxruntime", original, 0)], feed, seconds, rounds=5)
    return [r["median_ms"] for r in runs], [r["processes_ms"] for r in runs]


def digits_table(names: list[str], budget: float, seconds: float) -> list[str]:
    from edgec.compiler.compress import CompressOptions, compress
    from edgec.models import digits

    verdicts: list[str] = []
    lines = ["| model | conv MMACs | fewer | test top-1 | drop | edgec ms dense -> compressed"
             " | speedup | ORT ms (dense) | compress s |", "|" + "---|" * 9]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data, te_x, te_y = _digits_data(folder)
        for name in names:
            original = digits.TRAINED_DIR / f"{name}.onnx"
            small = folder / f"{name}_small.onnx"
            t0 = time.perf_counter()
            result = compress(original, output=small, options=CompressOptions(
                data=data, max_accuracy_drop=budget))
            took = time.perf_counter() - t0
            for w in result.warnings:
                print(f"  warning: {w}", file=sys.stderr)
            before, after = _top1(original, te_x, te_y), _top1(small, te_x, te_y)
            (dense_ms, small_ms, ort_ms), per = _latency(original, small, folder, seconds)
            lines.append(
                f"| {name} | {result.macs_before / 1e6:.2f} -> {result.macs_after / 1e6:.2f} | "
                f"{result.macs_before / result.macs_after:.2f}x | {before:.2%} -> {after:.2%} | "
                f"{100 * (before - after):.2f} | {dense_ms:.3f} -> {small_ms:.3f} | "
                f"{dense_ms / small_ms:.2f}x | {ort_ms:.3f} | {took:.0f} |")
            print(lines[-1], flush=True)
            forms = ", ".join(f"{r['name']} {r['form']} {r['groups']}x{r['rank']}"
                              for r in result.layers if r["rank"])
            lines.append(f"|  | {forms or 'all dense'} |||||||| ")
            runs = "; ".join(f"{what} " + ", ".join(f"{v:.3f}" for v in ms) for what, ms in
                             zip(("edgec dense", "compressed", "ORT"), per))
            lines.append(f"|  | per process (ms): {runs} |||||||| ")
            met = (result.macs_before >= 2 * result.macs_after, before - after <= 0.01,
                   dense_ms >= 1.5 * small_ms)
            verdicts.append(f"- {name}: >= 2x fewer conv MACs {_met(met[0])}; <= 1.0 point "
                            f"test top-1 drop {_met(met[1])}; >= 1.5x lower host latency "
                            f"{_met(met[2])}")
    return [*lines, "", "Against the targets (each model):", "", *verdicts]


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def random_draw(spec: dict, seeds: range) -> np.ndarray:
    """Seeded random inputs of the input `spec`, one per seed, stacked."""
    from edgec.runtime import random_inputs

    return np.concatenate([random_inputs([spec], seed=i)[spec["name"]] for i in seeds])


def zoo_data(name: str, folder: Path, samples: int) -> tuple[Path, Path, dict]:
    """The zoo model `name` exported into `folder`, an .npz of `samples` seeded random inputs
    beside it, and its input's spec."""
    import onnx

    from edgec import models

    path = models.export(name, folder / f"{name}.onnx")
    inp = onnx.load(path).graph.input[0]
    spec = {"name": inp.name, "dtype": "float32",
            "shape": [d.dim_value for d in inp.type.tensor_type.shape.dim]}
    data = folder / f"{name}.npz"
    np.savez(data, **{inp.name: random_draw(spec, range(samples))})
    return path, data, spec


def zoo_curve(names: list[str], samples: int, curve: int) -> list[str]:
    from edgec.compiler.compress import CompressOptions, compress

    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            path, data, _ = zoo_data(name, Path(tmp), samples)
            t0 = time.perf_counter()
            result = compress(path, output=None, curve=curve, options=CompressOptions(
                data=data, max_accuracy_drop=5.0, latency=False, calibration=samples // 2,
                held_out=samples // 2))
            lines.append(f"{name} ({time.perf_counter() - t0:.0f} s; conv MMACs, top-1 "
                         f"agreement with the original and output SQNR on {samples // 2} "
                         "random inputs):")
            lines += [f"  {p['macs'] / 1e6:9.2f} MMACs  {100 - p['drop']:6.2f}%  "
                      + (f"{p['sqnr_db']:5.1f} dB" if p["sqnr_db"] is not None else " exact")
                      + ("  <- chosen at a 5-point budget" if p["chosen"] else "")
                      for p in result.plans]
            print("\n".join(lines[-len(result.plans) - 1:]), flush=True)
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="digits_vgg,digits_resnet")
    ap.add_argument("--max-accuracy-drop", type=float, default=0.5)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--zoo", default="", help="zoo models for the trade-off curve")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--curve", type=int, default=8)
    ap.add_argument("--out", help="write the results as BENCHMARKS.md's compress section")
    args = ap.parse_args()
    names = [n for n in args.models.split(",") if n]
    digits_lines = digits_table(names, args.max_accuracy_drop, args.seconds) if names else []
    zoo_lines = ["```", *zoo_curve([n for n in args.zoo.split(",") if n], args.samples,
                                   args.curve), "```"] if args.zoo else []
    out = digits_lines + zoo_lines
    print("\n".join(out))
    if args.out:
        _write(args.out, digits_lines, zoo_lines)
    return 0


def _write(path: str, digits_lines: list[str], zoo_lines: list[str]) -> None:
    """BENCHMARKS.md's sections compress-digits and compress-zoo, each only where it ran."""
    from sections import write_section

    command = f"`python benchmarks/compress.py {' '.join(sys.argv[1:])}`"
    digits_doc, zoo_doc = __doc__.split("\n\n", 3)[2:]
    if digits_lines:
        write_section(path, "compress-digits", [
            "", "## Compress: fewer MACs without retraining (trained digits models)", "",
            f"Command: {command}", "", digits_doc.strip(), "", *digits_lines])
    if zoo_lines:
        write_section(path, "compress-zoo", [
            "", "## Compress: the trade-off on the zoo (random weights)", "",
            f"Command: {command}", "", zoo_doc.strip(), "", *zoo_lines])


if __name__ == "__main__":
    sys.exit(main())
