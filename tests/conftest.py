"""Shared fixtures: a CLI runner, an ELF reader, a session cache of compiled artifacts
(compiling is the slow part; tests that only read an artifact share one), and a session check
that no TVM worker process outlives the tests."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from edgec.cli import main

REPO = Path(__file__).resolve().parents[1]

# Every process this session starts inherits the mark, so its TVM workers can be told apart
# from another session's on the same machine, even once orphaned (reparented to init).
SESSION_MARK = ("EDGEC_TEST_SESSION", uuid.uuid4().hex)
os.environ[SESSION_MARK[0]] = SESSION_MARK[1]


def popen_workers() -> list[int]:
    """PIDs of the live `tvm.exec.popen_worker` processes this session started, at any depth
    and orphaned ones included (Linux /proc; none elsewhere)."""
    mark = f"{SESSION_MARK[0]}={SESSION_MARK[1]}".encode()
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if (b"tvm.exec.popen_worker" in (proc / "cmdline").read_bytes()
                    and mark in (proc / "environ").read_bytes().split(b"\0")):
                found.append(int(proc.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def workers_left(timeout_s: float = 10.0) -> list[int]:
    """popen_workers() still alive after up to `timeout_s` (a stopped pool's workers take a
    moment to exit)."""
    import gc

    gc.collect()
    deadline = time.monotonic() + timeout_s
    while (left := popen_workers()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


@pytest.fixture(scope="session", autouse=True)
def no_worker_outlives_the_session():
    """Fail the session when a TVM popen_worker it started (MetaSchedule's runners, the RPC
    tracker's server) is still running at its end: such a process outlives pytest. The
    leftovers are killed so that one failure does not leave them behind either."""
    yield
    left = workers_left()
    for pid in left:
        try:
            os.kill(pid, 9)
        except OSError:
            pass
    assert not left, f"TVM popen_worker processes outlived the tests: pids {left}"


@pytest.fixture
def cli(capsys):
    """Run `edgec ARGS` in-process; return (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def foreign_arch() -> str:
    """An architecture this machine is not (tests of refusals run on x86-64 and aarch64)."""
    from edgec.targets import host_arch

    return "x86_64" if host_arch() == "aarch64" else "aarch64"


def foreign_target(folder: Path) -> str:
    """The path of a target file for foreign_arch(), as a target name (nothing is built)."""
    arch = foreign_arch()
    path = folder / f"foreign-{arch}.toml"
    path.write_text(f'arch = "{arch}"\n[tvm]\nkind = "llvm"\nmtriple = "{arch}-linux-gnu"\n'
                    f'[toolchain]\ncc = "{arch}-linux-gnu-g++"\n')
    return str(path)


def elf_machine(path: Path) -> str:
    """The ELF header's e_machine as a name: what the library runs on."""
    head = Path(path).read_bytes()[:20]
    assert head[:4] == b"\x7fELF", f"{path} is not an ELF file"
    machine = int.from_bytes(head[18:20], "little")
    return {62: "x86_64", 183: "aarch64"}.get(machine, str(machine))


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save_model(model, str(path))
    return path


def random_const(name: str, shape, rng: np.random.Generator) -> onnx.TensorProto:
    """A float32 initializer `name` of standard-normal values."""
    from onnx import numpy_helper

    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)


def tiny_model(nodes, x_shape, inits=(), out_shape=None, infer: bool = True) -> onnx.ModelProto:
    """A one-input ("x") one-output ("y") opset-17 model for pass tests. `inits`: initializers,
    as TensorProtos or a {name: array} dict. Shapes inferred unless `infer` is False."""
    from onnx import TensorProto, helper, numpy_helper

    if isinstance(inits, dict):
        inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()]
    graph = helper.make_graph(
        nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model) if infer else model


def conv_relu_conv(path: Path) -> Path:
    """Saves the two-conv model the tuning tests tune: 3x3 conv + bias, ReLU, 1x1 conv."""
    from onnx import helper

    rng = np.random.default_rng(0)
    inits = [random_const(n, s, rng)
             for n, s in (("w1", (32, 16, 3, 3)), ("b1", (32,)), ("w2", (32, 32, 1, 1)))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], pads=[1] * 4),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["y"])]
    return save(tiny_model(nodes, [1, 16, 28, 28], inits), path)


