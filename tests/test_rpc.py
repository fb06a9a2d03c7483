"""Remote measurement: TVM's RPC tracker and our edgec-rpc-server (from a bundle's rpc.sh,
running under qemu-aarch64) on loopback; MetaSchedule's RPC runner measures trials of a conv
task through them, and a model uploaded over RPC gives onnxruntime's outputs."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from edgec import models, runtime, targets
from edgec.compiler.tuning import measure

from conftest import ort_run

pytestmark = pytest.mark.skipif(shutil.which("qemu-aarch64") is None,
                                reason="qemu-user is not installed (./dev setup installs it)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited: {proc.stderr.read().decode()[-800:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    pytest.fail(f"{what} did not open port {port}")


def _stop(proc: subprocess.Popen, group: bool = False) -> None:
    """Stop `proc`; with `group`, the process group it leads (start_new_session): everything
    it started too."""
    def send(sig: int) -> None:
        try:
            os.killpg(proc.pid, sig) if group else proc.send_signal(sig)
        except ProcessLookupError:
            pass

    send(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def tracker():
    """TVM's tracker, in a process group of its own: it serves from a popen_worker child that
    SIGTERM to the tracker alone would leave running, orphaned."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host",
                             "127.0.0.1", "--port", str(port), "--port-end", str(port + 1)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    _wait_port(port, proc, "rpc_tracker")
    yield "127.0.0.1", port
    _stop(proc, group=True)


@pytest.fixture(scope="module")
def board(artifacts, tracker):
    """A qemu 'board' serving RPC from its bundle, registered with the tracker."""
    from tvm import rpc

    bundle = artifacts("lenet5", "arm", bundle=True)
    port, key = _free_port(), "qemu-arm"
    proc = subprocess.Popen([str(bundle / "rpc.sh"), "--host", "127.0.0.1", "--port", str(port),
                             "--tracker", f"{tracker[0]}:{tracker[1]}", "--key", key],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _wait_port(port, proc, "edgec-rpc-server")
    deadline = time.time() + 60
    while key not in rpc.connect_tracker(*tracker).summary()["queue_info"]:
        if time.time() > deadline:
            pytest.fail("the board never registered with the tracker")
        time.sleep(0.5)
    yield key, bundle
    _stop(proc)


def _run_remote_model(sess, bundle, tmp_path) -> None:
    import tvm
    from tvm import relax

    sess.upload(str(bundle / "model.so"), "model.so")
    vm = relax.VirtualMachine(sess.load_module("model.so"), sess.cpu())
    feed = runtime.random_inputs([{"name": "input", "shape": [1, 1, 32, 32],
                                   "dtype": "float32"}], seed=77)
    got = vm["main"](tvm.runtime.tensor(feed["input"], device=sess.cpu())).numpy()
    models.export("lenet5", tmp_path / "lenet5.onnx")
    (want,) = ort_run(tmp_path / "lenet5.onnx", feed)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_uploaded_model_matches_onnxruntime(board, tracker, tmp_path):
    from tvm import rpc

    key, bundle = board
    sess = rpc.connect_tracker(*tracker).request(key, session_timeout=120)
    _run_remote_model(sess, bundle, tmp_path)


def _conv_task():
    from tvm import te

    data = te.placeholder((1, 16, 16, 16), name="data")
    weight = te.placeholder((16, 16, 3, 3), name="weight")
    rc, ry, rx = (te.reduce_axis((0, n), name=n_) for n, n_ in ((16, "rc"), (3, "ry"), (3, "rx")))
    out = te.compute((1, 16, 14, 14), lambda b, o, y, x: te.sum(
        data[b, rc, y + ry, x + rx] * weight[o, rc, ry, rx], axis=[rc, ry, rx]), name="conv")
    return te.create_prim_func([data, weight, out]).with_attr("global_symbol", "main")


def test_metaschedule_measures_a_conv_task_on_the_board(board, tracker, tmp_path):
    from tvm.s_tir import meta_schedule as ms

    key, _ = board
    target = targets.get("arm")
    runner = measure.rpc_runner(tracker=f"{tracker[0]}:{tracker[1]}", key=key, repeat=1)
    try:
        database = ms.tune_tir(
            _conv_task(), target.tvm_target(), str(tmp_path / "ms"), max_trials_global=3,
            num_trials_per_iter=3, builder=measure.builder(target), runner=runner,
            strategy="replay-trace", cost_model="random", num_tuning_cores=1)
    finally:
        measure.close(runner)
    records = database.get_all_tuning_records()
    times = [float(t) for r in records for t in r.run_secs]
    assert len(records) == 3
    # A failed measurement is recorded as 1e10 s; every trial here ran on the board.
    assert all(0 < t < 1.0 for t in times), times


def test_direct_connection_and_key_check(artifacts, tmp_path):
    from tvm import rpc

    bundle = artifacts("lenet5", "arm", bundle=True)
    port = _free_port()
    proc = subprocess.Popen([str(bundle / "rpc.sh"), "--host", "127.0.0.1", "--port",
                             str(port), "--key", "pi"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_port(port, proc, "edgec-rpc-server")
        with pytest.raises(Exception, match="cannot find server that matches key"):
            rpc.connect("127.0.0.1", port, key="someone-else")
        _run_remote_model(rpc.connect("127.0.0.1", port, key="pi"), bundle, tmp_path)
    finally:
        _stop(proc)
