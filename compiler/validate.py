"""The proof: a compiled model's outputs and latency against onnxruntime on the original model.

Agreement: for each output, max|edgec - ort| within a tolerance that scales with the
computation (tolerance.py: RTOL * max|ort|, or the reference's own float32 rounding noise where
that is larger), on `checks` seeded inputs; classifier-shaped outputs (N x classes) also report
top-1 agreement. The reference session runs with ORT_DISABLE_ALL, so ORT's own fusions cannot
move the reference.

Latency: edgec and onnxruntime (all graph optimizations on, same thread count) are timed in
this process, in alternating blocks, after warm-up; medians are compared as a ratio edgec / ORT.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgec.harness.ort import ort_session

from .tolerance import NOISE_CAP, RTOL, margin, tolerance


def compare_outputs(ours: dict[str, np.ndarray], ref: dict[str, np.ndarray],
                    noise: dict[str, float] | None = None,
                    rtol: float = RTOL, cap: float = NOISE_CAP) -> list[dict[str, Any]]:
    """Per output: the largest difference, the tolerance it is held to (tolerance.py: from
    max|ref| and the reference's rounding `noise`) and whether it is within it."""
    rows = []
    for name, want in ref.items():
        got = ours[name]
        scale = float(np.max(np.abs(want))) if want.size else 0.0
        diff = float(np.max(np.abs(got.astype(np.float64) - want))) if want.size else 0.0
        jitter = (noise or {}).get(name, 0.0)
        tol = tolerance(scale, jitter, rtol, cap)
        row = {"name": name, "max_abs_diff": diff, "max_abs_ref": scale, "noise": jitter,
               "tol": tol, "rel": diff / scale if scale else diff,
               "ok": bool(diff <= max(tol, 1e-30 * rtol))}
        if want.ndim == 2 and want.shape[1] > 1:
            row["top1_agree"] = float(np.mean(got.argmax(1) == want.argmax(1)))
        rows.append(row)
    return rows


def agreement(run: Callable[[dict], dict], model: str | Path | bytes,
              inputs: list[dict[str, np.ndarray]], threads: int) -> dict[str, Any]:
    """Run both on every input set; keep the row per output nearest its tolerance."""
    from .tolerance import noise as rounding_noise
    from .tolerance import noise_cap

    sess = ort_session(model, threads, optimize=False)
    names = [o.name for o in sess.get_outputs()]
    refs = [dict(zip(names, sess.run(None, feed))) for feed in inputs]
    jitter = rounding_noise(model, inputs, refs, threads)
    cap = noise_cap(model)
    worst: dict[str, dict] = {}
    for feed, ref in zip(inputs, refs):
        for row in compare_outputs(run(feed), ref, jitter, cap=cap):
            prev = worst.get(row["name"])
            if prev is None or margin(row) > margin(prev):
                worst[row["name"]] = row
    rows = list(worst.values())
    return {"rtol": RTOL, "checks": len(inputs), "ok": all(r["ok"] for r in rows),
            "outputs": rows}


def latency(run: Callable[[dict], Any], model: str | Path | bytes, feed: dict[str, np.ndarray],
            threads: int, budget_s: float = 3.0, settle_s: float = 0.03,
            block_s: float = 0.05) -> dict[str, Any]:
    """Medians over alternating blocks of runs, each block after `settle_s` of untimed runs.

    Both runtimes keep their worker threads spinning for a while after a call, so the first
    milliseconds after a switch pay for the other runtime's threads on a machine with few cores
    (MobileNetV3-Small read 2x slower for both with 3 settling runs, 1.2x with 30). Blocks are
    sized in time, not runs, so a 1 ms model and a 20 ms one settle alike, and rounds go on
    until `budget_s` is spent: a short window is at the mercy of one burst of noise.
    """
    sess = ort_session(model, threads, optimize=True)
    ort_run = lambda f: sess.run(None, f)  # noqa: E731
    for fn in (run, ort_run):  # warm-up: first calls allocate and page in weights
        fn(feed)
        fn(feed)
    t0 = time.perf_counter()
    run(feed)
    ort_run(feed)
    once = max(time.perf_counter() - t0, 1e-6) / 2
    settle = max(2, math.ceil(settle_s / once))
    block = max(3, math.ceil(block_s / once))
    times: dict[str, list[float]] = {"edgec": [], "ort": []}
    deadline = time.perf_counter() + budget_s
    while len(times["ort"]) < 3 * block or time.perf_counter() < deadline:
        for key, fn in (("edgec", run), ("ort", ort_run)):
            for _ in range(settle):
                fn(feed)
            for _ in range(block):
                t = time.perf_counter()
                fn(feed)
                times[key].append(time.perf_counter() - t)
    ours, ref = (float(np.median(times[k])) * 1e3 for k in ("edgec", "ort"))
    return {"edgec_ms": ours, "onnxruntime_ms": ref, "ratio": ours / ref,
            "runs": len(times["edgec"]), "threads": threads, "block": block, "settle": settle,
            "edgec_spread_ms": float(np.percentile(times["edgec"], 90) * 1e3 - ours)}
