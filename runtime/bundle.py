"""Deploy bundles: an artifact plus everything a board needs to run it without Python.

    bundle/
      model.so, manifest.json, model.onnx   the artifact
      edgec-run                             our C++ runner (runtime/device/runner.cc), built
                                            with the target's compiler
      edgec-rpc-server, rpc.sh              our TVM RPC server (runtime/device/rpc_server.cc):
                                            the board as a tuning/measurement node
      lib/libtvm_runtime.so, libtvm_ffi.so  TVM's runtime for the target, from PyPI's wheels
      run.sh, README.txt                    one command on the board
      lib/ld-linux-*.so.1, libc.so.6, ...   a self-contained target's loader and C/C++
                                            libraries (runtime/selfcontained.py)

The runtime libraries come from the `apache-tvm` / `apache-tvm-ffi` wheels of the versions
edgec compiles with, for the target's platform tag (targets' `[deploy] wheel_platform`),
downloaded once by pip into the cache ($EDGEC_CACHE, else ~/.cache/edgec) with their sha256
recorded. The programs are built once per (source, compiler, libraries) and cached too.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

from edgec.errors import EdgecError
from edgec.fileio import atomic_dir
from edgec.targets import Target

from .artifact import file_stem, sha256_file
from .selfcontained import add_system_libs, loader_command

RUNNER_SRC = Path(__file__).resolve().parent / "device"
LIBS = {"apache-tvm": ("tvm", "libtvm_runtime.so"), "apache-tvm-ffi": ("tvm_ffi", "libtvm_ffi.so")}
RECORD = "sha256.json"  # a cached folder of wheel files is complete once it holds this
# what a device adds to the bundle's lib/, from the apache-tvm wheel (the runner loads it)
DEVICE_LIBS = {"cuda": ("tvm", "libtvm_runtime_cuda.so")}


def _libs(target: Target) -> list[tuple[str, str]]:
    """(package, file) of each runtime library the target's bundle holds."""
    extra = DEVICE_LIBS.get(target.device)
    return [*LIBS.values(), *([extra] if extra else [])]


def cache_dir() -> Path:
    return Path(os.environ.get("EDGEC_CACHE") or Path.home() / ".cache" / "edgec")


def _installed_lib(package: str, name: str) -> Path:
    spec = importlib.util.find_spec(package)
    path = Path(spec.submodule_search_locations[0]) / "lib" / name
    if not path.is_file():
        raise EdgecError(f"{name} not found in the installed {package} package")
    return path


def runtime_libs(target: Target) -> dict[str, Path]:
    """The target's libtvm_runtime.so and libtvm_ffi.so, fetched and cached when needed."""
    platform = target.wheel_platform
    if not platform:
        raise EdgecError(f"target '{target.name}' names no TVM runtime for a bundle "
                         "([deploy] wheel_platform); no prebuilt runtime exists for it")
    if platform == "installed":
        return {name: _installed_lib(pkg, name) for pkg, name in _libs(target)}
    versions = {dist: version(dist) for dist in LIBS}
    suffix = [target.device] if target.device in DEVICE_LIBS else []
    folder = cache_dir() / "runtime" / "-".join([platform, *versions.values(), *suffix])
    if not (folder / RECORD).is_file():
        fetch_from_wheels(folder, platform, [f"{d}=={v}" for d, v in versions.items()],
                          {f"{pkg}/lib/{name}": name for pkg, name in _libs(target)},
                          "the TVM runtime")
    return {name: folder / name for _, name in _libs(target)}


def fetch_from_wheels(folder: Path, platform: str, pins: list[str], members: dict[str, str],
                      what: str) -> None:
    """Make `folder` (atomically) hold the files `members` names (path in a wheel -> file
    name), taken from the wheels of `pins` for `platform` that pip downloads, and RECORD: the
    sha256 of those wheels and files."""
    with atomic_dir(folder) as tmp:
        wheels = tmp / "wheels"
        pyver = f"{sys.version_info.major}.{sys.version_info.minor}"
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps",
               "--only-binary=:all:", "--platform", platform, "--python-version", pyver,
               "-d", str(wheels), *pins]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise EdgecError(f"could not fetch {what} for {platform} with pip ({last}); check "
                             "the network or the package index")
        sums = {}
        for wheel in wheels.glob("*.whl"):
            sums[wheel.name] = sha256_file(wheel)
            with zipfile.ZipFile(wheel) as zf:
                for member in set(members) & set(zf.namelist()):
                    (tmp / members[member]).write_bytes(zf.read(member))
        for name in members.values():
            if not (tmp / name).is_file():
                raise EdgecError(f"the {platform} wheels hold no {name}")
            sums[name] = sha256_file(tmp / name)
        shutil.rmtree(wheels)
        (tmp / RECORD).write_text(json.dumps(sums, indent=2))


