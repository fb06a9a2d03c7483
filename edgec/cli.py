"""`edgec` command line: a thin shell over the Python API.

Each command parses its arguments, makes one API call with keyword arguments and prints the
result. A user error (EdgecError) prints `edgec: error: <one line>` and exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from edgec.cli_compress import add_compress, compress_flags
from edgec.cli_quantize import add_quantize, quantize_flags
from edgec.cli_validate import add_validate, data_flags
from edgec.errors import EdgecError


def input_shapes_arg(specs: list[str] | None) -> dict[str, list[int]]:
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


def _list_passes() -> int:
    from edgec.compiler import passes

    for name, doc in passes.describe().items():
        print(f"{name:<16} {doc}")
    return 0


def _need(args: argparse.Namespace, *names: str) -> None:
    missing = [n for n in names if not getattr(args, n)]
    if missing:
        flags = {"model": "MODEL", "output": "-o OUTPUT"}
        raise EdgecError(f"edgec {args.command} needs {' and '.join(flags[m] for m in missing)}")


def cmd_compile(args: argparse.Namespace, lossy: dict | None = None) -> int:
    import edgec
    from edgec.cli_validate import preprocess_overrides
    from edgec.compiler.report import compile_summary

    if args.list_passes:
        return _list_passes()
    _need(args, "model", "output")
    if args.compress and args.int8:
        raise EdgecError("--compress and --int8 together: compress first (edgec compress), "
                         "then compile the compressed model with --int8")
    if args.compress:
        from edgec.cli_compress import compile_compressed

        return compile_compressed(args, cmd_compile)
    if args.int8:
        from edgec.cli_quantize import compile_quantized

        return compile_quantized(args, cmd_compile)
    result = edgec.compile(args.model, output=args.output, target=args.target,
                           input_shapes=input_shapes_arg(args.input_shape), cc=args.cc,
                           validate=not args.no_validate, seed=args.seed,
                           skip_passes=args.skip_pass, bundle=args.bundle,
                           tuning_db=args.db, use_tuned=not args.no_tuned, data=args.data,
                           preprocess=preprocess_overrides(args),
                           latency=not args.no_latency, lossy=lossy,
                           precision=args.precision)
    for w in result.warnings:
        print(f"edgec: warning: {w}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.manifest, indent=2))
    else:
        print("\n".join(compile_summary(result.manifest, str(result.artifact))))
    return 0


def parse_duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        if text and text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        raise EdgecError(f"bad --time '{text}'; expected seconds or e.g. 90s, 20m, 1h") from None


def cmd_tune(args: argparse.Namespace) -> int:
    from edgec.compiler.tuning import tune

    report = tune(args.model, target=args.target, trials=args.trials,
                  seconds=parse_duration(args.time) if args.time else None, db_root=args.db,
                  input_shapes=input_shapes_arg(args.input_shape), cc=args.cc,
                  tracker=args.tracker, key=args.key,
                  progress=lambda line: print(line, flush=True))
    print(f"{'kernel':<44} {'calls':>5} {'edgec us':>9} {'tuned us':>9} {'trials':>6}  note")
    for t in sorted(report.tasks, key=lambda t: -t.share):
        v = t.in_model
        note = "; ".join(filter(None, [t.skipped, v and (
            f"in the model {v.tuned_us:.1f} vs rule {v.rule_us:.1f} us: {v.keep} kept")]))
        print(f"{t.name[:44]:<44} {t.calls:>5} {t.baseline_us:>9.1f} {t.best_us:>9.1f} "
              f"{t.trials:>6}  {note}")
    print(f"estimate {report.estimate_ms(best=False):.2f} ms -> {report.estimate_ms():.2f} ms "
          f"(sum of kernel times x calls) in {report.seconds:.0f} s; database {report.database}")
    print("edgec compile uses these records for this target from now on")
    return 0


def cmd_optimize(args: argparse.Namespace) -> int:
    from edgec.compiler.optimize import optimize
    from edgec.compiler.report import cost_line

    if args.list_passes:
        return _list_passes()
    _need(args, "model", "output")
    only = [p for p in args.passes.split(",") if p] if args.passes else None
    result = optimize(args.model, output=args.output,
                      input_shapes=input_shapes_arg(args.input_shape), only=only,
                      skip=args.skip_pass, checks=args.check, seed=args.seed)
    for w in result.warnings:
        print(f"edgec: warning: {w}", file=sys.stderr)
    for report in result.reports:
        print(report.summary())
    print(cost_line("before", result.before.totals()))
    print(cost_line("after", result.after.totals()))
    if result.check:
        from edgec.compiler.tolerance import describe, worst

        row = worst(result.check["outputs"])
        print(f"check    {result.check['checks']} seeded inputs in onnxruntime, output "
              f"'{row['name']}': {describe(row)}: OK")
    print(f"wrote {result.output}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    import edgec.compiler as api
    from edgec.compiler.report import compare_table, inspect_table

    shapes = input_shapes_arg(args.input_shape)
    cost = api.inspect(args.model, input_shapes=shapes)
    other = api.inspect(args.compare, input_shapes=shapes) if args.compare else None
    if args.json:
        doc = cost.to_json()
        if other is not None:
            doc = {"a": doc, "b": other.to_json()}
        print(json.dumps(doc, indent=2))
    elif other is not None:
        print("\n".join(compare_table(cost, other, args.model, args.compare)))
    else:
        print("\n".join(inspect_table(cost)))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from edgec.compiler.bench import bench
    from edgec.compiler.report import bench_lines

    if args.count_instructions:
        return _count_instructions(args)

    result = bench(args.model, target=args.target, threads=args.threads,
                   input_shapes=input_shapes_arg(args.input_shape), per_layer=args.per_layer,
                   budget_s=args.seconds, interleaved=args.interleaved,
                   processes=args.processes)
    print(json.dumps(result, indent=2) if args.json else "\n".join(bench_lines(result)))
    return 0 if result["agreement"]["ok"] else 1


def _count_instructions(args: argparse.Namespace) -> int:
    from edgec.compiler.report import mca_lines
    from edgec.runtime.icount import count_instructions

    if args.device != "qemu":
        raise EdgecError("--count-instructions counts under qemu: give --device qemu")
    result = count_instructions(args.model, calls=args.calls, onnxruntime=not args.no_ort,
                                mca=args.mca)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for name in ("edgec", "onnxruntime"):
        if name in result:
            r = result[name]
            print(f"{name:<12} {r['instructions_per_inference'] / 1e6:9.3f} M instructions per "
                  f"inference (start-up {r['startup_instructions'] / 1e6:.1f} M apart)")
    if "ratio" in result:
        print(f"ratio        {result['ratio']:.2f}x onnxruntime's instructions")
    print(f"{result['label']}; {result['calls']} calls counted")
    if "mca" in result:
        print("\n".join(mca_lines(result["mca"])))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from edgec import runtime

    outputs, latency = runtime.run_files(
        args.artifact, input_files=_input_files(args.input), output=args.output, seed=args.seed,
        threads=args.threads, device=args.device, repeat=args.repeat, warmup=args.warmup)
    for name, arr in outputs.items():
        flat = arr.reshape(-1)
        head = ", ".join(f"{v:.5g}" for v in flat[:5])
        extra = f"  argmax {int(arr.reshape(arr.shape[0], -1)[0].argmax())}" if arr.ndim else ""
        print(f"{name}: shape {list(arr.shape)} {arr.dtype}  [{head}{', …' * (flat.size > 5)}]"
              f"{extra}")
    if latency:
        label = ("EMULATED under qemu, not device speed" if latency["emulated"]
                 else latency["device"])
        print(f"latency  median {latency['median_ms']:.3f} ms over {latency['runs']} runs "
              f"({latency['threads'] or 'default'} threads; {label})")
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
    if not args.name or not (args.output or args.data):
        raise EdgecError("usage: edgec models export NAME -o FILE.onnx [--data DIR]")
    if args.output:
        print(f"wrote {models.export(args.name, args.output, seed=args.seed)}")
    if args.data:
        print(f"wrote {models.export_data(args.name, args.data)} (its test split)")
    return 0


def _pass_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--skip-pass", action="append", default=[], metavar="NAME",
                   help="leave out a pass (repeatable; see --list-passes)")
    p.add_argument("--list-passes", action="store_true", help="list the passes and exit")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgec", description="ONNX-to-edge compiler for CNNs")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("compile", help="compile an ONNX model into an artifact folder")
    c.add_argument("model", nargs="?")
    c.add_argument("-o", "--output", help="artifact folder (replaced atomically)")
    c.add_argument("--target", default="host", help="target name or TOML file (see edgec targets)")
    c.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,...",
                   help="pin an input's shape (repeatable)")
    c.add_argument("--cc", help="C++ compiler that links the artifact (overrides the target's)")
    c.add_argument("--no-validate", action="store_true", help="skip the onnxruntime check")
    c.add_argument("--seed", type=int, default=0, help="seed of the validation inputs")
    c.add_argument("--no-latency", action="store_true",
                   help="check the outputs but do not time the runtimes")
    c.add_argument("--json", action="store_true", help="print the manifest as JSON")
    c.add_argument("--precision", choices=["fp32", "fp16"], default="fp32",
                   help="kernel arithmetic: fp16 on GPU targets (sums stay fp32)")
    c.add_argument("--bundle", action="store_true",
                   help="add the device runner, TVM runtime and run.sh: a folder the board runs "
                        "without Python (checked under the target's emulator)")
    c.add_argument("--db", metavar="DIR", help="tuning database root (default: edgec's cache)")
    c.add_argument("--no-tuned", action="store_true", help="ignore the tuning database")
    data_flags(c)
    _pass_flags(c)
    c.add_argument("--compress", action="store_true",
                   help="first compress the convs on --data (see edgec compress; its flags "
                        "below apply)")
    compress_flags(c, alone=False)
    c.add_argument("--int8", action="store_true",
                   help="first quantize to int8 on --data (see edgec quantize; its flags below "
                        "apply)")
    quantize_flags(c, alone=False)
    c.set_defaults(fn=cmd_compile)

    u = sub.add_parser("tune", help="search schedules for a model's kernels (MetaSchedule)")
    u.add_argument("model")
    u.add_argument("--target", default="host")
    budget = u.add_mutually_exclusive_group()
    budget.add_argument("--trials", type=int, help="measured trials in all, the database's "
                        "earlier trials of these kernels included (default 1280)")
    budget.add_argument("--time", help="wall-clock budget: seconds or 90s, 20m, 1h")
    u.add_argument("--db", metavar="DIR", help="tuning database root (default: edgec's cache)")
    u.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,...")
    u.add_argument("--cc", help="C++ compiler that links the measured kernels")
    u.add_argument("--tracker", metavar="HOST:PORT", help="measure on boards behind this RPC "
                                                           "tracker (remote targets)")
    u.add_argument("--key", help="the boards' tracker key (default: the target's name)")
    u.set_defaults(fn=cmd_tune)

    o = sub.add_parser("optimize", help="run the ONNX passes; write a checked optimized ONNX")
    o.add_argument("model", nargs="?")
    o.add_argument("-o", "--output", help="optimized .onnx (written atomically)")
    o.add_argument("--passes", help="comma-separated passes to run (default: all)")
    o.add_argument("--check", type=int, default=3, metavar="N",
                   help="seeded inputs to compare against the input model (0: none)")
    o.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,...")
    o.add_argument("--seed", type=int, default=0)
    _pass_flags(o)
    o.set_defaults(fn=cmd_optimize)

    i = sub.add_parser("inspect", help="per-layer shapes, params, MACs and FLOPs")
    i.add_argument("model")
    i.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,...")
    i.add_argument("--compare", metavar="OTHER.onnx", help="second model, side by side")
    i.add_argument("--json", action="store_true")
    i.set_defaults(fn=cmd_inspect)

    r = sub.add_parser("run", help="run an artifact on this machine")
    r.add_argument("artifact")
    r.add_argument("--input", action="append", metavar="NAME=FILE.npy",
                   help="an input by name, or by its file stem (odd characters %%XX, as a "
                        "bundle names its files; needed for a name holding '=')")
    r.add_argument("-o", "--output", help="write the outputs to this .npz (keyed by output "
                                          "name)")
    r.add_argument("--seed", type=int, default=0, help="seed of random inputs (when no --input)")
    r.add_argument("--threads", type=int)
    r.add_argument("--device", help="run the bundle on: qemu (emulated here), local, "
                                    "ssh://[user@]host[:port], or adb[://SERIAL] (an Android "
                                    "phone; an android-arm64 bundle)")
    r.add_argument("--repeat", type=int, default=0, metavar="N", help="time N runs")
    r.add_argument("--warmup", type=int, default=1, metavar="M")
    r.set_defaults(fn=cmd_run)

    b = sub.add_parser("bench", help="latency against onnxruntime, each alone, same threads")
    b.add_argument("model", help="an .onnx file (compiled first) or an artifact folder")
    b.add_argument("--target", default="host")
    b.add_argument("--threads", type=int)
    b.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,...")
    b.add_argument("--per-layer", action="store_true", help="time each fused kernel")
    b.add_argument("--seconds", type=float, default=10.0, help="timing budget (default 10)")
    b.add_argument("--processes", type=int, default=5, metavar="N",
                   help="fresh processes each runtime is timed in, the best one counting "
                        "(default 5)")
    b.add_argument("--interleaved", action="store_true",
                   help="also time both alternately in one process (a diagnostic)")
    b.add_argument("--device", choices=["qemu"],
                   help="with --count-instructions: the emulator the bundle runs under")
    b.add_argument("--count-instructions", action="store_true",
                   help="count the guest instructions per inference of an aarch64 bundle under "
                        "qemu on the target's proxy CPU (an ARM speed proxy, not time)")
    b.add_argument("--calls", type=int, default=3,
                   help="with --count-instructions: inferences counted (default 3)")
    b.add_argument("--mca", action="store_true",
                   help="with --count-instructions: llvm-mca cycle estimates (Cortex-A72, and "
                        "Neoverse N1 for the A76 class) of the bundle's hottest blocks")
    b.add_argument("--no-ort", action="store_true",
                   help="with --count-instructions: count the bundle only, not onnxruntime")
    b.add_argument("--json", action="store_true")
    b.set_defaults(fn=cmd_bench)

    add_validate(sub)
    add_compress(sub)
    add_quantize(sub)

    t = sub.add_parser("targets", help="list the targets")
    t.add_argument("--json", action="store_true")
    t.set_defaults(fn=cmd_targets)

    m = sub.add_parser("models", help="reference models: list, export")
    m.add_argument("action", choices=["list", "export"])
    m.add_argument("name", nargs="?")
    m.add_argument("-o", "--output")
    m.add_argument("--data", metavar="DIR", help="also write the model's test split as an "
                                                  "image folder (trained models)")
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
