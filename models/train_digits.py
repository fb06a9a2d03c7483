"""Train the two digits CNNs on scikit-learn's handwritten digits and commit them as ONNX.

    .venv/bin/python -m edgec.models.train_digits [--out DIR]

re-trains `digits_vgg` and `digits_resnet` and rewrites `models/trained/` (or DIR): each
model's ONNX file, carrying its preprocessing, labels and onnxruntime test accuracy in
`metadata_props`, and `digits_test.npz`, the 360-image test split as the harness feeds it.

The recipe is deterministic (fixed seeds, one thread, deterministic algorithms, a fixed
stratified split), so a re-run reproduces the committed predictions; `tests/test_digits.py`
checks that. Needs torch and scikit-learn, which the runtime side (`digits.py`) does not.
"""

from __future__ import annotations

import argparse
import io
import json
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from edgec.fileio import atomic_write_bytes

from .digits import LABELS, PREPROCESS, TRAINED_DIR, model_inputs, upsample

SEED = 0
EPOCHS = 14
BATCH = 32
SHIFT = 2  # augmentation: random translation of up to ±SHIFT pixels in each direction


def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


def vgg() -> nn.Module:
    """VGG-style: conv3x3-BN-ReLU ×2 per stage (32/64/128 channels), maxpool between stages,
    global average pool, Linear to 10."""
    layers: list[nn.Module] = []
    cin = 1
    for i, cout in enumerate((32, 64, 128)):
        layers += conv_bn_relu(cin, cout) + conv_bn_relu(cout, cout)
        if i < 2:
            layers.append(nn.MaxPool2d(2))
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10)]
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """ResNet basic block: two conv3x3-BN, the shortcut a 1×1 conv-BN projection where the
    block changes stride or width, else the identity."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*conv_bn_relu(cin, cout, stride),
                                  nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(cout))
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


def resnet() -> nn.Module:
    """ResNet-style: stem conv, three stages of two basic blocks (16/32/64 channels, the
    later two starting with a stride-2 block), global average pool, Linear to 10."""
    layers: list[nn.Module] = conv_bn_relu(1, 16)
    cin = 16
    for i, cout in enumerate((16, 32, 64)):
        layers += [BasicBlock(cin, cout, 1 if i == 0 else 2), BasicBlock(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
    return nn.Sequential(*layers)


NETS = {"digits_vgg": vgg, "digits_resnet": resnet}


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, test images, test labels): the 1797 digits upsampled to
    32×32 uint8, split 80/20 stratified with a fixed seed (360 test images)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.stack([upsample(d) for d in digits.images])
    labels = digits.target.astype(np.int64)
    tr_x, te_x, tr_y, te_y = train_test_split(images, labels, test_size=0.2, random_state=0,
                                              stratify=labels)
    return tr_x, tr_y, te_x, te_y


def shifted(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Each image of the batch translated by its own random (dy, dx) in [-SHIFT, SHIFT],
    the uncovered border filled with the background (-1, white paper is 0 → -1)."""
    n, _, h, w = x.shape
    padded = nn.functional.pad(x, (SHIFT,) * 4, value=-1.0)
    offsets = rng.integers(0, 2 * SHIFT + 1, size=(n, 2))
    return torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets)])


def train(name: str, images: np.ndarray, labels: np.ndarray) -> nn.Module:
    """Train net `name` from its seed: Adam with a one-cycle schedule, shift augmentation."""
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    model = NETS[name]()
    x_all = torch.from_numpy(model_inputs(images))
    y_all = torch.from_numpy(labels)
    steps = EPOCHS * -(-len(images) // BATCH)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    model.train()
    for _ in range(EPOCHS):
        order = torch.from_numpy(rng.permutation(len(images)))
        for batch in order.split(BATCH):
            loss = nn.functional.cross_entropy(model(shifted(x_all[batch], rng)), y_all[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def to_onnx(model: nn.Module) -> onnx.ModelProto:
    """Export at batch 1 with BatchNormalization kept as its own node, as a user's export
    would have it (TrainingMode.PRESERVE on an eval-mode model skips the exporter's Conv-BN
    fusion), so the compiler's fold_batchnorm has work to do."""
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (torch.zeros(1, 1, 32, 32),), buf, dynamo=False,
                          opset_version=13, input_names=["input"], output_names=["logits"],
                          training=torch.onnx.TrainingMode.PRESERVE,
                          do_constant_folding=False)
    return onnx.load_from_string(buf.getvalue())


def ort_predictions(model: onnx.ModelProto, images: np.ndarray) -> np.ndarray:
    """Top-1 class of each image, by onnxruntime on `model`, one image per run (batch 1)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    x = model_inputs(images)
    return np.array([sess.run(None, {"input": x[i:i + 1]})[0].argmax() for i in range(len(x))])


def set_metadata(model: onnx.ModelProto, accuracy: float) -> None:
    """The keys the validation harness reads: preprocessing, class names, fp32 accuracy."""
    entries = {"edgec.preprocess": json.dumps(PREPROCESS), "edgec.labels": json.dumps(LABELS),
               "edgec.fp32_test_accuracy": f"{accuracy:.4f}"}
    del model.metadata_props[:]
    for key, value in entries.items():
        model.metadata_props.add(key=key, value=value)


def main(out_dir: str | Path = TRAINED_DIR) -> dict[str, float]:
    """Train both nets, write their ONNX files and the test split into `out_dir`; return the
    onnxruntime test accuracy of each."""
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    out = Path(out_dir)
    tr_x, tr_y, te_x, te_y = load_split()
    buf = io.BytesIO()
    np.savez_compressed(buf, images=te_x, labels=te_y)
    atomic_write_bytes(out / "digits_test.npz", buf.getvalue())
    accuracies = {}
    for name in NETS:
        start = time.perf_counter()
        model = train(name, tr_x, tr_y)
        seconds = time.perf_counter() - start
        with torch.no_grad():
            torch_pred = model(torch.from_numpy(model_inputs(te_x))).argmax(1).numpy()
        proto = to_onnx(model)
        ort_pred = ort_predictions(proto, te_x)
        acc, torch_acc = float((ort_pred == te_y).mean()), float((torch_pred == te_y).mean())
        if (ort_pred != torch_pred).any():
            raise RuntimeError(f"{name}: onnxruntime and torch disagree on "
                               f"{int((ort_pred != torch_pred).sum())} test images")
        set_metadata(proto, acc)
        onnx.checker.check_model(proto, full_check=True)
        path = atomic_write_bytes(out / f"{name}.onnx", proto.SerializeToString())
        print(f"{name}: trained in {seconds:.1f} s; test accuracy torch {torch_acc:.4f}, "
              f"onnxruntime {acc:.4f}; {path} ({path.stat().st_size / 1e3:.0f} kB)")
        accuracies[name] = acc
    return accuracies


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=TRAINED_DIR, help="output folder (default: %(default)s)")
    main(parser.parse_args().out)
