"""A seeded fuzzer: random valid CNN graphs, each compiled by edgec and checked against
onnxruntime, every artifact called several times with different inputs.

    python tests/fuzz.py --count 500            # seeds 0..499
    python tests/fuzz.py --seed 137 --save out/ # one graph, its model kept for a regression test
    python tests/fuzz.py --target opencl        # the same graphs on OpenCL (PoCL here)

A graph is a chain of random layers on one feature map (rank 3, 4 or 5: conv 1D/2D/3D, batch 1-2,
odd channel counts and sizes): conv with random stride, padding (explicit, asymmetric or auto_pad),
dilation and groups (depthwise, channel multipliers), ConvTranspose, max / average / global / L2
(LpPool p=2) / GeM pooling, BatchNorm, activations, SE blocks, Add/Mul residuals, Concat branches,
Pad (constant, reflect, edge), Resize, and a Flatten/Reshape + Gemm head. Each graph ends in one of
four verdicts: "ok" (compiled, outputs within RTOL x max|ref| of onnxruntime on every call, no
earlier output changed by a later call), "refused" (an EdgecError of one line naming the node and
attribute), "wrong" or "crash" (anything else). The last two are defects.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from fuzz_graphs import generate

RTOL = 1e-4  # max |edgec - ort| <= RTOL * max |ort|, per output and call (fp32 reductions)
CALLS = 3  # calls per artifact, each with different inputs


@dataclass
class Verdict:
    seed: int
    kind: str  # ok, refused, wrong, crash
    detail: str = ""


def _call_checks(folder: Path, model: onnx.ModelProto, seed: int) -> str:
    """'' if every call matches onnxruntime and leaves earlier outputs alone, else what broke."""
    import onnxruntime as ort

    from edgec import runtime

    compiled = runtime.load(folder)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    kept = []
    for call in range(CALLS):
        x = np.random.default_rng([seed, call]).standard_normal(shape).astype(np.float32)
        want = sess.run(None, {"x": x})
        got = compiled(x=x)
        for (name, out), ref in zip(got.items(), want):
            scale = float(np.abs(ref).max()) if ref.size else 0.0
            diff = float(np.abs(out.astype(np.float64) - ref).max()) if ref.size else 0.0
            if out.shape != ref.shape or not np.isfinite(out).all() or diff > RTOL * scale:
                return (f"call {call + 1}: output '{name}' {out.shape} max |diff| {diff:.3g} "
                        f"vs max |ref| {scale:.3g}")
            kept.append((name, call, out, out.copy()))
    for name, call, out, copy in kept:
        if not np.array_equal(out, copy, equal_nan=True):
            return f"output '{name}' of call {call + 1} changed by a later call"
    return ""


def check(seed: int, save: Path | None = None, target: str = "host") -> Verdict:
    """Generate graph `seed`, compile it for `target` (one that runs here) and judge it
    (module docstring)."""
    import edgec
    from edgec import EdgecError

    model = generate(seed)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "model.onnx"
        onnx.save_model(model, str(src))
        if save is not None:
            save.mkdir(parents=True, exist_ok=True)
            onnx.save_model(model, str(save / f"fuzz-{seed}.onnx"))
        try:
            edgec.compile(src, output=Path(tmp) / "out", target=target, validate=False)
        except EdgecError as err:
            line = str(err)
            named = "\n" not in line and any(re.search(rf"\b{re.escape(n.name)}\b", line)
                                              for n in model.graph.node)
            return Verdict(seed, "refused" if named else "crash", line)
        except Exception as err:  # noqa: BLE001 - the fuzzer's job is to report these
            return Verdict(seed, "crash", f"{type(err).__name__}: {str(err)[:300]}")
        try:
            wrong = _call_checks(Path(tmp) / "out", model, seed)
        except Exception as err:  # noqa: BLE001
            return Verdict(seed, "crash", f"running: {type(err).__name__}: {str(err)[:300]}")
    return Verdict(seed, "wrong", wrong) if wrong else Verdict(seed, "ok")


def _ops(model: onnx.ModelProto) -> str:
    return " ".join(n.op_type for n in model.graph.node)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=50, help="graphs to try (seeds start..)")
    ap.add_argument("--start", type=int, default=0, help="first seed")
    ap.add_argument("--seed", type=int, help="try only this seed")
    ap.add_argument("--save", type=Path, help="keep each model as fuzz-SEED.onnx here")
    ap.add_argument("--target", default="host", help="a target that runs here (default host)")
    args = ap.parse_args(argv)
    seeds = [args.seed] if args.seed is not None else range(args.start, args.start + args.count)
    tally: dict[str, int] = {}
    for seed in seeds:
        v = check(seed, args.save, args.target)
        tally[v.kind] = tally.get(v.kind, 0) + 1
        if v.kind != "ok":
            print(f"seed {seed}: {v.kind}: {v.detail} [{_ops(generate(seed))}]", flush=True)
    print(f"{len(seeds)} graphs: " + ", ".join(
        f"{tally.get(k, 0)} {k}" for k in ("ok", "refused", "wrong", "crash")))
    return 1 if tally.get("wrong") or tally.get("crash") else 0


if __name__ == "__main__":
    sys.exit(main())
