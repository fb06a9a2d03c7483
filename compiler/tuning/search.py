"""`edgec tune`: a search over a model's kernels, kept in a database compile reads.

    tasks    = the kernels of the `cpu` pipeline (codegen.pipelines.fused), one per distinct
               loop nest, with the number of times the model calls it
    baseline = each task under edgec's own schedule rule, measured, committed as a record:
               the database's best is never worse than what compile would do without it
    measure  = single runs with the weights flushed from cache before each (measure.evaluator):
               cold, as a model's layers find them
    share    = baseline seconds x calls / sum over tasks; tasks under 1% are skipped.
               Kernels of rules whose schedule MetaSchedule's space cannot express (KEEP)
               get their rule's variants only.
    trials   = the budget split by share (at least one batch each), biggest share first;
               what a task's space could not use goes to the next
    knobs    = a task's trials go first to its rule's own schedule with other tiles, pixel
               walks or chunks than its cost model picks (codegen/cpu_knobs.py), best first;
               MetaSchedule's search gets the rest. Its candidates had not beaten the rules on
               AVX2; a rule's second-ranked tile can.
    rematch  = after a task's search, its best candidate and the rule's schedule are timed
               again side by side and both times committed (a busy machine during the
               baseline's single timing had let slower candidates win)
    check    = the best records that are not the rule's are timed inside the model against
               the rules (tuning/in_model.py); compile uses only those that win there. The search
               ends early enough to leave time for it.

Records are committed as they are measured and the database is keyed by kernel (structural
hash of its TIR) inside a folder per target, so an interrupted run resumes where it stopped
(trials already in the database count) and another model with the same layer shapes starts
tuned. With `tracker`/`key` the measurements run on boards behind TVM's RPC tracker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgec.errors import EdgecError

from .db import best_other, db_folder, default_db_root, mean_secs, open_db, records
from .measure import measure_into, rematch, try_knobs

BATCH = 16
MIN_SHARE = 0.01
DEFAULT_TRIALS = 1280
# Merged conv -> depthwise kernels are made one channel chunk at a time (cpu/chains.py);
# MetaSchedule's space has no such loop. With 16 trials on each of MobileNetV2's four largest,
# its best candidates took 1.9-2.0x the rule's time (128.5 vs 67.7 us, 473.4 vs 264.4 us).
KEEP = {"conv_depthwise": "edgec's channel-chunked schedule"}


@dataclass
class TaskReport:
    name: str
    calls: int
    baseline_us: float
    best_us: float
    trials: int  # measured trials in the database for this kernel, this run's included
    share: float = 0.0
    skipped: str = ""
    in_model: Any = None  # in_model.Verdict on the best record, where it was timed there

    @property
    def used_us(self) -> float:
        """The kernel's time alone under the schedule compile uses."""
        return self.baseline_us if self.in_model and self.in_model.keep == "rule" \
            else self.best_us


@dataclass
class TuneReport:
    database: Path
    tasks: list[TaskReport] = field(default_factory=list)
    seconds: float = 0.0

    def estimate_ms(self, best: bool = True) -> float:
        return sum((t.used_us if best else t.baseline_us) * t.calls for t in self.tasks) / 1e3


def _space() -> Any:
    """MetaSchedule's CPU search space without its RewriteLayout postprocessor.

    Weights are repacked by edgec's own schedules (the baseline records carry that); MetaSchedule's
    layout rewrite on top of a repacked weight fails an IndexMap check inside its postprocessor.
    """
    from tvm.s_tir import meta_schedule as ms

    postprocs = [p for p in ms.postproc.Postproc.create("llvm")
                 if not isinstance(p, ms.postproc.RewriteLayout)]
    return ms.space_generator.PostOrderApply(sch_rules="llvm", postprocs=postprocs,
                                             mutator_probs="llvm")


def _refresh(rep: TaskReport, db: Any, mod: Any) -> None:
    """Best time and trial count (schedules tried besides the baseline) of a kernel from its
    records; a schedule timed again (measure.rematch) counts once."""
    recs = records(db, mod)
    secs = [mean_secs(r.run_secs) for r in recs if r.run_secs]
    rep.best_us = min(secs) * 1e6 if secs else float("inf")
    rep.trials = max(0, len({str(r.trace) for r in recs}) - 1)


