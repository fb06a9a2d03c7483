"""`edgec compress --report DIR`: what compress did, layer by layer, and what it cost.

The page (harness/report.write_document: report.md, self-contained report.html, report.json):
per conv the form, groups x rank, MACs before and after, its SQNR when it alone is compressed,
and its dense and pair latency where the target was timed; the plans the search measured as a
conv-MACs / held-out accuracy curve (the chosen one starred); MACs and latency per layer.
Where the target runs here, `edgec validate` then compiles the original and the compressed
model and times each alone against onnxruntime on the original, on all of --data
(calibration samples included), into DIR/validation/; its accuracy/FLOPs/latency Pareto plots
are the whole-model view.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgec.harness import plots
from edgec.harness.report import Document, write_document

from .fit import Plan
from .score import sqnr_db
from .search import Layer
from .speed import Decision


def layer_rows(layers: list[Layer], plan: Plan, sens: dict, decisions: dict[str, Decision],
               why: dict[str, str]) -> list[dict[str, Any]]:
    """Per conv: what the plan does to it, its noise alone, its latency decision, and why a
    conv left dense stays so."""
    rows = []
    for layer in layers:
        p, d = plan.get(layer.name), decisions.get(layer.name)
        row = {"name": layer.name, "shape": list(layer.shape), "macs_before": layer.macs,
               "macs_after": layer.plan_macs(p), "form": p.form(layer.shape[1]) if p else "dense",
               "groups": p.groups if p else 1, "rank": p.rank if p else None,
               "noise_alone": sens.get((layer.name, p)) if p else 0.0}
        if layer.name in why:
            row["why_dense"] = why[layer.name]
        if d is not None:
            row.update(dense_ms=d.dense_ms, pair_ms=d.pair_ms, speedup=d.speedup, kept=d.keep,
                       decided_by=d.how)
        rows.append(row)
    return rows


def _row(r: dict[str, Any]) -> list[str]:
    ms = (lambda v: "" if v is None else f"{v:.4f}")  # noqa: E731
    db = sqnr_db(r["noise_alone"] or 0.0)
    sqnr = "" if db is None else f"{db:.1f}"
    return [r["name"], r["form"], "" if r["rank"] is None else f"{r['groups']}x{r['rank']}",
            f"{r['macs_before'] / 1e6:.2f}", f"{r['macs_after'] / 1e6:.2f}", sqnr,
            ms(r.get("dense_ms")), ms(r.get("pair_ms")),
            f"{r['speedup']:.2f}x" if r.get("speedup") else "", r.get("why_dense", "")]


def _figures(result: Any) -> list[tuple[str, str, bytes]]:
    base = 100 * (result.original.top1 if result.original.top1 is not None else 1.0)
    labeled = result.original.top1 is not None
    points = [{"x": p["macs"] / 1e6, "y": base - p["drop"], "chosen": p["chosen"]}
              for p in result.plans]
    points.append({"x": result.macs_before / 1e6, "y": base, "label": "original"})
    ylabel = "top-1 on held-out samples (%)" if labeled else "top-1 agreement (%)"
    figs = [("tradeoff.png", "Conv MACs vs accuracy (plans measured)",
             plots.tradeoff(points, "conv MMACs per inference", ylabel,
                            "Conv MACs vs accuracy"))]
    rows = result.layers
    figs.append(("layer_macs.png", "MACs per conv", plots.paired_bars(
        [r["name"] for r in rows], [r["macs_before"] / 1e6 for r in rows],
        [r["macs_after"] / 1e6 for r in rows], "MMACs", "MACs per conv",
        ("dense", "compressed"))))
    timed = [r for r in rows if r.get("dense_ms") is not None]
    if timed:
        figs.append(("layer_latency.png", "Latency per conv (timed on the target)",
                     plots.paired_bars([r["name"] for r in timed],
                                       [r["dense_ms"] for r in timed],
                                       [r["pair_ms"] for r in timed], "ms",
                                       "Dense conv vs its pair", ("dense", "pair"))))
    return figs


def write_report(result: Any, folder: Path, name: str,
                 validation: dict[str, Any] | None = None) -> Path:
    """The compress report of `result` in `folder`; `validation` (harness validate's result
    on the original and the compressed model) adds the whole-model lines."""
    o, c = result.original, result.compressed
    lead = (f"{name}: conv MACs {result.macs_before / 1e6:.2f}M -> "
            f"{result.macs_after / 1e6:.2f}M ({result.macs_before / max(result.macs_after, 1):.2f}"
            f"x fewer); accuracy drop {c.drop:.2f} points on {result.samples['held_out']} "
            f"held-out samples (fits on {result.samples['calibration']})")
    notes = [f"warning: {w}" for w in result.warnings]
    if result.decided_by:
        notes.append(f"latency per layer: {result.decided_by}")
    if o.top1 is not None:
        notes.append(f"top-1 on held-out samples: {o.top1:.2%} -> {c.top1:.2%}")
    if validation is not None:
        notes += whole_model(validation)
    head = ["layer", "form", "g x r", "MMACs before", "MMACs after", "SQNR alone dB",
            "dense ms", "pair ms", "speedup", "left dense because"]
    doc = Document("edgec compress report", lead, head, [_row(r) for r in result.layers], notes,
                   f"phases (s): {result.seconds}", _figures(result))
    data = {"name": name, **result.to_json()}
    if validation is not None:
        data["validation"] = validation
    return write_document(doc, data, folder)


def whole_model(validation: dict[str, Any]) -> list[str]:
    ref = validation["reference"]
    out = [f"whole model on {validation['data']['samples']} samples of "
           f"{validation['data']['path']} (validation/report.html):"]
    for e in [ref, *validation["candidates"]]:
        lat = e["latency"].get("median_ms")
        acc = e.get("top1", e.get("agreement_top1"))
        out.append(f"{e['name']} ({e['kind']}): top-1 {acc:.2%}, "
                   f"{e['cost']['macs'] / 1e6:.2f} MMACs"
                   + (f", {lat:.3f} ms alone" if lat else ""))
    return out
