"""The compile API: ONNX file in, artifact folder out, with its proof.

    result = edgec.compile("model.onnx", output="out/", target="arm")

The phases, in order (PHASES; docs/ARCHITECTURE.md): frontend (load, check, pin, fold; FLOPs
before) -> passes (ONNX -> ONNX; FLOPs after) -> codegen (the target's pipeline: ONNX rewrites,
Relax, schedules, TIR, build) -> artifact (link model.so, model.onnx as optimized, the bundle)
-> validate (against onnxruntime where the artifact runs here or under the target's emulator).
The manifest records each phase's seconds. The folder is written atomically: a failure
anywhere leaves no output folder behind.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgec.errors import EdgecError
from edgec.fileio import atomic_dir

from . import analysis, codegen, frontend, passes
from .report import codegen_line, fallback_warning

__all__ = ["CompileResult", "EdgecError", "compile", "inspect"]

LIBRARY = "model.so"
OPTIMIZED = "model.onnx"
PHASES = ("frontend", "passes", "codegen", "artifact", "validate")


class _Phases:
    """Times the named phases of one compile: `with phases("codegen"): ...`."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        assert name in PHASES, name
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - started, 2)


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


def _validate(folder: Path, source: Path, feeds: list[dict], threads: int,
              latency: bool) -> dict[str, Any]:
    from edgec import runtime
    from edgec.harness.latency import compare_alone

    from . import validate

    model = runtime.load(folder, threads=threads)
    run = lambda feed: model(**feed)  # noqa: E731
    result = validate.agreement(run, source, feeds, threads)
    if latency:
        result["latency"] = compare_alone(folder, source, feeds[0], threads, seconds=1.0,
                                          rounds=2)
    else:
        result["latency_skipped"] = "not timed (--no-latency)"
    return result


def _validate_emulated(folder: Path, source: Path, feeds: list[dict],
                       threads: int) -> dict[str, Any]:
    from edgec.runtime.device import run_bundle_many

    from . import validate

    outputs = run_bundle_many(folder, device="qemu", feeds=feeds)  # one emulator start
    by_feed = {id(feed): out for feed, out in zip(feeds, outputs)}
    result = validate.agreement(lambda feed: by_feed[id(feed)], source, feeds, threads)
    result["device"] = "qemu (emulated; no latency measured)"
    return result


DATA_CHECKS = 16  # samples of --data compile's check runs on


def check_inputs(specs: list[dict], model: onnx.ModelProto, *, seed: int, checks: int,
                 data: str | Path | None, preprocess: dict[str, Any] | None
                 ) -> tuple[list[dict[str, np.ndarray]], str, dict[str, Any] | None]:
    """The inputs compile's check runs on and what they are: the first DATA_CHECKS samples of
    `data` (harness/data.py, preprocessed by the model's spec and `preprocess` overrides), or
    `checks` seeded random inputs; and the preprocessing spec the manifest records."""
    from edgec import runtime
    from edgec.harness.preprocess import from_model, resolve

    # a guess from the input only where data or flags need a spec
    spec = (resolve(model, specs[0], preprocess) if data is not None or preprocess
            else from_model(model))
    if data is None:
        feeds = [runtime.random_inputs(specs, seed + i) for i in range(checks)]
        return feeds, f"{checks} seeded inputs", spec and spec.to_json()
    from edgec.harness.data import open_data

    dataset, want = open_data(data, specs, spec), max(checks, DATA_CHECKS)
    feeds: list[dict[str, np.ndarray]] = []
    for batch, _ in dataset.batches(want):
        feeds += batch[: want - len(feeds)]
        if len(feeds) >= want:
            break
    return feeds, f"{len(feeds)} samples of {data}", spec.to_json()


def inspect(model_path: str | Path, *,
            input_shapes: dict[str, list[int]] | None = None) -> analysis.ModelCost:
    """Per-node FLOPs, params and activation memory of a model file (dims pinned, not changed)."""
    model, _ = frontend.load(model_path, input_shapes=input_shapes, check_ops=False)
    return analysis.analyze(model)


def _codegen(model: onnx.ModelProto, tgt: Any, shapes: dict[str, list[int]],
             tuning_db: str | Path | None, use_tuned: bool,
             precision: str = "fp32") -> tuple[Any, dict[str, Any]]:
    """The built executable, and the manifest's record of how its kernels were made."""
    lowering, db_dir = codegen.Lowering(precision=precision), None
    if use_tuned and tgt.pipeline == "cpu":
        from .tuning.db import db_folder, default_db_root, use_database

        db_dir = db_folder(Path(tuning_db or default_db_root()), tgt)
        use_database(lowering, db_dir)
    executable = codegen.build(model, tgt, shapes, lowering)
    return executable, {
        "pipeline": tgt.pipeline, "kernels": lowering.kernels, "graph": lowering.graph,
        "tuning_db": str(db_dir) if lowering.database is not None else None,
        "kept_rule": lowering.kept, "input_alignment": lowering.input_alignment,
        "precision": precision}


