"""`edgec` command line: a thin shell over the Python API.

Each command parses its arguments, makes one API call with keyword arguments and prints the
result. A user error (EdgecError) prints `edgec: error: <one line>` and exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from edgec.compiler.errors import EdgecError


def _input_shapes(specs: list[str] | None) -> dict[str, list[int]]:
    from edgec.compiler.frontend import parse_input_shape

    return dict(parse_input_shape(s) for s in specs or [])


def _input_files(specs: list[str] | None) -> dict[str, str]:
    files = {}
    for spec in specs or []:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise EdgecError(f"bad --input '{spec}'; expected NAME=FILE.npy")
        files[name] = path
    return files


def cmd_compile(args: argparse.Namespace) -> int:
    import edgec
    from edgec.compiler.report import compile_summary

    result = edgec.compile(args.model, output=args.output, target=args.target,
                           input_shapes=_input_shapes(args.input_shape), cc=args.cc,
                           validate=not args.no_validate, seed=args.seed)
    for w in result.warnings:
        print(f"edgec: warning: {w}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.manifest, indent=2))
    else:
        print("\n".join(compile_summary(result.manifest, str(result.artifact))))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from edgec import runtime

    outputs = runtime.run_files(args.artifact, input_files=_input_files(args.input),
                                output=args.output, seed=args.seed, threads=args.threads)
    for name, arr in outputs.items():
        flat = arr.reshape(-1)
        head = ", ".join(f"{v:.5g}" for v in flat[:5])
        extra = f"  argmax {int(arr.reshape(arr.shape[0], -1)[0].argmax())}" if arr.ndim else ""
        print(f"{name}: shape {list(arr.shape)} {arr.dtype}  [{head}{', …' * (flat.size > 5)}]"
              f"{extra}")
    if args.output:
        print(f"wrote {args.output}")
    return 0


def cmd_targets(args: argparse.Namespace) -> int:
    from edgec import targets

    rows = targets.describe_all()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    cols = ("name", "triple", "cpu", "features", "threads", "description")
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    print("  ".join(c.upper().ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(r[c].ljust(widths[c]) for c in cols))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from edgec import models

    if args.action == "list":
        for name, doc in models.describe().items():
            print(f"{name:<22} {doc}")
        return 0
    if not args.name or not args.output:
        raise EdgecError("usage: edgec models export NAME -o FILE.onnx")
    path = models.export(args.name, args.output, seed=args.seed)
    print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgec", description="ONNX-to-edge compiler for CNNs")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("compile", help="compile an ONNX model into an artifact folder")
    c.add_argument("model")
    c.add_argument("-o", "--output", required=True, help="artifact folder (replaced atomically)")
    c.add_argument("--target", default="host", help="target name or TOML file (see edgec targets)")
    c.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,...",
                   help="pin an input's shape (repeatable)")
    c.add_argument("--cc", help="C++ compiler that links the artifact (overrides the target's)")
    c.add_argument("--no-validate", action="store_true", help="skip the onnxruntime check")
    c.add_argument("--seed", type=int, default=0, help="seed of the validation inputs")
    c.add_argument("--json", action="store_true", help="print the manifest as JSON")
    c.set_defaults(fn=cmd_compile)

    r = sub.add_parser("run", help="run an artifact on this machine")
    r.add_argument("artifact")
    r.add_argument("--input", action="append", metavar="NAME=FILE.npy")
    r.add_argument("-o", "--output", help="write the outputs to this .npz")
    r.add_argument("--seed", type=int, default=0, help="seed of random inputs (when no --input)")
    r.add_argument("--threads", type=int)
    r.set_defaults(fn=cmd_run)

    t = sub.add_parser("targets", help="list the targets")
    t.add_argument("--json", action="store_true")
    t.set_defaults(fn=cmd_targets)

    m = sub.add_parser("models", help="reference models: list, export")
    m.add_argument("action", choices=["list", "export"])
    m.add_argument("name", nargs="?")
    m.add_argument("-o", "--output")
    m.add_argument("--seed", type=int, default=0)
    m.set_defaults(fn=cmd_models)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except EdgecError as err:
        print(f"edgec: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgec: interrupted", file=sys.stderr)
        return 130
