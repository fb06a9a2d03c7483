"""MetaSchedule plumbing for measuring on a device: a builder that links with the target's
compiler, and a runner that measures through TVM's RPC tracker.

A board joins a farm by running its bundle's rpc.sh (our edgec-rpc-server, no Python)
against a tracker (`python -m tvm.exec.rpc_tracker --port 9190`); MetaSchedule then asks the
tracker for a board of the given key for every measurement. The library is linked here into a
shared object, so the board needs no compiler (TVM's default exports a tar of objects that the
server would link).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from edgec.targets import Target


class CrossExport:
    """MetaSchedule `f_export`: link a built module with a given C++ compiler into a .so.

    A class, not a closure, so that MetaSchedule's worker processes can unpickle it.
    """

    def __init__(self, compiler: str):
        self.compiler = compiler

    def __call__(self, mod: Any) -> str:
        from tvm.support import cc

        path = os.path.join(tempfile.mkdtemp(prefix="edgec-ms-"), "tvm_tmp_mod.so")
        mod.export_library(path, fcompile=cc.cross_compiler(self.compiler))
        return path


class Build:
    """MetaSchedule `f_build` without its default's `import tvm.s_tir.tensor_intrin`.

    That import takes ~40 s here, and LocalBuilder starts fresh worker processes for every
    batch of candidates: with the default, each batch of a CPU fp32 search paid it again (and
    hit the build timeout). Tensor intrinsics are not used by fp32 CPU schedules.
    """

    def __call__(self, mod: Any, target: Any, _params: Any) -> Any:
        import tvm
        from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

        mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
        return tvm.tirx.build(mod, target=target)


def builder(target: Target, *, cc: str | None = None, workers: int = 1,
            timeout_s: float = 120.0) -> Any:
    from tvm.s_tir import meta_schedule as ms

    return ms.builder.LocalBuilder(f_build=Build(), f_export=CrossExport(target.compiler(cc)),
                                   max_workers=workers, timeout_sec=timeout_s)


def rpc_runner(*, tracker: str, key: str, session_timeout_s: int = 120, number: int = 3,
               repeat: int = 1, min_repeat_ms: int = 0) -> Any:
    """A MetaSchedule runner that measures on boards registered under `key` at `tracker`."""
    from tvm.s_tir import meta_schedule as ms

    host, _, port = tracker.rpartition(":")
    return ms.runner.RPCRunner(
        ms.runner.RPCConfig(tracker_host=host, tracker_port=int(port), tracker_key=key,
                            session_timeout_sec=session_timeout_s),
        evaluator_config=ms.runner.EvaluatorConfig(number=number, repeat=repeat,
                                                   min_repeat_ms=min_repeat_ms),
        max_workers=1)
