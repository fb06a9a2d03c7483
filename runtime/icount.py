"""Guest instructions per inference of an aarch64 bundle, counted under qemu: an ARM speed
proxy on a machine without an ARM CPU.

The bundle's runner runs under the target's emulator with `-cpu PROXY_CPU` (the board's core
as qemu models it: cortex-a72 for rpi4, cortex-a76 for rpi5; the target's [deploy] proxy_cpu,
recorded in the bundle's manifest) and edgec's TCG plugin (device/icount.c, built here with
the host's C compiler and cached), which counts every guest instruction executed. The runner
is started twice, with one timed call and with 1 + `calls` timed calls (no warmup, one thread:
the plugin's counter is not atomic); the difference over `calls` is one inference, start-up and
model loading cancelled. onnxruntime on the bundle's model.onnx is counted the same way, under
the same CPU (icount_ort.py). Instructions are not cycles: a Cortex-A72 retires up to 3 per cycle,
and a load that misses cache counts as one. Compare counts of the same model and CPU only.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from edgec.errors import EdgecError

PLUGIN_SOURCE = Path(__file__).parent / "device" / "icount.c"
DEFAULT_CPU = "max"  # qemu's own model, where the target names no proxy_cpu
# inferences a count with one timed call runs: the runner's first call (its outputs) and the
# timed one (onnxruntime's counter is run the same way)
INFERENCES_AT_ONE = 2


def plugin() -> Path:
    """The plugin library, built once per source with the host's cc and cached."""
    from .bundle import cached_program

    cc = os.environ.get("CC", "cc")
    return cached_program("libedgec-icount.so", PLUGIN_SOURCE.read_bytes() + cc.encode(),
                          lambda out: [cc, "-O2", "-shared", "-fPIC", "-fvisibility=hidden",
                                       "-o", str(out), str(PLUGIN_SOURCE)])


def _emulator(manifest: dict[str, Any], cpu: str) -> list[str]:
    """The bundle's emulator with `-cpu cpu` in place of any -cpu it names."""
    emulator = list((manifest.get("bundle") or {}).get("emulator") or [])
    if not emulator:
        raise EdgecError("counting instructions needs a bundle whose target names an emulator "
                         "([deploy] emulator): compile with --bundle for an aarch64 target")
    if "-cpu" in emulator:
        i = emulator.index("-cpu")
        del emulator[i:i + 2]
    return [emulator[0], "-cpu", cpu, *emulator[1:]]


def _counted(emulator: list[str], out: Path, hot: Path | None = None) -> list[str]:
    """`emulator` with edgec's plugin writing its count to `out` (and the hottest blocks to
    `hot`)."""
    args = f"{plugin()},out={out}" + (f",hot={hot}" if hot else "")
    return [emulator[0], "-plugin", args, *emulator[1:]]


def _read(done: subprocess.CompletedProcess, out: Path, what: str) -> int:
    if done.returncode != 0 or not out.is_file():
        lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
        raise EdgecError(f"counting {what}'s instructions under qemu failed: "
                         f"{lines[-1] if lines else f'exit {done.returncode}'}")
    return int(out.read_text().split()[0])


def _count_edgec(bundle: Path, emulator: list[str], calls: int, work: Path,
                 hot: Path | None = None) -> int:
    out = work / f"edgec-{calls}.txt"
    env = dict(os.environ, EDGEC_EMULATOR=" ".join(_counted(emulator, out, hot)))
    (work / "out").mkdir(exist_ok=True)
    done = subprocess.run(["sh", str(bundle / "run.sh"), "--output-dir", str(work / "out"),
                           "--repeat", str(calls), "--warmup", "0", "--threads", "1"],
                          capture_output=True, text=True, env=env)
    return _read(done, out, "the bundle")


def _count_ort(bundle: Path, manifest: dict[str, Any], emulator: list[str], calls: int,
               work: Path) -> int:
    from edgec import targets

    from .icount_ort import command, cpuinfo, in_namespace

    fake = work / "cpuinfo"
    fake.write_text(cpuinfo(emulator[emulator.index("-cpu") + 1]))
    out = work / f"ort-{calls}.txt"
    compiler = targets.get(manifest["target"]["name"]).compiler()
    if "-L" not in emulator:  # a self-contained bundle's: edgec-ort-count needs a sysroot
        from .selfcontained import sysroot

        emulator = [*emulator, "-L", str(sysroot(compiler))]
    # as the bundle's runner runs them: a first call, then `calls` more
    argv = command(bundle / manifest["optimized_onnx"], manifest["inputs"],
                   [o["name"] for o in manifest["outputs"]], 1 + calls, compiler)
    done = subprocess.run(in_namespace([*_counted(emulator, out), *argv], fake),
                          capture_output=True, text=True)
    return _read(done, out, "onnxruntime")


def _mca(bundle: Path, emulator: list[str], calls: int, work: Path, total: float) -> dict:
    """llvm-mca's cycles of the bundle's hottest blocks per inference (icount_mca.py)."""
    from .icount_mca import estimate, parse, per_inference

    runs = []
    for n in (1, 1 + calls):
        hot = work / f"hot-{n}.txt"
        _count_edgec(bundle, emulator, n, work, hot)
        runs.append(parse(hot.read_text()))
    return estimate(per_inference(*runs, calls), total)


def count_instructions(bundle: str | Path, calls: int = 3, onnxruntime: bool = True,
                       mca: bool = False) -> dict[str, Any]:
    """Guest instructions per inference of `bundle` under its proxy CPU, one thread, and
    (`onnxruntime`) of onnxruntime running the bundle's model.onnx under the same CPU; with
    `mca`, llvm-mca's cycle estimates of the bundle's hottest blocks (icount_mca.py)."""
    bundle = Path(bundle)
    manifest_path = bundle / "manifest.json"
    if not manifest_path.is_file():
        raise EdgecError(f"{bundle} is not an artifact folder (no manifest.json)")
    manifest = json.loads(manifest_path.read_text())
    if "bundle" not in manifest:
        raise EdgecError(f"{bundle} is not a bundle: compile with --bundle")
    cpu = manifest["bundle"].get("proxy_cpu") or DEFAULT_CPU
    emulator = _emulator(manifest, cpu)
    counters = {"edgec": lambda n, w: _count_edgec(bundle, emulator, n, w)}
    if onnxruntime:
        counters["onnxruntime"] = lambda n, w: _count_ort(bundle, manifest, emulator, n, w)
    result: dict[str, Any] = {"cpu": cpu, "threads": 1, "calls": calls,
                              "label": f"guest instructions per inference under qemu -cpu "
                                       f"{cpu}, 1 thread (an ARM proxy: instructions, not time)"}
    with tempfile.TemporaryDirectory(prefix="edgec-icount-") as tmp:
        for name, count in counters.items():
            one, more = count(1, Path(tmp)), count(1 + calls, Path(tmp))
            per = (more - one) / calls
            result[name] = {"instructions_per_inference": per,
                            "startup_instructions": one - INFERENCES_AT_ONE * per}
        if mca:
            result["mca"] = _mca(bundle, emulator, calls, Path(tmp),
                                 result["edgec"]["instructions_per_inference"])
    if onnxruntime:
        result["ratio"] = (result["edgec"]["instructions_per_inference"]
                           / result["onnxruntime"]["instructions_per_inference"])
    return result
