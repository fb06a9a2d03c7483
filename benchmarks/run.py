"""Benchmark the reference models: edgec against onnxruntime, measured in one run.

    .venv/bin/python benchmarks/run.py [--models a,b|realworld] [--seconds 10] [--out BENCHMARKS.md]
                                       [--tune mobilenet_v2,resnet18 --tune-time 30m]

For each model: compile time for the host target, edgec's and onnxruntime's latency (each
runtime alone in fresh processes of its own, `edgec bench`: the best process's median call,
same thread count, ORT with all graph optimizations), their ratio, achieved GFLOP/s and its
fraction of this machine's peak, which is measured by an FMA loop that TVM compiles for the
same target (independent accumulator chains, vectorized to the SIMD width, one chain block per
thread). Models named by --tune are then tuned (edgec tune,
fresh database, --tune-time each), recompiled with their records and timed again. Last,
benchmarks/latency_check.py checks that the latency compile, bench and validate print holds
for a small and a large model run alone as an application runs it. Writes a Markdown report
with the command used, and per-kernel profiles of the models that miss a target.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_MODELS = ["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "resnet18",
                  "squeezenet1_1", "shufflenet_v2"]


def groups() -> dict[str, list[str]]:
    """--models' group names, each for all its models: `realworld` is models/realworld.py's
    torch exports (torch needed to export them), none of them in DEFAULT_MODELS."""
    from edgec.models.realworld import REALWORLD

    return {"realworld": list(REALWORLD)}


def model_names(arg: str) -> list[str]:
    """--models as model names: each group named expanded to its models, in order."""
    named = groups()
    return [m for n in arg.split(",") if n for m in named.get(n, [n])]


def export_model(name: str, path: Path) -> Path:
    """Write model `name` (the zoo's, or models/realworld.py's by torch) to `path`."""
    from edgec import models
    from edgec.models import realworld

    if name in realworld.REALWORLD:
        return realworld.export(name, path)
    return models.export(name, path)


def fma_peak_gflops(target, threads: int, lanes: int = 16, chains: int = 12,
                    iters: int = 200_000, tries: int = 5) -> float:
    """GFLOP/s of `chains` independent FMA chains of `lanes` floats on each of `threads`.

    The best of `tries` spaced timings: on this 2-vCPU machine about one fresh process in
    seven timed the loop at half speed through all its repeats (117 against 236 GFLOP/s), and
    a peak read low makes the models' share of it read above 100%.
    """
    import tvm
    from tvm.script import tirx as T

    @T.prim_func(private=True)
    def fma(a: T.Buffer((threads, chains, lanes), "float32"),
            acc: T.Buffer((threads, chains, lanes), "float32")):
        T.func_attr({"tirx.noalias": True})
        for t in T.parallel(threads):
            local = T.alloc_buffer((chains, lanes), "float32", scope="local")
            for c, v in T.grid(chains, lanes):
                local[c, v] = acc[t, c, v]
            for _ in range(iters):
                for c in T.unroll(chains):
                    for v in T.vectorized(lanes):
                        local[c, v] = local[c, v] * a[t, c, v] + a[t, c, v]
            for c, v in T.grid(chains, lanes):
                acc[t, c, v] = local[c, v]

    lib = tvm.compile(tvm.IRModule({"main": fma.with_attr("global_symbol", "main")}),
                      target=target)
    a = tvm.runtime.tensor(np.full((threads, chains, lanes), 0.999, np.float32))
    acc = tvm.runtime.tensor(np.zeros((threads, chains, lanes), np.float32))
    timer = lib.mod.time_evaluator("main", tvm.cpu(), number=3, repeat=3)
    seconds = float("inf")
    for _ in range(tries):
        seconds = min(seconds, *timer(a, acc).results)
        time.sleep(0.2)
    return 2.0 * threads * chains * lanes * iters / seconds / 1e9


def _procs(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def _profile_table(title: str, layers: list[dict]) -> list[str]:
    lines = ["", title, "", "| kernel | calls | ms | share | MFLOPs | GFLOP/s |",
             "|---|---:|---:|---:|---:|---:|"]
    for k in layers[:12]:
        lines.append(f"| {k['kernel']} | {k['calls']} | {k['ms']:.3f} | {k['share']:.1%} | "
                     f"{k['flops'] / 1e6:.1f} | {k['gflops']:.1f} |")
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(DEFAULT_MODELS),
                   help="comma-separated models or groups (realworld: "
                   "models/realworld.py's torch exports)")
    p.add_argument("--seconds", type=float, default=10.0, help="timing budget per model")
    p.add_argument("--out", default="BENCHMARKS.md")
    p.add_argument("--profile", default="mobilenet_v2",
                   help="model whose per-kernel profile goes into the report")
    p.add_argument("--tune", default="", metavar="MODELS",
                   help="comma-separated models to tune (edgec tune) and time again")
    p.add_argument("--tune-time", default="30m", help="tuning budget per model (default 30m)")
    p.add_argument("--latency-check", default="mobilenet_v3_small,resnet18", metavar="MODELS",
                   help="models for benchmarks/latency_check.py ('' to skip)")
    args = p.parse_args()

    import edgec
    from edgec import targets
    from edgec.cli import parse_duration
    from edgec.compiler.bench import ROUNDS, bench
    from edgec.compiler.tuning import tune

    host = targets.get("host")
    threads = host.effective_threads()
    # chains x lanes sized to the target's registers: 16-lane chains spill on AVX2 (88 GFLOP/s
    # read for a 158 GFLOP/s Zen 3)
    from edgec.compiler.codegen.cpu.schedules import cpu_shape

    lanes = cpu_shape(host.tvm_target()).lanes
    peak = fma_peak_gflops(host.tvm_target(), threads, lanes=lanes)
    rows, tuned = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in model_names(args.models):
            src = export_model(name, Path(tmp) / f"{name}.onnx")
            t0 = time.perf_counter()
            edgec.compile(src, output=Path(tmp) / name, target="host", validate=False,
                          use_tuned=False)
            compile_s = time.perf_counter() - t0
            r = bench(Path(tmp) / name, budget_s=args.seconds, per_layer=True)
            rows.append((name, compile_s, r))
            print(f"{name:<20} edgec {r['edgec_ms']:8.2f} ms  ORT {r['onnxruntime_ms']:7.2f} ms"
                  f"  ratio {r['ratio']:6.2f}x  compile {compile_s:5.1f} s", flush=True)
        for name in [m for m in args.tune.split(",") if m]:
            src, db = Path(tmp) / f"{name}.onnx", Path(tmp) / "tuning-db"  # fresh per run
            report = tune(src, seconds=parse_duration(args.tune_time), db_root=db,
                          progress=lambda line: print(f"  {line}", flush=True))
            edgec.compile(src, output=Path(tmp) / f"{name}-tuned", target="host",
                          validate=False, tuning_db=db)
            r = bench(Path(tmp) / f"{name}-tuned", budget_s=args.seconds, per_layer=True)
            trials = sum(t.trials for t in report.tasks)
            tuned[name] = (r, report.seconds, trials)
            print(f"{name:<20} tuned {r['edgec_ms']:8.2f} ms  ORT {r['onnxruntime_ms']:7.2f} ms"
                  f"  ratio {r['ratio']:6.2f}x  ({trials} trials, {report.seconds:.0f} s)",
                  flush=True)

    # and once more at the end
    peak = max(peak, fma_peak_gflops(host.tvm_target(), threads, lanes=lanes))
    command = "python benchmarks/run.py " + " ".join(sys.argv[1:])
    lines = [
        "# Benchmarks", "",
        f"Command: `{command.strip()}` (latest run; rerun to refresh).", "",
        f"Machine: {platform.machine()}, {threads} threads, LLVM CPU "
        f"`{host.tvm.get('mcpu')}`; FMA-loop peak measured by TVM-compiled code: "
        f"**{peak:.0f} GFLOP/s**.", "",
        "Batch 1, fp32, host target, `cpu` pipeline (channels-last, edgec's schedule rules; "
        "untuned rows use no tuning database). onnxruntime with all graph optimizations, same "
        "thread count. **Each runtime is timed alone**, as an application runs it: "
        f"{ROUNDS} fresh processes per runtime, edgec's and onnxruntime's alternating, each "
        "loading its runtime, warming it and timing back-to-back calls while nothing else runs; "
        "the figure is the best process's median call, and the per-process medians are listed "
        "(a process runs at one speed for its whole life, and on this VM that speed can differ "
        "from one process to the next, for both runtimes alike). Every row's outputs agree "
        "with onnxruntime (max |diff| / max |ref| shown). GFLOP/s count the model's direct "
        "convolution FLOPs; Winograd F(2x2, 3x3) does 2.25x fewer multiply-adds on the 3x3 "
        "convs it takes, so a model made mostly of those can read above 100% of peak.", "",
        "| model | compile (s) | edgec (ms) | onnxruntime (ms) | edgec / ORT | edgec GFLOP/s "
        "| % of peak | ORT GFLOP/s | agreement | edgec per process (ms) | ORT per process (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    worst = lambda r: max(o["rel"] for o in r["agreement"]["outputs"])  # noqa: E731
    for name, compile_s, r in rows:
        lines.append(
            f"| {name} | {compile_s:.1f} | {r['edgec_ms']:.2f} | {r['onnxruntime_ms']:.2f} | "
            f"**{r['ratio']:.2f}x** | {r['edgec_gflops']:.1f} | "
            f"{r['edgec_gflops'] / peak:.1%} | {r['onnxruntime_gflops']:.1f} | {worst(r):.1e} | "
            f"{_procs(r['edgec_processes_ms'])} | {_procs(r['onnxruntime_processes_ms'])} |")
    if tuned:
        lines += ["", f"Tuned: `edgec tune --time {args.tune_time}` per model into a fresh "
                  "database (edgec's rule schedule as each kernel's baseline record; then the "
                  "rule's variants, other tiles, pixel walks and chunks; then MetaSchedule; "
                  "winners judged inside the model), then compiled with it and timed as above.",
                  "",
                  "| model | trials | tuning (s) | edgec tuned (ms) | onnxruntime (ms) | "
                  "edgec / ORT | GFLOP/s | % of peak | agreement |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name, (r, secs, trials) in tuned.items():
            lines.append(
                f"| {name} | {trials} | {secs:.0f} | {r['edgec_ms']:.2f} | "
                f"{r['onnxruntime_ms']:.2f} | **{r['ratio']:.2f}x** | {r['edgec_gflops']:.1f} | "
                f"{r['edgec_gflops'] / peak:.1%} | {worst(r):.1e} |")
    ratio = {n: r["ratio"] for n, _, r in rows}
    goals = [("untuned <= 1.5x ORT, every model", all(v <= 1.5 for v in ratio.values())),
             ("untuned <= 1.2x ORT, MobileNetV2 and ResNet-18",
              all(ratio.get(n, 0) <= 1.2 for n in ("mobilenet_v2", "resnet18"))),
             ("compile without tuning <= 30 s for MobileNetV2",
              all(c <= 30 for n, c, _ in rows if n == "mobilenet_v2"))]
    for name, limit in (("mobilenet_v2", 0.8), ("resnet18", 1.0)):
        if name in tuned:
            goals.append((f"tuned {name} <= {limit}x ORT", tuned[name][0]["ratio"] <= limit))
    lines += ["", "## Against the targets", ""]
    lines += [f"- {goal}: {'met' if ok else '**not met**'}" for goal, ok in goals]
    missed = [n for n, _, r in rows if r["ratio"] > 1.2] + [n for n in tuned
                                                            if tuned[n][0]["ratio"] > 1.0]
    for name in dict.fromkeys([args.profile] + missed):
        r = next((r for n, _, r in rows if n == name), None)
        if r and r.get("layers"):
            lines += _profile_table(f"## Per-kernel profile: {name} (untuned)", r["layers"])
        if name in tuned and tuned[name][0].get("layers"):
            lines += _profile_table(f"## Per-kernel profile: {name} (tuned)",
                                    tuned[name][0]["layers"])
    if args.latency_check:
        import latency_check

        with tempfile.TemporaryDirectory() as tmp:
            checked = [latency_check.check_model(m, 3, 2, Path(tmp))
                       for m in args.latency_check.split(",")]
        lines += ["", *latency_check.markdown(checked, command.strip())]
    from sections import write_section

    write_section(args.out, "run", lines)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
