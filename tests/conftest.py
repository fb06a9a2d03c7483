"""Shared fixtures: a CLI runner, an ELF reader, and a session cache of compiled artifacts
(compiling is the slow part; tests that only read an artifact share one)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from edgec.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def cli(capsys):
    """Run `edgec ARGS` in-process; return (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def elf_machine(path: Path) -> str:
    """The ELF header's e_machine as a name: what the library runs on."""
    head = Path(path).read_bytes()[:20]
    assert head[:4] == b"\x7fELF", f"{path} is not an ELF file"
    machine = int.from_bytes(head[18:20], "little")
    return {62: "x86_64", 183: "aarch64"}.get(machine, str(machine))


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save_model(model, str(path))
    return path


def ort_run(path_or_model, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    src = path_or_model.SerializeToString() if isinstance(path_or_model, onnx.ModelProto) \
        else str(path_or_model)
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"]).run(None, feed)


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory):
    """compile(model_name, target) -> artifact folder, compiled once per session."""
    import edgec
    from edgec import models

    root = tmp_path_factory.mktemp("artifacts")
    cache: dict[tuple[str, str], Path] = {}

    def get(name: str, target: str = "host") -> Path:
        if (name, target) not in cache:
            src = root / f"{name}.onnx"
            if not src.exists():
                models.export(name, src)
            out = root / f"{name}-{target}"
            edgec.compile(src, output=out, target=target)
            cache[(name, target)] = out
        return cache[(name, target)]

    return get
