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

import hashlib
import os
import subprocess
import sys
import zipfile
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
    from edgec.fileio import atomic_dir

    from .bundle import cache_dir

    ver = version("onnxruntime")
    folder = cache_dir() / "onnxruntime" / f"{WHEEL_PLATFORM}-{ver}"
    lib = folder / "libonnxruntime.so"
    if lib.is_file():
        return lib
    with atomic_dir(folder) as tmp:
        pyver = f"{sys.version_info.major}.{sys.version_info.minor}"
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
             "--platform", WHEEL_PLATFORM, "--python-version", pyver, "-d", str(tmp),
             f"onnxruntime=={ver}"], capture_output=True, text=True)
        wheels = list(tmp.glob("*.whl"))
        if done.returncode != 0 or not wheels:
            last = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise EdgecError(f"could not fetch onnxruntime {ver} for {WHEEL_PLATFORM} ({last})")
        with zipfile.ZipFile(wheels[0]) as zf:
            member = next((m for m in zf.namelist()
                           if "/capi/libonnxruntime.so" in m and "providers" not in m), None)
            if member is None:
                raise EdgecError(f"{wheels[0].name} holds no libonnxruntime.so")
            (tmp / "libonnxruntime.so").write_bytes(zf.read(member))
        wheels[0].unlink()
    return lib


def runner(compiler: str) -> Path:
    """edgec-ort-count, cross-built with `compiler` (cached by source and compiler)."""
    from edgec.fileio import atomic_dir

    from .bundle import cache_dir

    key = hashlib.sha256(SOURCE.read_bytes() + compiler.encode()).hexdigest()[:20]
    out = cache_dir() / "bin" / key / "edgec-ort-count"
    if out.is_file():
        return out
    with atomic_dir(out.parent) as tmp:
        done = subprocess.run([compiler, "-std=c++17", "-O2", str(SOURCE), "-o",
                               str(tmp / out.name), "-ldl"], capture_output=True, text=True)
        if done.returncode != 0:
            first = next((ln for ln in done.stderr.splitlines() if "error" in ln), done.stderr)
            raise EdgecError(f"building edgec-ort-count with {compiler} failed: {first[:300]}")
    return out


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