def tune(model_path: str | Path, *, target: str = "host", trials: int | None = None,
         seconds: float | None = None, db_root: str | Path | None = None,
         input_shapes: dict[str, list[int]] | None = None, cc: str | None = None,
         tracker: str | None = None, key: str | None = None, knobs: bool = True,
         progress: Callable[[str], None] = print) -> TuneReport:
    """Tune `model_path`'s kernels for `target` until `trials` or `seconds` run out; with
    `knobs`, each kernel's rule variants are timed before MetaSchedule's candidates."""
    from tvm.s_tir import meta_schedule as ms

    from edgec import targets
    from edgec.compiler import codegen, frontend, passes
    from edgec.compiler.codegen.cpu.knobs import VARIED
    from edgec.compiler.codegen.cpu.schedules import cpu_shape, schedule
    from edgec.compiler.codegen.pipelines import fused
    from edgec.compiler.codegen.tuned import record_key

    from . import in_model, measure

    tgt = targets.get(target)
    if tgt.pipeline != "cpu":
        raise EdgecError(f"target '{tgt.name}' uses pipeline '{tgt.pipeline}'; "
                         "edgec tune works on the 'cpu' pipeline")
    if not tgt.runs_here() and not tracker:
        raise EdgecError(f"target '{tgt.name}' does not run here: measure on the device with "
                         "--tracker HOST:PORT --key KEY (its bundle's rpc.sh joins a tracker)")
    if trials is None and seconds is None:
        trials = DEFAULT_TRIALS
    started = time.perf_counter()
    deadline = started + seconds if seconds else float("inf")

    model, front = frontend.load(model_path, input_shapes=input_shapes)
    model, _ = passes.run_passes(model, passes.select())
    tvm_target = tgt.tvm_target()
    with tvm_target:
        mod = fused(tvm_target)(codegen.import_model(model, tgt, front.input_shapes))
    # The in-model check lowers the model twice more, then builds and times it: kept out
    # of the search's time (measured: lowering ~1.1x this step, building and timing ~20 s).
    check_in_model = not tracker
    if check_in_model:
        deadline -= 2.5 * (time.perf_counter() - started) + 20
    tasks = ms.relax_integration.extract_tasks(mod, tvm_target)
    folder = db_folder(Path(db_root) if db_root else default_db_root(), tgt)
    db = open_db(folder, create=True)
    report = TuneReport(database=folder)
    with measure.measuring(tgt, cc=cc, tracker=tracker, key=key) as (bld, run):
        cpu = cpu_shape(tvm_target)
        progress(f"{len(tasks)} kernels; database {folder}")

        fresh, rules, varied, kept = [], {}, set(), {}
        for task in tasks:
            rep = TaskReport(task.task_name, int(task.weight), float("inf"), float("inf"), 0)
            report.tasks.append(rep)
            found = schedule(task.dispatched[0]["main"], cpu)
            if found is not None:
                rules[rep.name] = found[1]
                if found[0] in KEEP:
                    kept[rep.name] = KEEP[found[0]]
                if found[0] in VARIED:
                    varied.add(rep.name)
                if not records(db, task.dispatched[0]):
                    fresh.append((task, found[1]))
        if fresh:
            progress(f"measuring edgec's own schedule of {len(fresh)} kernels (the baseline)")
            measure_into(db, [(task.dispatched[0], sch) for task, sch in fresh], tvm_target, bld,
                         run)
        for task, rep in zip(tasks, report.tasks):
            _refresh(rep, db, task.dispatched[0])
            rep.baseline_us = rep.best_us

        known = [t for t in report.tasks if t.baseline_us < float("inf")]
        latency = sum(t.baseline_us * t.calls for t in known) or 1.0
        for t in known:
            t.share = t.baseline_us * t.calls / latency
        progress(f"baseline (edgec rules, measured per kernel): {report.estimate_ms():.2f} ms")

        # A time budget becomes a trial budget at ~1 s per trial (measured here: 16 candidates
        # built and run in ~15 s on 2 cores); the deadline still cuts each task short.
        # --trials counts the database's earlier trials of these kernels: rerunning an interrupted
        # command finishes it instead of starting over; --time is this run's.
        total = trials if trials is not None else max(BATCH, int(seconds or 0))
        budget = total - (sum(t.trials for t in report.tasks) if trials is not None else 0)
        order = sorted(zip(tasks, report.tasks), key=lambda p: -p[1].share)
        searched = sum(t.share for t in report.tasks
                       if not t.skipped and (knobs or t.name not in kept)) or 1.0
        per_trial = None
        phases = ["knobs", "search"] if knobs else ["search"]
        for phase in phases:
            last = phase == phases[-1]
            for i, (task, rep) in enumerate(order, 1):
                if rep.skipped or (phase == "knobs" and rep.name not in varied):
                    continue
                if phase == "search" and rep.name in kept:
                    rep.skipped = kept[rep.name]
                    continue
                if rep.share < MIN_SHARE and rep.baseline_us < float("inf"):
                    rep.skipped = f"{rep.share:.1%} of latency"
                    continue
                share = max(rep.share, MIN_SHARE) / searched  # of the kernels searched
                want = max(BATCH, int(round(total * share / BATCH)) * BATCH)
                todo = want - rep.trials
                if per_trial and deadline < float("inf"):
                    todo = min(todo, int((deadline - time.perf_counter()) / per_trial) // 8 * 8)
                if todo <= 0:
                    if last:
                        rep.skipped = rep.skipped or ("done earlier" if rep.trials >= want
                                                      else "out of time")
                    continue
                todo = min(todo, budget)
                if todo <= 0:
                    rep.skipped = "out of trials" if last else ""
                    continue
                # MetaSchedule sets its console handler to its logger's level, then sets that level
                # to DEBUG: reset it before every call to keep its tables off the progress display.
                logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
                t0 = time.perf_counter()
                before = rep.trials
                if phase == "knobs":
                    if not try_knobs(db, task.dispatched[0], cpu, todo, rep.baseline_us / 1e6,
                                     tvm_target, bld, run):
                        continue  # none left to try
                else:
                    ctxs, _ = ms.relax_integration.extracted_tasks_to_tune_contexts(
                        [task], work_dir=str(folder / "work"), space=_space())
                    ms.tune_tasks(tasks=ctxs, task_weights=[1.0], work_dir=str(folder / "work"),
                                  max_trials_global=todo, num_trials_per_iter=min(BATCH, todo),
                                  builder=bld, runner=run, database=db)
                if rep.name in rules:
                    rematch(db, task.dispatched[0], rules[rep.name], tvm_target, bld, run)
                _refresh(rep, db, task.dispatched[0])
                # a small space (a transpose) runs out of candidates early: its unused trials go on
                ran = max(1, rep.trials - before)
                per_trial = (time.perf_counter() - t0) / ran
                budget -= ran
                # the search may time the rule's own schedule again, faster than its baseline
                # read: no new schedule, and the in-model check will have nothing to time
                own = rep.best_us < rep.baseline_us and rep.name in rules \
                    and best_other(db, task.dispatched[0], rules[rep.name]) is None
                progress(f"[{i}/{len(order)}] {rep.name}: {rep.baseline_us:.1f} -> "
                         f"{rep.best_us:.1f} us x{rep.calls}"
                         f"{' (the rule, timed again)' if own else ''} ({rep.trials} trials"
                         f"{', rule variants' if phase == 'knobs' else ''}); model estimate "
                         f"{report.estimate_ms():.2f} ms; {time.perf_counter() - started:.0f} s")
                if time.perf_counter() >= deadline:
                    break

    # each kernel's best record, named once: the check commits nothing to the database
    keys = [record_key(db, task.dispatched[0], tvm_target) for task in tasks]
    if check_in_model:
        # only records other than the rule's own: a replay of the rule lowers to its code
        searched = {key for task, key in zip(tasks, keys) if task.task_name in rules
                    and best_other(db, task.dispatched[0], rules[task.task_name]) is not None}
        in_model.check(model, tgt, front.input_shapes, folder, db, searched - {None},
                       progress=progress)
    else:
        progress("in-model check skipped: the model runs on the tracker's boards, not here")
    verdicts = in_model.read(folder)
    for key, rep in zip(keys, report.tasks):
        rep.in_model = verdicts.get(key or "")
    report.seconds = time.perf_counter() - started
    return report
