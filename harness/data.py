"""The user's data (`--data PATH`) as model inputs and labels, streamed a batch at a time.

PATH is one of: a folder of images (PNG/JPEG/BMP; class subfolders give labels, a flat folder
is unlabeled), preprocessed by a `Preprocess`; an `.npz` file with one array per model input
(and optional `labels`), fed as is; a folder of `.npy` files, one sample each, labeled by
class subfolders like images. Integer class folder names are the labels themselves ("2",
"10" -> 2, 10); other names are labeled by their index in sorted order. Hidden files are
skipped; other files that are neither images nor .npy are ignored and counted in `source`.
Every problem a user can cause is an EdgecError, raised up front where it can be seen
without decoding every sample, else when the offending sample is read.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgec.errors import EdgecError

from .preprocess import Preprocess, default_for

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp")
Reader = Callable[[int, int], dict[str, np.ndarray]]  # [start, stop) -> {input: [n, *sample]}


class Dataset:
    """`count` samples with their `labels` (int64, or None), described by `source`; `classes`
    are the class folder names in label order (None without class folders)."""

    def __init__(self, count: int, labels: np.ndarray | None, source: str,
                 classes: list[str] | None, inputs: list[dict[str, Any]],
                 reader: Callable[[], Reader]) -> None:
        self.count = count
        self.labels = labels
        self.source = source
        self.classes = classes
        self._inputs = inputs
        self._reader = reader  # called once per pass, so an npz's arrays live only during it

    def batches(self, batch: int = 64) -> Iterator[tuple[list[dict[str, np.ndarray]],
                                                         np.ndarray | None]]:
        """Per `batch` samples: one feed per model call ({input: array in the input's exact
        shape}; B samples each where the model's batch dim is B, batch rounded down to a
        multiple of B) and those samples' labels (None when unlabeled)."""
        b = self._inputs[0]["shape"][0]
        step = max(b, batch // b * b)
        read = self._reader()
        for start in range(0, self.count, step):
            stop = min(start + step, self.count)
            arrays = read(start, stop)
            feeds = [{s["name"]: np.ascontiguousarray(arrays[s["name"]][i:i + b])
                      .reshape(s["shape"]) for s in self._inputs}
                     for i in range(0, stop - start, b)]
            yield feeds, None if self.labels is None else self.labels[start:stop]


def open_data(path: str | Path, inputs: list[dict[str, Any]],
              preprocess: Preprocess | None = None,
              num_classes: int | None = None) -> Dataset:
    """The data at path for a model with these input specs [{name, shape, dtype}]. Images
    use `preprocess` (default: `preprocess.default_for` the input); labels must be below
    num_classes when it is given."""
    path = Path(path)
    if not path.exists():
        raise EdgecError(f"data path {path} does not exist")
    b = _batch_dim(inputs)
    if path.is_dir():
        data = _open_folder(path, inputs, preprocess, num_classes)
    elif path.suffix.lower() == ".npz":
        data = _open_npz(path, inputs, num_classes)
    else:
        raise EdgecError(f"data path {path} is not a folder or an .npz file; want a folder of "
                         "images (.png/.jpg/.bmp) or of .npy files, or an .npz file")
    if data.count % b:
        raise EdgecError(f"the model takes batches of {b} samples, {data.source} do not divide "
                         f"into them ({data.count} % {b} = {data.count % b})")
    return data


def _batch_dim(inputs: list[dict[str, Any]]) -> int:
    if not inputs:
        raise EdgecError("the model has no inputs to feed data to")
    dims = {s["name"]: s["shape"][0] if s["shape"] else 0 for s in inputs}
    for name, dim in dims.items():
        if dim <= 0:
            shape = next(s["shape"] for s in inputs if s["name"] == name)
            raise EdgecError(f"the model's input '{name}' has no leading batch dim to feed "
                             f"samples along (shape {list(shape)})")
    if len(set(dims.values())) > 1:
        raise EdgecError(f"the model's inputs disagree on the batch dim ({dims}); data can "
                         "only be fed along one")
    return next(iter(dims.values()))


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def _scan(root: Path) -> tuple[list[Path], list[int] | None, list[str] | None]:
    """(files, label of each file or None, class names in label order or None)."""
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    dirs = [p for p in entries if p.is_dir()]
    if not dirs:
        return [p for p in entries if p.is_file()], None, None
    loose = [p.name for p in entries if p.suffix.lower() in IMAGE_EXTS + (".npy",)]
    if loose:
        raise EdgecError(f"{root} has both class folders and samples outside them "
                         f"({loose[0]}, ...); put every sample in a class folder")
    classes, labels_of = _class_labels([d.name for d in dirs])
    files: list[Path] = []
    labels: list[int] = []
    for name in classes:
        found = sorted(p for p in (root / name).rglob("*") if p.is_file() and _visible(p, root))
        files += found
        labels += [labels_of[name]] * len(found)
    return files, labels, classes


def _class_labels(names: list[str]) -> tuple[list[str], dict[str, int]]:
    """Class names in label order and each one's label: int(name) when every name is an
    integer, else the index in sorted order."""
    if not all(re.fullmatch(r"\d+", n) for n in names):
        ordered = sorted(names)
        return ordered, {n: i for i, n in enumerate(ordered)}
    ordered = sorted(names, key=lambda n: (int(n), n))
    for a, b in zip(ordered, ordered[1:]):
        if int(a) == int(b):
            raise EdgecError(f"class folders '{a}' and '{b}' both mean label {int(a)}")
    return ordered, {n: int(n) for n in ordered}


def _open_folder(root: Path, inputs: list[dict[str, Any]], preprocess: Preprocess | None,
                 num_classes: int | None) -> Dataset:
    files, file_labels, classes = _scan(root)
    images = [f for f in files if f.suffix.lower() in IMAGE_EXTS]
    arrays = [f for f in files if f.suffix.lower() == ".npy"]
    if images and arrays:
        raise EdgecError(f"{root} mixes images ({images[0].name}) and .npy files "
                         f"({arrays[0].name}); use one kind")
    if not images and not arrays:
        raise EdgecError(f"no images or .npy files in {root} (looked for "
                         f"{', '.join(IMAGE_EXTS)}, .npy, in class subfolders or directly)")
    kind, keep = ("images", images) if images else (".npy samples", arrays)
    if len(inputs) != 1:
        names = ", ".join(s["name"] for s in inputs)
        raise EdgecError(f"a folder of {kind} feeds a model with one input; this one takes "
                         f"{len(inputs)} ({names}): use an .npz file with one array per input")
    labels = None
    if file_labels is not None and classes is not None:
        kept = set(keep)
        labels = np.array([lab for f, lab in zip(files, file_labels) if f in kept], np.int64)
        _check_folder_labels(labels, classes, num_classes)
    spec = inputs[0]
    if images:
        pre = preprocess or default_for(spec["shape"], spec["dtype"])
        pre.check_input(spec["shape"], spec["dtype"])
        read = _file_reader(images, spec, lambda f: _load_image(f, spec["shape"], pre))
    else:
        _load_npy(arrays[0], spec)  # one sample up front: a wrong shape or dtype fails fast
        read = _file_reader(arrays, spec, lambda f: _load_npy(f, spec))
    ignored = len(files) - len(keep)
    if classes:  # files beside the class folders
        ignored += sum(1 for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
    source = (f"{len(keep)} {kind} in {len(classes)} classes from {root}" if classes else
              f"{len(keep)} unlabeled {kind} from {root}")
    if ignored:
        source += f" ({ignored} other file{'s' * (ignored > 1)} ignored)"
    return Dataset(len(keep), labels, source, classes, inputs, lambda: read)


def _check_folder_labels(labels: np.ndarray, classes: list[str],
                         num_classes: int | None) -> None:
    if num_classes is None or not len(labels) or labels.max() < num_classes:
        return
    top = int(labels.max())
    _, labels_of = _class_labels(classes)
    name = next(n for n in classes if labels_of[n] == top)
    raise EdgecError(f"label {top} in class folder '{name}' is out of range for a model with "
                     f"{num_classes} classes")


def _file_reader(files: list[Path], spec: dict[str, Any],
                 load: Callable[[Path], np.ndarray]) -> Reader:
    """Reads the samples of [start, stop) from their files, only when asked."""
    def read(start: int, stop: int) -> dict[str, np.ndarray]:
        return {spec["name"]: np.stack([load(f) for f in files[start:stop]])}
    return read


def _load_image(path: Path, shape: list[int], pre: Preprocess) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            return pre.apply(image, shape)
    except EdgecError as err:
        raise EdgecError(f"{path}: {err}") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise EdgecError(f"cannot read image {path}: {err}") from None


def _load_npy(path: Path, spec: dict[str, Any]) -> np.ndarray:
    """One sample, in the input's shape without its batch dim."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise EdgecError(f"cannot read {path} as .npy: {err}") from None
    shape, rest = list(spec["shape"]), list(spec["shape"][1:])
    ok_shape = list(array.shape) == rest or (shape[0] == 1 and list(array.shape) == shape)
    if not ok_shape or array.dtype != np.dtype(spec["dtype"]):
        raise EdgecError(f"{path} is {array.dtype} {list(array.shape)}; the model's input "
                         f"'{spec['name']}' takes {spec['dtype']} {rest} per sample (or "
                         f"{shape})")
    return array.reshape(rest)


def _npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """{array name: (shape, dtype)} of an .npz, read from the headers without loading."""
    out = {}
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with z.open(info) as f:
                    major, _ = np.lib.format.read_magic(f)
                    read = (np.lib.format.read_array_header_1_0 if major == 1 else
                            np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read(f)
                out[info.filename[:-len(".npy")]] = (shape, dtype)
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise EdgecError(f"cannot read {path} as .npz: {err}") from None
    return out


def _npz_count(path: Path, spec: dict[str, Any], shape: tuple[int, ...],
               dtype: np.dtype) -> int:
    """N of the input's array [N, *sample] (or [N, *input shape] when the batch dim is 1)."""
    want, rest = list(spec["shape"]), list(spec["shape"][1:])
    name = spec["name"]
    if dtype != np.dtype(spec["dtype"]):
        raise EdgecError(f"array '{name}' in {path} is {dtype}, the model's input '{name}' "
                         f"takes {spec['dtype']}")
    got = list(shape[1:])
    if len(shape) >= 1 and (got == rest or (want[0] == 1 and got == want)):
        return shape[0]
    raise EdgecError(f"array '{name}' in {path} is {list(shape)}; the model's input takes "
                     f"{want}: want [N, {', '.join(map(str, rest))}]")


def _open_npz(path: Path, inputs: list[dict[str, Any]], num_classes: int | None) -> Dataset:
    headers = _npz_headers(path)
    for spec in inputs:
        if spec["name"] not in headers:
            raise EdgecError(f"{path} has no array '{spec['name']}' for the model's input of "
                             f"that name; it has: {', '.join(sorted(headers)) or 'none'}")
    counts = {s["name"]: _npz_count(path, s, *headers[s["name"]]) for s in inputs}
    if len(set(counts.values())) > 1:
        raise EdgecError(f"the arrays in {path} disagree on the number of samples ({counts})")
    count = next(iter(counts.values()))
    if count == 0:
        raise EdgecError(f"{path} holds zero samples")
    labels = None
    if "labels" in headers:
        with np.load(path, allow_pickle=False) as z:
            labels = _check_labels(z["labels"], count, f"'labels' in {path}", num_classes)

    def reader() -> Reader:
        with np.load(path, allow_pickle=False) as z:
            arrays = {s["name"]: z[s["name"]] for s in inputs}
        for s in inputs:
            arrays[s["name"]] = arrays[s["name"]].reshape(count, *s["shape"][1:])

        return lambda start, stop: {name: a[start:stop] for name, a in arrays.items()}

    source = f"{count} {'labeled' if labels is not None else 'unlabeled'} samples from {path}"
    return Dataset(count, labels, source, None, inputs, reader)


def _check_labels(labels: np.ndarray, count: int, where: str,
                  num_classes: int | None) -> np.ndarray:
    """The labels as int64, one per sample, each in [0, num_classes)."""
    if labels.ndim != 1 or len(labels) != count:
        raise EdgecError(f"{where} has shape {list(labels.shape)}; want [{count}], one label "
                         "per sample")
    bad = 0
    if labels.dtype.kind == "f":  # whole numbers saved as floats are accepted
        fractional = np.flatnonzero(~np.isfinite(labels) | (labels != np.round(labels)))
        if not len(fractional):
            labels = labels.astype(np.int64)
        else:
            bad = int(fractional[0])
    if labels.dtype.kind not in "iu":
        raise EdgecError(f"{where} are {labels.dtype}, not integers (sample {bad}: "
                         f"{labels[bad]!r})")
    labels = labels.astype(np.int64)
    high = num_classes if num_classes is not None else np.iinfo(np.int64).max
    bad_at = np.flatnonzero((labels < 0) | (labels >= high))
    if len(bad_at):
        i = int(bad_at[0])
        limit = f" for a model with {num_classes} classes" if num_classes is not None else ""
        raise EdgecError(f"label {labels[i]} (sample {i}) in {where} is out of range{limit}")
    return labels
