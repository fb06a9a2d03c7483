"""Human-readable summaries of compile results (the CLI prints these; nothing is computed here
that the manifest does not already hold)."""

from __future__ import annotations

from typing import Any

from .tolerance import describe, worst


def _si(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} "


def cost_line(label: str, totals: dict[str, int]) -> str:
    size = f" ({_si(totals['weight_bytes'])}B of weights)" if "weight_bytes" in totals else ""
    return (f"{label:<8} {_si(totals['flops'])}FLOPs  {_si(totals['macs'])}MACs  "
            f"{totals['params']:,} params{size}")


def unscheduled(gen: dict[str, Any]) -> list[str]:
    """The kernels no rule took (TVM's default schedule: serial scalar loops), by name."""
    return sorted(k for k, how in gen.get("kernels", {}).items() if how == "unscheduled")


def fallback_warning(gen: dict[str, Any]) -> str | None:
    """compile's warning naming the unscheduled kernels, or None where there are none."""
    names = unscheduled(gen)
    if not names:
        return None
    return (f"{len(names)} kernel{'s' * (len(names) > 1)} left to TVM's default schedule "
            f"(serial, scalar; no edgec rule matched): {', '.join(names)}")


def codegen_line(gen: dict[str, Any]) -> str:
    """How the kernels were scheduled: database coverage, then edgec's rules by name, then
    the unscheduled kernels by name."""
    counts: dict[str, int] = {}
    for how in gen["kernels"].values():
        counts[how] = counts.get(how, 0) + 1
    rules = ", ".join(f"{n} {how}" for how, n in sorted(counts.items(), key=lambda x: -x[1])
                      if how not in ("tuned", "unscheduled"))
    kept = len(gen.get("kept_rule", []))
    db = (f"{counts.get('tuned', 0)} of {len(gen['kernels'])} kernels covered by the tuning "
          "database" + (f" ({kept} more left to the rules: slower in the model)" if kept else "")
          if gen.get("tuning_db") else "no tuning database used")
    graph = "".join(f"; {line}" for line in gen.get("graph", []))
    left = unscheduled(gen)
    fallback = (f"; {len(left)} unscheduled (TVM's default schedule): {', '.join(left)}"
                if left else "")
    return (f"codegen  {gen['pipeline']} pipeline, {gen['seconds']:.1f} s; {db}; "
            f"rules: {rules or 'none'}{fallback}{graph}")


def compile_summary(manifest: dict[str, Any], artifact: str) -> list[str]:
    t = manifest["target"]
    cpu = t["tvm"].get("host") or t["tvm"]  # a GPU target's host code is the CPU's
    gpu = f"{t['device']} {t['tvm'].get('arch', '')}, " if t.get("device", "cpu") != "cpu" else ""
    lines = [f"target   {t['name']} ({t['arch']}, {gpu}{cpu.get('mtriple')}, "
             f"cpu {cpu.get('mcpu', 'generic')}, {t['threads']} threads)",
             cost_line("before", manifest["cost"]["before"]),
             cost_line("after", manifest["cost"]["after"])]
    lines[1:1] = [f"frontend {note}" for note in manifest.get("frontend", {}).get("notes", [])]
    if manifest.get("codegen"):
        lines.append(codegen_line(manifest["codegen"]))
    check = manifest.get("validation") or {}
    if "skipped" in check:
        lines.append(f"check    not run: {check['skipped']}")
    elif check:
        for row in check["outputs"]:
            top1 = f", top-1 agreement {row['top1_agree']:.0%}" if "top1_agree" in row else ""
            lines.append(
                f"check    output '{row['name']}' on "
                f"{check.get('inputs', str(check['checks']) + ' seeded inputs')}: "
                f"{describe(row)}{top1}: {'OK' if row['ok'] else 'MISMATCH'}"
            )
        lat = check.get("latency")
        if lat is None:
            why = check.get("latency_skipped") or f"checked on {check.get('device', 'device')}"
            lines.append(f"latency  not measured: {why}")
        else:
            lines.append(
                f"latency  edgec {lat['edgec_ms']:.2f} ms vs onnxruntime "
                f"{lat['onnxruntime_ms']:.2f} ms = {lat['ratio']:.2f}x ORT (medians, "
                f"{lat['threads']} threads, {_method(lat)})" + _note(lat))
    lines.append(f"artifact {artifact}  (sha256 {manifest['sha256'][:16]}…)")
    if "bundle" in manifest:
        lines.append(f"bundle   {artifact}/run.sh runs it on the board (no Python); "
                     f"edgec run {artifact} --device qemu|ssh://user@host|adb")
    return lines


def _note(lat: dict[str, Any]) -> str:
    return f"; {lat['note']}" if lat.get("note") else ""


def _method(lat: dict[str, Any]) -> str:
    if lat.get("method") == "alone":
        n = lat.get("processes", 1)
        return (f"each runtime alone, best of {n} fresh process{'es' * (n > 1)} of its own")
    return "alternating in one process: a diagnostic, not what an application gets"


def _shape(shape: list[int]) -> str:
    return "x".join(map(str, shape)) if shape else "-"


