"""How far a compressed model is from the original on the held-out samples.

`Scorer` runs the original once (onnxruntime) and keeps its outputs; `score(model)` runs a
candidate on the same samples and returns its noise (sum |out - ref|^2 / sum |ref|^2 over all
outputs, the inverse SQNR), its top-1 agreement with the original on the classifier output, its
top-1 accuracy where the data has labels, and `drop`: the points of top-1 accuracy lost against
the original (with labels), else the % of samples whose top-1 changed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from edgec.harness.metrics import classifier_output

from .activations import batchable, tensors


def sqnr_db(noise: float) -> float | None:
    """SQNR in dB of a noise share (noise power over signal power); None where exact."""
    return None if noise <= 0 else float(-10 * np.log10(noise))


@dataclass(frozen=True)
class Score:
    noise: float
    agreement: float | None  # share of samples with the original's top-1
    top1: float | None  # against the labels
    drop: float  # points: accuracy lost (labels), else samples changed, in %

    def to_json(self) -> dict:
        return {"noise": self.noise, "agreement": self.agreement, "top1": self.top1,
                "drop_points": self.drop}


class Scorer:
    def __init__(self, original: onnx.ModelProto, feeds: list[dict[str, np.ndarray]],
                 labels: np.ndarray | None, output_specs: list[dict]) -> None:
        self.feeds, self.labels = feeds, labels
        self.ref = list(tensors(original, None, feeds))
        self.batched = batchable(original, feeds)
        cls = classifier_output(output_specs)
        self.cls = None if cls is None else [s["name"] for s in output_specs].index(cls)
        self.ref_top1 = self._top1(self.ref)
        self.original = self._score(self.ref)

    def _top1(self, outs: list[list[np.ndarray]]) -> np.ndarray | None:
        if self.cls is None:
            return None
        return np.concatenate([o[self.cls].reshape(o[self.cls].shape[0], -1).argmax(1)
                               for o in outs])

    def _score(self, outs: list[list[np.ndarray]]) -> Score:
        signal = sum(float(np.sum(np.square(r, dtype=np.float64))) for o in self.ref for r in o)
        noise = sum(float(np.sum(np.square(g.astype(np.float64) - r)))
                    for got, want in zip(outs, self.ref) for g, r in zip(got, want))
        top1 = self._top1(outs)
        agree = None if top1 is None else float(np.mean(top1 == self.ref_top1))
        acc = None if top1 is None or self.labels is None else float(
            np.mean(top1 == self.labels))
        if acc is not None:
            drop = 100 * (float(np.mean(self.ref_top1 == self.labels)) - acc)
        else:
            drop = 100 * (1 - agree) if agree is not None else 100 * noise / max(signal, 1e-30)
        return Score(noise / max(signal, 1e-30), agree, acc, drop)

    def score(self, model: onnx.ModelProto) -> Score:
        return self._score(list(tensors(model, None, self.feeds, self.batched)))
