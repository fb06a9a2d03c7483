"""`edgec quantize`: int8 QDQ ONNX from an fp32 model and the user's data, under an accuracy
budget.

Phases (`PHASES`):
  load         frontend + the exact passes (BatchNorm folded into the convs it follows)
  data         --data split into calibration and held-out samples (compress/samples.py)
  equalize     cross-layer equalization of conv pairs (equalize.py), exact in fp32
  calibrate    each quantized tensor's histogram on the calibration samples, its range by
               --method, the layer inputs' channel means for bias correction (calibrate.py)
  sensitivity  each layer alone in int8, its noise on held-out samples (search.py)
  search       the fewest most-sensitive layers kept in fp32 for the model to stay within
               --max-accuracy-drop on all held-out samples (search.py)
  write        QDQ ONNX (qdq.py) onnxruntime runs with its int8 kernels and edgec compiles to
               its own; checked by the ONNX checker, written atomically
Where no layer can be int8 within the budget the model is written in fp32, with a warning:
never silently worse.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgec.errors import EdgecError
from edgec.fileio import atomic_write_bytes

from .. import frontend, passes
from ..analysis import weight_bytes
from ..compress.samples import split
from ..compress.score import Score, Scorer, sqnr_db
from ..passes.graph import name_nodes
from .calibrate import calibrate, tensor_quant
from .equalize import equalize
from .layers import find_layers
from .options import QuantizeOptions
from .qdq import build
from .search import choose, sensitivity

PHASES = ("load", "data", "equalize", "calibrate", "sensitivity", "search", "write")
INT8_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul",
            "ConvInteger", "MatMulInteger"}
SENSITIVITY_SAMPLES = 64  # held-out samples each layer's noise alone is measured on


@dataclass
class QuantizeResult:
    output: Path | None
    layers: list[dict[str, Any]]  # per layer: op, SQNR alone, int8 or fp32 and why
    tensors: dict[str, dict[str, Any]]  # per quantized tensor: range, scale, zero point
    original: Score
    quantized: Score
    activations: str  # uint8 | int8
    method: str
    equalized: dict[str, Any]  # the equalize pass report
    tried: list[dict[str, Any]]
    seconds: dict[str, float]
    samples: dict[str, int]
    weight_bytes: tuple[int, int] = (0, 0)  # the initializers' bytes: fp32 model, as written
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"output": str(self.output) if self.output else None, "layers": self.layers,
                "tensors": self.tensors, "original": self.original.to_json(),
                "quantized": self.quantized.to_json(), "activations": self.activations,
                "method": self.method, "equalize": self.equalized, "tried": self.tried,
                "seconds": self.seconds, "samples": self.samples,
                "weight_bytes": {"before": self.weight_bytes[0], "after": self.weight_bytes[1]},
                "warnings": self.warnings}


def activation_dtype(options: QuantizeOptions) -> str:
    """--activations, or for auto the type the target's CPU model takes for int8 activations
    (targets/cpu/models.toml: u8 where the dot product is u8 x s8, as x86 VNNI's)."""
    if options.activations != "auto":
        return options.activations
    from edgec import targets

    return targets.cpu_model(targets.get(options.target).tvm_target()).int8_activation


class _Clock:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.t = time.perf_counter()

    def done(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = round(now - self.t, 2)
        self.t = now


def quantize(model_path: str | Path, *, output: str | Path | None,
             options: QuantizeOptions) -> QuantizeResult:
    """Quantize `model_path` under `options`; write the QDQ model to `output` (None: only
    report)."""
    from edgec.compiler import tensor_specs

    opts, clock = options, _Clock()
    opts.check()
    dtype = activation_dtype(opts)
    model, front = frontend.load(model_path, input_shapes=opts.input_shapes, check_ops=False)
    already = [n.op_type for n in model.graph.node if n.op_type in INT8_OPS]
    if already:
        raise EdgecError(f"{model_path} is already int8 ({len(already)} {already[0]} and "
                         f"like nodes): compile it as it is")
    base = name_nodes(passes.run_passes(model, passes.select())[0])
    clock.done("load")
    calib, held, labels = split(base, opts.data, opts.preprocess, opts.calibration,
                                opts.held_out, opts.seed)
    outs = tensor_specs(list(base.graph.output), set())
    clock.done("data")
    fp32, eq = (equalize(base, bounded=opts.equalize == "bounded") if opts.equalize != "off"
                else (base, passes.PassReport("equalize")))
    layers, declined = find_layers(fp32)
    if not layers:
        raise EdgecError(f"{model_path}: nothing to quantize (no Conv, Gemm or MatMul with "
                         f"constant weights){'; ' + '; '.join(declined) if declined else ''}")
    clock.done("equalize")
    hists, means = calibrate(fp32, layers, calib)
    quant = tensor_quant(hists, opts.method, dtype)
    clock.done("calibrate")

    def model_of(chosen: list) -> onnx.ModelProto:
        return build(fp32, chosen, quant, means if opts.bias_correction else None)

    scorer = Scorer(base, held, labels, outs)
    sens = sensitivity(layers, model_of, Scorer(base, held[:SENSITIVITY_SAMPLES], None, outs))
    clock.done("sensitivity")
    choice = choose(layers, sens, model_of, scorer, opts.max_accuracy_drop)
    clock.done("search")
    warnings = list(front.warnings) + [f"stays fp32: {d}" for d in declined]
    if not choice.int8:
        warnings.append(f"no layer runs in int8 within --max-accuracy-drop "
                        f"{opts.max_accuracy_drop:g}: the model is written in fp32")
    final = model_of(choice.int8)
    path = _write(final, output, opts, dtype) if output else None
    clock.done("write")
    sizes = {t.name: int(np.prod(t.dims)) for t in fp32.graph.initializer}
    rows = [{"name": la.name, "op": la.op, "weights": sizes[la.weight],
             "noise_alone": sens[la.name],
             "sqnr_alone_db": sqnr_db(sens[la.name]),
             "int8": la in choice.int8, "why_fp32": choice.fp32.get(la.name, "")}
            for la in layers]
    used = {t for la in choice.int8 for t in la.tensors()}
    tensors = {t: {"min": hists[t].lo, "max": hists[t].hi, "scale": quant[t].scale,
                   "zero_point": quant[t].zero} for t in used}
    return QuantizeResult(path, rows, tensors, scorer.original, choice.score, dtype,
                          opts.method, eq.to_json(), choice.tried, clock.seconds,
                          {"calibration": len(calib), "held_out": len(held)},
                          (weight_bytes(base), weight_bytes(final)), warnings)



def _write(model: onnx.ModelProto, output: str | Path, opts: QuantizeOptions,
           dtype: str) -> Path:
    from ..optimize import exportable

    onnx.helper.set_model_props(model, {
        **{p.key: p.value for p in model.metadata_props},
        "edgec.quantize": json.dumps({"method": opts.method, "activations": dtype,
                                      "equalize": opts.equalize,
                                      "bias_correction": opts.bias_correction})})
    exportable(model, "quantized model", "a bug")
    return atomic_write_bytes(Path(output), model.SerializeToString())


__all__ = ["PHASES", "QuantizeOptions", "QuantizeResult", "quantize"]
