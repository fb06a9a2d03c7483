"""Frontend: from a path to a checked ONNX ModelProto with a static shape on every tensor.

Order matters for the user: everything that can be said about the file without shapes
(not ONNX, IR/opset, external data, unsupported ops: all of them at once, checker) is said
before the shape questions (unpinned dims, shape inference), so one run names every problem of
a kind. Every refusal is an EdgecError with one line that says what to do.

Quantized ops in the QOperator form (QLinearConv, ConvInteger, com.microsoft QLinearAdd, ...)
are rewritten into their QDQ definitions (passes/qoperator.py) before the op check, on every
load; the report's notes say what was rewritten, and an op the pass declined is named
unsupported with its reason.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper, shape_inference, version_converter

from edgec.errors import EdgecError

from .passes.fold_constants import fold_constants, static_shapes
from .passes.qoperator import qoperator

MIN_OPSET = 11
MAX_OPSET = onnx.defs.onnx_opset_version()
CONVERT_TO_OPSET = 17
# Quantized ops that do not import in TVM 0.27 (../shared/TVM_NOTES.md), refused by name even
# if a later importer lists them: load() rewrites them into QDQ (passes/qoperator.py), and the
# ones it declines stay refused.
_KNOWN_BROKEN = {"QLinearConv", "QLinearMatMul", "ConvInteger"}


@dataclass
class FrontendReport:
    source: str
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    input_shapes: dict[str, list[int]] = field(default_factory=dict)


def supported_ops() -> set[str]:
    """Default-domain op types edgec can compile: TVM's ONNX importer's, minus known failures."""
    from tvm.relax.frontend.onnx import onnx_frontend

    return set(onnx_frontend._get_convert_map()) - _KNOWN_BROKEN


def parse_input_shape(spec: str) -> tuple[str, list[int]]:
    """`name=1,3,224,224` -> ("name", [1, 3, 224, 224])."""
    name, sep, dims = spec.rpartition("=")
    try:
        shape = [int(d) for d in dims.split(",")] if sep and name else None
    except ValueError:
        shape = None
    if not shape or any(d <= 0 for d in shape):
        raise EdgecError(f"bad --input-shape '{spec}'; expected NAME=D0,D1,... with positive dims")
    return name, shape


def _read(path: Path) -> onnx.ModelProto:
    if not path.exists():
        raise EdgecError(f"model file '{path}' not found")
    if not path.is_file():
        raise EdgecError(f"'{path}' is not a file")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(path.read_bytes())
    except (DecodeError, RuntimeError, ValueError) as err:
        raise EdgecError(f"'{path}' is not an ONNX model (protobuf parse failed: {err})") from None
    if model.ir_version <= 0 or not model.HasField("graph") or not model.graph.node:
        raise EdgecError(f"'{path}' is not an ONNX model (no IR version or no graph nodes)")
    return model


def _check_external_data(model: onnx.ModelProto, base: Path) -> None:
    base = base.resolve()
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in tensor.external_data}
        loc = info.get("location", "")
        target = (base / loc).resolve()
        if os.path.isabs(loc) or not target.is_relative_to(base):
            raise EdgecError(
                f"tensor '{tensor.name}' points to external data '{loc}' outside the model's "
                "folder; refusing (path traversal)"
            )
        if not target.is_file():
            raise EdgecError(f"external data file '{loc}' of tensor '{tensor.name}' is missing")
    onnx.load_external_data_for_model(model, str(base))


def check_versions(model: onnx.ModelProto, report: FrontendReport) -> onnx.ModelProto:
    if model.ir_version > onnx.IR_VERSION:
        raise EdgecError(
            f"ONNX IR version {model.ir_version} is newer than this onnx ({onnx.__version__}) "
            f"reads (max {onnx.IR_VERSION}); re-export with an older exporter"
        )
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None:
        raise EdgecError("model imports no default-domain opset")
    if MIN_OPSET <= opset <= MAX_OPSET:
        return model
    try:
        converted = version_converter.convert_version(model, CONVERT_TO_OPSET)
    except Exception as err:
        raise EdgecError(
            f"opset {opset} is outside {MIN_OPSET}..{MAX_OPSET} and onnx could not convert it "
            f"to {CONVERT_TO_OPSET} ({str(err).splitlines()[0][:160]}); re-export with opset 17"
        ) from None
    report.notes.append(f"converted opset {opset} -> {CONVERT_TO_OPSET}")
    return converted


def _check_ops(model: onnx.ModelProto, declined: dict[str, str] | None = None) -> None:
    """Refuse every unsupported op type at once, each with its first node (and why the
    qoperator pass did not rewrite it, from `declined`: node name -> reason)."""
    known = supported_ops()
    bad: dict[str, str] = {}
    for i, node in enumerate(model.graph.node):
        op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        if (op not in known or node.domain not in ("", "ai.onnx")) and op not in bad:
            why = (declined or {}).get(node.name or node.op_type)
            bad[op] = f"(node {node.name or f'#{i}'})" + (f" [not rewritten: {why}]" if why else "")
    if bad:
        listed = ", ".join(f"{op} {where}" for op, where in bad.items())
        raise EdgecError(f"unsupported ops: {listed}")


def _dims(vi: onnx.ValueInfoProto) -> list[int | str | None]:
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0
            else (d.dim_param or None) for d in vi.type.tensor_type.shape.dim]


def _pin_inputs(model: onnx.ModelProto, pins: dict[str, list[int]]) -> dict[str, list[int]]:
    g = model.graph
    weights = {t.name for t in g.initializer}
    inputs = [vi for vi in g.input if vi.name not in weights]
    names = [vi.name for vi in inputs]
    for name in pins:
        if name not in names:
            raise EdgecError(f"--input-shape names '{name}', which is not a model input "
                             f"(inputs: {', '.join(names)})")
    pinned = {}
    for vi in inputs:
        dims = _dims(vi)
        shape = pins.get(vi.name)
        if shape is not None:
            if len(shape) != len(dims):
                raise EdgecError(f"--input-shape {vi.name} has {len(shape)} dims; the model's "
                                 f"input has {len(dims)}")
            for i, (want, have) in enumerate(zip(shape, dims)):
                if isinstance(have, int) and have != want:
                    raise EdgecError(f"--input-shape {vi.name} sets dim {i} to {want}; the model "
                                     f"fixes it at {have}")
        else:
            loose = [i for i, d in enumerate(dims) if not isinstance(d, int)]
            if loose or not vi.type.tensor_type.HasField("shape"):
                i = loose[0] if loose else 0
                label = f" ('{dims[i]}')" if dims and isinstance(dims[i], str) else ""
                example = ",".join(str(d) if isinstance(d, int) else "1" for d in dims) or "..."
                raise EdgecError(f"input '{vi.name}' has a dynamic dim {i}{label}; pin it with "
                                 f"--input-shape {vi.name}={example}")
            shape = list(dims)
        del vi.type.tensor_type.shape.dim[:]
        for d in shape:
            vi.type.tensor_type.shape.dim.add().dim_value = d
        pinned[vi.name] = shape
    return pinned


def _infer_static(model: onnx.ModelProto, report: FrontendReport) -> onnx.ModelProto:
    g = model.graph
    del g.value_info[:]
    for out in g.output:  # exporters write symbolic output dims; the pinned inputs decide them
        out.type.tensor_type.ClearField("shape")
    for _ in range(8):  # each fold can make the next Shape static
        try:
            model = shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
        except Exception as err:
            raise EdgecError(f"shape inference failed: {str(err).splitlines()[0][:300]}") from None
        model, fold = fold_constants(model)
        if not fold.changed:
            break
        report.notes.append(fold.summary())
    known = static_shapes(model)
    produced = {o: n for n in model.graph.node for o in n.output}
    for name, node in produced.items():
        if name and name not in known:
            raise EdgecError(f"tensor '{name}' (output of {node.op_type} node "
                             f"'{node.name}') has no static shape after pinning the inputs")
    return model


def _warn_non_finite(model: onnx.ModelProto, report: FrontendReport) -> None:
    for t in model.graph.initializer:
        if t.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16,
                               onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16):
            continue
        arr = numpy_helper.to_array(t)
        nan, inf = int(np.isnan(arr).sum()), int(np.isinf(arr).sum())
        if nan or inf:
            report.warnings.append(f"weight '{t.name}' holds {nan} NaN and {inf} Inf values")


def load(path: str | Path, *, input_shapes: dict[str, list[int]] | None = None,
         check_ops: bool = True) -> tuple[onnx.ModelProto, FrontendReport]:
    """Load, check and pin a model. Raises EdgecError with a one-line reason on any refusal."""
    path = Path(path)
    report = FrontendReport(source=str(path))
    model = _read(path)
    model = check_versions(model, report)
    _check_external_data(model, path.parent)
    model, qops = qoperator(model)
    if qops.changed or qops.declined:
        report.notes.append(qops.summary())
    if check_ops:
        _check_ops(model, dict(d.split(": ", 1) for d in qops.declined))
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        first = next((ln for ln in str(err).splitlines() if ln.strip()), str(err))
        raise EdgecError(f"model fails the ONNX checker: {first[:300]}") from None
    report.input_shapes = _pin_inputs(model, dict(input_shapes or {}))
    model = _infer_static(model, report)
    _warn_non_finite(model, report)
    return model, report
