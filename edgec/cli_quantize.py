"""`edgec quantize` and `edgec compile --int8`: the command line of compiler/quantize.
Exit status: 0 written (a budget no layer meets leaves the model fp32, with a warning), 2 bad
input."""

from __future__ import annotations

import argparse
from typing import Any

DEFAULT_DROP = 0.5


def quantize_flags(p: argparse.ArgumentParser, alone: bool) -> None:
    """The flags of quantize; compile takes them after --int8 (its --data, --target and
    --max-accuracy-drop are shared with --compress)."""
    from edgec.compiler.quantize.options import ACTIVATIONS, EQUALIZE
    from edgec.compiler.quantize.ranges import METHODS

    p.add_argument("--method", default="percentile", choices=METHODS,
                   help="how activation ranges are taken from the calibration samples "
                        "(default percentile: 99.99%% of values inside)")
    p.add_argument("--activations", default="auto", choices=ACTIVATIONS,
                   help="int8 activation type (default: the one the target's int8 kernels "
                        "take, uint8 on x86, int8 on ARM)")
    p.add_argument("--equalize", default="relu", choices=EQUALIZE,
                   help="cross-layer equalization of conv pairs: through Relu (default), also "
                        "through ReLU6 as Relu and a per-channel bound (bounded: onnxruntime "
                        "then runs those convs in fp32, edgec in int8), or off")
    p.add_argument("--no-bias-correction", action="store_true",
                   help="leave the bias shift of rounded weights uncorrected")
    if alone:
        p.add_argument("--max-accuracy-drop", type=float, default=DEFAULT_DROP, metavar="P",
                       help="top-1 points the int8 model may lose on held-out samples of "
                            "--data (without labels: %% of samples whose top-1 changes; "
                            "default 0.5); the most sensitive layers stay fp32 until it holds")
        p.add_argument("--target", default="host",
                       help="target whose int8 kernels the model is written for (default host)")
        p.add_argument("--report", metavar="DIR", help="write report.md, report.html, "
                                                       "report.json")
        p.add_argument("--json", action="store_true")


def options(args: argparse.Namespace) -> Any:
    from edgec.cli import input_shapes_arg
    from edgec.cli_validate import preprocess_overrides
    from edgec.compiler.quantize import QuantizeOptions
    from edgec.errors import EdgecError

    if not args.data:
        raise EdgecError("quantize calibrates and judges the model on your data: give --data "
                         "PATH (an image folder, .npz or .npy folder; a few hundred samples)")
    drop = DEFAULT_DROP if args.max_accuracy_drop is None else args.max_accuracy_drop
    return QuantizeOptions(data=args.data, method=args.method, max_accuracy_drop=drop,
                           activations=args.activations, target=args.target,
                           equalize=args.equalize,
                           bias_correction=not args.no_bias_correction,
                           preprocess=preprocess_overrides(args),
                           input_shapes=input_shapes_arg(args.input_shape))


def summary(result: Any) -> list[str]:
    """Per layer its SQNR alone and whether it runs int8, then the accuracy on held-out
    samples."""
    lines = [f"{'layer':<32} {'op':<7} {'SQNR alone':>10}  int8"]
    for row in result.layers:
        db = row["sqnr_alone_db"]
        sqnr = "exact" if db is None else f"{db:.1f} dB"
        lines.append(f"{row['name'][-32:]:<32} {row['op']:<7} {sqnr:>10}  "
                     f"{'yes' if row['int8'] else 'no: ' + row['why_fp32']}")
    o, q = result.original, result.quantized
    acc = (f"top-1 {o.top1:.2%} -> {q.top1:.2%}" if o.top1 is not None else
           f"top-1 agreement {q.agreement:.2%}" if q.agreement is not None else
           f"noise {q.noise:.3g}")
    n = sum(r["int8"] for r in result.layers)
    before, after = result.weight_bytes
    lines.append(f"{n}/{len(result.layers)} layers int8 ({result.activations} activations, "
                 f"{result.method} ranges); weights {before / 1e3:.1f} kB -> {after / 1e3:.1f} "
                 f"kB; {acc} on {result.samples['held_out']} held-out samples (drop "
                 f"{q.drop:.2f} points)")
    return lines


def _step() -> Any:
    from edgec.cli_lossy import Step
    from edgec.compiler.quantize import quantize
    from edgec.compiler.quantize.report import write_report

    return Step("quantize", "int8", "int8", quantize, options, summary, write_report)


def cmd_quantize(args: argparse.Namespace) -> int:
    from edgec.cli_lossy import run_command

    return run_command(args, _step())


def compile_quantized(args: argparse.Namespace, compile_cmd: Any) -> int:
    """compile --int8: quantize, then compile the int8 model (cli_lossy)."""
    from edgec.cli_lossy import compile_after

    return compile_after(args, compile_cmd, _step())


def add_quantize(sub: Any) -> None:
    from edgec.cli_validate import data_flags

    q = sub.add_parser("quantize", help="int8 QDQ ONNX, calibrated on your data, under an "
                                        "accuracy budget")
    q.add_argument("model", nargs="?")
    q.add_argument("-o", "--output", help="int8 QDQ .onnx (written atomically)")
    q.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,...")
    data_flags(q)
    quantize_flags(q, alone=True)
    q.set_defaults(fn=cmd_quantize)
