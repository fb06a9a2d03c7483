"""Run a bundle on a device and bring its outputs back: the bundle's own run.sh does the work.

Devices:
- `qemu`: here, under the target's emulator (qemu-aarch64 with the cross sysroot). Latency is
  reported with `emulated: true` and is never device speed.
- `local`: here, natively (the bundle's architecture is this machine's).
- `ssh://[user@]host[:port]`: copy the bundle and inputs to a fresh folder on the board,
  run run.sh there, copy the outputs back, remove the folder. Extra ssh/scp options (identity
  file, known-hosts file, ...) come from $EDGEC_SSH_OPTS; the board's own ~/.ssh/config applies.
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


def _runner_args(inputs: dict[str, str], out_dir: str, repeat: int, warmup: int,
                 threads: int | None) -> list[str]:
    """The runner's arguments; inputs go by file stem, which holds no '=' and no space."""
    args = [a for name, path in inputs.items() for a in ("--input", f"{file_stem(name)}={path}")]
    args += ["--output-dir", out_dir]
    if repeat:
        args += ["--repeat", str(repeat), "--warmup", str(warmup)]
    if threads:
        args += ["--threads", str(threads)]
    return args


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


def _run_here(bundle: Path, manifest: dict, feed, repeat, warmup, threads,
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
               *_runner_args(inputs, str(Path(tmp) / "out"), repeat, warmup, threads)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        except FileNotFoundError as err:
            raise EdgecError(f"cannot run the bundle: {err}") from None
        _check(done, "running the bundle" + (" under emulation" if emulate else ""))
        return _collect(Path(tmp) / "out", manifest, done.stdout,
                        "qemu" if emulate else "local", done.stderr)


def _run_ssh(bundle: Path, manifest: dict, url: str, feed, repeat, warmup,
             threads) -> DeviceRun:
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
            args = _runner_args(inputs, f"{remote}/out", repeat, warmup, threads)
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
               repeat: int = 0, warmup: int = 1, threads: int | None = None) -> DeviceRun:
    """Run `bundle` on `device` (qemu, local, ssh://...) with inputs `feed`.

    `feed` is keyed by input name (or its file stem, runtime.artifact.file_stem); the outputs
    come back keyed by output name, whatever file names the device used for them.
    """
    bundle = Path(bundle).resolve()
    manifest = read_manifest(bundle)
    verify_library(bundle, manifest)
    if "bundle" not in manifest:
        raise EdgecError(f"'{bundle}' is an artifact without a device runner; compile it with "
                         "--bundle")
    feed = {spec_name(manifest["inputs"], key): arr for key, arr in feed.items()}
    if device == "qemu":
        return _run_here(bundle, manifest, feed, repeat, warmup, threads, emulate=True)
    if device == "local":
        return _run_here(bundle, manifest, feed, repeat, warmup, threads, emulate=False)
    if device.startswith("ssh://"):
        return _run_ssh(bundle, manifest, device, feed, repeat, warmup, threads)
    raise EdgecError(f"unknown device '{device}'; use qemu, local or ssh://[user@]host[:port]")
