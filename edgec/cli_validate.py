"""`edgec validate` and the data flags it shares with `compile`: the command line of the
validation harness (edgec.harness). Exit status: 0 every candidate within budget, 1 one is
not, 2 bad input (any EdgecError)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

PREPROCESS_FLAGS = {
    "resize": "H,W, or one number for the shorter side",
    "center_crop": "H,W after the resize",
    "scale": "pixel factor before mean/std (default 1/255)",
    "mean": "per-channel mean, comma-separated (after scale)",
    "std": "per-channel std, comma-separated",
    "color": "rgb, bgr or gray",
    "layout": "nchw or nhwc",
    "dtype": "input dtype (float32; uint8/int8: raw pixels)",
}


def data_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", metavar="PATH", help="image folder (class = subfolder), .npz "
                   "(arrays named after the inputs, plus labels) or folder of .npy")
    p.add_argument("--preprocess", metavar="FILE.json", help="preprocessing spec (default: the "
                   "model's edgec.preprocess metadata)")
    for name, text in PREPROCESS_FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), dest="pre_" + name, metavar="V",
                       help=text)


def preprocess_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Every field of the --preprocess file, then each flag given: overrides of the model's
    own spec (Preprocess.with_overrides)."""
    from dataclasses import fields

    from edgec.harness.preprocess import load_spec, overrides

    spec = load_spec(args.preprocess) if args.preprocess else None
    from_file = {f.name: getattr(spec, f.name) for f in fields(spec)} if spec else {}
    flags = {n: getattr(args, "pre_" + n) for n in PREPROCESS_FLAGS
             if getattr(args, "pre_" + n) is not None}
    return {**from_file, **overrides(**flags)}


def cmd_validate(args: argparse.Namespace) -> int:
    from edgec.cli import input_shapes_arg
    from edgec.errors import EdgecError
    from edgec.harness import report
    from edgec.harness.validate import Budget, Options, validate

    if not args.data:
        raise EdgecError("edgec validate needs --data PATH (images, .npz or .npy folder)")
    opts = Options(data=args.data, device=args.device, threads=args.threads,
                   budget=Budget(args.max_accuracy_drop, args.min_agreement),
                   preprocess=preprocess_overrides(args),
                   input_shapes=input_shapes_arg(args.input_shape),
                   latency_seconds=args.seconds, processes=args.processes, limit=args.limit,
                   target=args.target)
    result = validate(args.reference, args.candidates, opts)
    if args.report:
        page = report.write(result, args.report)
        result["report"] = str(page)
    if args.json:
        print(json.dumps(report.jsonable(result), indent=2))
    else:
        print("\n".join(report.lines(result)))
        if args.report:
            print(f"report   {result['report']} (and report.md, report.json)")
    if not result["ok"]:
        print("edgec: a candidate is over budget", file=sys.stderr)
    return 0 if result["ok"] else 1


def add_validate(sub: Any) -> None:
    v = sub.add_parser("validate", help="accuracy and latency of candidates against a "
                                        "reference, on your data")
    v.add_argument("reference", help="the fp32 reference .onnx")
    v.add_argument("candidates", nargs="+", metavar="CANDIDATE",
                   help=".onnx models and artifact folders, any mix")
    data_flags(v)
    v.add_argument("--target", help="compile each ONNX candidate for this target first and "
                                    "measure its artifact")
    v.add_argument("--device", help="run artifact bundles on: qemu (emulated), local, or "
                                    "ssh://[user@]host[:port] (artifacts for this machine "
                                    "without a bundle still run here)")
    v.add_argument("--max-accuracy-drop", type=float, default=1.0, metavar="P",
                   help="top-1 points a candidate may lose (default 1.0)")
    v.add_argument("--min-agreement", type=float, metavar="A",
                   help="least top-1 agreement with the reference, in %%")
    v.add_argument("--threads", type=int)
    v.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,...")
    v.add_argument("--seconds", type=float, default=2.0, help="timing per model (default 2)")
    v.add_argument("--processes", type=int, default=3, metavar="N",
                   help="fresh processes each model is timed in, the best one counting "
                        "(default 3)")
    v.add_argument("--limit", type=int, metavar="N", help="use the first N samples only")
    v.add_argument("--report", metavar="DIR", help="write report.md, report.html, report.json")
    v.add_argument("--json", action="store_true")
    v.set_defaults(fn=cmd_validate)