def ort_run(path_or_model, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    src = path_or_model.SerializeToString() if isinstance(path_or_model, onnx.ModelProto) \
        else str(path_or_model)
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"]).run(None, feed)


def dead_values(model: onnx.ModelProto) -> list[str]:
    """Initializers and Constant-node outputs of the main graph that nothing reads: no node at
    any depth (If/Loop bodies read outer names), no graph output. A graph input backed by an
    initializer counts as read (it is part of the interface)."""
    def reads(graph: onnx.GraphProto) -> set[str]:
        names = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        for n in graph.node:
            for a in n.attribute:
                for sub in [a.g] if a.HasField("g") else list(a.graphs):
                    names |= reads(sub)
        return names

    g = model.graph
    read = reads(g) | {i.name for i in g.input}
    consts = [o for n in g.node if n.op_type == "Constant" for o in n.output]
    return [name for name in [t.name for t in g.initializer] + consts if name not in read]


def check_pass(run, model: onnx.ModelProto, expect_ops: dict[str, int]):
    """Run the pass `run(model) -> (model, report)` and check the pass-test contract: the
    checker, op counts, outputs within 1e-5 relative of ORT on the original (ORT_DISABLE_ALL),
    and a second run changing nothing. Returns (rewritten model, report)."""
    out, report = run(model)
    onnx.checker.check_model(out, full_check=True)
    ops = [n.op_type for n in out.graph.node]
    for op, n in expect_ops.items():
        assert ops.count(op) == n, (op, ops)
    x_shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(0).standard_normal(x_shape).astype(np.float32)
    want, got = ort_run(model, {"x": x})[0], ort_run(out, {"x": x})[0]
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max(), np.abs(got - want).max()
    again, second = run(out)
    assert not second.changed, second.summary()
    assert again.graph.SerializeToString() == out.graph.SerializeToString()
    return out, report


def _as_numpy(out) -> np.ndarray:
    return out.numpy() if hasattr(out, "numpy") else np.asarray(out)


def call_several(run: Callable[[np.ndarray], Any], model: onnx.ModelProto,
                 x_shape: list[int], calls: int = 3, rtol: float = 1e-4) -> None:
    """Call `run(x)` `calls` times with different inputs (seeded) and check each output (an
    array, or a TVM tensor as the VM returns it) against onnxruntime within `rtol` x max|ref|,
    and that no later call changed what an earlier call returned (padding or scratch read from
    memory a previous call wrote shows only on a second call; an output whose storage the VM
    reuses shows as a changed earlier result)."""
    kept = []
    for call in range(calls):
        x = np.random.default_rng(call).standard_normal(x_shape).astype(np.float32)
        out = run(x)
        got = _as_numpy(out).copy()
        want = ort_run(model, {"x": x})[0]
        assert got.shape == want.shape, (call, got.shape, want.shape)
        assert np.abs(got - want).max() <= rtol * np.abs(want).max(), \
            (call, np.abs(got - want).max(), np.abs(want).max())
        kept.append((out, got))
    for call, (out, got) in enumerate(kept):
        assert np.array_equal(_as_numpy(out), got), \
            f"call {call + 1}'s output changed by a later call"


def build_and_check(model: onnx.ModelProto):
    """Build a one-input ("x") model for the host with the `cpu` pipeline, check its output
    against onnxruntime within 1e-4 relative on several calls (call_several), and return the
    pipeline's Lowering."""
    import tvm
    from tvm import relax

    from edgec import targets
    from edgec.compiler import codegen

    x_shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    lowering = codegen.Lowering()
    ex = codegen.build(model, targets.get("host"), {"x": x_shape}, lowering)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    call_several(lambda x: vm["main"](tvm.runtime.tensor(x)), model, x_shape)
    return lowering


def host_disassembly(model: onnx.ModelProto, folder: Path) -> str:
    """`model` checked against onnxruntime over several calls (build_and_check), then compiled
    by `edgec.compile` into `folder`: the objdump of its library."""
    import subprocess

    import edgec

    build_and_check(model)
    onnx_path = folder / "model.onnx"
    onnx_path.write_bytes(model.SerializeToString())
    edgec.compile(onnx_path, output=folder / "out", latency=False)
    return subprocess.run(["objdump", "-d", str(folder / "out" / "model.so")],
                          capture_output=True, text=True, check=True).stdout


def legalized(model: onnx.ModelProto, x_shape: list[int]):
    """`model` imported for the host, channels-last and legalized: the module the kernel
    merges (merge_chains, merge_moves) run on in the `cpu` pipeline."""
    import tvm
    from tvm.relax.backend.cpu_generic import pipeline as stock

    from edgec import targets
    from edgec.compiler import codegen
    from edgec.compiler.codegen.relax_level.layout import channels_last

    target = targets.get("host")
    with target.tvm_target():
        mod = channels_last(codegen.import_model(model, target, {"x": x_shape}))
        return tvm.transform.Sequential(stock.legalize_passes(target.tvm_target()))(mod)


def kernel_names(mod) -> list[str]:
    """Names of the PrimFuncs (kernels) of a Relax module."""
    import tvm

    return sorted(gv.name_hint for gv, f in mod.functions_items()
                  if isinstance(f, tvm.tirx.PrimFunc))


def conv_kernels(lowering) -> dict[str, str]:
    """Kernel -> how it was scheduled, for the conv and dense kernels of a Lowering."""
    return {k: v for k, v in lowering.kernels.items() if "conv" in k or "matmul" in k}


@pytest.fixture(scope="module")
def direct_convs():
    """The `cpu` pipeline without Winograd, for a test module: tests of the direct conv
    schedules, whose 3x3 stride-1 convs it would otherwise take."""
    from edgec.compiler.codegen.relax_level import winograd

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(winograd, "DEFAULT", winograd.WinogradOptions(min_tiles=2**62))
        yield


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory):
    """compile(model_name, target) -> artifact folder, compiled once per session (checked,
    not timed: test_compile times one build)."""
    import edgec
    from edgec import models

    root = tmp_path_factory.mktemp("artifacts")
    cache: dict[tuple[str, str, bool], Path] = {}

    def get(name: str, target: str = "host", bundle: bool = False) -> Path:
        key = (name, target, bundle)
        if key not in cache:
            src = root / f"{name}.onnx"
            if not src.exists():
                models.export(name, src)
            out = root / f"{name}-{target}{'-bundle' if bundle else ''}"
            edgec.compile(src, output=out, target=target, bundle=bundle, latency=False)
            cache[key] = out
        return cache[key]

    return get


