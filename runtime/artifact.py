"""The artifact folder's contract: manifest.json beside the library it describes.

The manifest says what the library is (sha256), what it takes and returns (names, shapes,
dtypes), what it was built for (target, CPU flags it relies on) and with what (versions), and
what the compiler proved about it (FLOPs, agreement and latency against onnxruntime).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from edgec.compiler.errors import EdgecError
from edgec.targets import host_arch

FORMAT = "edgec-artifact/1"
MANIFEST = "manifest.json"
# x86 flags LLVM's CPU models turn on that a CPU may lack; the artifact needs every one it saw.
_X86_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512dq",
              "avx512vl", "avx512cd", "avx512_vnni", "avx512_bf16", "avx512vbmi", "amx_tile")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cpu_flags() -> list[str]:
    """The SIMD flags of this CPU that a host-tuned build may rely on (Linux /proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    have = set(line.partition(":")[2].split())
    return [f for f in _X86_FLAGS if f in have]


def read_manifest(folder: Path) -> dict[str, Any]:
    folder = Path(folder)
    if not folder.is_dir():
        raise EdgecError(f"artifact folder '{folder}' not found")
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise EdgecError(f"'{folder}' is not an edgec artifact (no {MANIFEST})") from None
    except json.JSONDecodeError as err:
        raise EdgecError(f"{path} is not valid JSON ({err})") from None
    if manifest.get("format") != FORMAT:
        raise EdgecError(f"{path}: unknown artifact format {manifest.get('format')!r}")
    return manifest


def verify_library(folder: Path, manifest: dict[str, Any]) -> Path:
    lib = Path(folder) / manifest["library"]
    if not lib.is_file():
        raise EdgecError(f"artifact library {lib} is missing")
    digest = sha256_file(lib)
    if digest != manifest["sha256"]:
        raise EdgecError(f"{lib} does not match its manifest (sha256 {digest[:12]}… != "
                         f"{manifest['sha256'][:12]}…); the artifact was modified: recompile it")
    return lib


def check_runs_here(manifest: dict[str, Any]) -> None:
    """Refuse, with what to do instead, an artifact this machine's CPU cannot execute."""
    target = manifest["target"]
    arch = target["arch"]
    if arch != host_arch():
        raise EdgecError(
            f"artifact is built for {arch} (target '{target['name']}'); this machine is "
            f"{host_arch()}: run it on the device (deploy bundle) or recompile with --target host"
        )
    missing = sorted(set(target.get("cpu_flags", [])) - set(cpu_flags()))
    if missing:
        raise EdgecError(
            f"artifact uses CPU features this CPU lacks ({', '.join(missing)}; built for "
            f"{target['tvm'].get('mcpu', 'generic')}): recompile with --target host on this machine"
        )
