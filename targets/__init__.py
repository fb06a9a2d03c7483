"""Targets are data: one TOML file each, read here into a `Target`.

A file names the TVM target dict (`[tvm]`), the C++ compiler that links the artifact
(`[toolchain] cc`), the CPU architecture the artifact runs on, the device its kernels run on
(`device`: one of DEVICES, "cpu" by default) and the default thread count.

`[deploy]` says where the bundle's TVM runtime libraries come from (`wheel_platform`: a PyPI
platform tag, or "installed" for this machine's) and how to emulate the target here
(`emulator`, e.g. qemu-aarch64). `self_contained = true` makes the bundle carry the C
library's loader and the C/C++ libraries its programs need, from the compiler's sysroot, and
start its programs through that loader: it then uses nothing of the device's system libraries
(a glibc bundle runs on Android; runtime/selfcontained.py).

Two placeholders keep host-specific facts out of the files: the value "detect" (for `arch`,
`tvm.mtriple`, `tvm.mcpu`, the same in a GPU target's `[tvm.host]`, and a CUDA target's
`tvm.arch`) is replaced by what this machine is, and `{ENV_VAR}` in `cc` by the environment
variable (a clear error when unset). A CUDA `tvm.arch` of "detect" is the compute capability
nvidia-smi reports for GPU 0, or GPU_ARCH_WITHOUT_GPU where there is none.

The CPU models the schedule rules read (vector width and registers, L1D and L2 sizes, FMA
latency and pipes; compiler/codegen/cpu/shape.py) are data too: cpu/models.toml, picked by
what the TVM target is (cpu_model).

Users add targets without touching code: drop `NAME.toml` into a folder listed in
EDGEC_TARGET_PATH (os.pathsep-separated) or ~/.config/edgec/targets, or pass the file's path
as the target name. User files win over the built-in ones of the same name.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomllib

from edgec.errors import EdgecError

BUILTIN_DIR = Path(__file__).resolve().parent
_ENV_REF = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ARCH_ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}
DEVICES = ("cpu", "opencl", "cuda")  # TVM device names the runtime opens (tvm.device(name))
GPU_ARCH_WITHOUT_GPU = "sm_75"  # the oldest architecture nvcc 13 compiles for


@dataclass(frozen=True)
class Target:
    """One deployment target, as read from its TOML file (placeholders resolved)."""

    name: str
    description: str
    arch: str
    threads: int
    tvm: dict[str, Any]
    cc: str | None
    source: Path
    pipeline: str = "cpu"
    cpu_detected: bool = False
    wheel_platform: str | None = None
    emulator: tuple[str, ...] = ()
    device: str = "cpu"
    proxy_cpu: str = ""  # the emulator's model of the board's core (runtime/icount.py)
    self_contained: bool = False  # the bundle carries its loader and C/C++ libraries

    def tvm_target(self) -> Any:
        """The `tvm.target.Target` for codegen (TVM is imported only here)."""
        import tvm

        spec = dict(self.tvm)
        if spec.get("kind") == "llvm" and "num-cores" not in spec:
            spec["num-cores"] = self.effective_threads()
        return tvm.target.Target(spec)

    def effective_threads(self) -> int:
        return self.threads if self.threads > 0 else (os.cpu_count() or 1)

    def compiler(self, override: str | None = None) -> str:
        """The C++ compiler that links the artifact: `override`, else the file's `cc`."""
        cc = override or self.cc
        if not cc:
            raise EdgecError(f"target '{self.name}' names no compiler; pass --cc PATH")
        missing = [v for v in _ENV_REF.findall(cc) if not os.environ.get(v)]
        if missing:
            raise EdgecError(
                f"target '{self.name}' needs ${missing[0]} for its compiler ({cc}); "
                f"set {missing[0]} or pass --cc PATH"
            )
        cc = _ENV_REF.sub(lambda m: os.environ[m.group(1)], cc)
        if shutil.which(cc) is None:
            hint = ("install g++-aarch64-linux-gnu" if "aarch64-linux-gnu" in cc
                    else "pass --cc PATH")
            raise EdgecError(f"compiler '{cc}' for target '{self.name}' not found; {hint}")
        return cc

    def runs_here(self) -> bool:
        """This machine's CPU is the target's, and its device (a GPU) is present here."""
        return self.arch == host_arch() and device_present(self.device)