def cached_program(name: str, key: bytes, command: Callable[[Path], list[str]]) -> Path:
    """The program `name`, built once by the command `command(path to write)` returns and
    cached under the hash of `key` (what the build depends on: sources, compiler, libraries)."""
    out = cache_dir() / "bin" / hashlib.sha256(key).hexdigest()[:20] / name
    if out.is_file():
        return out
    with atomic_dir(out.parent) as tmp:
        cmd = command(tmp / name)
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            first = next((ln for ln in done.stderr.splitlines() if "error" in ln), done.stderr)
            raise EdgecError(f"building {name} with {cmd[0]} failed: {first[:300]}")
    return out


def include_dir(package: str) -> Path:
    """The C++ headers an installed wheel ships (tvm, tvm_ffi)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EdgecError(f"the {package} package is not installed")
    return Path(spec.submodule_search_locations[0]) / "include"


TOOLS = {"edgec-run": "runner.cc", "edgec-rpc-server": "rpc_server.cc"}


def build_against_tvm(name: str, target: Target, sources: list[Path], *, depends: list[Path],
                      includes: list[Path], rpath: str, cc: str | None = None,
                      shared: bool = False) -> Path:
    """A program (or, `shared`, a library) `name` of C++ `sources` linked against the
    target's TVM runtime libraries with the target's compiler; built once and cached by the
    files it `depends` on, the compiler and those libraries."""
    compiler = target.compiler(cc)
    libs = runtime_libs(target)
    key = b"".join(path.name.encode() + path.read_bytes() for path in depends)
    key += (compiler + name + "".join(sha256_file(p) for p in libs.values())).encode()
    lib_dirs = sorted({str(p.parent) for p in libs.values()})
    return cached_program(name, key, lambda out: [
        compiler, "-std=c++17", "-O2", *(["-shared", "-fPIC"] if shared else []),
        *[f"-I{d}" for d in includes], *map(str, sources), "-o", str(out),
        *[f"-L{d}" for d in lib_dirs], "-Wl,--no-as-needed", "-ltvm_runtime", "-ltvm_ffi",
        "-ldl", f"-Wl,-rpath,{rpath}"])


def build_tool(target: Target, name: str, cc: str | None = None) -> Path:
    """Cross-build one of TOOLS for the target (cached by source, compiler and libraries)."""
    return build_against_tvm(name, target, [RUNNER_SRC / TOOLS[name]],
                             depends=sorted(RUNNER_SRC.iterdir()),
                             includes=[include_dir("tvm_ffi"), RUNNER_SRC], rpath="$ORIGIN/lib",
                             cc=cc)


_LAUNCHER = """#!/bin/sh
# {usage}
# Works from any directory. On a machine that is not {arch}, it runs under an emulator
# ($EDGEC_EMULATOR, else {emulator} when installed) and says so: emulated latency is not
# device speed.
set -e
here=$(cd "$(dirname "$0")" && pwd)
emu=${{EDGEC_EMULATOR:-}}
if [ -z "$emu" ] && [ "$(uname -m)" != "{arch}" ]; then
  if command -v {emulator_cmd} >/dev/null 2>&1 && [ -n "{emulator_cmd}" ]; then
    emu="{emulator}"
  else
    echo "run.sh: this bundle is for {arch}; this machine is $(uname -m)" >&2
    exit 2
  fi
fi
if [ -n "$emu" ]; then
  export EDGEC_EMULATED=1
  echo "run.sh: note: running under emulation ($emu); latency is not device speed" >&2
fi
exec $emu {loader}"$here/{binary}" {fixed_args}"$@"
"""
_SCRIPTS = {
    "run.sh": ("edgec-run", '--bundle "$here" ',
               "Run the model: ./run.sh [--input NAME=FILE.npy ...] [--output-dir DIR] "
               "[--repeat N] [--warmup M] [--threads T]"),
    "rpc.sh": ("edgec-rpc-server", "",
               "Serve TVM RPC (tuning, remote runs): ./rpc.sh [--port 9090] [--key KEY] "
               "[--tracker HOST:PORT]"),
}

_README = """edgec bundle: {name} for target {target} ({arch})

Copy this folder to the board (scp -r) and run:

    ./run.sh --input {first_input}=input.npy --output-dir out/    # writes out/<file>.npy
    ./run.sh --repeat 50 --threads {threads}                       # latency as JSON
    ./rpc.sh --tracker HOST:9190 --key {target}                    # a tuning node for a farm

Inputs are .npy files (C order): {inputs}.
Outputs: {outputs}.
Files go by the tensor's name, each byte outside [A-Za-z0-9._-] (and a leading '.') as %XX,
one over 200 bytes cut and ended with ~ and a hash; --input takes the name or that file stem
(manifest.json: "file" of each input and output).
{needs}; no Python. A board with Python can instead `pip install apache-tvm=={tvm}
apache-tvm-ffi=={ffi}` and use `edgec.runtime`. Runtime libraries: lib/ (sha256 in
manifest.json under "bundle").
{device_note}"""
_NEEDS = ("Needs a 64-bit Linux with glibc >= 2.28 (Raspberry Pi OS 64-bit, Debian 11+, "
          "Ubuntu 20.04+)")
_NEEDS_SELF_CONTAINED = ("Needs only a 64-bit {arch} Linux kernel (an Android phone from adb "
                         "shell, any Linux)")
_SELF_CONTAINED_NOTE = """
lib/ also carries glibc's loader ({loader}) and the C/C++ libraries: run.sh and rpc.sh start
the programs through it, so nothing of the system's libraries is used. On an Android phone:

    adb push BUNDLE /data/local/tmp/              # BUNDLE: this folder
    adb shell sh /data/local/tmp/BUNDLE/run.sh --repeat 50 --threads {threads}

