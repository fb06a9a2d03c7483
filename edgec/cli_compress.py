"""`edgec compress` and `edgec compile --compress`: the command line of compiler/compress.
Exit status: 0 written (a budget no plan meets leaves the model dense, with a warning), 2 bad
input."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def compress_flags(p: argparse.ArgumentParser, alone: bool) -> None:
    """The flags of compress; compile takes them after --compress (its --data and --target
    are its own)."""
    p.add_argument("--max-accuracy-drop", type=float, metavar="P",
                   help="top-1 points the compressed (or int8) model may lose on held-out "
                        "samples of --data (without labels: %% of samples whose top-1 "
                        "changes; default 1 for compress, 0.5 for --int8)")
    p.add_argument("--form", default="auto", choices=["auto", "separable", "grouped"],
                   help="separable (depthwise + 1x1), grouped (grouped or channel low rank + "
                        "1x1), or auto: per layer, either (default)")
    p.add_argument("--flops", type=float, metavar="F",
                   help="aim at this share of the convs' MACs (e.g. 0.5)")
    p.add_argument("--no-latency-check", action="store_true",
                   help="keep rewrites without checking the target runs them faster")
    if alone:
        p.add_argument("--target", default="host",
                       help="target whose vector width rounds the ranks and whose speed "
                            "decides (default host)")
        p.add_argument("--report", metavar="DIR", help="write report.md, report.html, "
                                                       "report.json")
        p.add_argument("--json", action="store_true")


def options(args: argparse.Namespace) -> Any:
    from edgec.cli import input_shapes_arg
    from edgec.cli_validate import preprocess_overrides
    from edgec.compiler.compress import CompressOptions
    from edgec.errors import EdgecError

    if not args.data:
        raise EdgecError("compress fits and judges the model on your data: give --data PATH "
                         "(an image folder, .npz or .npy folder; a few hundred samples)")
    drop = {} if args.max_accuracy_drop is None else {"max_accuracy_drop": args.max_accuracy_drop}
    return CompressOptions(data=args.data, **drop,
                           form=args.form, flops=args.flops, target=args.target,
                           latency=not args.no_latency_check,
                           preprocess=preprocess_overrides(args),
                           input_shapes=input_shapes_arg(args.input_shape))


def summary(result: Any) -> list[str]:
    """Per layer what was done, then the totals and the accuracy on held-out samples."""
    from edgec.compiler.compress.score import sqnr_db

    lines = [f"{'layer':<28} {'form':<10} {'rank':>5} {'MMACs':>14} {'SQNR alone':>10} "
             f"{'speedup':>8}"]
    for row in result.layers:
        rank = "" if row["rank"] is None else f"{row['groups']}x{row['rank']}"
        db = sqnr_db(row["noise_alone"] or 0.0)
        sqnr = "" if db is None else f"{db:.1f} dB"
        speed = f"{row['speedup']:.2f}x" if row.get("speedup") else ""
        lines.append(f"{row['name'][-28:]:<28} {row['form']:<10} {rank:>5} "
                     f"{row['macs_before'] / 1e6:6.2f} -> {row['macs_after'] / 1e6:5.2f} "
                     f"{sqnr:>10} {speed:>8}  {row.get('why_dense', '')}".rstrip())
    o, c = result.original, result.compressed
    acc = (f"top-1 {o.top1:.2%} -> {c.top1:.2%}" if o.top1 is not None else
           f"top-1 agreement {c.agreement:.2%}" if c.agreement is not None else
           f"noise {c.noise:.3g}")
    lines.append(f"conv MACs {result.macs_before / 1e6:.2f}M -> {result.macs_after / 1e6:.2f}M "
                 f"({result.macs_before / max(result.macs_after, 1):.2f}x fewer); {acc} on "
                 f"{result.samples['held_out']} held-out samples (drop {c.drop:.2f} points)")
    if result.decided_by:
        lines.append(f"latency: {result.decided_by}")
    return lines


def validation(args: argparse.Namespace, drop: float) -> dict[str, Any] | None:
    """harness validate of the original and the written model (-o) compiled for --target,
    where it runs here, into REPORT/validation/ (None elsewhere); `drop`: the budget."""
    from edgec import targets
    from edgec.cli import input_shapes_arg
    from edgec.cli_validate import preprocess_overrides
    from edgec.harness import report
    from edgec.harness.validate import Budget, Options, validate

    if not targets.get(args.target).runs_here():
        return None
    opts = Options(data=args.data, budget=Budget(drop), target=args.target,
                   preprocess=preprocess_overrides(args),
                   input_shapes=input_shapes_arg(args.input_shape))
    result = validate(args.model, [args.model, args.output], opts)
    report.write(result, Path(args.report) / "validation")
    return result


def cmd_compress(args: argparse.Namespace) -> int:
    from edgec.compiler.compress import compress

    if not args.model or not args.output:
        from edgec.errors import EdgecError

        raise EdgecError("compress needs a model and -o OUTPUT.onnx")
    opts = options(args)
    result = compress(args.model, output=args.output, options=opts)
    for w in result.warnings:
        print(f"edgec: warning: {w}", file=sys.stderr)
    if args.report:
        from edgec.compiler.compress.report import write_report

        checked = validation(args, opts.max_accuracy_drop) if result.output else None
        write_report(result, Path(args.report), Path(args.model).stem, checked)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print("\n".join(summary(result)))
        print(f"wrote {result.output}")
    return 0


def compile_compressed(args: argparse.Namespace, compile_cmd: Any) -> int:
    """compile --compress: compress into a temporary .onnx, then `compile_cmd` (cmd_compile)
    compiles that, the compression recorded in the manifest."""
    import tempfile

    from edgec.compiler.compress import compress

    opts = options(args)
    with tempfile.TemporaryDirectory(prefix="edgec-compress-") as tmp:
        small = Path(tmp) / f"{Path(args.model).stem}.compressed.onnx"
        result = compress(args.model, output=small, options=opts)
        for w in result.warnings:
            print(f"edgec: warning: {w}", file=sys.stderr)
        print("\n".join(summary(result)))
        record = {**result.to_json(), "source": args.model, "output": None}
        args.compress, args.model = False, str(small)
        return compile_cmd(args, lossy={"compress": record})


def add_compress(sub: Any) -> None:
    from edgec.cli_validate import data_flags

    c = sub.add_parser("compress", help="convs as low-rank separable/grouped pairs, under an "
                                        "accuracy budget on your data")
    c.add_argument("model", nargs="?")
    c.add_argument("-o", "--output", help="compressed .onnx (written atomically)")
    c.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,...")
    data_flags(c)
    compress_flags(c, alone=True)
    c.set_defaults(fn=cmd_compress)
