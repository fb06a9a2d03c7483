"""Does the latency edgec prints hold when the model runs alone, as an application runs it?

    .venv/bin/python benchmarks/latency_check.py [--models mobilenet_v3_small,resnet18]
                                                 [--apps 5] [--out FILE.md]

For each model: the edgec latency that `edgec compile`, `edgec bench` and `edgec validate`
print (each through its command line, in a process of its own), against an application's own
timing: a fresh Python process that loads the artifact with `edgec.runtime.load`, calls it for
a second, then times back-to-back calls for two seconds, written here without any of the
harness's code. The application is run `--apps` times, between the commands; its figure is
its best process's median call, as edgec's (harness/latency.py: a process's speed can differ
from the next one's on a VM, for every runtime alike), and all processes are listed. A
printed figure holds when it is within 10% of the application's.
Prints a Markdown section (and writes it to --out).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

APP = """
import sys, time, numpy as np, edgec.runtime
model = edgec.runtime.load(sys.argv[1], threads=int(sys.argv[3]))
feed = dict(np.load(sys.argv[2]))
end = time.perf_counter() + 1.0
while time.perf_counter() < end:
    model(**feed)
times, end = [], time.perf_counter() + 2.0
while time.perf_counter() < end:
    t = time.perf_counter()
    model(**feed)
    times.append(time.perf_counter() - t)
print(np.median(times) * 1e3)
"""


def _edgec(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "edgec", *args], capture_output=True,
                          text=True)
    if done.returncode not in (0, 1):
        raise SystemExit(f"edgec {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def _app(artifact: Path, feed: Path, threads: int) -> float:
    out = subprocess.run([sys.executable, "-c", APP, str(artifact), str(feed), str(threads)],
                         capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def check_model(name: str, apps: int, tmp: Path) -> dict:
    from edgec import models, runtime
    from edgec.runtime.artifact import read_manifest

    src = models.export(name, tmp / f"{name}.onnx")
    art = tmp / f"{name}-host"
    printed: dict[str, float] = {}
    app: list[float] = []
    out = _edgec("compile", str(src), "-o", str(art))
    printed["compile"] = float(re.search(r"latency  edgec ([\d.]+) ms", out).group(1))
    manifest = read_manifest(art)
    threads = manifest["target"]["threads"]
    feed = runtime.random_inputs(manifest["inputs"], 0)
    np.savez(tmp / f"{name}-feed.npz", **feed)
    samples = {k: np.concatenate([v] * 4) for k, v in feed.items()}  # 4 samples, no labels
    np.savez(tmp / f"{name}-data.npz", **samples)
    app += [_app(art, tmp / f"{name}-feed.npz", threads) for _ in range(apps // 2)]
    printed["bench"] = json.loads(_edgec("bench", str(art), "--json"))["edgec_ms"]
    app += [_app(art, tmp / f"{name}-feed.npz", threads) for _ in range(apps - apps // 2)]
    doc = json.loads(_edgec("validate", str(src), str(art), "--data",
                            str(tmp / f"{name}-data.npz"), "--json"))
    printed["validate"] = doc["candidates"][0]["latency"]["median_ms"]
    alone = float(min(app))
    return {"model": name, "app_ms": alone, "app_processes_ms": app, "threads": threads,
            "printed": {k: {"ms": v, "ratio": v / alone} for k, v in printed.items()}}


def markdown(results: list[dict], command: str) -> list[str]:
    lines = ["## Printed latency against the model alone in an application", "",
             f"Command: `{command}`. Each command's printed edgec latency against an "
             "application's own timing of the artifact (a fresh process: load, 1 s warm-up, "
             "2 s of back-to-back calls; the best process's median call, processes interleaved "
             "with the commands, all listed). Goal: every printed figure within 10%.", "",
             "| model | application alone (ms) | processes (ms) | compile | bench | validate |",
             "|---|---:|---|---:|---:|---:|"]
    ok = True
    for r in results:
        cells = []
        for key in ("compile", "bench", "validate"):
            p = r["printed"][key]
            ok &= abs(p["ratio"] - 1) <= 0.10
            cells.append(f"{p['ms']:.3f} ({p['ratio']:.2f}x)")
        procs = ", ".join(f"{v:.3f}" for v in r["app_processes_ms"])
        lines.append(f"| {r['model']} | {r['app_ms']:.3f} | {procs} | " + " | ".join(cells)
                     + " |")
    lines += ["", f"- every printed figure within 10% of the application's: "
                  f"{'met' if ok else '**not met**'}"]
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="mobilenet_v3_small,resnet18")
    p.add_argument("--apps", type=int, default=5, help="application processes per model")
    p.add_argument("--out", help="also write the section to this file")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = [check_model(m, args.apps, Path(tmp)) for m in args.models.split(",")]
    lines = markdown(results, "python benchmarks/latency_check.py " + " ".join(sys.argv[1:]))
    print("\n".join(lines))
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
