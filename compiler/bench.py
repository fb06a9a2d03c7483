"""`edgec bench`: edgec's latency against onnxruntime's, each timed alone, same threads.

Each runtime is timed in a fresh process of its own while the other is idle
(harness/latency.py), as an application runs one; the report has medians, edgec's spread, the
ratio edgec / ORT and, first, whether edgec's outputs agree with ORT's (a fast wrong answer is
not a result). With `interleaved`, the two are also timed alternately in this process
(validate.latency), a diagnostic of how they share the machine, labelled as such. With
`per_layer`, every fused kernel's median time, its share, its FLOPs (TVM's estimate on the
lowered kernel) and the GFLOP/s it reaches.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgec.errors import EdgecError

ROUNDS = 5  # fresh processes each runtime is timed in


def _per_layer(model: Any, folder: Path, manifest: dict, feed: dict, target: Any) -> list[dict]:
    from . import codegen

    lowered_from = onnx.load(str(folder / manifest["optimized_onnx"]))
    shapes = {s["name"]: s["shape"] for s in manifest["inputs"]}
    # Lowered as the artifact was (its tuning database, if any): tuned and rule-scheduled
    # kernels get different names (weights repacked or not).
    lowering = codegen.Lowering()
    db = (manifest.get("codegen") or {}).get("tuning_db")
    if db:
        from .tuning.db import use_database

        use_database(lowering, Path(db))
    flops = codegen.kernel_flops(codegen.lower(lowered_from, target, shapes, lowering))
    runs = 10
    times = model.profile(feed, runs=runs)
    rows = []
    for name, samples in times.items():
        calls = len(samples) // runs
        rows.append({"kernel": name, "calls": calls, "ms": float(np.sum(samples)) / runs,
                     "flops": flops.get(name, 0.0) * calls})  # per inference, all calls
    total = sum(r["ms"] for r in rows) or 1.0
    for r in rows:
        r["share"] = r["ms"] / total
        r["gflops"] = r["flops"] / (r["ms"] * 1e6) if r["ms"] else 0.0
    return sorted(rows, key=lambda r: -r["ms"])


def _runs_here(target: dict[str, Any]) -> None:
    from edgec.targets import host_arch

    if target["arch"] != host_arch():
        raise EdgecError(f"target '{target['name']}' ({target['arch']}) does not run here; time "
                         "it on the device: edgec run BUNDLE --device ssh://user@board "
                         "--repeat 50")


def bench(model: str | Path, *, target: str = "host", threads: int | None = None,
          input_shapes: dict[str, list[int]] | None = None, per_layer: bool = False,
          budget_s: float = 10.0, seed: int = 0, interleaved: bool = False,
          processes: int = ROUNDS) -> dict[str, Any]:
    """Time a model (an .onnx file, compiled here first, or an artifact folder)."""
    from edgec import runtime, targets
    from edgec.harness.latency import compare_alone
    from edgec.runtime.artifact import read_manifest

    from . import compile as compile_model
    from . import validate

    path = Path(model)
    with tempfile.TemporaryDirectory(prefix="edgec-bench-") as tmp:
        if path.is_dir():
            folder, manifest = path, read_manifest(path)
            _runs_here(manifest["target"])
            tgt = targets.get(manifest["target"]["name"])
        else:
            tgt = targets.get(target)
            _runs_here({"name": tgt.name, "arch": tgt.arch})  # before the slow compile
            folder = Path(tmp) / "artifact"
            compile_model(path, output=folder, target=target, input_shapes=input_shapes,
                          validate=False)
            manifest = read_manifest(folder)
        source = Path(manifest["source"]["path"])
        reference = source if source.is_file() else folder / manifest["optimized_onnx"]
        threads = threads or manifest["target"]["threads"]
        compiled = runtime.load(folder, threads=threads)
        feed = runtime.random_inputs(compiled.inputs, seed)
        run = lambda f: compiled(**f)  # noqa: E731
        result: dict[str, Any] = {
            "model": str(path), "target": tgt.name, "threads": threads,
            "agreement": validate.agreement(run, reference, [feed], threads),
            **compare_alone(folder, reference, feed, threads, seconds=budget_s / 2,
                            rounds=processes),
            "cost": manifest["cost"]["after"],
        }
        if interleaved:
            result["interleaved"] = validate.latency(run, reference, feed, threads,
                                                     budget_s=budget_s)
        result["edgec_gflops"] = result["cost"]["flops"] / (result["edgec_ms"] * 1e6)
        result["onnxruntime_gflops"] = result["cost"]["flops"] / (result["onnxruntime_ms"] * 1e6)
        if per_layer:
            result["layers"] = _per_layer(compiled, folder, manifest, feed, tgt)
        return result
