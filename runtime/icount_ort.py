"""onnxruntime's guest instructions per inference under the same qemu CPU as an edgec bundle
(runtime/icount.py): the other side of the ARM proxy's ratio.

onnxruntime's aarch64 wheel from PyPI (the version installed here) holds its C library;
`device/ort_count.cc`, cross-built with the target's compiler, loads it and runs the bundle's
model.onnx (all graph optimizations, one intra-op thread) on a fixed input pattern. onnxruntime
reads /proc/cpuinfo at load, and qemu-user shows the host's: the count runs in a private mount
namespace (`unshare`) whose /proc/cpuinfo is the proxy CPU's (targets/cpu/proxy_cpus.toml).
Both are cached under edgec's cache folder.
"""

from __future__ import annotations

import os
from importlib.metadata import version
from pathlib import Path
from typing import Any

import tomllib

from edgec.errors import EdgecError

SOURCE = Path(__file__).parent / "device" / "ort_count.cc"
PROXY_CPUS = Path(__file__).resolve().parent.parent / "targets" / "cpu" / "proxy_cpus.toml"
WHEEL_PLATFORM = "manylinux_2_28_aarch64"


def library() -> Path:
    """libonnxruntime.so of onnxruntime's aarch64 wheel, fetched once with pip."""
    from .bundle import RECORD, cache_dir, fetch_from_wheels

    ver = version("onnxruntime")
    folder = cache_dir() / "onnxruntime" / f"{WHEEL_PLATFORM}-{ver}"
    if not (folder / RECORD).is_file():
        fetch_from_wheels(folder, WHEEL_PLATFORM, [f"onnxruntime=={ver}"],
                          {f"onnxruntime/capi/libonnxruntime.so.{ver}": "libonnxruntime.so"},
                          f"onnxruntime {ver}")
    return folder / "libonnxruntime.so"


def runner(compiler: str) -> Path:
    """edgec-ort-count, cross-built with `compiler` (cached by source and compiler)."""
    from .bundle import cached_program

    return cached_program("edgec-ort-count", SOURCE.read_bytes() + compiler.encode(),
                          lambda out: [compiler, "-std=c++17", "-O2", str(SOURCE), "-o",
                                       str(out), "-ldl"])


def cpuinfo(cpu: str) -> str:
    """/proc/cpuinfo as a one-core board with `cpu` shows it."""
    cpus = tomllib.loads(PROXY_CPUS.read_text())
    if cpu not in cpus:
        raise EdgecError(f"no /proc/cpuinfo for '{cpu}' in {PROXY_CPUS}: counting onnxruntime "
                         f"needs one of {', '.join(cpus)}")
    c = cpus[cpu]
    return (f"processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: {c['features']}\n"
            f"CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\n"
            f"CPU part\t: {c['part']}\nCPU revision\t: 0\n\n")


def command(model: Path, specs: list[dict[str, Any]], outputs: list[str], calls: int,
            compiler: str) -> list[str]:
    """edgec-ort-count's command line for `model` (inputs by spec, float32 only)."""
    args = [str(runner(compiler)), str(library()), str(model), "--calls", str(calls),
            "--threads", "1"]
    for spec in specs:
        if spec["dtype"] != "float32":
            raise EdgecError(f"counting onnxruntime feeds float32 inputs; '{spec['name']}' is "
                             f"{spec['dtype']}")
        args += ["--input", f"{spec['name']}={','.join(str(d) for d in spec['shape'])}"]
    for name in outputs:
        args += ["--output", name]
    return args


def in_namespace(argv: list[str], fake_cpuinfo: Path) -> list[str]:
    """`argv` run in a private mount namespace whose /proc/cpuinfo is `fake_cpuinfo`."""
    unshare = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-rm"]
    script = 'mount --bind "$0" /proc/cpuinfo && exec "$@"'
    return [*unshare, "sh", "-c", script, str(fake_cpuinfo), *argv]
