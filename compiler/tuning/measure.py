"""MetaSchedule plumbing: a builder that links with the target's compiler, how a candidate is
timed (evaluator), runners that time it here or through TVM's RPC tracker, a batch of
schedules measured with them (measure), and what `edgec tune` measures and commits besides
MetaSchedule's own search: the rule's variants (try_knobs) and a winner timed again beside
the rule (rematch), each committed as it is measured (measure_into).

A board joins a farm by running its bundle's rpc.sh (our edgec-rpc-server, no Python)
against a tracker (`python -m tvm.exec.rpc_tracker --port 9190`); MetaSchedule then asks the
tracker for a board of the given key for every measurement. The library is linked here into a
shared object, so the board needs no compiler (TVM's default exports a tar of objects that the
server would link).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from edgec.targets import Target

from .db import best_other, commit, mean_secs, records


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

        from edgec.compiler.codegen.cpu.int8 import vectorizable_rounding
        from edgec.compiler.codegen.tir_level.stack_scratch import pipeline

        vectorizable_rounding()  # int8 epilogues vectorized as in compile's own build
        mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
        return tvm.tirx.build(mod, target=target, pipeline=pipeline())


def builder(target: Target, *, cc: str | None = None, workers: int = 1,
            timeout_s: float = 120.0) -> Any:
    from tvm.s_tir import meta_schedule as ms

    return ms.builder.LocalBuilder(f_build=Build(), f_export=CrossExport(target.compiler(cc)),
                                   max_workers=workers, timeout_sec=timeout_s)


def evaluator(*, repeat: int = 10) -> Any:
    """How each candidate is timed: `repeat` single runs, weights flushed from cache before each.

    That is how a model runs a kernel: once, its weights cold (the layers before streamed
    megabytes of their own). MetaSchedule's default, the mean of back-to-back calls for 100 ms,
    misranked: on ResNet-18's last-stage 3x3 conv (9.4 MB of weights) its best candidates read
    1060 and 1073 us against edgec's 1033 us rule schedule, and ran 1566 and 2414 us against
    1154 us in the model (a 25-minute tuning left ResNet-18 1.11x ORT where untuned was 0.97x).
    Timed this way the same three read 1481, 1667 and 1133 us. TVM's flush skips the first
    argument, the input activation, which the previous layer has just written.
    """
    from tvm.s_tir import meta_schedule as ms

    return ms.runner.EvaluatorConfig(number=1, repeat=repeat, min_repeat_ms=0,
                                     enable_cpu_cache_flush=True)


def local_runner(*, timeout_s: float = 30.0) -> Any:
    from tvm.s_tir import meta_schedule as ms

    return ms.runner.LocalRunner(timeout_sec=timeout_s, evaluator_config=evaluator())


def rpc_runner(*, tracker: str, key: str, session_timeout_s: int = 120,
               repeat: int = 10) -> Any:
    """A MetaSchedule runner that measures on boards registered under `key` at `tracker`."""
    from tvm.s_tir import meta_schedule as ms

    host, _, port = tracker.rpartition(":")
    return ms.runner.RPCRunner(
        ms.runner.RPCConfig(tracker_host=host, tracker_port=int(port), tracker_key=key,
                            session_timeout_sec=session_timeout_s),
        evaluator_config=evaluator(repeat=repeat), max_workers=1)


def close(*parts: Any) -> None:
    """Stop the worker processes of MetaSchedule runners (or builders) now.

    LocalRunner and RPCRunner keep a pool of `python -m tvm.exec.popen_worker` processes for
    their whole life, and TVM stops it only when the object is garbage-collected: a runner
    kept alive (by a traceback, by a reference cycle through the FFI) keeps its worker.
    LocalBuilder starts and stops a pool per build, so it has none to stop here.
    """
    for part in parts:
        pool = getattr(part, "pool", None)
        if pool is not None:
            pool.shutdown(wait=True)


@contextmanager
def measuring(target: Target, *, cc: str | None = None, tracker: str | None = None,
              key: str | None = None) -> Iterator[tuple[Any, Any]]:
    """(builder, runner) for `edgec tune`: a builder with a worker per core, a runner here or,
    with `tracker`, on the boards registered there under `key` (default: the target's name).
    Their worker processes are stopped on leaving, whether the block ends or raises."""
    bld = builder(target, cc=cc, workers=os.cpu_count() or 1)
    run = (rpc_runner(tracker=tracker, key=key or target.name) if tracker else local_runner())
    try:
        yield bld, run
    finally:
        close(run, bld)


def measure(schs: list[Any], target: Any, builder: Any, runner: Any) -> list[float | None]:
    """Mean seconds of each schedule, built and run as one batch (worker pools start once)."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    built = builder.build([ms.builder.BuilderInput(s.mod, target) for s in schs])
    device = "cpu" if target.kind.name == "llvm" else target.kind.name
    ok = [(i, b) for i, b in enumerate(built) if not b.error_msg]
    # Arguments as the built kernel takes them: repacked weights (cpu/loops.pack_weights)
    # arrive in their packed shape, the repacking itself being folded at compile time.
    unpacked = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)
    futures = runner.run([ms.runner.RunnerInput(
        b.artifact_path, device, ms.arg_info.ArgInfo.from_prim_func(unpacked(schs[i].mod)["main"]))
        for i, b in ok])
    out: list[float | None] = [None] * len(schs)
    for (i, b), fut in zip(ok, futures):
        res = fut.result()
        ms.utils.remove_build_dir(b.artifact_path)
        if not res.error_msg and res.run_secs:
            out[i] = mean_secs(res.run_secs)
    return out