def device_present(device: str) -> bool:
    """Whether TVM can open `device` here (the CPU always; a GPU where its runtime loads).
    OpenCL runs on edgec's own runtime (runtime/opencl.py), loaded here on first ask."""
    if device == "cpu":
        return True
    import tvm

    try:
        if device == "opencl":
            from edgec.runtime.opencl import ensure_loaded

            ensure_loaded()
        return bool(tvm.device(device).exist)
    except Exception:  # the device's runtime library is absent or failed to load
        return False


def host_arch() -> str:
    machine = platform.machine().lower()
    return _ARCH_ALIASES.get(machine, machine)


def _detect(key: str) -> str:
    if key in ("arch",):
        return host_arch()
    if key == "mtriple":
        return f"{host_arch()}-linux-gnu"
    if key == "mcpu":
        from tvm.target import codegen

        return str(codegen.llvm_get_system_cpu())
    if key == "gpu_arch":
        return _gpu_arch()
    raise EdgecError(f"'detect' is not allowed for '{key}'")


def _gpu_arch() -> str:
    """sm_XY of GPU 0 as nvidia-smi reports it; GPU_ARCH_WITHOUT_GPU where there is none."""
    import subprocess

    smi = shutil.which("nvidia-smi")
    if smi is None:
        return GPU_ARCH_WITHOUT_GPU
    done = subprocess.run([smi, "--query-gpu=compute_cap", "--format=csv,noheader"],
                          capture_output=True, text=True)
    first = (done.stdout.split() or [""])[0] if done.returncode == 0 else ""
    return "sm_" + first.replace(".", "") if re.fullmatch(r"\d+\.\d+", first) \
        else GPU_ARCH_WITHOUT_GPU


def _resolve_tvm(spec: dict[str, Any]) -> dict[str, Any]:
    """A [tvm] table with its "detect" values resolved, its [tvm.host] table too."""
    spec = dict(spec)
    for key in ("mtriple", "mcpu"):
        if spec.get(key) == "detect":
            spec[key] = _detect(key)
    if spec.get("kind") == "cuda" and spec.get("arch") == "detect":
        spec["arch"] = _detect("gpu_arch")
    if isinstance(spec.get("host"), dict):
        spec["host"] = _resolve_tvm(spec["host"])
    return spec


def search_path() -> list[Path]:
    """Folders searched for NAME.toml, user folders first, the built-in ones last."""
    dirs = [Path(p) for p in os.environ.get("EDGEC_TARGET_PATH", "").split(os.pathsep) if p]
    dirs.append(Path.home() / ".config" / "edgec" / "targets")
    dirs.append(BUILTIN_DIR)
    return dirs


def _read(path: Path) -> Target:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise EdgecError(f"cannot read target file {path}: {err}") from None
    tvm_spec = dict(data.get("tvm") or {})
    if "kind" not in tvm_spec:
        raise EdgecError(f"target file {path} has no [tvm] kind")
    tvm_spec = _resolve_tvm(tvm_spec)
    arch = data.get("arch", "detect")
    arch = _detect("arch") if arch == "detect" else arch
    cc = (data.get("toolchain") or {}).get("cc")
    device = str(data.get("device", "cpu"))
    if device not in DEVICES:
        raise EdgecError(f"target file {path}: device '{device}' is not one of "
                         f"{', '.join(DEVICES)}")
    cpu_detected = (data.get("tvm") or {}).get("mcpu") == "detect"
    return Target(
        name=path.stem,
        description=str(data.get("description", "")),
        arch=arch,
        threads=int(data.get("threads", 0)),
        tvm=tvm_spec,
        cc=cc,
        source=path,
        pipeline=str(data.get("pipeline", "cpu")),
        cpu_detected=cpu_detected,
        wheel_platform=(data.get("deploy") or {}).get("wheel_platform"),
        emulator=tuple((data.get("deploy") or {}).get("emulator", ())),
        device=device,
        proxy_cpu=str((data.get("deploy") or {}).get("proxy_cpu", "")),
        self_contained=bool((data.get("deploy") or {}).get("self_contained", False)),
    )


