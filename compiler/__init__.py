"""The compile API: ONNX file in, artifact folder out, with its proof.

    result = edgec.compile("model.onnx", output="out/", target="arm")

Data flow (../ARCHITECTURE.md): frontend (load, check, pin, fold) -> analysis (FLOPs, params)
-> passes -> codegen (Relax, target pipeline, build, link) -> artifact folder written atomically
(model.so, model.onnx as optimized, manifest.json) -> validation against onnxruntime when this
machine can run the artifact. A failure anywhere leaves no output folder behind.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from edgec.errors import EdgecError
from edgec.fileio import atomic_dir

from . import analysis, codegen, frontend, passes
from .report import codegen_line

__all__ = ["CompileResult", "EdgecError", "compile", "inspect"]

LIBRARY = "model.so"
OPTIMIZED = "model.onnx"


@dataclass
class CompileResult:
    artifact: Path
    manifest: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def tensor_specs(values: list[onnx.ValueInfoProto], skip: set[str]) -> list[dict[str, Any]]:
    """Name, shape and dtype of each value, and the .npy file a bundle names it by ("file":
    the device runner reads and writes that file, so it never encodes names itself)."""
    from edgec.runtime.artifact import npy_file
    specs = []
    for vi in values:
        if vi.name in skip:
            continue
        t = vi.type.tensor_type
        specs.append({"name": vi.name, "shape": [d.dim_value for d in t.shape.dim],
                      "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name,
                      "file": npy_file(vi.name)})
    return specs


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in ("edgec", "apache-tvm", "apache-tvm-ffi", "onnx", "onnxruntime"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "unknown"
    return out


def _validate(folder: Path, source: Path, specs: list[dict], threads: int, seed: int,
              checks: int) -> dict[str, Any]:
    from edgec import runtime

    from . import validate

    model = runtime.load(folder, threads=threads)
    feeds = [runtime.random_inputs(specs, seed + i) for i in range(checks)]
    run = lambda feed: model(**feed)  # noqa: E731
    result = validate.agreement(run, source, feeds, threads)
    result["latency"] = validate.latency(run, source, feeds[0], threads, budget_s=1.0)
    return result


def _validate_emulated(folder: Path, source: Path, specs: list[dict], threads: int, seed: int,
                       checks: int) -> dict[str, Any]:
    from edgec import runtime
    from edgec.runtime.device import run_bundle

    from . import validate

    feeds = [runtime.random_inputs(specs, seed + i) for i in range(checks)]
    run = lambda feed: run_bundle(folder, device="qemu", feed=feed).outputs  # noqa: E731
    result = validate.agreement(run, source, feeds, threads)
    result["device"] = "qemu (emulated; no latency measured)"
    return result


def inspect(model_path: str | Path, *,
            input_shapes: dict[str, list[int]] | None = None) -> analysis.ModelCost:
    """Per-node FLOPs, params and activation memory of a model file (dims pinned, not changed)."""
    model, _ = frontend.load(model_path, input_shapes=input_shapes, check_ops=False)
    return analysis.analyze(model)


def compile(model_path: str | Path, *, output: str | Path, target: str = "host",
            input_shapes: dict[str, list[int]] | None = None, cc: str | None = None,
            validate: bool = True, checks: int = 2, seed: int = 0,
            skip_passes: list[str] | None = None, bundle: bool = False,
            tuning_db: str | Path | None = None, use_tuned: bool = True) -> CompileResult:
    """Compile `model_path` for `target` into the folder `output` (replaced atomically).

    With `bundle`, the folder also holds the device runner, the target's TVM runtime libraries
    and run.sh (see edgec.runtime.bundle); where the target is not this machine's, its outputs
    are then checked under the target's emulator. Kernels with records in the target's tuning
    database (`edgec tune`; `tuning_db` is its root folder) use the tuned schedules.
    """
    from edgec import targets
    from edgec.runtime.artifact import FORMAT, MANIFEST, cpu_flags, sha256_file

    source = Path(model_path)
    tgt = targets.get(target)
    tgt.compiler(cc)  # fail on a missing toolchain before the slow steps
    pass_names = passes.select(skip=skip_passes or ())
    model, front = frontend.load(source, input_shapes=input_shapes)
    before = analysis.analyze(model)
    model, reports = passes.run_passes(model, pass_names)
    notes = list(front.notes) + [r.summary() for r in reports]
    after = analysis.analyze(model)
    lowering = codegen.Lowering()
    if use_tuned and tgt.pipeline == "cpu":
        from .tuning.db import db_folder, default_db_root, use_database

        db_dir = db_folder(Path(tuning_db or default_db_root()), tgt)
        use_database(lowering, db_dir)
    started = time.perf_counter()
    executable = codegen.build(model, tgt, front.input_shapes, lowering)
    gen = {"pipeline": tgt.pipeline, "kernels": lowering.kernels, "graph": lowering.graph,
           "tuning_db": str(db_dir) if lowering.database is not None else None,
           "kept_rule": lowering.kept, "input_alignment": lowering.input_alignment,
           "seconds": round(time.perf_counter() - started, 2)}
    notes.append(codegen_line(gen))
    weights = {t.name for t in model.graph.initializer}
    inputs = tensor_specs(list(model.graph.input), weights)
    outputs = tensor_specs(list(model.graph.output), set())
    with atomic_dir(Path(output)) as tmp:
        codegen.export(executable, tmp / LIBRARY, tgt, cc)
        onnx.save_model(model, str(tmp / OPTIMIZED))
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "library": LIBRARY,
            "sha256": sha256_file(tmp / LIBRARY),
            "optimized_onnx": OPTIMIZED,
            "inputs": inputs,
            "outputs": outputs,
            "target": {"name": tgt.name, "arch": tgt.arch, "device": tgt.device, "tvm": tgt.tvm,
                       "threads": tgt.effective_threads() if tgt.runs_here() else tgt.threads,
                       "cpu_flags": cpu_flags() if tgt.cpu_detected else []},
            "versions": _versions(),
            "source": {"path": str(source), "sha256": sha256_file(source)},
            "cost": {"before": before.totals(), "after": after.totals()},
            "passes": [r.to_json() for r in reports],
            "codegen": gen,
            "validation": {"skipped": "disabled (--no-validate)" if not validate else
                           f"this {tgt.arch} artifact does not run on this machine "
                           f"({platform.machine()}); run it on the device"},
        }
        if bundle:
            from edgec.runtime.bundle import add_bundle

            manifest["bundle"] = add_bundle(tmp, tgt, manifest, cc)
        emulate = bundle and not tgt.runs_here() and bool(tgt.emulator)
        if validate and (tgt.runs_here() or emulate):
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
            threads = manifest["target"]["threads"]
            check = (_validate_emulated(tmp, source, inputs, threads, seed, checks) if emulate
                     else _validate(tmp, source, inputs, threads, seed, checks))
            manifest["validation"] = check
            if not check["ok"]:
                bad = next(r for r in check["outputs"] if not r["ok"])
                raise EdgecError(
                    f"compiled model disagrees with onnxruntime on output '{bad['name']}': "
                    f"max |diff| {bad['max_abs_diff']:.3g} > {check['rtol']} x max|ref| "
                    f"{bad['max_abs_ref']:.3g}; no artifact written"
                )
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return CompileResult(Path(output), manifest, front.warnings, notes)
