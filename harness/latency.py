"""Latency as an application sees it: each runtime timed alone, in fresh processes of its own.

An application runs one runtime. Timing two runtimes in one process, even alternately, times
each beside the other's worker threads, which keep spinning for a while after every call: on
a 2-core machine that moved a model from 3.7x slower than onnxruntime to "0.96x". So every
figure edgec prints (compile, bench, validate, benchmarks/) comes from `time_alone`: a child
process (`python -m edgec.harness.latency`) loads one runtime with the given threads, warms
it, and times back-to-back calls on one input for a fixed time; the parent waits, idle, and
the next runtime gets its own fresh child. A child's figure is its median call; a reported
figure is the best of a few children's (`alone`, `compare_alone`), all of them kept.

The child's thread pool settings are the runtime's defaults, the ones `edgec.runtime` gives
an application (see `edgec/__init__.py`), so the figure is what that application gets.
`interleaved` (compiler/validate.latency) stays as a labelled diagnostic only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgec.errors import EdgecError

RUNTIMES = ("edgec", "onnxruntime")
WARMUP_S = 0.3


def time_calls(call: Any, seconds: float, min_runs: int = 20) -> dict[str, Any]:
    """Warm for WARMUP_S (and at least 3 calls), then time calls for `seconds`."""
    t_end = time.perf_counter() + WARMUP_S
    warm = 0
    while warm < 3 or time.perf_counter() < t_end:
        call()
        warm += 1
    times = []
    t_end = time.perf_counter() + seconds
    while len(times) < min_runs or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1e3
    return {"median_ms": float(np.median(ms)), "p10_ms": float(np.percentile(ms, 10)),
            "p90_ms": float(np.percentile(ms, 90)), "runs": len(times), "warmup": warm}


def _child(runtime: str, model: str, feed_file: str, threads: int, seconds: float) -> dict:
    with np.load(feed_file, allow_pickle=False) as npz:
        feed = {name: npz[name] for name in npz.files}
    if runtime == "edgec":
        from edgec import runtime as edgec_runtime

        compiled = edgec_runtime.load(model, threads=threads)
        stats = time_calls(lambda: compiled(**feed), seconds)
    else:
        from .ort import ort_session

        sess = ort_session(model, threads, optimize=True)
        stats = time_calls(lambda: sess.run(None, feed), seconds)
    return {"runtime": runtime, "threads": threads, **stats}


def time_alone(runtime: str, model: str | Path, feed: dict[str, np.ndarray], threads: int,
               seconds: float = 2.0) -> dict[str, Any]:
    """Median latency of `model` (an artifact folder for edgec, an .onnx for onnxruntime) on
    `feed`, timed in a fresh child process while this one waits."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime {runtime!r} is not one of {RUNTIMES}")
    with tempfile.TemporaryDirectory(prefix="edgec-latency-") as tmp:
        feed_file = Path(tmp) / "feed.npz"
        np.savez(feed_file, **feed)
        cmd = [sys.executable, "-m", "edgec.harness.latency", runtime, str(model),
               str(feed_file), "--threads", str(threads), "--seconds", str(seconds)]
        done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        err = [ln for ln in done.stderr.splitlines() if ln.strip()]
        raise EdgecError(f"timing {runtime} on {model} failed: "
                         f"{err[-1] if err else f'exit {done.returncode}'}")
    return json.loads(lines[-1])


Subject = tuple[str, "str | Path", int]  # (runtime, model, threads)


def round_robin(subjects: list[Subject], feed: dict[str, np.ndarray], seconds: float = 2.0,
                rounds: int = 3) -> list[dict[str, Any]]:
    """Each subject timed alone in `rounds` fresh processes, taking turns (one process per
    subject per round, `seconds` of timing per subject in all), so every subject's processes
    spread over the same stretch of time: a machine whose processes run slower for a while
    then slows each subject alike. Per subject, `_summary` of its processes."""
    per: list[list[dict[str, Any]]] = [[] for _ in subjects]
    for _ in range(max(rounds, 1)):
        for runs, (runtime, model, threads) in zip(per, subjects):
            runs.append(time_alone(runtime, model, feed, threads, seconds / max(rounds, 1)))
    return [_summary(runs) for runs in per]


def alone(runtime: str, model: str | Path, feed: dict[str, np.ndarray], threads: int,
          seconds: float = 2.0, rounds: int = 3) -> dict[str, Any]:
    """`time_alone` in `rounds` fresh processes: the best process's median call, and each
    process's."""
    return round_robin([(runtime, model, threads)], feed, seconds, rounds)[0]


def _summary(per: list[dict[str, Any]]) -> dict[str, Any]:
    """The best process: its median call is the figure; every process's median is kept."""
    best = min(per, key=lambda p: p["median_ms"])
    return {"median_ms": best["median_ms"], "p90_ms": best["p90_ms"],
            "runs": sum(p["runs"] for p in per), "processes_ms": [p["median_ms"] for p in per],
            "threads": best["threads"], "method": "alone"}


def compare_alone(artifact: str | Path, reference: str | Path, feed: dict[str, np.ndarray],
                  threads: int, seconds: float = 2.0, rounds: int = 3) -> dict[str, Any]:
    """edgec's artifact and onnxruntime on the reference model, each alone, in `rounds`
    alternating pairs of fresh processes (`seconds` of timing per runtime in all): the figures
    compile and bench print. A process runs at one speed for its whole life, and on some
    machines that speed differs from one process to the next for both runtimes alike (on a
    2-vCPU VM, MobileNetV3-Small ran at 0.43 or 0.77 ms in edgec, 0.55 or 0.98 ms in
    onnxruntime, per process, at random), so each runtime's figure is its best process's median
    call, the speed a process gets where nothing slows it, and every process's median is kept
    beside it (`*_processes_ms`)."""
    from edgec.runtime import speed_note
    from edgec.runtime.artifact import read_manifest

    a, b = round_robin([("edgec", artifact, threads), ("onnxruntime", reference, threads)],
                       feed, seconds, rounds)
    return {"edgec_ms": a["median_ms"], "onnxruntime_ms": b["median_ms"],
            "note": speed_note(read_manifest(Path(artifact))),  # "" where it is device speed
            "ratio": a["median_ms"] / b["median_ms"], "runs": a["runs"],
            "onnxruntime_runs": b["runs"], "threads": threads, "method": "alone",
            "processes": len(a["processes_ms"]), "edgec_processes_ms": a["processes_ms"],
            "onnxruntime_processes_ms": b["processes_ms"],
            "edgec_spread_ms": a["p90_ms"] - a["median_ms"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgec.harness.latency",
                                description="time one runtime alone (edgec's timing child)")
    p.add_argument("runtime", choices=RUNTIMES)
    p.add_argument("model", help="artifact folder (edgec) or .onnx (onnxruntime)")
    p.add_argument("feed", help=".npz of the inputs, keyed by input name")
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--seconds", type=float, default=2.0)
    args = p.parse_args(argv)
    try:
        result = _child(args.runtime, args.model, args.feed, args.threads, args.seconds)
    except EdgecError as err:
        print(f"edgec: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
