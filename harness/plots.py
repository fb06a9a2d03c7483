"""The validation report's plots, drawn with matplotlib (Agg: no display) as PNG bytes.

- accuracy vs FLOPs and accuracy vs latency, one point per model: the Pareto view (up and to
  the left is better; the reference is the square). Accuracy is top-1 against the labels, or
  top-1 agreement with the reference for unlabeled data.
- per-layer latency of each artifact that ran here (its kernels, slowest first).
- per-layer FLOPs of each model, in graph order (what a transform removed, layer by layer).
- `tradeoff` and `paired_bars`: a cost/accuracy curve and before/after bars per layer, for
  the compress report.
"""

from __future__ import annotations

import io
from typing import Any


def _figure(width: float = 6.4, height: float = 4.0) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height), dpi=100)


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def accuracy(entry: dict[str, Any]) -> float | None:
    """Top-1 in % against the labels, else top-1 agreement with the reference in %."""
    value = entry.get("top1", entry.get("agreement_top1"))
    return None if value is None else 100 * value


def _scatter(entries: list[dict], xs: list[float | None], xlabel: str, title: str) -> bytes:
    fig, ax = _figure()
    for entry, x in zip(entries, xs):
        y = accuracy(entry)
        if x is None or y is None:
            continue
        marker = "s" if entry["role"] == "reference" else "o"
        ax.scatter([x], [y], marker=marker, s=60)
        ax.annotate(entry["name"], (x, y), textcoords="offset points", xytext=(6, 4),
                    fontsize=8)
    labeled = any("top1" in e for e in entries)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("top-1 accuracy (%)" if labeled else "top-1 agreement with reference (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    return _png(fig)


def pareto_flops(entries: list[dict]) -> bytes:
    xs = [e["cost"]["flops"] / 1e6 for e in entries]
    return _scatter(entries, xs, "MFLOPs per inference", "Accuracy vs FLOPs")


def pareto_latency(entries: list[dict]) -> bytes:
    xs = [e["latency"].get("median_ms") for e in entries]
    return _scatter(entries, xs, "latency (ms, median, each alone)", "Accuracy vs latency")


def layer_latency(entry: dict[str, Any], top: int = 20) -> bytes:
    rows = entry["layers_ms"][:top]
    fig, ax = _figure(7.0, 0.3 * len(rows) + 1.2)
    names = [r["kernel"][:48] for r in rows][::-1]
    ax.barh(names, [r["ms"] for r in rows][::-1])
    ax.set_xlabel("ms per inference")
    ax.set_title(f"{entry['name']}: per-kernel latency (slowest {len(rows)})")
    ax.tick_params(axis="y", labelsize=7)
    return _png(fig)


def layer_flops(entries: list[dict[str, Any]]) -> bytes:
    fig, ax = _figure(7.0, 3.6)
    for i, entry in enumerate(entries):
        values = [r["flops"] / 1e6 for r in entry["layers_flops"]]
        ax.step(range(len(values)), values, where="mid", label=entry["name"],
                linestyle=("-", "--", ":", "-.")[i % 4], linewidth=2.5 - 0.4 * min(i, 3))
    ax.set_xlabel("layer (graph order, layers with FLOPs)")
    ax.set_ylabel("MFLOPs")
    ax.set_title("Per-layer FLOPs")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    return _png(fig)


def tradeoff(points: list[dict[str, Any]], xlabel: str, ylabel: str, title: str) -> bytes:
    """A curve of (x, y) points, each {"x", "y", "label"?, "chosen"?}, joined in x order; the
    chosen point stands out (up and to the left is better)."""
    fig, ax = _figure()
    pts = sorted(points, key=lambda p: p["x"])
    ax.plot([p["x"] for p in pts], [p["y"] for p in pts], marker="o", linewidth=1.5)
    for p in pts:
        if p.get("chosen"):
            ax.scatter([p["x"]], [p["y"]], marker="*", s=220, zorder=3, label="chosen")
        if p.get("label"):
            ax.annotate(p["label"], (p["x"], p["y"]), textcoords="offset points",
                        xytext=(6, 4), fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if any(p.get("chosen") for p in pts):
        ax.legend(fontsize=8)
    return _png(fig)


def paired_bars(names: list[str], before: list[float], after: list[float], ylabel: str,
                title: str, labels: tuple[str, str] = ("before", "after")) -> bytes:
    """Two bars per name (e.g. a layer's MACs or latency before and after a transform)."""
    fig, ax = _figure(7.0, 3.8)
    xs = list(range(len(names)))
    ax.bar([x - 0.2 for x in xs], before, width=0.4, label=labels[0])
    ax.bar([x + 0.2 for x in xs], after, width=0.4, label=labels[1])
    ax.set_xticks(xs, [n[-18:] for n in names], rotation=45, ha="right", fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    return _png(fig)
