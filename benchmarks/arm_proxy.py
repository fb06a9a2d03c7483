"""The ARM proxy: guest instructions per inference, edgec against onnxruntime, under qemu.

    .venv/bin/python benchmarks/arm_proxy.py [--models mobilenet_v2,resnet18,...]
        [--targets rpi4,rpi5] [--calls 2] [--out BENCHMARKS.md]

For each model and target: edgec compiles an fp32 bundle (untuned, as a user gets it), and
`edgec bench BUNDLE --device qemu --count-instructions` counts the guest instructions of one
inference of the bundle's runner and of onnxruntime's aarch64 C library (PyPI's wheel, all graph
optimizations) on the same model, under qemu's model of the board's core (rpi4: cortex-a72,
rpi5: cortex-a76), one thread, start-up cancelled (runtime/icount.py). No ARM CPU is timed:
this is a proxy. Instructions are not cycles (a load that misses counts as one; a 128-bit NEON
FMA as one, as a scalar add), so read the ratio as "work issued", and compare within a row.
Targets of issue 32 (cortex-a72): <= 0.8x onnxruntime on MobileNetV2 and ResNet-18, <= 1.0x on
every zoo model.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_MODELS = ["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "resnet18",
                  "squeezenet1_1", "shufflenet_v2"]
GOALS = {"mobilenet_v2": 0.8, "resnet18": 0.8}  # cortex-a72; every other zoo model 1.0


def count(name: str, target: str, calls: int, folder: Path) -> dict:
    from run import export_model

    import edgec
    from edgec.runtime.icount import count_instructions

    src = export_model(name, folder / f"{name}.onnx")
    art = edgec.compile(src, output=folder / f"{name}-{target}", target=target, bundle=True,
                        validate=False).artifact
    t0 = time.perf_counter()
    result = count_instructions(art, calls=calls)
    result["seconds"] = time.perf_counter() - t0
    return result


def table(models: list[str], targets: list[str], calls: int) -> list[str]:
    lines = ["| model | target (qemu cpu) | edgec M instr. | onnxruntime M instr. | edgec / ORT |"
             " goal |", "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for target in targets:
            for name in models:
                r = count(name, target, calls, Path(tmp))
                goal = GOALS.get(name, 1.0) if r["cpu"] == "cortex-a72" else None
                verdict = "" if goal is None else (
                    f"<= {goal:.1f}x {'met' if r['ratio'] <= goal else '**not met**'}")
                lines.append(f"| {name} | {target} ({r['cpu']}) | "
                             f"{r['edgec']['instructions_per_inference'] / 1e6:.1f} | "
                             f"{r['onnxruntime']['instructions_per_inference'] / 1e6:.1f} | "
                             f"{r['ratio']:.2f}x | {verdict} |")
                print(lines[-1], flush=True)
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS))
    ap.add_argument("--targets", default="rpi4,rpi5")
    ap.add_argument("--calls", type=int, default=2)
    ap.add_argument("--out", help="write the table as BENCHMARKS.md's arm-proxy section")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    lines = table([m for m in args.models.split(",") if m],
                  [t for t in args.targets.split(",") if t], args.calls)
    print("\n".join(lines))
    if args.out:
        from sections import write_section

        write_section(args.out, "arm-proxy", [
            "", "## ARM proxy: instructions per inference under qemu (no ARM CPU timed)", "",
            f"Command: `python benchmarks/arm_proxy.py {' '.join(sys.argv[1:])}`", "",
            __doc__.split("\n\n", 2)[2].strip(), "", *lines])
    return 0


if __name__ == "__main__":
    sys.exit(main())
