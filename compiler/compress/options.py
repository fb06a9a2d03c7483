"""What `edgec compress` is asked to do (the command's flags, as a typed dataclass)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# --form: the candidate forms each allows (search.candidates)
FORMS = {"separable": ["separable"], "grouped": ["grouped"], "auto": ["grouped", "separable"]}


@dataclass(frozen=True)
class CompressOptions:
    data: str | Path
    max_accuracy_drop: float = 1.0  # top-1 points (or % of samples changed without labels)
    form: str = "auto"  # separable | grouped | auto
    flops: float | None = None  # conv MACs to reach, as a share of the original's
    target: str = "host"  # vector width of the ranks; where the latency check runs
    latency: bool = True  # keep only rewrites the target runs faster
    preprocess: dict[str, Any] = field(default_factory=dict)
    input_shapes: dict[str, list[int]] | None = None
    calibration: int = 256  # samples the fits see, at most
    held_out: int = 2048  # samples that judge them, at most
    seed: int = 0
