"""Models exported by PyTorch itself (both of its exporters) compile and match onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import ort_run

torch = pytest.importorskip("torch")
nn = torch.nn


class ResidualNet(nn.Module):
    """Conv-BN-ReLU stem, a residual block, max pooling, Flatten + Linear."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16),
                                   nn.ReLU(), nn.Conv2d(16, 16, 3, 1, 1, bias=False),
                                   nn.BatchNorm2d(16))
        self.head = nn.Linear(16 * 8 * 8, 10)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.block(x))
        x = nn.functional.max_pool2d(x, 2)
        return self.head(torch.flatten(x, 1))


class MobileBlockNet(nn.Module):
    """Depthwise-separable convs with Hardswish, SiLU, dilation, global pooling, Softmax."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.Hardswish(),
            nn.Conv2d(16, 16, 3, 1, 2, dilation=2, groups=16), nn.BatchNorm2d(16), nn.SiLU(),
            nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32), nn.ReLU6(), nn.Dropout(0.2))
        self.fc = nn.Linear(32, 5)

    def forward(self, x):
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return torch.softmax(self.fc(torch.flatten(x, 1)), dim=1)


def _randomize_bn(model):
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    return model.eval()


@pytest.mark.parametrize("net, dynamo", [(ResidualNet, False), (MobileBlockNet, True)])
def test_torch_exported_model_compiles_and_matches(cli, tmp_path, net, dynamo):
    torch.manual_seed(0)
    model = _randomize_bn(net())
    example = torch.randn(1, 3, 32, 32)
    path = tmp_path / "torch.onnx"
    kwargs = ({"dynamic_axes": {"image": {0: "batch"}}} if not dynamo else {})
    if dynamo:
        pytest.importorskip("onnxscript")
    torch.onnx.export(model, (example,), str(path), input_names=["image"],
                      output_names=["logits"], dynamo=dynamo, **kwargs)
    extra = ["--input-shape", "image=2,3,32,32"] if not dynamo else []
    out = tmp_path / "art"
    code, stdout, err = cli("compile", path, "-o", out, *extra)
    assert code == 0, err
    assert ": OK" in stdout

    from edgec import runtime

    compiled = runtime.load(out)
    x = np.random.default_rng(7).standard_normal(compiled.inputs[0]["shape"]).astype(np.float32)
    got = compiled(image=x)["logits"]
    ref = ort_run(path, {"image": x})[0]
    with torch.no_grad():
        torch_ref = model(torch.from_numpy(x)).numpy()
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
    assert np.abs(ref - torch_ref).max() <= 1e-4 * np.abs(torch_ref).max()
