"""How far a correct float32 build may land from onnxruntime: a tolerance per output that
scales with the computation behind it.

    tol = max(RTOL * max|ref|, min(NOISE_FACTOR * noise, NOISE_CAP * max|ref|))

`RTOL * max|ref|` serves outputs whose size reflects the sums behind them (a conv's, a
classifier's logits). It refuses correct builds where the output is small next to the
activations it comes from: a sigmoid map of logits near -12 is ~1e-5, while float32 rounding
of those logits (magnitude 1e3 to 1e4 before the bias cancels them) moves it by 1e-3 of itself.

`noise` measures that sensitivity on the reference itself: the largest change of each output
when every float weight and input of the original model is moved by one float32 rounding step
(relative 2^-23, a seeded random sign), run in onnxruntime on the same inputs. A correct fp32
implementation, summing in its own order, lands about that far from the reference (MobileNetV2:
edgec 1.04e-4 off, noise 1.03e-4, max|ref| 11.5); NOISE_FACTOR allows 10 times it, so a typical
model keeps RTOL's bound, and NOISE_CAP keeps a model so sensitive that rounding decides its
output (a saturated sign, an argmax tie) from accepting anything. A quantized model, where
rounding decides by design, has a wider cap (noise_cap).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

RTOL = 1e-4
NOISE_FACTOR = 10.0
NOISE_CAP = 1e-2
QUANTIZED_CAP = 1e-1  # the cap for a model with QuantizeLinear nodes (see quantized_cap)


def _nudge(arr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    eps = np.finfo(np.float32).eps
    sign = rng.choice(np.array([-1.0, 1.0], np.float32), size=arr.shape)
    return (arr * (1 + eps * sign)).astype(arr.dtype)


# inputs that size the output (op -> input positions), not values it computes with: a Resize's
# scale 2.0 moved a step down turns a 5-row map into 9 rows, not 10 (torch's F.interpolate)
SIZING_INPUTS = {"Resize": (1, 2), "Upsample": (1,)}


def perturbed(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """`model` with every float32 initializer and Constant moved by one rounding step, except
    those read as SIZING_INPUTS."""
    rng = np.random.default_rng(seed)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    sizing = {n.input[i] for n in out.graph.node for i in SIZING_INPUTS.get(n.op_type, ())
              if i < len(n.input)}
    tensors = list(out.graph.initializer) + [
        a.t for n in out.graph.node if n.op_type == "Constant" and n.output[0] not in sizing
        for a in n.attribute if a.name == "value"]
    for t in tensors:
        if t.data_type == onnx.TensorProto.FLOAT and t.name not in sizing:
            t.CopyFrom(numpy_helper.from_array(_nudge(numpy_helper.to_array(t), rng), t.name))
    return out


def noise(model: str | Path | bytes, feeds: list[dict[str, np.ndarray]],
          refs: list[dict[str, np.ndarray]], threads: int) -> dict[str, float]:
    """Per output, the largest change the one-step perturbation makes over `feeds`, whose
    reference outputs (onnxruntime, ORT_DISABLE_ALL, by output name) are `refs`."""
    from edgec.harness.ort import ort_session

    proto = (onnx.load_model_from_string(model) if isinstance(model, bytes)
             else onnx.load(str(model)))
    moved = ort_session(perturbed(proto).SerializeToString(), threads, optimize=False)
    rng = np.random.default_rng(1)
    worst = dict.fromkeys(refs[0] if refs else (), 0.0)
    for feed, ref in zip(feeds, refs):
        nudged = {k: _nudge(v, rng) if v.dtype == np.float32 else v for k, v in feed.items()}
        for (name, a), b in zip(ref.items(), moved.run(list(ref), nudged)):
            if a.size and np.issubdtype(a.dtype, np.floating):
                diff = float(np.max(np.abs(a.astype(np.float64) - b)))
                worst[name] = max(worst[name], diff if np.isfinite(diff) else 0.0)
    return worst


def tolerance(max_abs_ref: float, output_noise: float, rtol: float = RTOL,
              cap: float = NOISE_CAP) -> float:
    """The module docstring's tol for one output (`cap`: NOISE_CAP, or noise_cap's)."""
    return max(rtol * max_abs_ref, min(NOISE_FACTOR * output_noise, cap * max_abs_ref))


def noise_cap(model: str | Path | bytes) -> float:
    """NOISE_CAP, or QUANTIZED_CAP for a model that quantizes (QuantizeLinear nodes). In an int8
    model rounding decides by design: a value a float32 rounding step away from a half-step
    lands one int8 step off, and the layers after it carry that step to the output (edgec's
    int8 MobileNetV2 against onnxruntime's fake-quantized graph: 5 output steps, 5.4% of
    max|ref|, from one flipped value in 40,000 early on). The measured noise shows it (0.9 for
    that model, max|ref| 11.9), and the cap lets it count up to 10% of max|ref|."""
    proto = (onnx.load_model_from_string(model) if isinstance(model, bytes)
             else onnx.load(str(model)))
    quantizes = any(n.op_type == "QuantizeLinear" for n in proto.graph.node)
    return QUANTIZED_CAP if quantizes else NOISE_CAP


def margin(row: dict[str, Any]) -> float:
    """How much of its tolerance an output's difference takes (over 1: refused)."""
    return row["max_abs_diff"] / row["tol"] if row["tol"] else row["max_abs_diff"]


def worst(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The output nearest (or furthest past) its tolerance."""
    return max(rows, key=margin)


def describe(row: dict[str, Any]) -> str:
    """What one output's check compared, for the compile line and errors."""
    return (f"max |diff| {row['max_abs_diff']:.3g} vs tolerance {row['tol']:.3g} "
            f"(max|ref| {row['max_abs_ref']:.3g}, rounding noise {row['noise']:.3g})")
