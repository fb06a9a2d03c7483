"""What `edgec quantize` is asked to do (the command's flags, as a typed dataclass)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .ranges import METHODS, QRANGE

ACTIVATIONS = ("auto", *QRANGE)  # auto: the type the target's int8 kernels take
# through Relu only; also through Clip(0, M) (equalize.py's bounded mode); not at all
EQUALIZE = ("relu", "bounded", "off")


@dataclass(frozen=True)
class QuantizeOptions:
    data: str | Path
    method: str = "percentile"  # how activation ranges are picked (ranges.METHODS)
    max_accuracy_drop: float = 0.5  # top-1 points (or % of samples changed without labels)
    activations: str = "auto"  # uint8 | int8 | auto
    target: str = "host"  # whose int8 kernels the model is written for
    equalize: str = "relu"  # cross-layer equalization of conv pairs first (EQUALIZE)
    bias_correction: bool = True
    preprocess: dict[str, Any] = field(default_factory=dict)
    input_shapes: dict[str, list[int]] | None = None
    calibration: int = 256  # samples the ranges are taken on, at most
    held_out: int = 2048  # samples that judge the model, at most
    seed: int = 0

    def check(self) -> None:
        from edgec.errors import EdgecError

        if self.method not in METHODS:
            raise EdgecError(f"--method {self.method!r}: want one of {', '.join(METHODS)}")
        if self.activations not in ACTIVATIONS:
            raise EdgecError(f"--activations {self.activations!r}: want one of "
                             f"{', '.join(ACTIVATIONS)}")
        if self.equalize not in EQUALIZE:
            raise EdgecError(f"--equalize {self.equalize!r}: want one of {', '.join(EQUALIZE)}")
        if not self.max_accuracy_drop >= 0:
            raise EdgecError(f"--max-accuracy-drop {self.max_accuracy_drop}: want >= 0")

