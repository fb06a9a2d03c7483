"""edgec's OpenCL runtime for TVM: libedgec_opencl.so, built from runtime/device/opencl*.

TVM 0.27's wheel compiles models for OpenCL but cannot run them: its runtime has no OpenCL
device API and no loader for the kernels an exported artifact carries. Our C++ library adds
both ("device_api.opencl" and "ffi.Module.load_from_bytes.opencl"); it opens the OpenCL ICD
with dlopen when first used, so it links against nothing but TVM's runtime, libc and
libstdc++, and the same file runs on a machine with PoCL, a desktop GPU or a phone.

    ensure_loaded()                       # once per process, after `import tvm`
    lib = tvm.runtime.load_module("model.so")
    vm = relax.VirtualMachine(lib, tvm.opencl(0))

`library(target)` builds the library with the target's compiler against its TVM runtime
libraries (this machine's, or the aarch64 wheels' for a board), cached like edgec's other
programs (bundle.build_against_tvm).
"""

from __future__ import annotations

import ctypes
from pathlib import Path

from edgec import targets
from edgec.errors import EdgecError
from edgec.targets import Target

from .bundle import build_against_tvm, cache_dir, include_dir

SOURCE_DIR = Path(__file__).resolve().parent / "device"
SOURCES = ("opencl.cc", "opencl_device_api.cc", "opencl_module.cc")
HEADERS = ("opencl_api.h", "opencl_workspace.h", "opencl_launch.h")
NAME = "libedgec_opencl.so"
CL_HEADERS = Path("/usr/include/CL")  # Debian's opencl-c-headers; arch-independent

_loaded: bool | EdgecError = False  # True, or the error the first attempt raised


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


def library(target: Target | None = None, cc: str | None = None) -> Path:
    """Path to libedgec_opencl.so built with `target`'s compiler (`cc` overrides it) against
    its TVM runtime libraries (this machine's `host` target by default), cached by its sources,
    compiler and those libraries; EdgecError when the build fails."""
    return build_against_tvm(
        NAME, target or targets.get("host"), [SOURCE_DIR / name for name in SOURCES],
        depends=[SOURCE_DIR / name for name in (*SOURCES, *HEADERS)] + [CL_HEADERS / "cl.h"],
        includes=[include_dir("tvm"), include_dir("tvm_ffi"), _cl_include()], rpath="$ORIGIN",
        cc=cc, shared=True)


def ensure_loaded() -> None:
    """Make TVM in this process run OpenCL: load libedgec_opencl.so (once) into the global
    symbol scope, then check that an OpenCL platform with a device exists. EdgecError with
    one line when the library cannot be built or loaded, or no device exists; the answer is
    kept for the process (a failed build is not retried on every device check)."""
    global _loaded
    if isinstance(_loaded, EdgecError):
        raise _loaded
    if _loaded:
        return
    try:
        _load()
    except EdgecError as err:
        _loaded = err
        raise
    _loaded = True


def _load() -> None:
    import tvm

    path = library()
    try:
        ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
    except OSError as err:
        raise EdgecError(f"cannot load {NAME} ({err})") from None
    status = str(tvm.get_global_func("edgec.opencl.status")())
    if status:
        raise EdgecError(status)


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
