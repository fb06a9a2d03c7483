"""How an image becomes a model input: color, resize, center crop, scale/mean/std, layout, dtype.

Accuracy on the user's own images is only meaningful when they are fed the way the model was
trained, so the recipe is explicit data: a frozen `Preprocess`, stored as JSON in the ONNX
metadata (`edgec.preprocess`) and the artifact manifest, overridable from CLI flags. Values are
`(pixel * scale - mean) / std`; for a model that takes raw pixels (dtype uint8 or int8) only a
cast is applied (int8: pixel - 128, the usual zero point, since a plain cast would wrap).
Decoding and resizing use Pillow only.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgec.errors import EdgecError

if TYPE_CHECKING:
    import onnx
    from PIL import Image

METADATA_KEY = "edgec.preprocess"
COLORS = {"rgb": 3, "bgr": 3, "gray": 1}  # color -> channels
LAYOUTS = ("nchw", "nhwc")
FLOAT_DTYPES = ("float16", "float32", "float64")
RAW_DTYPES = ("uint8", "int8")
DEFAULT_SCALE = 1 / 255
FIELDS = ("resize", "center_crop", "scale", "mean", "std", "color", "layout", "dtype")


def _size(name: str, value: Any, allow_int: bool) -> tuple[int, int] | int | None:
    """None, a positive int (when allowed), or a (height, width) pair of positive ints."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value if allow_int else (value, value)
    if (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        return (value[0], value[1])
    want = "a positive int or [height, width]" if allow_int else "[height, width]"
    raise EdgecError(f"preprocess {name} is {value!r}; want {want}")


def _floats(name: str, value: Any) -> tuple[float, ...]:
    values = value if isinstance(value, (list, tuple)) else [value]
    if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                             and math.isfinite(v) for v in values):
        raise EdgecError(f"preprocess {name} is {value!r}; want a number or a list of numbers")
    return tuple(float(v) for v in values)


