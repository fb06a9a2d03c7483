"""Run an edgec artifact on this machine from Python.

    model = edgec.runtime.load("out/")
    outputs = model(image)            # or model(input=image); returns {output name: array}

The library's sha256 is checked against the manifest and the target against this CPU before
anything is loaded; inputs are checked by name, shape and dtype against the manifest.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edgec.errors import EdgecError
from edgec.targets import DEVICES

from .artifact import ALIGNED, check_runs_here, npz_bytes, read_manifest, spec_name, verify_library

__all__ = ["CompiledModel", "kernel_times", "load", "random_inputs"]

def set_threads(threads: int) -> None:
    # The pool's size was fixed by TVM_NUM_THREADS (see edgec/__init__.py); this picks how
    # many of its threads run.
    import tvm  # noqa: F401  (loads libtvm_runtime, which registers the thread-pool functions)
    import tvm_ffi

    tvm_ffi.get_global_func("runtime.config_threadpool")(0, threads)


def random_inputs(specs: list[dict[str, Any]], seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs for specs [{name, shape, dtype}]: N(0,1) floats, small non-negative ints."""
    rng = np.random.default_rng(seed)
    out = {}
    for spec in specs:
        dtype = np.dtype(spec["dtype"])
        if dtype.kind == "f":
            out[spec["name"]] = rng.standard_normal(spec["shape"]).astype(dtype)
        else:
            out[spec["name"]] = rng.integers(0, 8, spec["shape"]).astype(dtype)
    return out


def kernel_times(vm: Any, call: Any, runs: int) -> dict[str, list[float]]:
    """Milliseconds of every kernel call `vm` makes while `call()` runs `runs` times, by name.

    Times each call between the VM's before/after instrument hooks; VM builtins (allocation,
    shape checks) are left out.
    """
    import time

    times: dict[str, list[float]] = {}
    start: dict[str, float] = {}

    def instrument(func, name, before, ret, *args):
        name = str(name)
        if name.startswith("vm.builtin"):
            return 0
        if before:
            start[name] = time.perf_counter()
        else:
            times.setdefault(name, []).append((time.perf_counter() - start[name]) * 1e3)
        return 0

    vm.set_instrument(instrument)
    try:
        for _ in range(runs):
            call()
    finally:
        vm.set_instrument(None)
    return times


class CompiledModel:
    """A loaded artifact: call it with arrays (positional, in input order, or by name)."""

    def __init__(self, folder: Path, manifest: dict[str, Any], threads: int):
        import tvm
        from tvm import relax

        self.folder = folder
        self.manifest = manifest
        self.inputs: list[dict[str, Any]] = manifest["inputs"]
        self.outputs: list[dict[str, Any]] = manifest["outputs"]
        self.threads = threads
        self.device = device_of(manifest)
        lib = tvm.runtime.load_module(str(folder / manifest["library"]))
        self._dev = tvm.device(self.device)
        self._vm = relax.VirtualMachine(lib, self._dev)
        self._main = self._vm["main"]
        self._staging: list[Any] = [None] * len(self.inputs)
        self._alignment: list[int] = list(manifest.get("codegen", {}).get("input_alignment")
                                          or [])

    def _tensor(self, i: int, arr: np.ndarray) -> Any:
        """Input `i` as a TVM tensor without a fresh allocation per call.

        An array at an address the model's kernels take is passed by reference (DLPack):
        64-byte aligned, or for a model compiled with tir_level/unaligned_inputs.py its element size
        (manifest codegen.input_alignment). Any other is copied into a tensor kept for that
        input. A new tensor per call (its pages faulted in anew each time) cost MobileNetV2
        2-4% of its latency in A/B runs against onnxruntime. The copy goes through numpy's
        view of that tensor: Tensor.copyfrom added 0.17 ms to MobileNetV2's 4.0 ms call where
        np.copyto of the same 600 KB added 0.08 (A/B in one process).
        """
        import tvm
        import tvm_ffi

        if self.device != "cpu":  # the kernels read device memory: one copy there per call
            return tvm.runtime.tensor(arr, device=self._dev)
        need = self._alignment[i] if i < len(self._alignment) else ALIGNED
        if arr.ctypes.data % need == 0 and arr.flags.writeable:
            return tvm_ffi.from_dlpack(arr, require_alignment=need, require_contiguous=True)
        if self._staging[i] is None:
            tensor = tvm.runtime.empty(arr.shape, str(arr.dtype))
            self._staging[i] = (tensor, np.from_dlpack(tensor))
        tensor, view = self._staging[i]
        np.copyto(view, arr)
        return tensor

    def _arrange(self, args: tuple, kwargs: dict) -> list[np.ndarray]:
        names = [s["name"] for s in self.inputs]
        if len(args) > len(names):
            raise EdgecError(f"model takes {len(names)} inputs ({', '.join(names)}), "
                             f"got {len(args)}")
        given = dict(zip(names, args))
        for key, value in kwargs.items():
            if key not in names:
                raise EdgecError(f"unknown input '{key}'; the model's inputs: {', '.join(names)}")
            given[key] = value
        arrays = []
        for spec in self.inputs:
            if spec["name"] not in given:
                raise EdgecError(f"missing input '{spec['name']}'")
            arr = np.asarray(given[spec["name"]])
            if list(arr.shape) != list(spec["shape"]):
                raise EdgecError(f"input '{spec['name']}' has shape {list(arr.shape)}; the "
                                 f"model was compiled for {spec['shape']}")
            if arr.dtype != np.dtype(spec["dtype"]):
                raise EdgecError(f"input '{spec['name']}' has dtype {arr.dtype}; the model "
                                 f"takes {spec['dtype']}")
            arrays.append(np.ascontiguousarray(arr))
        return arrays

    def profile(self, feed: dict[str, np.ndarray], runs: int = 10) -> dict[str, list[float]]:
        """Milliseconds per kernel call over `runs` calls, keyed by kernel name."""
        return kernel_times(self._vm, lambda: self(**feed), runs)

    def __call__(self, *args: np.ndarray, **kwargs: np.ndarray) -> dict[str, np.ndarray]:
        arrays = self._arrange(args, kwargs)
        result = self._main(*[self._tensor(i, a) for i, a in enumerate(arrays)])
        results = [result] if hasattr(result, "numpy") else list(result)
        return {spec["name"]: _to_numpy(r) for spec, r in zip(self.outputs, results)}


