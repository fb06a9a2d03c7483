"""What a candidate's outputs cost against the reference's, accumulated sample by sample.

Per output, over all samples: max and mean |candidate - reference| and the SQNR,
10 log10(sum ref^2 / sum (candidate - reference)^2) in dB (infinite where they are equal).
For the classifier output (the first output shaped [batch, classes], trailing 1s allowed):
top-1 and top-5 accuracy against the labels where the data has them, and top-1 agreement with
the reference (the share of samples whose arg max is the reference's). Only the classifier's
logits are kept (samples x classes); every other statistic is a running sum, so a data set
streams through.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def classifier_output(specs: list[dict[str, Any]]) -> str | None:
    """The first output of shape [batch, classes] (trailing 1s allowed) with classes > 1."""
    for spec in specs:
        dims = [d for d in spec["shape"][1:] if d != 1]
        if len(spec["shape"]) >= 2 and len(dims) == 1 and dims[0] > 1:
            return spec["name"]
    return None


def num_classes(specs: list[dict[str, Any]]) -> int | None:
    name = classifier_output(specs)
    spec = next((s for s in specs if s["name"] == name), None)
    return int(np.prod(spec["shape"][1:])) if spec else None


@dataclass
class _OutputError:
    max_abs: float = 0.0
    sum_abs: float = 0.0
    count: int = 0
    signal: float = 0.0
    noise: float = 0.0

    def add(self, got: np.ndarray, want: np.ndarray) -> None:
        diff = got.astype(np.float64) - want.astype(np.float64)
        if diff.size:
            self.max_abs = max(self.max_abs, float(np.max(np.abs(diff))))
        self.sum_abs += float(np.sum(np.abs(diff)))
        self.count += diff.size
        self.signal += float(np.sum(np.square(want.astype(np.float64))))
        self.noise += float(np.sum(np.square(diff)))

    def to_json(self, name: str) -> dict[str, Any]:
        sqnr = (math.inf if self.noise == 0 else
                10 * math.log10(self.signal / self.noise) if self.signal else -math.inf)
        return {"name": name, "max_abs_err": self.max_abs,
                "mean_abs_err": self.sum_abs / max(self.count, 1), "sqnr_db": sqnr}


@dataclass
class Scores:
    """Running comparison of one model's outputs with the reference's."""

    classifier: str | None
    errors: dict[str, _OutputError] = field(default_factory=dict)
    logits: list[np.ndarray] = field(default_factory=list)
    ref_top1: list[np.ndarray] = field(default_factory=list)

    def add(self, got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
        for name, ref in want.items():
            self.errors.setdefault(name, _OutputError()).add(got[name], ref)
        if self.classifier:
            self.logits.append(got[self.classifier].reshape(got[self.classifier].shape[0], -1))
            ref = want[self.classifier]
            self.ref_top1.append(ref.reshape(ref.shape[0], -1).argmax(1))

    def summary(self, labels: np.ndarray | None) -> dict[str, Any]:
        out: dict[str, Any] = {"outputs": [e.to_json(n) for n, e in self.errors.items()]}
        if not self.logits:
            return out
        logits = np.concatenate(self.logits)
        top1 = logits.argmax(1)
        out["agreement_top1"] = float(np.mean(top1 == np.concatenate(self.ref_top1)))
        if labels is not None:
            k = min(5, logits.shape[1])
            top5 = np.argsort(-logits, axis=1, kind="stable")[:, :k]
            out["top1"] = float(np.mean(top1 == labels))
            out["top5"] = float(np.mean(np.any(top5 == labels[:, None], axis=1)))
        return out
