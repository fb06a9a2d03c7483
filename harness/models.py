"""The models `edgec validate` compares, each behind one interface: run a list of feeds.

A model is an ONNX file (run by onnxruntime, graph optimizations off, so it is the model as
written) or an edgec artifact folder (run by edgec's runtime here, or its bundle on a device:
`qemu` emulated here, or `ssh://...`). Each knows its input and output specs, its cost (FLOPs,
MACs, params and per-layer FLOPs, from the ONNX it was built from) and how its latency can be
measured: here, in a process of its own (harness/latency.py), on the device by the bundle's
runner, or not at all under emulation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgec.errors import EdgecError


@dataclass
class Model:
    label: str
    path: Path
    kind: str  # "onnx" | "artifact"
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    onnx_model: onnx.ModelProto  # what its cost is counted on
    device: str = "here"
    threads: int = 1
    manifest: dict[str, Any] = field(default_factory=dict)
    _session: Any = None
    _compiled: Any = None

    def run(self, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        if self.kind == "onnx":
            if self._session is None:
                from .ort import ort_session

                self._session = ort_session(str(self.path), self.threads, optimize=False)
            names = [o.name for o in self._session.get_outputs()]
            return [dict(zip(names, self._session.run(None, f))) for f in feeds]
        if self.device == "here":
            return [self._artifact()(**f) for f in feeds]
        from edgec.runtime.device import run_bundle_many

        return run_bundle_many(self.path, device=self.device, feeds=feeds,
                               threads=self.threads)

    def kernel_ms(self, feed: dict[str, np.ndarray], runs: int = 10) -> list[dict[str, Any]]:
        """Per-kernel milliseconds per inference, slowest first (TVM's VM instrument, over
        `runs` calls), of an artifact that runs here; [] for any other model."""
        if self.kind != "artifact" or self.device != "here":
            return []
        times = self._artifact().profile(feed, runs=runs)
        rows = [{"kernel": k, "ms": float(np.sum(v)) / runs} for k, v in times.items()]
        return sorted(rows, key=lambda r: -r["ms"])

    def _artifact(self) -> Any:
        """The artifact loaded here, once."""
        if self._compiled is None:
            from edgec import runtime

            self._compiled = runtime.load(self.path, threads=self.threads)
        return self._compiled

    def release(self) -> None:
        """Drop the session / loaded artifact, so nothing of it runs beside a timing child."""
        self._session = self._compiled = None


def _open_onnx(path: Path, label: str, threads: int,
               input_shapes: dict[str, list[int]] | None) -> Model:
    from edgec.compiler import frontend, tensor_specs

    model, _ = frontend.load(path, input_shapes=input_shapes, check_ops=False)
    weights = {t.name for t in model.graph.initializer}
    return Model(label, path, "onnx", tensor_specs(list(model.graph.input), weights),
                 tensor_specs(list(model.graph.output), set()), model, threads=threads)


def _open_artifact(path: Path, label: str, threads: int, device: str | None) -> Model:
    from edgec.runtime.artifact import read_manifest, verify_library
    from edgec.targets import host_arch

    manifest = read_manifest(path)
    verify_library(path, manifest)
    arch = manifest["target"]["arch"]
    if device is None and arch != host_arch():
        raise EdgecError(f"artifact '{path}' is for {arch} and does not run here; give "
                         "--device qemu (emulated) or --device ssh://user@board")
    if device is not None and "bundle" not in manifest and arch == host_arch():
        device = None  # --device is for the bundles; this artifact runs here
    if device is not None and "bundle" not in manifest:
        raise EdgecError(f"artifact '{path}' has no device runner; compile it with --bundle "
                         f"to run it on --device {device}")
    model = onnx.load(str(path / manifest["optimized_onnx"]))
    return Model(label, path, "artifact", manifest["inputs"], manifest["outputs"], model,
                 device=device or "here", threads=threads, manifest=manifest)


def open_model(path: str | Path, *, threads: int | None = None, device: str | None = None,
               input_shapes: dict[str, list[int]] | None = None) -> Model:
    """An .onnx file or an artifact folder (one with manifest.json), ready to run."""
    path = Path(path)
    threads = threads or os.cpu_count() or 1
    label = path.name if path.suffix != ".onnx" else path.stem
    if path.is_dir():
        if not (path / "manifest.json").is_file():
            raise EdgecError(f"'{path}' is a folder without manifest.json: not an edgec "
                             "artifact")
        return _open_artifact(path, label, threads, device)
    if not path.is_file():
        raise EdgecError(f"no such model: {path}")
    return _open_onnx(path, label, threads, input_shapes)


def check_same_interface(ref: Model, other: Model) -> None:
    """A candidate takes the reference's inputs and returns its outputs (names, shapes)."""
    for what, mine, theirs in (("inputs", ref.inputs, other.inputs),
                               ("outputs", ref.outputs, other.outputs)):
        want = {s["name"]: list(s["shape"]) for s in mine}
        got = {s["name"]: list(s["shape"]) for s in theirs}
        if want != got:
            raise EdgecError(f"candidate '{other.path}' has {what} {got}; the reference "
                             f"'{ref.path}' has {want}")