def inspect_table(cost: Any) -> list[str]:
    """Per-layer table (layer, op, output shape, weights, biases, params, MACs) and totals."""
    head = ("layer", "op", "output", "weights", "biases", "params", "MACs")
    rows = [(n.name, n.op, _shape(n.output_shape), f"{n.weights:,}", f"{n.biases:,}",
             f"{n.params:,}", f"{n.macs:,}") for n in cost.nodes]
    t = cost.totals()
    total = ("total", f"{t['nodes']} nodes", "", f"{t['weights']:,}", f"{t['biases']:,}",
             f"{t['params']:,}", f"{t['macs']:,}")
    widths = [max(len(r[i]) for r in [head, *rows, total]) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.ljust(w) if i < 3 else c.rjust(w)  # noqa: E731
                              for i, (c, w) in enumerate(zip(r, widths)))
    rule = "-" * len(fmt(head))
    return [fmt(head), rule, *map(fmt, rows), rule, fmt(total),
            f"FLOPs {t['flops']:,} ({_si(t['flops'])}FLOPs); peak activation memory "
            f"{t['peak_activation_bytes'] / 2**20:.2f} MiB in graph order",
            "convention: 1 MAC = 2 FLOPs; bias, activation, pooling and elementwise ops "
            "counted as their own FLOPs; BatchNorm params = 2 x C"]


def compare_table(a: Any, b: Any, name_a: str, name_b: str) -> list[str]:
    """Two models side by side: totals and node counts per op type, with ratios b / a."""
    ta, tb = a.totals(), b.totals()
    rows = [(k, ta[k], tb[k]) for k in ("macs", "flops", "params", "weights", "biases",
                                        "nodes", "peak_activation_bytes")]
    ops_a, ops_b = a.op_counts(), b.op_counts()
    rows += [(f"#{op}", ops_a.get(op, 0), ops_b.get(op, 0)) for op in sorted({*ops_a, *ops_b})]
    head = ("", name_a, name_b, "ratio")
    body = [(k, f"{x:,}", f"{y:,}", f"{y / x:.3f}" if x else ("-" if not y else "new"))
            for k, x, y in rows]
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(4)]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                              for i, (c, w) in enumerate(zip(r, widths)))
    saved = ta["flops"] - tb["flops"]
    return [fmt(head), "-" * len(fmt(head)), *map(fmt, body),
            f"FLOPs saved: {saved:,} ({saved / ta['flops']:.1%})" if ta["flops"] else ""]


def bench_lines(r: dict[str, Any]) -> list[str]:
    agree = r["agreement"]
    row = worst(agree["outputs"])
    lines = [
        f"model    {r['model']} on {r['target']}, {r['threads']} threads, "
        f"{_si(r['cost']['flops'])}FLOPs",
        f"outputs  vs onnxruntime, output '{row['name']}': {describe(row)}: "
        f"{'OK' if agree['ok'] else 'MISMATCH'}",
        f"edgec        {r['edgec_ms']:9.3f} ms  (p90 +{r['edgec_spread_ms']:.3f} ms)  "
        f"{r['edgec_gflops']:7.1f} GFLOP/s",
        f"onnxruntime  {r['onnxruntime_ms']:9.3f} ms  {'':>17}  "
        f"{r['onnxruntime_gflops']:7.1f} GFLOP/s",
        f"ratio    edgec / onnxruntime = {r['ratio']:.2f}x (medians of {r['runs']} and "
        f"{r['onnxruntime_runs']} runs, {_method(r)})" + _note(r),
    ]
    if r.get("interleaved"):
        i = r["interleaved"]
        lines.append(f"diagnostic  alternating in one process: edgec {i['edgec_ms']:.3f} ms, "
                     f"onnxruntime {i['onnxruntime_ms']:.3f} ms = {i['ratio']:.2f}x (blocks of "
                     f"{i['block']}, each after {i['settle']} untimed runs; not what an "
                     "application gets)")
    if r.get("layers"):
        lines.append(f"{'kernel':<44} {'calls':>5} {'ms':>9} {'share':>6} {'MFLOPs':>9} "
                     f"{'GFLOP/s':>8}")
        for k in r["layers"]:
            lines.append(f"{k['kernel'][:44]:<44} {k['calls']:>5} {k['ms']:>9.3f} "
                         f"{k['share']:>6.1%} {k['flops'] / 1e6:>9.2f} {k['gflops']:>8.2f}")
    return lines


def mca_lines(mca: dict[str, Any]) -> list[str]:
    """llvm-mca's estimate of the hottest blocks (runtime/icount_mca.py), one line each."""
    cores = list(mca["cycles_per_inference"])
    lines = [f"hottest blocks: {mca['label']}",
             f"{'block':<14} {'instr.':>6} {'runs/inf.':>10} {'share':>6}  "
             + "  ".join(f"{c + ' cyc/pass':>20}" for c in cores)]
    for b in mca["blocks"]:
        lines.append(f"{b['address']:<14} {b['instructions']:>6} {b['runs_per_inference']:>10.0f}"
                     f" {b['share']:>6.1%}  " + "  ".join(
                         f"{b['cycles_per_pass'][c]:>20.1f}" for c in cores))
    lines.append("cycles per inference in these blocks: " + ", ".join(
        f"{c} {v / 1e6:.2f} M" for c, v in mca["cycles_per_inference"].items()))
    return lines
