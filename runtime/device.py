"""Run a bundle on a device and bring its outputs back: the bundle's own run.sh does the work.

Devices:
- `qemu`: here, under the target's emulator (qemu-aarch64 with the cross sysroot). Latency is
  reported with `emulated: true` and is never device speed.
- `local`: here, natively (the bundle's architecture is this machine's).
- `ssh://[user@]host[:port]`: copy the bundle and inputs to a fresh folder on the board,
  run run.sh there, copy the outputs back, remove the folder. Extra ssh/scp options (identity
  file, known-hosts file, ...) come from $EDGEC_SSH_OPTS; the board's own ~/.ssh/config applies.
- `adb[://SERIAL]`: an Android phone over adb, the same steps (adb push, adb shell, adb pull)
  in a fresh folder under /data/local/tmp; SERIAL (else $ANDROID_SERIAL) picks one of several
  attached phones. The bundle must not need the phone's libraries: a self-contained target's
  (android-arm64: it carries glibc's loader and libraries, runtime/selfcontained.py).

run_bundle_many runs a whole test set with one runner process per chunk of samples (the
runner's --samples), not one per sample: each process pays the emulator's start and the
runtime's load, which dwarf a small model's run.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from edgec.errors import EdgecError

from .artifact import file_stem, npy_file, read_manifest, spec_name, verify_library


@dataclass
class DeviceRun:
    outputs: dict[str, np.ndarray]
    latency: dict[str, Any] | None
    device: str
    emulated: bool


def _check(done: subprocess.CompletedProcess, what: str) -> None:
    if done.returncode != 0:
        lines = [ln for ln in (done.stderr or "").splitlines()
                 if ln.strip() and not ln.startswith("run.sh: note:")]
        raise EdgecError(f"{what} failed: {lines[-1] if lines else f'exit {done.returncode}'}")


def _runner_flags(repeat: int, warmup: int, threads: int | None,
                  samples: int | None) -> list[str]:
    """The runner's options besides its files, the same on every device."""
    flags = ["--samples", str(samples)] if samples else []
    if repeat:
        flags += ["--repeat", str(repeat), "--warmup", str(warmup)]
    if threads:
        flags += ["--threads", str(threads)]
    return flags


def _runner_args(inputs: dict[str, str], out_dir: str, flags: list[str]) -> list[str]:
    """The runner's arguments; inputs go by file stem, which holds no '=' and no space."""
    args = [a for name, path in inputs.items() for a in ("--input", f"{file_stem(name)}={path}")]
    return [*args, "--output-dir", out_dir, *flags]


def _collect(out_dir: Path, manifest: dict, stdout: str, device: str, stderr: str) -> DeviceRun:
    outputs = {}
    for spec in manifest["outputs"]:
        path = out_dir / npy_file(spec["name"])
        if not path.is_file():
            raise EdgecError(f"the device wrote no output '{spec['name']}'")
        outputs[spec["name"]] = np.load(path, allow_pickle=False)
    latency = None
    json_lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    if json_lines:
        latency = json.loads(json_lines[-1])
    emulated = "running under emulation" in stderr or bool(latency and latency.get("emulated"))
    return DeviceRun(outputs, latency, device, emulated)


def _write_inputs(folder: Path, feed: dict[str, np.ndarray]) -> dict[str, str]:
    paths = {}
    for name, arr in feed.items():
        path = folder / npy_file(name)
        np.save(path, np.ascontiguousarray(arr))
        paths[name] = str(path)
    return paths


