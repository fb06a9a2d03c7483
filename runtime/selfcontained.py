"""Self-contained bundles (a target's `[deploy] self_contained = true`).

The bundle's lib/ then also holds the C library's dynamic loader and every shared library the
bundle's programs and libraries need (their ELF NEEDED entries, transitively), copied from the
target compiler's own libraries (`cc -print-file-name=NAME`: the cross toolchain's sysroot),
and the launchers start each program through that loader:

    "$here/lib/ld-linux-aarch64.so.1" --library-path "$here/lib" "$here/edgec-run" ...

so nothing of the device's system libraries is used: a glibc program runs on a system without
glibc (an Android phone's bionic, from `adb shell`) or with an older one. model.so, which the
runner dlopens, resolves its own NEEDED libraries through the same library path.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from edgec.errors import EdgecError

_NEEDED = re.compile(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]")
_INTERP = re.compile(r"Requesting program interpreter: ([^\]]+)\]")


def _readelf(cc: str) -> str:
    """The readelf that goes with the compiler `cc` (gcc names its own), else any readelf."""
    done = subprocess.run([cc, "-print-prog-name=readelf"], capture_output=True, text=True)
    own = done.stdout.strip() if done.returncode == 0 else ""
    for candidate in (own, "readelf", "llvm-readelf"):
        found = candidate and shutil.which(candidate)
        if found:
            return found
    raise EdgecError(f"no readelf found for {cc} (install binutils): a self-contained bundle "
                     "reads its programs' NEEDED libraries with it")


def _dynamic(readelf: str, path: Path) -> tuple[list[str], str | None]:
    """The libraries an ELF file NEEDs and its program interpreter's file name (or None)."""
    done = subprocess.run([readelf, "-d", "-l", "-W", str(path)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise EdgecError(f"{readelf} cannot read {path}: {done.stderr.strip()[:200]}")
    interp = _INTERP.search(done.stdout)
    return _NEEDED.findall(done.stdout), Path(interp.group(1)).name if interp else None


def _locate(cc: str, name: str, wanted_by: str) -> Path:
    """The compiler's own copy of the library `name` (its sysroot's)."""
    done = subprocess.run([cc, f"-print-file-name={name}"], capture_output=True, text=True)
    found = Path(done.stdout.strip())
    if done.returncode != 0 or not found.is_absolute() or not found.is_file():
        raise EdgecError(f"{name}, which {wanted_by} needs, is not among the libraries of {cc}; "
                         "a self-contained bundle carries every library its programs load")
    return found.resolve()


def sysroot(cc: str) -> Path:
    """The folder the compiler's C library lives under (/usr/aarch64-linux-gnu for Debian's
    cross g++): the sysroot an emulator needs for a program that is not self-contained."""
    return _locate(cc, "libc.so.6", "a program built with it").parent.parent


def elf_files(folder: Path) -> list[Path]:
    """The bundle's ELF files: its programs, model.so and lib/'s libraries."""
    paths = [*sorted(folder.iterdir()), *sorted((folder / "lib").iterdir())]
    return [p for p in paths if p.is_file() and _is_elf(p)]


def _is_elf(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == b"\x7fELF"


def add_system_libs(folder: Path, cc: str) -> tuple[str, list[str]]:
    """Copy into folder/lib the loader and the libraries (transitively) that the bundle's ELF
    files need and lib/ lacks, from the compiler's libraries. Returns the loader's file name
    and the names copied."""
    readelf = _readelf(cc)
    have = {p.name for p in (folder / "lib").iterdir()}
    todo = elf_files(folder)
    loader, copied = None, []
    while todo:
        path = todo.pop()
        needed, interp = _dynamic(readelf, path)
        loader = loader or interp
        for name in [*needed, *([interp] if interp else [])]:
            if name in have:
                continue
            dest = folder / "lib" / name
            shutil.copyfile(_locate(cc, name, path.name), dest)
            dest.chmod(0o755)
            have.add(name)
            copied.append(name)
            todo.append(dest)
    if loader is None:
        raise EdgecError(f"the bundle's programs name no dynamic loader ({readelf} -l): "
                         "they cannot be started through a bundled one")
    return loader, sorted(copied)


def loader_command(loader: str) -> str:
    """What a launcher puts before a program's path to start it through the bundled loader
    with only lib/ on the library path (POSIX sh, $here the bundle's folder)."""
    return f'"$here/lib/{loader}" --library-path "$here/lib" '
