"""edgec's OpenCL runtime for TVM: libedgec_opencl.so, built from runtime/device/opencl*.

TVM 0.27's wheel compiles models for OpenCL but cannot run them: its runtime has no OpenCL
device API and no loader for the kernels an exported artifact carries. Our C++ library adds
both ("device_api.opencl" and "ffi.Module.load_from_bytes.opencl"); it opens the OpenCL ICD
with dlopen when first used, so it links against nothing but TVM's runtime, libc and
libstdc++, and the same file runs on a machine with PoCL, a desktop GPU or a phone.

    ensure_loaded()                       # once per process, after `import tvm`
    lib = tvm.runtime.load_module("model.so")
    vm = relax.VirtualMachine(lib, tvm.opencl(0))

`library(arch)` builds the library for this machine (g++) or for aarch64 boards
(aarch64-linux-gnu-g++ against the aarch64 TVM wheels' runtime), cached by its sources,
compiler and TVM libraries like edgec's other programs.
"""

from __future__ import annotations

import ctypes
import importlib.util
import shutil
from pathlib import Path

from edgec import targets
from edgec.errors import EdgecError

from .artifact import sha256_file
from .bundle import cache_dir, cached_program, runtime_libs

SOURCE_DIR = Path(__file__).resolve().parent / "device"
SOURCES = ("opencl.cc", "opencl_device_api.cc", "opencl_module.cc")
HEADERS = ("opencl_api.h", "opencl_workspace.h", "opencl_launch.h")
NAME = "libedgec_opencl.so"
CL_HEADERS = Path("/usr/include/CL")  # Debian's opencl-c-headers; arch-independent
CROSS = {"aarch64": ("aarch64-linux-gnu-g++", "rpi5")}  # arch -> (compiler, target for libs)

_loaded = False


def _package_include(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EdgecError(f"the {package} package is not installed")
    return Path(spec.submodule_search_locations[0]) / "include"


def _cl_include() -> Path:
    """A folder holding only CL/ (a link to the system's OpenCL headers), so a cross compiler
    gets the headers without all of /usr/include, whose other headers are the host's."""
    if not (CL_HEADERS / "cl.h").is_file():
        raise EdgecError(f"OpenCL headers not found in {CL_HEADERS}: install opencl-c-headers")
    folder = cache_dir() / "opencl-include"
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "CL"
    if not link.exists():
        try:
            link.symlink_to(CL_HEADERS, target_is_directory=True)
        except FileExistsError:  # another process made it meanwhile
            pass
    return folder


def _toolchain(arch: str) -> tuple[str, dict[str, Path]]:
    """The compiler and the TVM runtime libraries (name -> path) to build for `arch`."""
    if arch == targets.host_arch():
        return "g++", runtime_libs(targets.get("host"))
    if arch not in CROSS:
        raise EdgecError(f"no OpenCL runtime build for {arch}: this machine builds for "
                         f"{', '.join(sorted({targets.host_arch(), *CROSS}))}")
    compiler, target = CROSS[arch]
    if shutil.which(compiler) is None:
        raise EdgecError(f"{compiler} not found: install g++-{arch.replace('_', '-')}-linux-gnu")
    return compiler, runtime_libs(targets.get(target))


def library(arch: str | None = None) -> Path:
    """Path to libedgec_opencl.so for `arch` (this machine's by default), built once and
    cached by its sources, compiler and TVM libraries; EdgecError when the build fails."""
    arch = arch or targets.host_arch()
    compiler, libs = _toolchain(arch)
    includes = [_package_include("tvm"), _package_include("tvm_ffi"), _cl_include()]
    files = [SOURCE_DIR / name for name in (*SOURCES, *HEADERS)] + [CL_HEADERS / "cl.h"]
    key = b"".join(p.name.encode() + p.read_bytes() for p in files)
    key += (compiler + arch + "".join(sha256_file(p) for p in libs.values())).encode()
    lib_dirs = sorted({str(p.parent) for p in libs.values()})
    return cached_program(NAME, key, lambda out: [
        compiler, "-std=c++17", "-O2", "-shared", "-fPIC", *[f"-I{d}" for d in includes],
        *[str(SOURCE_DIR / s) for s in SOURCES], "-o", str(out),
        *[f"-L{d}" for d in lib_dirs], "-Wl,--no-as-needed", "-ltvm_runtime", "-ltvm_ffi",
        "-ldl", "-Wl,-rpath,$ORIGIN"])


def ensure_loaded() -> None:
    """Make TVM in this process run OpenCL: load libedgec_opencl.so (once) into the global
    symbol scope, then check that an OpenCL platform with a device exists. EdgecError with
    one line when the library cannot be built or loaded, or no device exists."""
    global _loaded
    if _loaded:
        return
    import tvm

    path = library()
    try:
        ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
    except OSError as err:
        raise EdgecError(f"cannot load {NAME} ({err})") from None
    status = str(tvm.get_global_func("edgec.opencl.status")())
    if status:
        raise EdgecError(status)
    _loaded = True


def describe() -> str:
    """The OpenCL platform and devices edgec's runtime uses ("platform | name (kind) | ...",
    kind: cpu, gpu or other)."""
    ensure_loaded()
    import tvm

    return str(tvm.get_global_func("edgec.opencl.describe")())



def speed_note() -> str:
    """What a latency measured on this machine's OpenCL device is: "" on a GPU, else a label
    saying it is not GPU speed (PoCL runs the kernels on the CPU)."""
    platform, *devices = describe().split(" | ")
    if devices and devices[0].endswith("(gpu)"):
        return ""
    if "Portable Computing Language" in platform:
        return "OpenCL on CPU (PoCL): not GPU speed"
    return f"OpenCL on {devices[0] if devices else platform}, not a GPU: not GPU speed"
