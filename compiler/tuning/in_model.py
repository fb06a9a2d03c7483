"""Tuned kernels timed inside the model against edgec's rules: a record is used only where
it wins there.

`edgec tune` times each candidate alone: one kernel, its weights flushed from cache
(measure.evaluator). Inside the model a kernel finds the caches as the kernels before it left
them, and the two orders disagree. On MobileNetV2 the search's winners on two 1x1 convs ran
34% and 40% slower per call in the model than the rule's schedules (conv2d13 64 vs 48 us,
conv2d29 282 vs 202 us), and the tuned model was slower than the untuned one.

So, after the search, the model is lowered twice, once with the database's records and once
with the rules alone. Kernels whose lowered code is the same in both are left alone (the
database's best is the rule's own record). The others are built into two VMs, and every
kernel call is timed in both (runtime.kernel_times), in alternating rounds. The median per
call gives each such record a verdict:

    keep = "tuned"  if  median(tuned) <= (1 - MARGIN) x median(rule)  else  "rule"

MARGIN is about the noise of one kernel's median between builds with the same code (0.97-1.02
over 8 rounds of 30 runs on MobileNetV2). Verdicts live in the database folder
(`in_model.json`), keyed by the record (codegen.tuned.record_key: loop nest and trace). A
record with a verdict is not timed again, and a new best record is judged afresh. compile
leaves "rule" records to the rules.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgec.compiler import codegen
from edgec.targets import Target

VERDICTS = "in_model.json"
MARGIN = 0.03
ROUNDS, RUNS = 8, 30


@dataclass
class Verdict:
    kernel: str
    calls: int  # calls per inference
    tuned_us: float  # median per call, in the model
    rule_us: float
    keep: str  # "tuned" or "rule"


def read(folder: Path) -> dict[str, Verdict]:
    """Record key -> verdict, from a database folder (empty where none)."""
    path = Path(folder) / VERDICTS
    if not path.is_file():
        return {}
    return {key: Verdict(**v) for key, v in json.loads(path.read_text()).items()}


def _write(folder: Path, verdicts: dict[str, Verdict]) -> None:
    data = {key: asdict(v) for key, v in {**read(folder), **verdicts}.items()}
    path = Path(folder) / VERDICTS
    # write then rename: an interrupted tune leaves the previous file whole
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".in_model-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def _functions(lowered: Any) -> dict[str, Any]:
    # A rule that repacks weights renames its kernel (SplitLayoutRewritePreproc): key by the
    # name the kernel had when the database was applied.
    import tvm

    return {gv.name_hint.removesuffix("_prepacked"): f for gv, f in lowered.functions_items()
            if isinstance(f, tvm.tirx.PrimFunc)}


def _candidates(model: onnx.ModelProto, target: Target, shapes: dict[str, list[int]],
                database: Any, wanted: set[str]) -> tuple[list[str], Any, Any, dict]:
    """Kernels whose best record is wanted and lowers to other code than the rule's."""
    import tvm_ffi

    tuned = codegen.Lowering(database=database)  # no verdicts: every record applied
    with_db = codegen.lower(model, target, shapes, tuned)
    rules = codegen.lower(model, target, shapes)
    a, b = _functions(with_db), _functions(rules)
    names = [n for n, key in tuned.records.items()
             if key in wanted and n in a and n in b and not tvm_ffi.structural_equal(a[n], b[n])]
    return names, with_db, rules, tuned.records


def _medians(builds: list[Any], feed: list[Any], rounds: int, runs: int,
             threads: int) -> list[dict[str, tuple[float, int]]]:
    """Median ms per call and calls per inference of every kernel, for each build."""
    import tvm
    from tvm import relax

    from edgec import runtime

    runtime.set_threads(threads)
    vms = [relax.VirtualMachine(b, tvm.cpu()) for b in builds]
    for vm in vms:
        for _ in range(5):
            vm["main"](*feed)
    samples: list[dict[str, list[float]]] = [{} for _ in vms]
    for _ in range(rounds):
        for vm, acc in zip(vms, samples):
            for name, times in runtime.kernel_times(vm, lambda v=vm: v["main"](*feed),
                                                    runs).items():
                acc.setdefault(name.removesuffix("_prepacked"), []).extend(times)
    return [{n: (float(np.median(t)), len(t) // (rounds * runs)) for n, t in acc.items()}
            for acc in samples]


def check(model: onnx.ModelProto, target: Target, shapes: dict[str, list[int]], folder: Path,
          database: Any, records: set[str], *, rounds: int = ROUNDS, runs: int = RUNS,
          progress: Callable[[str], None] = print) -> dict[str, Verdict]:
    """Time `records` (codegen.tuned.record_key), as compile would use them, against the
    rules in the model; write their verdicts. Records with a verdict already are left out."""
    import tvm

    from edgec import runtime
    from edgec.compiler import tensor_specs  # the input specs compile writes to the manifest
    from edgec.compiler.codegen.tir_level.stack_scratch import pipeline

    wanted = records - set(read(folder))
    names, with_db, rules, keys = (_candidates(model, target, shapes, database, wanted)
                                   if wanted else ([], None, None, {}))
    if not names:
        progress("in the model: no new tuned schedule to time against the rules")
        return {}
    progress(f"timing {len(names)} tuned kernels against the rules inside the model")
    tvm_target = target.tvm_target()
    builds = [tvm.compile(m, tvm_target, relax_pipeline=None,
                          tir_pipeline=pipeline())
              for m in (with_db, rules)]
    specs = tensor_specs(list(model.graph.input), {t.name for t in model.graph.initializer})
    feed = [tvm.runtime.tensor(a) for a in runtime.random_inputs(specs).values()]
    tuned, rule = _medians(builds, feed, rounds, runs, target.effective_threads())
    verdicts = {}
    for name in names:
        if name not in tuned or name not in rule:
            continue
        (t, calls), (r, _) = tuned[name], rule[name]
        keep = "tuned" if t <= (1 - MARGIN) * r else "rule"
        verdicts[keys[name]] = Verdict(name, calls, round(t * 1e3, 1), round(r * 1e3, 1),
                                       keep)
        progress(f"  {name[:60]}: tuned {t * 1e3:.1f} us, rule {r * 1e3:.1f} us per call "
                 f"-> {keep}")
    _write(folder, verdicts)
    return verdicts

