"""OpenCL on PoCL: every zoo model (and, with --realworld, the torch exports of
models/realworld.py) compiled for `opencl`, run by edgec's OpenCL runtime, checked.

    .venv/bin/python benchmarks/opencl.py [--models a,b] [--realworld] [--fuzz N]
                                          [--out BENCHMARKS.md]

For each model: `edgec compile --target opencl` (its check against onnxruntime runs: the
artifact is loaded and called on seeded inputs), then the artifact called three more times on
fresh inputs, each held to the same tolerance, and its kernels' rules. The latency column is
OpenCL on the CPU (PoCL), not GPU speed: it shows the kernels run, nothing about a phone. A
model that fails is a row saying why. --fuzz N also runs tests/fuzz.py's first N random graphs
for `opencl` (each compiled, called three times against onnxruntime) and adds their tally.
Writes section `opencl` of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _export(name: str, tmp: Path) -> Path:
    from edgec import models
    from edgec.models import realworld

    if name in realworld.REALWORLD:
        return realworld.export(name, tmp / f"{name}.onnx")
    return models.export(name, tmp / f"{name}.onnx")


def _repeat_check(path: Path, folder: Path) -> str:
    """Three more calls of one loaded artifact on fresh seeded inputs against onnxruntime."""
    from edgec import runtime
    from edgec.compiler.validate import agreement

    model = runtime.load(folder)
    feeds = [runtime.random_inputs(model.inputs, seed) for seed in (11, 12, 13)]
    result = agreement(lambda f: model(**f), path, feeds, model.threads)
    worst = max(r["max_abs_diff"] for r in result["outputs"])
    return f"{'ok' if result['ok'] else 'FAILED'} ({worst:.1e})"


def one_model(name: str, tmp: Path) -> list[str]:
    import edgec

    path = _export(name, tmp)
    t0 = time.perf_counter()
    result = edgec.compile(path, output=tmp / f"{name}-opencl", target="opencl", latency=False)
    seconds = time.perf_counter() - t0
    check = result.manifest["validation"]
    worst = max(check["outputs"], key=lambda r: r["rel"])
    rules = Counter((result.manifest.get("codegen") or {}).get("kernels", {}).values())
    return [name, f"{'ok' if check['ok'] else 'FAILED'} ({worst['max_abs_diff']:.1e} vs "
            f"{worst['tol']:.1e})", _repeat_check(path, result.artifact),
            str(sum(rules.values())), ", ".join(f"{n} {r}" for r, n in rules.most_common()),
            f"{seconds:.0f}"]


def main() -> int:
    from edgec import models, targets
    from edgec.models import realworld

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", help="comma-separated model names (default: the whole zoo)")
    ap.add_argument("--realworld", action="store_true", help="the realworld exports as well")
    ap.add_argument("--fuzz", type=int, default=0, metavar="N", help="random graphs to run")
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    args = ap.parse_args()
    names = args.models.split(",") if args.models else list(models.MODELS)
    if args.realworld:
        names += [n for n, s in realworld.REALWORLD.items() if not s.large]
    if not targets.device_present("opencl"):
        print("opencl.py: no OpenCL platform here (install pocl-opencl-icd)", file=sys.stderr)
        return 2
    from edgec.runtime import opencl

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            try:
                rows.append(one_model(name, Path(tmp)))
            except Exception as err:  # a row per failure, the rest still run
                rows.append([name, f"FAILED: {str(err).splitlines()[0][:160]}", "-", "-", "-",
                             "-"])
            print(" | ".join(rows[-1]), flush=True)
    tally = fuzz_tally(args.fuzz)
    write(rows, opencl.describe(), tally, args)
    fine = all(r[1].startswith("ok") and r[2].startswith("ok") for r in rows)
    return 0 if fine and not (tally.get("wrong") or tally.get("crash")) else 1


def fuzz_tally(count: int) -> dict[str, int]:
    """Verdicts of tests/fuzz.py's graphs 0..count-1 built for opencl, each failure printed."""
    sys.path.insert(0, str(ROOT / "tests"))
    import fuzz

    tally: dict[str, int] = {}
    for seed in range(count):
        verdict = fuzz.check(seed, target="opencl")
        tally[verdict.kind] = tally.get(verdict.kind, 0) + 1
        if verdict.kind != "ok":
            print(f"fuzz seed {seed}: {verdict.kind}: {verdict.detail}", flush=True)
    return tally


def write(rows: list[list[str]], platform: str, tally: dict[str, int],
          args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from sections import write_section

    command = "benchmarks/opencl.py" + (" --realworld" if args.realworld else "") + (
        f" --fuzz {args.fuzz}" if args.fuzz else "")
    lines = ["## OpenCL: the zoo on PoCL (OpenCL on the CPU, not GPU speed)", "",
             f"`{command}`, {time.strftime('%Y-%m-%d')}, platform: {platform}. check: "
             "compile's own check against onnxruntime (worst output: max|diff| vs its "
             "tolerance); 3 more calls: the loaded artifact on 3 fresh inputs, worst max|diff|. "
             "No latency: PoCL runs the kernels on this CPU, which says nothing of a GPU's "
             "speed.", "",
             "| model | check | 3 more calls | kernels | rules | compile s |",
             "|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    if args.fuzz:
        lines += ["", f"Fuzz: tests/fuzz.py's graphs 0..{args.fuzz - 1} for opencl (conv "
                  "1D/2D/3D, groups, padding of every kind, pooling, SE, Resize, heads; each "
                  "called 3 times): " + ", ".join(f"{tally.get(k, 0)} {k}" for k in
                                                  ("ok", "refused", "wrong", "crash")) + "."]
    write_section(args.out, "opencl", lines)


if __name__ == "__main__":
    sys.exit(main())