@dataclass(frozen=True)
class Preprocess:
    """One image -> one model input sample. `resize`: an int resizes the shorter side to it
    (aspect kept), a pair is (height, width), None resizes straight to the model's H x W
    unless `center_crop` (height, width) is set. mean/std: one value, or one per channel."""

    resize: tuple[int, int] | int | None = None
    center_crop: tuple[int, int] | None = None
    scale: float = DEFAULT_SCALE
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    color: str = "rgb"
    layout: str = "nchw"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        put = object.__setattr__  # normalizes lists from JSON to tuples, on a frozen instance
        put(self, "resize", _size("resize", self.resize, allow_int=True))
        put(self, "center_crop", _size("center_crop", self.center_crop, allow_int=False))
        if isinstance(self.scale, (list, tuple)):
            raise EdgecError(f"preprocess scale is {self.scale!r}; want one number")
        (scale,) = _floats("scale", self.scale)
        put(self, "scale", scale)
        put(self, "mean", _floats("mean", self.mean))
        put(self, "std", _floats("std", self.std))
        for name, allowed in (("color", tuple(COLORS)), ("layout", LAYOUTS),
                              ("dtype", FLOAT_DTYPES + RAW_DTYPES)):
            if getattr(self, name) not in allowed:
                raise EdgecError(f"preprocess {name} is {getattr(self, name)!r}; "
                                 f"want one of {', '.join(allowed)}")
        if self.dtype in RAW_DTYPES:
            self._check_raw()
            return
        if scale <= 0:
            raise EdgecError(f"preprocess scale is {scale}; want a positive number")
        if 0.0 in self.std:
            raise EdgecError(f"preprocess std has a 0 ({list(self.std)}); values are divided "
                             "by it")
        channels = COLORS[self.color]
        for name in ("mean", "std"):
            n = len(getattr(self, name))
            if n not in (1, channels):
                raise EdgecError(f"preprocess {name} has {n} values; color {self.color} has "
                                 f"{channels} channel{'s' * (channels > 1)}: give 1 or "
                                 f"{channels} (set --mean/--std too when changing --color)")

    def _check_raw(self) -> None:
        """uint8/int8 take raw pixels: scale/mean/std must be unset (or the identity)."""
        if self.scale == DEFAULT_SCALE:
            object.__setattr__(self, "scale", 1.0)
        if self.scale != 1.0 or any(self.mean) or any(s != 1.0 for s in self.std):
            raise EdgecError(f"preprocess dtype {self.dtype} feeds raw pixels, so scale/mean/"
                             f"std do not apply; got scale {self.scale}, mean "
                             f"{list(self.mean)}, std {list(self.std)}")

    def to_json(self) -> dict[str, Any]:
        """The JSON form stored in ONNX metadata and the manifest (lists, not tuples)."""
        return {"resize": list(self.resize) if isinstance(self.resize, tuple) else self.resize,
                "center_crop": list(self.center_crop) if self.center_crop else None,
                "scale": self.scale, "mean": list(self.mean), "std": list(self.std),
                "color": self.color, "layout": self.layout, "dtype": self.dtype}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Preprocess:
        """The inverse of to_json; missing keys take their defaults, unknown keys are errors."""
        if not isinstance(d, dict):
            raise EdgecError(f"preprocess spec is a {type(d).__name__}; want a JSON object")
        unknown = sorted(set(d) - set(FIELDS))
        if unknown:
            raise EdgecError(f"preprocess spec has unknown keys {', '.join(unknown)}; "
                             f"known: {', '.join(FIELDS)}")
        return cls(**d)

    def with_overrides(self, d: dict[str, Any]) -> Preprocess:
        """A copy with the fields in d replaced (see `overrides`). Switching dtype to uint8 or
        int8 resets scale/mean/std not also given to the identity."""
        unknown = sorted(set(d) - set(FIELDS))
        if unknown:
            raise EdgecError(f"unknown preprocess settings {', '.join(unknown)}")
        d = dict(d)
        if d.get("dtype") in RAW_DTYPES:
            for key, value in (("scale", 1.0), ("mean", (0.0,)), ("std", (1.0,))):
                d.setdefault(key, value)
        return dataclasses.replace(self, **d)

    def geometry(self, shape: list[int]) -> tuple[int, int, int]:
        """(C, H, W) of a 4-D model input shape in this layout; EdgecError when the channel
        count is not the one `color` gives."""
        if len(shape) != 4:
            raise EdgecError(f"images feed a 4-D input; this one is {list(shape)}")
        c, h, w = (shape[1], shape[2], shape[3]) if self.layout == "nchw" else \
            (shape[3], shape[1], shape[2])
        if c != COLORS[self.color]:
            other = shape[3] if self.layout == "nchw" else shape[1]
            hint = (f"set --layout {'nhwc' if self.layout == 'nchw' else 'nchw'}"
                    if other == COLORS[self.color] else
                    "set --color gray" if c == 1 else "set --color rgb or bgr" if c == 3 else
                    "edgec feeds images as 1 (gray) or 3 (rgb/bgr) channels")
            raise EdgecError(f"the model takes {c} channels (input {list(shape)}, layout "
                             f"{self.layout}), color {self.color} gives {COLORS[self.color]}; "
                             f"{hint}")
        return c, h, w

    def check_input(self, shape: list[int], dtype: str) -> None:
        """EdgecError unless images preprocessed this way fit an input of shape and dtype."""
        self.geometry(shape)
        if dtype != self.dtype:
            raise EdgecError(f"preprocess dtype is {self.dtype}, the model's input takes "
                             f"{dtype}; set --dtype {dtype}")

    def apply(self, image: Image.Image, shape: list[int]) -> np.ndarray:
        """One sample for an input of model shape (batch first), without the batch dim:
        [C, H, W] for nchw, [H, W, C] for nhwc."""
        from PIL import Image

        _, h, w = self.geometry(shape)
        image = image.convert("L" if self.color == "gray" else "RGB")
        if isinstance(self.resize, int):
            iw, ih = image.size
            short, long_ = sorted((iw, ih))
            new_long = int(self.resize * long_ / short)
            size = (self.resize, new_long) if iw <= ih else (new_long, self.resize)
            image = image.resize(size, Image.Resampling.BILINEAR)
        elif self.resize is not None or self.center_crop is None:
            rh, rw = self.resize or (h, w)
            if image.size != (rw, rh):
                image = image.resize((rw, rh), Image.Resampling.BILINEAR)
        if self.center_crop is not None:
            image = _center_crop(image, self.center_crop)
        if image.size != (w, h):
            raise EdgecError(f"preprocessed image is {image.size[1]}x{image.size[0]}, the model "
                             f"takes {h}x{w}; set --resize/--center-crop")
        pixels = np.asarray(image)
        if pixels.ndim == 2:  # gray: [H, W] -> [H, W, 1]
            pixels = pixels[..., None]
        elif self.color == "bgr":
            pixels = pixels[..., ::-1]
        out = self._values(pixels)
        return np.ascontiguousarray(out.transpose(2, 0, 1) if self.layout == "nchw" else out)

    def _values(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 [H, W, C] pixels -> values in self.dtype."""
        if self.dtype == "uint8":
            return pixels.astype(np.uint8)
        if self.dtype == "int8":
            return (pixels.astype(np.int16) - 128).astype(np.int8)
        work = np.float64 if self.dtype == "float64" else np.float32
        mean = np.asarray(self.mean, dtype=work)
        std = np.asarray(self.std, dtype=work)
        return ((pixels.astype(work) * work(self.scale) - mean) / std).astype(self.dtype)


def _center_crop(image: Image.Image, crop: tuple[int, int]) -> Image.Image:
    ch, cw = crop
    iw, ih = image.size
    if ch > ih or cw > iw:
        raise EdgecError(f"image is {ih}x{iw}, smaller than the center crop {ch}x{cw}; "
                         "set --resize")
    top, left = int(round((ih - ch) / 2)), int(round((iw - cw) / 2))
    return image.crop((left, top, left + cw, top + ch))


def default_for(shape: list[int], dtype: str) -> Preprocess:
    """The preprocess edgec assumes for a 4-D input without one: layout from where a 1 or 3
    channel dim is, gray for 1 channel else rgb, the input's dtype, pixels / 255."""
    nhwc = len(shape) == 4 and shape[3] in (1, 3) and shape[1] not in (1, 3)
    channels = shape[3] if nhwc else shape[1] if len(shape) == 4 else 3
    return Preprocess(color="gray" if channels == 1 else "rgb",
                      layout="nhwc" if nhwc else "nchw", dtype=dtype)


def from_model(model: onnx.ModelProto) -> Preprocess | None:
    """The preprocess stored in the model's metadata_props (`edgec.preprocess`), if any."""
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            try:
                spec = json.loads(prop.value)
            except json.JSONDecodeError as err:
                raise EdgecError(f"model metadata {METADATA_KEY} is not valid JSON: {err}") \
                    from None
            return Preprocess.from_json(spec)
    return None


def resolve(model: onnx.ModelProto, first_input: dict[str, Any],
            overrides: dict[str, Any] | None = None) -> Preprocess:
    """The spec a model's data is read with: its own (`from_model`), else the guess from its
    first input (`default_for`), then `overrides` (--preprocess and the flags)."""
    spec = from_model(model) or default_for(first_input["shape"], first_input["dtype"])
    return spec.with_overrides(overrides) if overrides else spec


def load_spec(path: str | Path) -> Preprocess:
    """A Preprocess from a JSON file (`--preprocess FILE.json`)."""
    try:
        spec = json.loads(Path(path).read_text())
    except OSError as err:
        raise EdgecError(f"cannot read preprocess spec {path}: {err.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise EdgecError(f"preprocess spec {path} is not valid JSON: {err}") from None
    return Preprocess.from_json(spec)


def _number(flag: str, text: str) -> float:
    try:
        if "/" in text:
            num, den = text.split("/")
            value = float(num) / float(den)
        else:
            value = float(text)
    except (ValueError, ZeroDivisionError):
        raise EdgecError(f"{flag}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise EdgecError(f"{flag}: {text!r} is not a finite number")
    return value


def _ints(flag: str, text: str) -> list[int]:
    parts = text.replace("x", ",").split(",")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise EdgecError(f"{flag}: {text!r} is not a size; want N or H,W") from None
    if len(values) > 2 or min(values) <= 0:
        raise EdgecError(f"{flag}: {text!r} is not a size; want N or H,W (positive)")
    return values


def overrides(resize: str | None = None, center_crop: str | None = None,
              scale: str | None = None, mean: str | None = None, std: str | None = None,
              color: str | None = None, layout: str | None = None,
              dtype: str | None = None) -> dict[str, Any]:
    """CLI flag strings -> the settings they give, for `Preprocess.with_overrides` (only
    those given). resize "256" (shorter side) or "256,320"/"256x320" (H,W); center_crop
    "224" or "224,200"; scale "0.0039" or "1/255"; mean/std "0.485,0.456,0.406"."""
    out: dict[str, Any] = {}
    if resize is not None:
        sizes = _ints("--resize", resize)
        out["resize"] = sizes[0] if len(sizes) == 1 else tuple(sizes)
    if center_crop is not None:
        sizes = _ints("--center-crop", center_crop)
        out["center_crop"] = (sizes[0], sizes[-1])
    if scale is not None:
        out["scale"] = _number("--scale", scale)
    for flag, text in (("mean", mean), ("std", std)):
        if text is not None:
            out[flag] = tuple(_number(f"--{flag}", t.strip()) for t in text.split(","))
    for flag, text in (("color", color), ("layout", layout), ("dtype", dtype)):
        if text is not None:
            out[flag] = text.strip().lower()
    return out

from_json = Preprocess.from_json
