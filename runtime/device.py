"""Run a bundle on a device and bring its outputs back: the bundle's own run.sh does the work.

Devices:
- `qemu`: here, under the target's emulator (qemu-aarch64 with the cross sysroot). Latency is
  reported with `emulated: true` and is never device speed.
- `local`: here, natively (the bundle's architecture is this machine's).
- `ssh://[user@]host[:port]`: copy the bundle and inputs to a fresh folder on the board,
  run run.sh there, copy the outputs back, remove the folder. Extra ssh/scp options (identity
  file, known-hosts file, ...) come from $EDGEC_SSH_OPTS; the board's own ~/.ssh/config applies.

run_bundle_many runs a whole test set with one runner process per chunk of samples (the
runner's --samples), not one per sample: each process pays the emulator's start and the
runtime's load, which dwarf a small model's run.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tempfile
import uuid
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


def _run_ssh(bundle: Path, manifest: dict, url: str, feed: dict[str, np.ndarray],
             flags: list[str]) -> DeviceRun:
    parsed = urlparse(url)
    if not parsed.hostname:
        raise EdgecError(f"bad device '{url}'; expected ssh://[user@]host[:port]")
    host = f"{parsed.username}@{parsed.hostname}" if parsed.username else parsed.hostname
    opts = ["-o", "BatchMode=yes", *shlex.split(os.environ.get("EDGEC_SSH_OPTS", ""))]
    ssh = ["ssh", *opts] + (["-p", str(parsed.port)] if parsed.port else []) + [host]
    scp = ["scp", "-q", "-r", *opts] + (["-P", str(parsed.port)] if parsed.port else [])
    remote = f"/tmp/edgec-{uuid.uuid4().hex[:12]}"

    def sh(command: str, what: str) -> subprocess.CompletedProcess:
        done = subprocess.run([*ssh, command], capture_output=True, text=True, timeout=600)
        _check(done, what)
        return done

    with tempfile.TemporaryDirectory(prefix="edgec-ssh-") as tmp:
        local_inputs = _write_inputs(Path(tmp), feed)
        sh(f"mkdir -p {remote}/out", f"ssh to {host}")
        try:
            done = subprocess.run([*scp, str(bundle), *local_inputs.values(),
                                   f"{host}:{remote}/"], capture_output=True, text=True)
            _check(done, f"copying the bundle to {host}")
            inputs = {n: f"{remote}/{Path(p).name}" for n, p in local_inputs.items()}
            args = _runner_args(inputs, f"{remote}/out", flags)
            run = sh(" ".join(shlex.quote(a) for a in
                              ["sh", f"{remote}/{bundle.name}/run.sh", *args]),
                     f"running the bundle on {host}")
            done = subprocess.run([*scp, f"{host}:{remote}/out", tmp], capture_output=True,
                                  text=True)
            _check(done, f"copying the outputs from {host}")
        finally:
            subprocess.run([*ssh, f"rm -rf {remote}"], capture_output=True, timeout=120)
        return _collect(Path(tmp) / "out", manifest, run.stdout, url, run.stderr)


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
            return _run_ssh(bundle, manifest, device, feed, flags)
    except EdgecError as err:
        if samples and "unknown argument --samples" in str(err):
            raise EdgecError(f"{err}: this bundle's runner predates --samples; compile the "
                             "bundle again with this edgec") from None
        raise
    raise EdgecError(f"unknown device '{device}'; use qemu, local or ssh://[user@]host[:port]")


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
