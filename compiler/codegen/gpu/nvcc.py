"""CUDA kernels compiled to machine code at build time, with or without a GPU here.

TVM's CUDA codegen hands the kernels' CUDA C to the global function
`tvm_callback_cuda_compile` only when TVM's CUDA runtime library (libtvm_runtime_cuda.so) is
loaded; otherwise it exports the source for the device to compile at load time. That library
links the CUDA driver (libcuda.so.1), so on a machine without one `cuda_runtime()` first loads
edgec's stand-in driver (libcuda_standin.c, built once with the host's C compiler and cached).

`compile_callback()` registers edgec's callback: nvcc (from $CUDA_PATH, /usr/local/cuda or
PATH) compiles the source into a fatbin holding the machine code of the TVM target's `arch`
only (no PTX: nothing is compiled on the device). The last sources it compiled are kept in
`SOURCES` for the checks and tests that read them.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from edgec.errors import EdgecError

STANDIN_SRC = Path(__file__).resolve().parent / "libcuda_standin.c"
SOURCES: list[str] = []  # CUDA C of the modules compiled since the callback was registered


def _cache() -> Path:
    return Path(os.environ.get("EDGEC_CACHE") or Path.home() / ".cache" / "edgec")


def _standin() -> Path:
    """The stand-in libcuda.so.1, built once per source (cached by its hash)."""
    digest = hashlib.sha256(STANDIN_SRC.read_bytes()).hexdigest()[:16]
    out = _cache() / "cuda-standin" / digest / "libcuda.so.1"
    if out.is_file():
        return out
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise EdgecError("no C compiler (cc) to build the CUDA driver stand-in for a GPU build "
                         "on a machine without a CUDA driver; install gcc")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    done = subprocess.run([cc, "-shared", "-fPIC", "-O1", "-Wl,-soname,libcuda.so.1",
                           str(STANDIN_SRC), "-o", str(tmp)], capture_output=True, text=True)
    if done.returncode != 0:
        raise EdgecError(f"building the CUDA driver stand-in failed: {done.stderr[:300]}")
    tmp.replace(out)
    return out


def cuda_runtime() -> str:
    """Load TVM's CUDA runtime library if `import tvm` did not; returns which driver backs it:
    "driver" (a real libcuda.so.1) or "stand-in" (edgec's, for building only)."""
    import tvm
    from tvm.base import _LOADED_LIBS

    try:
        ctypes.CDLL("libcuda.so.1", mode=ctypes.RTLD_GLOBAL)
        driver = "driver"
    except OSError:
        driver = ""
    if "tvm_runtime_cuda" in _LOADED_LIBS:
        return driver or "stand-in"
    if not driver:
        ctypes.CDLL(str(_standin()), mode=ctypes.RTLD_GLOBAL)
    library = Path(tvm.__file__).resolve().parent / "lib" / "libtvm_runtime_cuda.so"
    try:
        _LOADED_LIBS["tvm_runtime_cuda"] = ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
    except OSError as err:
        raise EdgecError(f"TVM's CUDA runtime library does not load ({err}); a CUDA build needs "
                         "the CUDA 13 runtime (libcudart.so.13)") from None
    return driver or "stand-in"


def find_nvcc() -> str:
    """nvcc of $CUDA_PATH, else /usr/local/cuda, else PATH."""
    for root in (os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and (Path(root) / "bin" / "nvcc").is_file():
            return str(Path(root) / "bin" / "nvcc")
    found = shutil.which("nvcc")
    if found is None:
        raise EdgecError("nvcc not found (set CUDA_PATH to a CUDA 13 toolkit); a CUDA build "
                         "compiles its kernels with nvcc")
    return found


def nvcc_fatbin(code: str, arch: str) -> bytes:
    """`code` (CUDA C) compiled by nvcc into a fatbin of `arch`'s (sm_XY) machine code."""
    if not arch.startswith("sm_"):
        raise EdgecError(f"CUDA target arch '{arch}' is not sm_XY; name the GPU's architecture")
    number = arch[3:]
    with tempfile.TemporaryDirectory(prefix="edgec-nvcc-") as tmp:
        src, out = Path(tmp) / "kernels.cu", Path(tmp) / "kernels.fatbin"
        src.write_text(code)
        cmd = [find_nvcc(), "--fatbin", "-O3", f"-gencode=arch=compute_{number},code=sm_{number}",
               "-o", str(out), str(src)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            first = next((ln for ln in done.stderr.splitlines() if "error" in ln),
                         done.stderr.strip()[:300])
            raise EdgecError(f"nvcc failed for {arch}: {first[:300]}")
        return out.read_bytes()


def compile_callback() -> None:
    """Register edgec's nvcc as TVM's CUDA compile callback (after TVM's own, which it
    replaces); the arch is the current TVM target's."""
    import tvm
    import tvm.support.nvcc  # noqa: F401  (registers TVM's callback first, so ours stays)
    import tvm_ffi

    def compile_cuda(code: Any, *_: Any) -> bytearray:
        target = tvm.target.Target.current(allow_none=True)
        arch = str(target.attrs.get("arch", "")) if target is not None else ""
        SOURCES.append(str(code))
        del SOURCES[:-8]
        return bytearray(nvcc_fatbin(str(code), arch))

    tvm_ffi.register_global_func("tvm_callback_cuda_compile", compile_cuda, override=True)
