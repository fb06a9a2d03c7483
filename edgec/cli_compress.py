"""`edgec compress` and `edgec compile --compress`: the command line of compiler/compress.
Exit status: 0 written (a budget no plan meets leaves the model dense, with a warning), 2 bad
input."""

from __future__ import annotations

import argparse
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


def _step() -> Any:
    from edgec.cli_lossy import Step
    from edgec.compiler.compress import compress
    from edgec.compiler.compress.report import write_report

    return Step("compress", "compress", "compressed", compress, options, summary, write_report)


def cmd_compress(args: argparse.Namespace) -> int:
    from edgec.cli_lossy import run_command

    return run_command(args, _step())


def compile_compressed(args: argparse.Namespace, compile_cmd: Any) -> int:
    """compile --compress: compress, then compile the compressed model (cli_lossy)."""
    from edgec.cli_lossy import compile_after

    return compile_after(args, compile_cmd, _step())


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
