"""`edgec validate --report DIR`: report.md, report.html and report.json from one result.

`write_document` writes any such page (the compress report uses it too). report.md references
the plots as PNG files beside it; report.html embeds them (base64 data
URIs) and has no other outside reference, so it opens offline, alone, in any browser.
`lines` is the same table as text, for the terminal.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import plots


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _ms(lat: dict[str, Any]) -> str:
    return f"{lat['median_ms']:.3f}" if "median_ms" in lat else "-"


def _sqnr(entry: dict[str, Any]) -> str:
    values = [o["sqnr_db"] for o in entry["outputs"]]
    worst = min(values) if values else math.inf
    return "exact" if worst == math.inf else f"{worst:.1f}"


def table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["model", "kind", "top-1", "top-5", "agreement", "max abs err", "SQNR dB",
            "MFLOPs", "MMACs", "params", "latency ms", "vs ORT", "verdict"]
    entries = [result["reference"], *result["candidates"]]
    base = result["reference"]["latency"].get("median_ms")
    rows = []
    for e in entries:
        err = max((o["max_abs_err"] for o in e["outputs"]), default=0.0)
        lat = e["latency"]
        ratio = (f"{lat['median_ms'] / base:.2f}x" if base and "median_ms" in lat else "-")
        verdict = ("reference" if e["role"] == "reference"
                   else "OK" if e["verdict"]["ok"] else "OVER BUDGET")
        rows.append([e["name"], e["kind"] + ("" if e["device"] == "here" else f"@{e['device']}"),
                     _pct(e.get("top1")), _pct(e.get("top5")), _pct(e.get("agreement_top1")),
                     f"{err:.3g}", _sqnr(e), f"{e['cost']['flops'] / 1e6:.2f}",
                     f"{e['cost']['macs'] / 1e6:.2f}", f"{e['cost']['params']:,}", _ms(lat),
                     ratio, verdict])
    return head, rows


def lines(result: dict[str, Any]) -> list[str]:
    head, rows = table(result)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.ljust(w) if i < 2 else c.rjust(w)  # noqa: E731
                              for i, (c, w) in enumerate(zip(r, widths)))
    data = result["data"]
    out = [f"data     {data['source']}; {data['samples']} used"
           f"{'' if data['labeled'] else ' (no labels: judged by agreement)'}",
           fmt(head), "-" * len(fmt(head)), *map(fmt, rows)]
    for e in result["candidates"]:
        out.append(f"{e['name']}: {'; '.join(e['verdict']['reasons'])}")
    out.append("latency: median of back-to-back calls, each model alone in fresh processes of "
               f"its own (the best of {result.get('latency_processes', 1)}), "
               f"{result['threads']} threads; 'vs ORT' divides by onnxruntime on the reference")
    for e in [result["reference"], *result["candidates"]]:
        if "skipped" in e["latency"]:
            out.append(f"latency of {e['name']}: not measured: {e['latency']['skipped']}")
        elif e["latency"].get("note"):
            out.append(f"latency of {e['name']}: {e['latency']['note']}")
    return out


def _figures(result: dict[str, Any]) -> list[tuple[str, str, bytes]]:
    entries = [result["reference"], *result["candidates"]]
    figs = [("pareto_flops.png", "Accuracy vs FLOPs", plots.pareto_flops(entries))]
    if any("median_ms" in e["latency"] for e in entries):
        figs.append(("pareto_latency.png", "Accuracy vs latency", plots.pareto_latency(entries)))
    figs.append(("layer_flops.png", "Per-layer FLOPs", plots.layer_flops(entries)))
    for i, e in enumerate(entries):
        if e.get("layers_ms"):
            figs.append((f"layer_latency_{i}.png", f"Per-kernel latency: {e['name']}",
                         plots.layer_latency(e)))
    return figs


@dataclass
class Document:
    """One report page: a title, a lead line, a table, bullet notes, a closing line, figures
    (file name, title, PNG bytes); written as markdown and as self-contained HTML."""

    title: str
    lead: str
    head: list[str]
    rows: list[list[str]]
    notes: list[str]
    closing: str
    figs: list[tuple[str, str, bytes]]


def _markdown(doc: Document) -> str:
    md = [f"# {doc.title}", "", f"- {doc.lead}", "",
          "| " + " | ".join(doc.head) + " |", "|" + "---|" * len(doc.head)]
    md += ["| " + " | ".join(r) + " |" for r in doc.rows]
    md += ["", *[f"- {n}" for n in doc.notes], "", doc.closing, ""]
    for name, title, _ in doc.figs:
        md += [f"## {title}", "", f"![{title}]({name})", ""]
    return "\n".join(md)


def _html(doc: Document) -> str:
    esc = html.escape
    cells = "".join(f"<th>{esc(h)}</th>" for h in doc.head)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>"
                   for r in doc.rows)
    notes = "".join(f"<li>{esc(n)}</li>" for n in doc.notes)
    images = "".join(
        f"<h2>{esc(title)}</h2><img alt=\"{esc(title)}\" src=\"data:image/png;base64,"
        f"{base64.b64encode(png).decode()}\">" for _, title, png in doc.figs)
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
             "img{max-width:100%;display:block}")
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{esc(doc.title)}"
            f"</title><style>{style}</style></head><body><h1>{esc(doc.title)}</h1>"
            f"<p>{esc(doc.lead)}</p><table><tr>{cells}</tr>{body}</table>"
            f"<ul>{notes}</ul><p>{esc(doc.closing)}</p>{images}</body></html>")


def jsonable(value: Any) -> Any:
    """`value` with infinite and NaN floats as strings ("inf"): JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def write_document(doc: Document, data: dict[str, Any], folder: str | Path) -> Path:
    """Write report.md (+ its PNGs), report.html and report.json (`data`) into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, _, png in doc.figs:
        (folder / name).write_bytes(png)
    (folder / "report.md").write_text(_markdown(doc))
    (folder / "report.html").write_text(_html(doc))
    (folder / "report.json").write_text(json.dumps(jsonable(data), indent=2))
    return folder / "report.html"


def write(result: dict[str, Any], folder: str | Path) -> Path:
    """The validation report of `result` (harness/validate.py) in `folder`."""
    head, rows = table(result)
    doc = Document("edgec validation report", lines(result)[0], head, rows,
                   [f"{e['name']}: {'; '.join(e['verdict']['reasons'])}"
                    for e in result["candidates"]], lines(result)[-1], _figures(result))
    return write_document(doc, result, folder)