@pytest.fixture(scope="session")
def ssh_device(tmp_path_factory):
    """An sshd on 127.0.0.1 (a free port), key auth only; yields its ssh:// URL with
    EDGEC_SSH_OPTS set for it. The 'board' is this machine: run.sh emulates aarch64 there."""
    import os
    import shutil
    import socket
    import subprocess
    import time

    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd).exists():
        pytest.skip("openssh-server is not installed (./dev setup installs it)")
    if os.geteuid() != 0:
        pytest.skip("a loopback sshd that accepts this user's key needs root here")
    d = tmp_path_factory.mktemp("sshd")
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)],
                       check=True)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\n"
        f"AuthorizedKeysFile {d}/authorized_keys\nPidFile {d}/sshd.pid\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "StrictModes no\nPermitRootLogin yes\nSubsystem sftp internal-sftp\n")
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(d / "sshd_config")],
                            stderr=subprocess.PIPE)
    deadline = time.time() + 15
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail(f"sshd did not start: {proc.stderr.read().decode()[-500:]}")
    old = os.environ.get("EDGEC_SSH_OPTS")
    os.environ["EDGEC_SSH_OPTS"] = (f"-i {d}/client_key -o StrictHostKeyChecking=no "
                                    f"-o UserKnownHostsFile={d}/known_hosts -o LogLevel=ERROR")
    yield f"ssh://root@127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)
    if old is None:
        os.environ.pop("EDGEC_SSH_OPTS", None)
    else:
        os.environ["EDGEC_SSH_OPTS"] = old


@pytest.fixture(scope="session")
def digits_data(tmp_path_factory):
    """The first 200 digits test images as model inputs, with labels (.npz): the data the lossy
    steps (compress, quantize) fit and judge on; the last 160 stay unseen."""
    from edgec.models import digits

    images, labels = digits.test_split()
    path = tmp_path_factory.mktemp("digits") / "data.npz"
    np.savez(path, input=digits.model_inputs(images[:200]), labels=labels[:200])
    return path


def target_without_phases(target_name: str, drop: tuple[str, ...], monkeypatch):
    """The built-in target `target_name` on a copy of its pipeline without the phases named in
    `drop` (registered for this test only, through monkeypatch)."""
    import dataclasses

    from edgec import targets
    from edgec.compiler.codegen import pipelines

    target = targets.get(target_name)
    stock = pipelines.PIPELINES[target.pipeline]
    name = f"{target.pipeline}-without-{'-'.join(drop)}"
    monkeypatch.setitem(pipelines.PIPELINES, name, dataclasses.replace(
        stock, phases=lambda t, lw: [p for p in stock.phases(t, lw) if p[0] not in drop]))
    return dataclasses.replace(target, pipeline=name)
