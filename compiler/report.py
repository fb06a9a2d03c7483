"""Human-readable summaries of compile results (the CLI prints these; nothing is computed here
that the manifest does not already hold)."""

from __future__ import annotations

from typing import Any


def _si(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} "


def cost_line(label: str, totals: dict[str, int]) -> str:
    return (f"{label:<8} {_si(totals['flops'])}FLOPs  {_si(totals['macs'])}MACs  "
            f"{totals['params']:,} params")


def compile_summary(manifest: dict[str, Any], artifact: str) -> list[str]:
    t = manifest["target"]
    lines = [f"target   {t['name']} ({t['arch']}, {t['tvm'].get('mtriple')}, "
             f"cpu {t['tvm'].get('mcpu', 'generic')}, {t['threads']} threads)",
             cost_line("before", manifest["cost"]["before"]),
             cost_line("after", manifest["cost"]["after"])]
    check = manifest.get("validation") or {}
    if "skipped" in check:
        lines.append(f"check    not run: {check['skipped']}")
    elif check:
        for row in check["outputs"]:
            top1 = f", top-1 agreement {row['top1_agree']:.0%}" if "top1_agree" in row else ""
            lines.append(
                f"check    output '{row['name']}': max |diff| {row['max_abs_diff']:.2e} = "
                f"{row['rel']:.1e} x max|ref| (limit {check['rtol']:.0e}) on {check['checks']} "
                f"seeded inputs{top1}: {'OK' if row['ok'] else 'MISMATCH'}"
            )
        lat = check["latency"]
        lines.append(
            f"latency  edgec {lat['edgec_ms']:.2f} ms vs onnxruntime {lat['onnxruntime_ms']:.2f} ms"
            f" = {lat['ratio']:.2f}x ORT (median of {lat['runs']}, {lat['threads']} threads)"
        )
    lines.append(f"artifact {artifact}  (sha256 {manifest['sha256'][:16]}…)")
    return lines
