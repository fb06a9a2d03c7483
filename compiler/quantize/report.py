"""`edgec quantize --report DIR`: what quantize did, layer by layer, and what it cost.

The page (harness/report.write_document: report.md, self-contained report.html, report.json):
per layer its op, weights, the SQNR of the model's outputs with it alone in int8, and whether
it runs int8 or why it stays fp32; the models the search measured as an int8-layers /
held-out accuracy curve (the chosen one starred); the weight bytes per layer before and after.
Where the target runs here, `edgec validate` then compiles the fp32 and the int8 model and
times each alone against onnxruntime on the fp32 model, on all of --data, into
DIR/validation/ (the whole model's accuracy/FLOPs/latency).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgec.harness import plots
from edgec.harness.report import Document, write_document


def _row(r: dict[str, Any]) -> list[str]:
    db = r["sqnr_alone_db"]
    return [r["name"], r["op"], f"{r['weights']}", "exact" if db is None else f"{db:.1f}",
            "int8" if r["int8"] else "fp32", r["why_fp32"]]


def _figures(result: Any) -> list[tuple[str, str, bytes]]:
    labeled = result.original.top1 is not None
    base = 100 * (result.original.top1 if labeled else 1.0)
    n = len(result.layers)
    points = [{"x": n - t["fp32_layers"], "y": base - t["drop"], "chosen": t["chosen"]}
              for t in result.tried]
    if not any(p["x"] == 0 for p in points):
        points.append({"x": 0, "y": base, "label": "fp32"})
    ylabel = "top-1 on held-out samples (%)" if labeled else "top-1 agreement (%)"
    rows = result.layers
    return [("tradeoff.png", "Layers in int8 vs accuracy (models measured)",
             plots.tradeoff(points, "layers in int8 (least sensitive first)", ylabel,
                            "int8 layers vs accuracy")),
            ("layer_weights.png", "Weight bytes per layer",
             plots.paired_bars([r["name"] for r in rows], [4 * r["weights"] / 1e3 for r in rows],
                               [(1 if r["int8"] else 4) * r["weights"] / 1e3 for r in rows],
                               "KB", "Weights per layer", ("fp32", "as written")))]


def write_report(result: Any, folder: Path, name: str,
                 validation: dict[str, Any] | None = None) -> Path:
    """The quantize report of `result` in `folder`; `validation` (harness validate's result
    on the fp32 and the int8 model) adds the whole-model lines."""
    from edgec.compiler.compress.report import whole_model

    o, q = result.original, result.quantized
    n = sum(r["int8"] for r in result.layers)
    lead = (f"{name}: {n}/{len(result.layers)} layers int8 ({result.activations} activations, "
            f"{result.method} ranges); accuracy drop {q.drop:.2f} points on "
            f"{result.samples['held_out']} held-out samples (ranges from "
            f"{result.samples['calibration']})")
    notes = [f"warning: {w}" for w in result.warnings]
    if o.top1 is not None:
        notes.append(f"top-1 on held-out samples: {o.top1:.2%} -> {q.top1:.2%}")
    elif q.agreement is not None:
        notes.append(f"top-1 agreement with fp32 on held-out samples: {q.agreement:.2%}")
    eq = result.equalized
    notes.append("cross-layer equalization: " + (", ".join(
        f"{k} {v}" for k, v in eq["rewrites"].items()) or "no pair equalized"))
    if validation is not None:
        notes += whole_model(validation)
    head = ["layer", "op", "weights", "SQNR alone dB", "runs", "fp32 because"]
    doc = Document("edgec quantize report", lead, head, [_row(r) for r in result.layers],
                   notes, f"phases (s): {result.seconds}", _figures(result))
    data = {"name": name, **result.to_json()}
    if validation is not None:
        data["validation"] = validation
    return write_document(doc, data, folder)