def available() -> dict[str, Path]:
    """Every target name visible now, mapped to the file that defines it."""
    found: dict[str, Path] = {}
    for folder in reversed(search_path()):
        if folder.is_dir():
            for path in sorted(folder.glob("*.toml")):
                found[path.stem] = path
    return dict(sorted(found.items()))


def get(name: str) -> Target:
    """A target by name (`arm`, `rpi4`, ...) or by the path of a TOML file."""
    if name.endswith(".toml") or os.sep in name:
        path = Path(name)
        if not path.is_file():
            raise EdgecError(f"target file {name} not found")
        return _read(path)
    files = available()
    if name not in files:
        raise EdgecError(f"unknown target '{name}'; known: {', '.join(files)} "
                         "(see `edgec targets`)")
    return _read(files[name])


def describe_all() -> list[dict[str, str]]:
    """Rows for `edgec targets`: name, triple, cpu, features, threads, compiler, file."""
    rows = []
    for name, path in available().items():
        t = _read(path)
        cpu = t.tvm.get("host") or t.tvm  # a GPU target's host code is the CPU's
        rows.append(
            {
                "name": name,
                "triple": str(cpu.get("mtriple", "")),
                "cpu": str(cpu.get("mcpu", "generic")),
                "features": ",".join(cpu.get("mattr", [])) or "-",
                "threads": str(t.threads or "all"),
                "cc": t.cc or "-",
                "description": t.description,
            }
        )
    return rows


@dataclass(frozen=True)
class CpuModel:
    """One entry of cpu/models.toml: when it applies (`match`) and what the CPU is."""

    name: str
    match: dict[str, Any]
    vector_bits: int
    vector_registers: int  # architectural SIMD registers
    operand_registers: int  # ... of which a tile leaves this many to its inputs and weights
    l1d_kib: int  # L1 data cache per core
    l2_kib: int  # L2 cache a core's tiles may count on
    fma_latency: int  # cycles from a vector FMA to the next FMA into the same accumulator
    fma_pipes: int  # vector FMAs issued per cycle
    live: int
    pointwise: bool
    columns: bool
    int8_activation: str = "int8"  # the activation dtype of int8 convs (uint8 or int8)
    int8_dot: str = ""  # int8 dot-product instruction (cpu/int8.py INSTRUCTIONS), "" where none


def cpu_models() -> list[CpuModel]:
    """The CPU models of cpu/models.toml, in file order (the order they are matched in)."""
    data = tomllib.loads((BUILTIN_DIR / "cpu" / "models.toml").read_text())
    return [CpuModel(name=name, **entry) for name, entry in data.items()]


def cpu_model(tvm_target: Any) -> CpuModel:
    """The first CPU model whose match the TVM target satisfies: mtriple prefix, mcpu (any
    of), features (all of, as LLVM names them: the target's mcpu and mattr imply them)."""
    from tvm.target.codegen import target_has_features

    triple = str(tvm_target.attrs.get("mtriple", ""))
    mcpu = str(tvm_target.attrs.get("mcpu", ""))
    for model in cpu_models():
        m = model.match
        if triple.startswith(m.get("mtriple", "")) \
                and (not m.get("mcpu") or mcpu in m["mcpu"]) \
                and all(target_has_features(f, tvm_target) for f in m.get("features", [])):
            return model
    raise EdgecError(f"no CPU model in {BUILTIN_DIR / 'cpu' / 'models.toml'} matches "
                     f"mtriple '{triple}' (the file should end in a catch-all entry)")