def _manifest(tmp: Path, tgt: Any, model: onnx.ModelProto, source: Path,
              facts: dict[str, Any], validate: bool) -> dict[str, Any]:
    from edgec import targets
    from edgec.runtime.artifact import FORMAT, cpu_flags, sha256_file

    weights = {t.name for t in model.graph.initializer}
    return {
        "format": FORMAT,
        "library": LIBRARY,
        "sha256": sha256_file(tmp / LIBRARY),
        "optimized_onnx": OPTIMIZED,
        "inputs": tensor_specs(list(model.graph.input), weights),
        "outputs": tensor_specs(list(model.graph.output), set()),
        "target": {"name": tgt.name, "arch": tgt.arch, "device": tgt.device, "tvm": tgt.tvm,
                   "threads": tgt.effective_threads() if tgt.runs_here() else tgt.threads,
                   "cpu_flags": cpu_flags() if tgt.cpu_detected else []},
        "versions": _versions(),
        "source": {"path": str(source), "sha256": sha256_file(source)},
        **facts,
        "validation": {"skipped": "disabled (--no-validate)" if not validate else
                       f"this {tgt.arch} {tgt.device} artifact does not run on this machine "
                       f"({platform.machine()}, {tgt.device} "
                       f"{'present' if targets.device_present(tgt.device) else 'absent'}); "
                       "run it on the device"},
    }


def _check(tmp: Path, tgt: Any, manifest: dict[str, Any], source: Path, emulate: bool,
           feeds: list[dict[str, np.ndarray]], compared: str, latency: bool) -> dict[str, Any]:
    """The validate phase: agreement with onnxruntime, or an EdgecError naming the output."""
    from edgec.runtime.artifact import MANIFEST

    from .tolerance import describe

    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))  # what the runtime loads
    threads = manifest["target"]["threads"]
    check = (_validate_emulated(tmp, source, feeds, threads) if emulate
             else _validate(tmp, source, feeds, threads, latency))
    check["inputs"] = compared
    if not check["ok"]:
        bad = next(r for r in check["outputs"] if not r["ok"])
        raise EdgecError(
            f"compiled model disagrees with onnxruntime on output '{bad['name']}' "
            f"({compared}): {describe(bad)}; no artifact written")
    return check


def compile(model_path: str | Path, *, output: str | Path, target: str = "host",
            input_shapes: dict[str, list[int]] | None = None, cc: str | None = None,
            validate: bool = True, checks: int = 2, seed: int = 0,
            skip_passes: list[str] | None = None, bundle: bool = False,
            tuning_db: str | Path | None = None, use_tuned: bool = True,
            data: str | Path | None = None, preprocess: dict[str, Any] | None = None,
            latency: bool = True, lossy: dict[str, Any] | None = None,
            precision: str = "fp32") -> CompileResult:
    """Compile `model_path` for `target` into the folder `output` (replaced atomically).

    With `bundle`, the folder also holds the device runner, the target's TVM runtime libraries
    and run.sh (see edgec.runtime.bundle); where the target is not this machine's, its outputs
    are then checked under the target's emulator. Kernels with records in the target's tuning
    database (`edgec tune`; `tuning_db` is its root folder) use the tuned schedules. The
    check runs on the first samples of `data` where given (`check_inputs`), on seeded
    random inputs otherwise; with `latency`, it also times each runtime alone. `lossy` (what
    `edgec compress` or `edgec quantize` did to make `model_path`, by command name) goes into
    the manifest as is. `precision` "fp16" runs the kernels in half precision (GPU targets);
    compile's fp32 check then is skipped (benchmarks/gpu.sh checks fp16 at its own tolerance).
    """
    from edgec import targets
    from edgec.runtime.artifact import MANIFEST

    source, tgt, phases = Path(model_path), targets.get(target), _Phases()
    tgt.compiler(cc)  # fail on a missing toolchain before the slow steps
    pass_names = passes.select(skip=skip_passes or ())
    with phases("frontend"):
        model, front = frontend.load(source, input_shapes=input_shapes)
        before = analysis.analyze(model)
    with phases("passes"):
        model, reports = passes.run_passes(model, pass_names)
        after = analysis.analyze(model)
    weights = {t.name for t in model.graph.initializer}
    feeds, compared, spec = check_inputs(tensor_specs(list(model.graph.input), weights), model,
                                         seed=seed, checks=checks, data=data,
                                         preprocess=preprocess)
    with phases("codegen"):
        executable, gen = _codegen(model, tgt, front.input_shapes, tuning_db, use_tuned,
                                   precision)
    gen["seconds"] = phases.seconds["codegen"]
    notes = list(front.notes) + [r.summary() for r in reports] + [codegen_line(gen)]
    facts = {"frontend": {"notes": list(front.notes)},
             "cost": {"before": before.totals(), "after": after.totals()},
             "passes": [r.to_json() for r in reports], "codegen": gen}
    with atomic_dir(Path(output)) as tmp:
        with phases("artifact"):
            codegen.export(executable, tmp / LIBRARY, tgt, cc)
            onnx.save_model(model, str(tmp / OPTIMIZED))
            manifest = _manifest(tmp, tgt, model, source, facts, validate)
            manifest["preprocess"] = spec
            manifest.update(lossy or {})
            if bundle:
                from edgec.runtime.bundle import add_bundle

                manifest["bundle"] = add_bundle(tmp, tgt, manifest, cc)
        # the emulator runs the CPU's code; a GPU's is not there to run under it
        emulate = bundle and not tgt.runs_here() and bool(tgt.emulator) and tgt.device == "cpu"
        if precision != "fp32":
            manifest["validation"] = {"skipped": f"{precision} kernels: not held to fp32's "
                                      "tolerance (benchmarks/gpu.sh checks them)"}
        elif validate and (tgt.runs_here() or emulate):
            with phases("validate"):
                manifest["validation"] = _check(tmp, tgt, manifest, source, emulate, feeds,
                                                compared, latency)
        manifest["phases"] = phases.seconds
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    fallback = fallback_warning(gen)  # kernels no rule took: named, not only counted
    return CompileResult(Path(output), manifest, front.warnings + [fallback] * bool(fallback),
                         notes)