def _run_here(bundle: Path, manifest: dict, feed: dict[str, np.ndarray], flags: list[str],
              emulate: bool) -> DeviceRun:
    env = dict(os.environ)
    emulator = manifest.get("bundle", {}).get("emulator") or []
    if emulate:
        if not emulator:
            raise EdgecError("this bundle's target names no emulator ([deploy] emulator)")
        env["EDGEC_EMULATOR"] = " ".join(emulator)
    else:
        env.pop("EDGEC_EMULATOR", None)
    with tempfile.TemporaryDirectory(prefix="edgec-run-") as tmp:
        inputs = _write_inputs(Path(tmp), feed)
        (Path(tmp) / "out").mkdir()
        cmd = ["sh", str(bundle / "run.sh"),
               *_runner_args(inputs, str(Path(tmp) / "out"), flags)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        except FileNotFoundError as err:
            raise EdgecError(f"cannot run the bundle: {err}") from None
        _check(done, "running the bundle" + (" under emulation" if emulate else ""))
        return _collect(Path(tmp) / "out", manifest, done.stdout,
                        "qemu" if emulate else "local", done.stderr)


@dataclass(frozen=True)
class _Board:
    """A board reached over some link (ssh, adb): how to run a command there, copy files there
    and back, and where a fresh folder goes."""

    name: str  # names the board in messages
    reach: str  # what the first command there does, for its error ("ssh to HOST")
    shell: list[str]  # the argv that runs one shell command (appended) there
    push: Callable[[list[str], str], list[str]]  # argv copying local paths into a folder there
    pull: Callable[[str, str], list[str]]  # argv copying a path there into a local folder
    root: str  # the folder there that fresh folders go in


def _run_remote(bundle: Path, manifest: dict, board: _Board, feed: dict[str, np.ndarray],
                flags: list[str], device: str) -> DeviceRun:
    """Copy the bundle and inputs to a fresh folder on the board, run run.sh there, copy the
    outputs back, and remove the folder whatever happened."""
    remote = f"{board.root}/edgec-{uuid.uuid4().hex[:12]}"

    def call(cmd: list[str], what: str) -> subprocess.CompletedProcess:
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise EdgecError(f"{what} failed: no answer in 600 s") from None
        _check(done, what)
        return done

    with tempfile.TemporaryDirectory(prefix="edgec-remote-") as tmp:
        local_inputs = _write_inputs(Path(tmp), feed)
        call([*board.shell, f"mkdir -p {remote}/out"], board.reach)
        try:
            call(board.push([str(bundle), *local_inputs.values()], remote),
                 f"copying the bundle to {board.name}")
            inputs = {n: f"{remote}/{Path(p).name}" for n, p in local_inputs.items()}
            args = _runner_args(inputs, f"{remote}/out", flags)
            run = call([*board.shell, " ".join(shlex.quote(a) for a in
                                               ["sh", f"{remote}/{bundle.name}/run.sh", *args])],
                       f"running the bundle on {board.name}")
            call(board.pull(f"{remote}/out", tmp), f"copying the outputs from {board.name}")
        finally:
            subprocess.run([*board.shell, f"rm -rf {remote}"], capture_output=True, timeout=120,
                           stdin=subprocess.DEVNULL)
        return _collect(Path(tmp) / "out", manifest, run.stdout, device, run.stderr)


def _ssh_board(url: str) -> _Board:
    parsed = urlparse(url)
    if not parsed.hostname:
        raise EdgecError(f"bad device '{url}'; expected ssh://[user@]host[:port]")
    host = f"{parsed.username}@{parsed.hostname}" if parsed.username else parsed.hostname
    opts = ["-o", "BatchMode=yes", *shlex.split(os.environ.get("EDGEC_SSH_OPTS", ""))]
    ssh = ["ssh", *opts] + (["-p", str(parsed.port)] if parsed.port else []) + [host]
    scp = ["scp", "-q", "-r", *opts] + (["-P", str(parsed.port)] if parsed.port else [])
    return _Board(name=host, reach=f"ssh to {host}", shell=ssh,
                  push=lambda paths, folder: [*scp, *paths, f"{host}:{folder}/"],
                  pull=lambda path, folder: [*scp, f"{host}:{path}", folder], root="/tmp")


def _adb_devices() -> dict[str, str]:
    """serial -> state ("device", "unauthorized", "offline", ...) as `adb devices` lists them."""
    if shutil.which("adb") is None:
        raise EdgecError("adb not found: install Android's platform tools (Debian: apt install "
                         "adb; ./dev setup does) to run on a phone")
    done = subprocess.run(["adb", "devices"], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    _check(done, "adb devices")
    return dict(ln.split("\t")[:2] for ln in done.stdout.splitlines() if ln.count("\t") == 1)


def _adb_board(url: str) -> _Board:
    """The phone `adb` or `adb://SERIAL` names, checked to be attached and ready."""
    serial = os.environ.get("ANDROID_SERIAL", "") if url == "adb" else url[len("adb://"):]
    if url != "adb" and not serial:
        raise EdgecError(f"bad device '{url}'; expected adb or adb://SERIAL")
    states = _adb_devices()
    listed = ", ".join(f"{s} ({state})" for s, state in states.items()) or "none"
    ready = [s for s, state in states.items() if state == "device"]
    if serial and states.get(serial) != "device":
        raise EdgecError(f"adb device '{serial}' is not attached and ready (adb devices lists: "
                         f"{listed})")
    if not serial and not ready:
        raise EdgecError(f"no Android device attached and ready (adb devices lists: {listed}); "
                         "connect a phone with USB debugging on and allow this computer")
    if not serial and len(ready) > 1:
        raise EdgecError(f"several adb devices attached ({listed}); pick one with "
                         "--device adb://SERIAL")
    serial = serial or ready[0]
    name = f"adb device {serial}"
    adb = ["adb", "-s", serial]  # the one checked, whatever else is attached
    return _Board(name=name, reach=f"adb shell on {name}", shell=[*adb, "shell"],
                  push=lambda paths, folder: [*adb, "push", *paths, f"{folder}/"],
                  pull=lambda path, folder: [*adb, "pull", path, folder], root="/data/local/tmp")


def run_bundle(bundle: str | Path, *, device: str, feed: dict[str, np.ndarray],
               repeat: int = 0, warmup: int = 1, threads: int | None = None,
               samples: int | None = None) -> DeviceRun:
    """Run `bundle` on `device` (qemu, local, ssh://...) with inputs `feed`.

    `feed` is keyed by input name (or its file stem, runtime.artifact.file_stem); the outputs
    come back keyed by output name, whatever file names the device used for them. With
    `samples` N, each `feed` array holds N samples stacked on a leading axis and each output
    comes back stacked the same way: one runner process (one emulator start, one runtime load)
    runs them all, which a test set needs. `repeat` then times the first sample.
    """
    bundle = Path(bundle).resolve()
    manifest = read_manifest(bundle)
    verify_library(bundle, manifest)
    if "bundle" not in manifest:
        raise EdgecError(f"'{bundle}' is an artifact without a device runner; compile it with "
                         "--bundle")
    if samples is not None and samples < 1:
        raise EdgecError(f"samples must be 1 or more, got {samples}")
    feed = {spec_name(manifest["inputs"], key): arr for key, arr in feed.items()}
    flags = _runner_flags(repeat, warmup, threads, samples)
    try:
        if device in ("qemu", "local"):
            return _run_here(bundle, manifest, feed, flags, emulate=device == "qemu")
        if device.startswith("ssh://"):
            return _run_remote(bundle, manifest, _ssh_board(device), feed, flags, device)
        if device == "adb" or device.startswith("adb://"):
            return _run_remote(bundle, manifest, _adb_board(device), feed, flags, device)
    except EdgecError as err:
        if samples and "unknown argument --samples" in str(err):
            raise EdgecError(f"{err}: this bundle's runner predates --samples; compile the "
                             "bundle again with this edgec") from None
        raise
    raise EdgecError(f"unknown device '{device}'; use qemu, local, ssh://[user@]host[:port] or "
                     "adb[://SERIAL]")


def _stack(manifest: dict, feeds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The feeds' arrays stacked per input, [len(feeds), *shape], each feed checked against the
    manifest first so that a bad one is named by its index rather than by a stacked file."""
    specs = manifest["inputs"]
    named = [{spec_name(specs, key): arr for key, arr in feed.items()} for feed in feeds]
    stacked = {}
    for spec in specs:
        name, want = spec["name"], (tuple(spec["shape"]), np.dtype(spec["dtype"]))
        for i, feed in enumerate(named):
            if name not in feed:
                raise EdgecError(f"feed {i} has no input '{name}'")
            arr = np.asarray(feed[name])
            if (arr.shape, arr.dtype) != want:
                raise EdgecError(f"feed {i}: input '{name}' is {arr.dtype}{list(arr.shape)}; "
                                 f"the model takes {want[1]}{list(want[0])}")
        stacked[name] = np.stack([feed[name] for feed in named])
    return stacked


def run_bundle_many(bundle: str | Path, *, device: str, feeds: list[dict[str, np.ndarray]],
                    chunk: int = 256, threads: int | None = None) -> list[dict[str, np.ndarray]]:
    """Run `bundle` on `device` once per feed; the outputs, one dict per feed, in order.

    A test set runs as few runner processes as it can (one per `chunk` feeds: each process
    starts the emulator or the board's runtime once), through run_bundle's `samples`. `chunk`
    bounds the memory and the files each process reads and writes.
    """
    if chunk < 1:
        raise EdgecError(f"chunk must be 1 or more, got {chunk}")
    if not feeds:
        return []
    stacked = _stack(read_manifest(Path(bundle)), feeds)
    results: list[dict[str, np.ndarray]] = []
    for start in range(0, len(feeds), chunk):
        part = {name: arr[start:start + chunk] for name, arr in stacked.items()}
        count = min(chunk, len(feeds) - start)
        run = run_bundle(bundle, device=device, feed=part, threads=threads, samples=count)
        for name, arr in run.outputs.items():
            if arr.shape[:1] != (count,):
                raise EdgecError(f"the device returned output '{name}' with shape "
                                 f"{list(arr.shape)} for {count} samples")
        results += [{name: arr[i] for name, arr in run.outputs.items()} for i in range(count)]
    return results