or, from the computer, `edgec run BUNDLE --device adb[://SERIAL]`.
"""
_DEVICE_NOTES = {"cuda": """
The kernels run on the NVIDIA GPU (CUDA {gpu_arch} machine code in model.so; nothing is
compiled on the board). lib/libtvm_runtime_cuda.so is TVM's CUDA runtime: it needs the CUDA 13
runtime (libcudart.so.13) and a driver that supports CUDA 13 (libcuda.so.1) on the library
path; without them run.sh stops with the loader's message naming the missing library.
""", "opencl": """
The kernels run on the GPU through OpenCL (their OpenCL C is in model.so; the board's driver
compiles it when the model loads). lib/libedgec_opencl.so is edgec's OpenCL runtime: it opens
the driver's glibc libOpenCL.so (libOpenCL.so.1, libOpenCL.so, /vendor/lib64/libOpenCL.so;
$EDGEC_OPENCL_LIBRARY names another) and the first platform with a GPU
($EDGEC_OPENCL_PLATFORM: part of a platform's name picks one); without one, run.sh stops in
one line saying so. An Android phone's own libOpenCL.so is built for Android's C library
(bionic) and does not load into this glibc program.
"""}


def _write_readme(folder: Path, target: Target, manifest: dict[str, Any], loader: str) -> None:
    """README.txt: how to run the bundle; `loader`: a self-contained bundle's loader, or ""."""
    spec = lambda specs: ", ".join(  # noqa: E731
        f"{s['name']} {s['dtype']}{s['shape']}" + (f" (file {s['file']})"
                                                   if s["file"] != f"{s['name']}.npy" else "")
        for s in specs)
    threads = target.threads or 4
    note = _DEVICE_NOTES.get(target.device, "").format(gpu_arch=target.tvm.get("arch", ""))
    if loader:
        note += _SELF_CONTAINED_NOTE.format(loader=loader, threads=threads)
    (folder / "README.txt").write_text(_README.format(
        name=Path(manifest["source"]["path"]).name, target=target.name, arch=target.arch,
        first_input=file_stem(manifest["inputs"][0]["name"]), threads=threads,
        inputs=spec(manifest["inputs"]), outputs=spec(manifest["outputs"]),
        tvm=version("apache-tvm"), ffi=version("apache-tvm-ffi"),
        needs=_NEEDS_SELF_CONTAINED.format(arch=target.arch) if loader else _NEEDS,
        device_note=note))


def _edgec_runtime(target: Target, cc: str | None) -> dict[str, Path]:
    """edgec's own runtime library for the target's device, built with the target's compiler
    (the runner loads lib/NAME): OpenCL's; none for the CPU and CUDA."""
    if target.device != "opencl":
        return {}
    from . import opencl

    return {opencl.NAME: opencl.library(target, cc)}


def add_bundle(folder: Path, target: Target, manifest: dict[str, Any],
               cc: str | None = None) -> dict[str, Any]:
    """Put the programs, the runtime libraries, the launchers and README.txt into a folder."""
    runs = ["cpu", *DEVICE_LIBS, "opencl"]  # the devices runner.cc opens
    if target.device not in runs:
        raise EdgecError(f"target '{target.name}' runs on {target.device}; device bundles run "
                         f"{', '.join(runs)} artifacts only: compile without "
                         "--bundle and load the artifact with edgec.runtime")
    libs = {**runtime_libs(target), **_edgec_runtime(target, cc)}
    (folder / "lib").mkdir(exist_ok=True)
    for name, path in libs.items():
        shutil.copy2(path, folder / "lib" / name)
    for name in TOOLS:
        shutil.copy2(build_tool(target, name, cc), folder / name)
    loader, system = (add_system_libs(folder, target.compiler(cc)) if target.self_contained
                      else ("", []))
    values = {"arch": target.arch, "emulator": " ".join(target.emulator),
              "emulator_cmd": target.emulator[0] if target.emulator else "",
              "loader": loader_command(loader) if loader else ""}
    for script, (binary, fixed_args, usage) in _SCRIPTS.items():
        path = folder / script
        path.write_text(_LAUNCHER.format(binary=binary, fixed_args=fixed_args, usage=usage,
                                         **values))
        path.chmod(0o755)
    _write_readme(folder, target, manifest, loader)
    files = [*TOOLS, *[f"lib/{n}" for n in [*libs, *system]]]
    return {"runner": "edgec-run", "run": "run.sh", "rpc": "rpc.sh",
            "emulator": list(target.emulator), "proxy_cpu": target.proxy_cpu,
            **({"loader": f"lib/{loader}"} if loader else {}),
            "sha256": {Path(rel).name: sha256_file(folder / rel) for rel in files}}
