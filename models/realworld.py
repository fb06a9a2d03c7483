"""Test models with real-world structure, exported by torch (not built as ONNX by hand).

The reference zoo (models/__init__.py) is textbook: channel counts multiples of 8 or 16.
These are what users export: MobileNetV3 with squeeze-excite and hard-swish at width 0.35 or
0.5 (channels 8, 12, 20, 36, 44, 88, 120, ...), a DBNet-style text detector (FPN with
ConvTranspose, nearest and bilinear Resize, Concat, sigmoid head), a YOLO-style detector
(SiLU, split and Concat, stride-2 convs, nearest upsampling, three heads) and EfficientNet
blocks (SE with sigmoid gates, swish, 5x5 depthwise). Weights are seeded, BatchNorm keeps
random statistics (edgec folds it), the graphs are torch.onnx's TorchScript export at opset
17, batch 1, in eval mode.

torch is optional: `REALWORLD` and `describe` work without it; `export` raises an EdgecError
naming the missing package.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgec.errors import EdgecError

OPSET = 17


@dataclass(frozen=True)
class Spec:
    """One model: its torch module (a name in models/realworld_nets.py and its keyword
    arguments), input shape, output names, and a one-line description."""

    net: str
    kwargs: dict[str, Any]
    shape: tuple[int, int, int, int]
    outputs: tuple[str, ...]
    doc: str
    large: bool = False  # 224 x 224 inputs: the slow test set


REALWORLD: dict[str, Spec] = {
    "mnv3_small_text": Spec(
        "TextRecognizer", {"width": 0.5}, (1, 3, 48, 192), ("probs",),
        "MobileNetV3-Small 0.5 text recognizer, 48x192, (2,1) strides, CTC-style softmax"),
    "dbnet_small": Spec(
        "DBNet", {"width": 0.35}, (1, 3, 160, 160), ("prob_map",),
        "DBNet-style detector: MobileNetV3-Small 0.35, FPN, ConvTranspose head, 160x160"),
    "yolo_small": Spec(
        "Yolo", {}, (1, 3, 160, 160), ("predictions",),
        "YOLO-style detector: SiLU split blocks, pool pyramid, 3 scales, 160x160"),
    "effnet_small": Spec(
        "EfficientNet", {"width": 0.5, "depth": 0.5}, (1, 3, 96, 96), ("logits",),
        "EfficientNet-B0 blocks at 0.5 width and depth: SE, swish, 5x5 depthwise, 96x96"),
    "mnv3_large_224": Spec(
        "Classifier", {"cfg": "V3_LARGE", "width": 0.35, "hidden": 640}, (1, 3, 224, 224),
        ("logits",), "MobileNetV3-Large 0.35 classifier, 224x224", large=True),
    "mnv3_small_224": Spec(
        "Classifier", {"cfg": "V3_SMALL", "width": 0.5, "hidden": 512}, (1, 3, 224, 224),
        ("logits",), "MobileNetV3-Small 0.5 classifier, 224x224", large=True),
    "effnet_224": Spec(
        "EfficientNet", {"width": 0.5, "depth": 1.0}, (1, 3, 224, 224), ("logits",),
        "EfficientNet-B0 blocks at 0.5 width, full depth, 224x224", large=True),
}


def describe() -> dict[str, str]:
    return {name: spec.doc for name, spec in REALWORLD.items()}


def _torch() -> Any:
    try:
        import torch
    except ImportError as err:
        raise EdgecError("the realworld models are exported by torch, which is not "
                         "installed (pip install torch)") from err
    return torch


def module(name: str, seed: int = 0) -> Any:
    """The torch module of model `name` in eval mode: weights drawn from `seed` (convs
    He-normal, so the outputs are not washed out by depth), BatchNorm statistics and affine
    parameters random (so folding them changes the convs)."""
    if name not in REALWORLD:
        raise EdgecError(f"unknown realworld model '{name}'; known: {', '.join(REALWORLD)}")
    torch = _torch()
    from . import realworld_nets as nets

    spec = REALWORLD[name]
    kwargs = {k: getattr(nets, v) if k == "cfg" else v for k, v in spec.kwargs.items()}
    torch.manual_seed(seed)
    net = getattr(nets, spec.net)(**kwargs)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):  # activations keep their scale through depth
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.eval()


def export(name: str, path: str | Path, seed: int = 0) -> Path:
    """Export model `name` with torch.onnx (TorchScript exporter, opset 17) to `path`, its
    input named "image"; returns the path. TrainingMode.PRESERVE on the eval-mode module keeps
    each BatchNormalization as a node (EVAL would fold them into the convs)."""
    import io
    import warnings

    from edgec.fileio import atomic_write_bytes

    torch = _torch()
    net, spec = module(name, seed), REALWORLD[name]
    example = torch.randn(*spec.shape, generator=torch.Generator().manual_seed(seed))
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(net, (example,), buf, input_names=["image"],
                          output_names=list(spec.outputs), opset_version=OPSET, dynamo=False,
                          training=torch.onnx.TrainingMode.PRESERVE)
    return atomic_write_bytes(Path(path), buf.getvalue())