def _to_numpy(tensor: Any) -> np.ndarray:
    """A copy of an output tensor (the VM may reuse its storage on the next call), through
    numpy's DLPack view: Tensor.numpy() added 0.12 ms to MobileNetV2's 4.0 ms call, the view
    and copy 0.02 ms (A/B in one process, 2 threads)."""
    try:
        return np.from_dlpack(tensor).copy()
    except (BufferError, TypeError, RuntimeError):  # a dtype numpy's DLPack does not take
        return tensor.numpy()


def device_of(manifest: dict[str, Any]) -> str:
    """The device an artifact's kernels run on (manifest target.device; artifacts written
    before the field existed are CPU ones), checked to exist on this machine."""
    from edgec.targets import device_present

    device = manifest["target"].get("device", "cpu")
    if device not in DEVICES:
        raise EdgecError(f"artifact is for device '{device}', which this runtime does not know "
                         f"({', '.join(DEVICES)})")
    if not device_present(device):
        raise EdgecError(f"artifact runs on {device}, and this machine has no {device} device "
                         "TVM can open")
    return device


def speed_note(manifest: dict[str, Any]) -> str:
    """What latency measured here of an artifact is, where it is not the device's speed: an
    OpenCL artifact on a CPU OpenCL device (PoCL) says so; "" otherwise."""
    if manifest["target"].get("device") != "opencl":
        return ""
    from .opencl import speed_note as opencl_note

    return opencl_note()


def load(folder: str | Path, *, threads: int | None = None) -> CompiledModel:
    """Load an artifact folder written by `edgec compile` for this machine."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    verify_library(folder, manifest)
    check_runs_here(manifest)
    threads = threads or manifest["target"].get("threads") or os.cpu_count() or 1
    set_threads(threads)
    return CompiledModel(folder, manifest, threads)


def run_files(folder: str | Path, *, input_files: dict[str, str] | None = None,
              output: str | Path | None = None, seed: int = 0, threads: int | None = None,
              device: str | None = None, repeat: int = 0,
              warmup: int = 1) -> tuple[dict[str, np.ndarray], dict[str, Any] | None]:
    """`edgec run`: inputs from .npy files (seeded random where none), outputs to an .npz.

    `input_files` is keyed by input name or its file stem (runtime.artifact.file_stem: the
    only form a name holding '=' can take on the command line); the .npz is keyed by the
    output names themselves.

    Without `device` the artifact runs here, in this process; with one (qemu, local,
    ssh://...) its bundle runs there through run.sh. Returns the outputs and, with `repeat`,
    the latency statistics ("emulated": true under qemu).
    """
    manifest = read_manifest(Path(folder))
    feed = random_inputs(manifest["inputs"], seed) if not input_files else {}
    for key, path in (input_files or {}).items():
        name = spec_name(manifest["inputs"], key)
        try:
            feed[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise EdgecError(f"cannot read input '{name}' from {path}: {err}") from None
    latency = None
    if device:
        from .device import run_bundle

        result = run_bundle(folder, device=device, feed=feed, repeat=repeat, warmup=warmup,
                            threads=threads)
        outputs, latency = result.outputs, result.latency
        if latency is not None:
            latency["device"] = result.device
            latency["emulated"] = result.emulated
    else:
        model = load(folder, threads=threads)
        outputs = model(**feed)
        if repeat:
            import time

            for _ in range(warmup):
                model(**feed)
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                model(**feed)
                times.append((time.perf_counter() - t0) * 1e3)
            latency = {"runs": repeat, "median_ms": float(np.median(times)),
                       "min_ms": min(times), "max_ms": max(times), "threads": model.threads,
                       "device": "this machine (Python)", "emulated": False}
    if output is not None:
        from edgec.fileio import atomic_write_bytes

        atomic_write_bytes(Path(output), npz_bytes(outputs))
    return outputs, latency
