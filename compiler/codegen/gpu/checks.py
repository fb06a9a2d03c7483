"""What a GPU build must be: every kernel on the GPU, its machine code in the library.

`host_kernels(lowered)`: the kernels (PrimFuncs) of a lowered module with no GPU thread
binding. TVM compiles such a kernel for the host CPU without a word (a GPU build whose
schedules were left out has no CUDA kernel at all); `check_lowered` makes that an EdgecError
naming them. Functions TVM always keeps on the host (attribute `*.is_host_func`: the VM's shape
functions) are not kernels.

`fatbin_entries(data)`: the (kind, arch) of each entry of every CUDA fatbin inside a file
(kind "elf": machine code, "ptx": PTX, which the driver compiles at load). `check_library`
fails the build unless the exported library holds machine code for the target's arch and no
CUDA C source (the export TVM makes when its CUDA runtime library was not loaded).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from edgec.errors import EdgecError

FATBIN_MAGIC = 0xBA55ED50
_KINDS = {1: "ptx", 2: "elf"}
SOURCE_MARKS = (b'extern "C" __global__', b"__global__ void")  # CUDA C, as TVM writes it


def _bound(func: Any) -> bool:
    """Whether any loop of `func` is bound to a GPU thread axis (blockIdx/threadIdx), as its
    TVMScript shows."""
    text = func.script()
    return any(axis in text for axis in ('"blockIdx.', '"threadIdx.'))


def host_kernels(lowered: Any) -> list[str]:
    """Names of the kernels of `lowered` that no GPU thread runs (they would run on the host)."""
    from tvm import tirx

    names = []
    for gv, func in lowered.functions.items():
        if not isinstance(func, tirx.PrimFunc):
            continue
        attrs = dict(func.attrs) if func.attrs else {}
        if any(key.endswith("is_host_func") and bool(v) for key, v in attrs.items()):
            continue
        if not _bound(func):
            names.append(gv.name_hint)
    return sorted(names)


def check_lowered(lowered: Any) -> None:
    """An EdgecError naming the kernels a GPU build would silently run on the host CPU."""
    names = host_kernels(lowered)
    if names:
        shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
        raise EdgecError(f"{len(names)} kernel(s) have no GPU schedule and would run on the "
                         f"host CPU: {shown}")


def fatbin_entries(data: bytes) -> list[tuple[str, str]]:
    """(kind, sm_XY) of each entry of each fatbin in `data`, in file order."""
    entries = []
    magic = struct.pack("<I", FATBIN_MAGIC)
    at = data.find(magic)
    while at >= 0 and at + 16 <= len(data):
        _, _, header, size = struct.unpack_from("<IHHQ", data, at)
        pos, end = at + header, min(at + header + size, len(data))
        while pos + 32 <= end:
            kind, _, entry_header, payload = struct.unpack_from("<HHIQ", data, pos)
            (sm,) = struct.unpack_from("<I", data, pos + 28)
            if entry_header == 0:
                break
            entries.append((_KINDS.get(kind, f"kind{kind}"), f"sm_{sm}"))
            pos += entry_header + payload
        at = data.find(magic, max(end, at + 4))
    return entries


def check_library(path: Path, arch: str) -> list[tuple[str, str]]:
    """The fatbin entries of an exported library; an EdgecError unless it holds `arch`'s
    machine code and no CUDA C source."""
    data = Path(path).read_bytes()
    if any(mark in data for mark in SOURCE_MARKS):
        raise EdgecError(f"{Path(path).name} holds CUDA C source, to be compiled on the device "
                         "at load time (TVM's CUDA runtime library was not loaded at build "
                         "time); no artifact written")
    entries = fatbin_entries(data)
    if ("elf", arch) not in entries:
        found = ", ".join(f"{k} {a}" for k, a in entries) or "no fatbin"
        raise EdgecError(f"{Path(path).name} holds no {arch} machine code ({found}); no "
                         "artifact written")
    return entries


class _Stream:
    """A reader of the little-endian stream TVM serializes device modules in (strings and
    vectors as a uint64 count, then the items)."""

    def __init__(self, data: bytes, at: int = 0):
        self.data, self.at = data, at

    def u64(self) -> int:
        (value,) = struct.unpack_from("<Q", self.data, self.at)
        self.at += 8
        return value

    def raw(self, size: int) -> bytes:
        if self.at + size > len(self.data):
            raise ValueError("truncated")
        chunk = self.data[self.at:self.at + size]
        self.at += size
        return chunk

    def string(self) -> str:
        return self.raw(self.u64()).decode()


def opencl_module(data: bytes) -> tuple[dict[str, list[str]], str]:
    """The OpenCL module TVM's export embeds in a library (kind "opencl" in its import blob):
    each kernel's launch tags (blockIdx/threadIdx axes) by name, and the OpenCL C source.

    The module's bytes are: format ("cl"), the function table (name; argument types, 4 bytes
    each; launch tags; one int32 tag per argument), the source. ValueError where none is found.
    """
    at = data.find(struct.pack("<Q", 6) + b"opencl")
    if at < 0:
        raise ValueError("no OpenCL module")
    stream = _Stream(data, at + 14)
    stream.u64()  # the module's size in bytes
    if stream.string() != "cl":
        raise ValueError("OpenCL module not in source form")
    kernels = {}
    for _ in range(stream.u64()):
        stream.string()  # the table's key: the kernel's name again
        name = stream.string()
        stream.raw(4 * stream.u64())
        kernels[name] = [stream.string() for _ in range(stream.u64())]
        stream.raw(4 * stream.u64())
    return kernels, stream.string()


def check_opencl_library(path: Path) -> dict[str, list[str]]:
    """The kernels of an exported OpenCL library (name -> launch tags); an EdgecError unless
    it holds an OpenCL module whose source defines every kernel of its table, with buffers only
    (edgec's OpenCL runtime does not take image (texture) arguments)."""
    try:
        kernels, source = opencl_module(Path(path).read_bytes())
    except (ValueError, struct.error, UnicodeDecodeError) as err:
        raise EdgecError(f"{Path(path).name} holds no readable OpenCL module ({err}); no "
                         "artifact written") from None
    missing = [n for n in kernels if f"__kernel void {n}(" not in source]
    if missing or not kernels:
        raise EdgecError(f"{Path(path).name}: OpenCL kernels without source: "
                         f"{', '.join(missing) or 'none at all'}; no artifact written")
    if "image2d_t" in source:
        raise EdgecError(f"{Path(path).name}: kernels take OpenCL images (textures), which "
                         "edgec's OpenCL runtime does not run; no artifact written")
    return kernels
