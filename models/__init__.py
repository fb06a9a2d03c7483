"""Reference CNNs built in code, emitted as ONNX with seeded weights.

`MODELS` maps a name to a builder `fn(seed=0) -> onnx.ModelProto`; the builder's docstring is
its one-line description. The graphs look like exporter output (separate BatchNormalization,
Dropout, Flatten+Gemm), which is what users bring and what the passes have to clean up.

The two `digits_*` models are the exception: trained on real data (`digits.py`, recipe in
`train_digits.py`), their builders ignore the seed and return the committed files, and
`export_data` writes their labelled test images, so a transform's cost in accuracy can be
measured and not only its agreement.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import onnx

from edgec.errors import EdgecError

from . import digits
from .classic import alexnet, lenet5, vgg11
from .compact import shufflenet_v2, squeezenet1_1
from .mobilenet import mobilenet_v1, mobilenet_v2, mobilenet_v3_small
from .resnet import resnet18
from .special import conv1d_timeseries, conv3d_clip, convtranspose_decoder, gem_head


def _trained(name: str) -> Callable[..., onnx.ModelProto]:
    """A builder for committed trained model `name`: the seed has no weights to draw."""

    def builder(seed: int = 0) -> onnx.ModelProto:
        return digits.load(name)

    builder.__name__ = name
    builder.__doc__ = digits.TRAINED[name]
    return builder


MODELS: dict[str, Callable[..., onnx.ModelProto]] = {
    "lenet5": lenet5,
    "alexnet": alexnet,
    "vgg11": vgg11,
    "resnet18": resnet18,
    "mobilenet_v1": mobilenet_v1,
    "mobilenet_v2": mobilenet_v2,
    "mobilenet_v3_small": mobilenet_v3_small,
    "squeezenet1_1": squeezenet1_1,
    "shufflenet_v2": shufflenet_v2,
    "conv1d_timeseries": conv1d_timeseries,
    "conv3d_clip": conv3d_clip,
    "convtranspose_decoder": convtranspose_decoder,
    "gem_head": gem_head,
    **{name: _trained(name) for name in digits.TRAINED},
}


def build(name: str, seed: int = 0) -> onnx.ModelProto:
    if name not in MODELS:
        raise EdgecError(f"unknown model '{name}'; known: {', '.join(MODELS)}")
    return MODELS[name](seed=seed)


def export_data(name: str, folder: str | Path) -> Path:
    """Write the labelled test images of trained model `name` to `folder` as an ImageNet-layout
    image folder (`<label>/<index>.png`) and return it; seeded models have no data."""
    if name not in MODELS:
        raise EdgecError(f"unknown model '{name}'; known: {', '.join(MODELS)}")
    if name not in digits.TRAINED:
        raise EdgecError(f"model '{name}' has seeded random weights and no data")
    return digits.export_data(folder)


def describe() -> dict[str, str]:
    return {name: (fn.__doc__ or "").strip().splitlines()[0] for name, fn in MODELS.items()}


def export(name: str, path: str | Path, seed: int = 0) -> Path:
    """Write model `name` to `path` (atomically) and return the path."""
    from edgec.fileio import atomic_write_bytes

    model = build(name, seed)
    return atomic_write_bytes(Path(path), model.SerializeToString())