def measure_into(db: Any, pairs: list[tuple[Any, Any]], target: Any, builder: Any,
                 runner: Any) -> int:
    """Time each (kernel, schedule of it) in one batch and commit those that ran; returns
    how many were tried."""
    secs = measure([sch for _, sch in pairs], target, builder, runner) if pairs else []
    for (mod, sch), t in zip(pairs, secs):
        if t is not None:
            commit(db, mod, sch, t, target)
    return len(pairs)


def rematch(db: Any, mod: Any, rule: Any, target: Any, builder: Any, runner: Any) -> None:
    """Time the search's best schedule and the rule's once more, in one batch, and commit both.

    The baseline is timed once before the search and the candidates minutes later: a baseline
    timed while the machine was busy let slower candidates win. On MobileNetV2's 320 -> 1280
    conv the rule read 448.5 us at the start against MetaSchedule's 285.9 us, the rule timed
    again read 232 us, and the model with MetaSchedule's kernels (this and one more) ran 2%
    slower than without them.
    """
    from tvm import s_tir

    found = best_other(db, mod, rule)
    if found is None:
        return
    best = s_tir.Schedule(mod)
    found.trace.apply_to_schedule(best, remove_postproc=False)
    measure_into(db, [(mod, rule), (mod, best)], target, builder, runner)


def try_knobs(db: Any, mod: Any, cpu: Any, limit: int, rule_secs: float, target: Any,
              builder: Any, runner: Any) -> int:
    """Time up to `limit` of the rule's variants (codegen/cpu_knobs.py) that the database has
    not seen, best-ranked first, then the winners' knobs combined, and commit them; returns
    how many were tried."""
    from edgec.compiler.codegen.cpu.knobs import combined, variants

    found = variants(mod["main"], cpu)
    seen = {str(r.trace) for r in records(db, mod)}
    tried = measure_into(db, [(mod, s) for _, s in found if str(s.trace) not in seen][:limit],
                         target, builder, runner)
    timed: dict[str, float] = {}
    for r in records(db, mod):  # best first: a variant timed again keeps its best time
        if r.run_secs:
            timed.setdefault(str(r.trace), mean_secs(r.run_secs))
    more = combined(mod["main"], cpu, [(k, timed[str(s.trace)]) for k, s in found
                                       if str(s.trace) in timed], rule_secs)
    return tried + measure_into(db, [(mod, s) for _, s in more if str(s.trace) not in timed]
                                [:limit - tried], target, builder, runner)
