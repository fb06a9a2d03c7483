"""onnxruntime sessions as edgec opens them: CPU, the given intra-op threads, one inter-op
thread, quiet. `optimize=False` (ORT_DISABLE_ALL) for references, so ORT's own fusions cannot
move the numbers a build is judged by; `optimize=True` for latency, ORT at its fastest."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def ort_session(model: str | Path | bytes, threads: int, optimize: bool) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), opts,
                                providers=["CPUExecutionProvider"])
