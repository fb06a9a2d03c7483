"""The artifact folder's contract: manifest.json beside the library it describes.

The manifest says what the library is (sha256), what it takes and returns (names, shapes,
dtypes), what it was built for (target, CPU flags it relies on) and with what (versions), and
what the compiler proved about it (FLOPs, agreement and latency against onnxruntime).
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from edgec.errors import EdgecError
from edgec.targets import host_arch

FORMAT = "edgec-artifact/1"
MANIFEST = "manifest.json"
# Bytes a tensor argument's data is aligned to, unless the manifest's codegen.input_alignment
# lowers it for an input (codegen/tir_level/unaligned_inputs.py): TVM's default for kernels.
ALIGNED = 64
# x86 flags LLVM's CPU models turn on that a CPU may lack; the artifact needs every one it saw.
_X86_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512dq",
              "avx512vl", "avx512cd", "avx512_vnni", "avx512_bf16", "avx512vbmi", "amx_tile")


# Bytes a tensor's file stem keeps as they are; every other byte is percent-encoded.
_PLAIN = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
_STEM_MAX = 200  # bytes; file systems cap one name at 255, and ".npy" follows


def file_stem(name: str) -> str:
    """The file name, without ".npy", that stands for tensor `name` in a bundle's files.

    ONNX allows any string as a tensor name ("save_infer_model/scale_0.tmp_1", "x:0", spaces,
    unicode), and a file name cannot hold all of them. Every UTF-8 byte outside
    [A-Za-z0-9._-] becomes %XX, and so does a leading '.': the stem is one path component,
    never hidden, never "." or "..", and a name of plain characters is its own stem. A stem
    over 200 bytes keeps its first 180 and appends '~' and 16 hex digits of the name's
    sha256 ('~' is always encoded, so it marks such stems apart). The empty name is "%".
    Distinct names give distinct stems, so the manifest maps a stem back to its name.
    This is the one definition: the compiler writes each stem into the manifest (a spec's
    "file") and the device runner reads it from there.
    """
    raw = name.encode()
    stem = "".join(chr(b) if b in _PLAIN and not (i == 0 and b == ord(".")) else f"%{b:02X}"
                   for i, b in enumerate(raw))
    if len(stem) > _STEM_MAX:
        cut = stem[:180]
        cut = cut[:cut.rfind("%")] if "%" in cut[-2:] else cut
        stem = f"{cut}~{hashlib.sha256(raw).hexdigest()[:16]}"
    return stem or "%"


def npy_file(name: str) -> str:
    """The .npy file name for tensor `name` (see file_stem)."""
    return file_stem(name) + ".npy"


def spec_name(specs: list[dict[str, Any]], key: str, what: str = "input") -> str:
    """The name in `specs` that `key` stands for: the name itself or its file stem."""
    for spec in specs:
        if key == spec["name"]:
            return key
    for spec in specs:
        if key == file_stem(spec["name"]):
            return spec["name"]
    names = ", ".join(s["name"] for s in specs)
    raise EdgecError(f"unknown {what} '{key}'; the model's {what}s: {names}")


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz of `arrays` keyed by their names as they are: np.load(...)[name] reads one back.

    Written entry by entry rather than by np.savez(**arrays), whose own keyword arguments
    ("file", "allow_pickle") cannot be tensor names there.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(arr), allow_pickle=False)
    return buf.getvalue()


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
