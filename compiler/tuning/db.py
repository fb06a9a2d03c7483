"""Where tuning records live: one MetaSchedule database folder per target, under
$EDGEC_CACHE/tuning (default ~/.cache/edgec/tuning), and how compile is handed one with the
verdicts of its in-model check (tuning/in_model.py).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from edgec.targets import Target


def default_db_root() -> Path:
    cache = os.environ.get("EDGEC_CACHE") or os.path.join(Path.home(), ".cache", "edgec")
    return Path(cache) / "tuning"


# Part of the database's key: records timed another way do not compare with these
# (measure.evaluator; databases from before cold single runs are left behind, not mixed in).
MEASURE = "cold-single-runs"
# Also part of the key: the version of edgec's schedule rules, raised when what their traces
# do changes. Records hold whole schedule traces, the rules' baselines and knob variants
# included, and a trace of an older rule must not come back through the database.
RULES_VERSION = 10


def db_folder(root: Path, target: Target) -> Path:
    """One database per target: MetaSchedule looks records up by kernel, not by target."""
    spec = json.dumps([target.tvm_target().export(), MEASURE, RULES_VERSION], sort_keys=True,
                      default=str)
    return Path(root) / f"{target.name}-{hashlib.sha256(spec.encode()).hexdigest()[:12]}"


def open_db(folder: Path, create: bool = False) -> Any | None:
    from tvm.s_tir import meta_schedule as ms

    paths = folder / "workloads.json", folder / "records.json"
    if not create and not all(p.is_file() for p in paths):
        return None
    folder.mkdir(parents=True, exist_ok=True)
    return ms.database.JSONDatabase(path_workload=str(paths[0]),
                                    path_tuning_record=str(paths[1]), allow_missing=True)


def use_database(lowering: Any, folder: Path) -> None:
    """Give `lowering` (codegen.Lowering) the database in `folder`, if there is one, with the
    verdicts of its records' in-model timing."""
    from . import in_model

    lowering.database = open_db(folder)
    if lowering.database is not None:
        lowering.verdicts = {key: v.keep for key, v in in_model.read(folder).items()}


def records(db: Any, mod: Any) -> list[Any]:
    """A kernel's records, best first (none where the database has not seen it)."""
    if not db.has_workload(mod):
        return []
    return list(db.get_top_k(db.commit_workload(mod), 1 << 20))


def best_other(db: Any, mod: Any, rule: Any) -> Any | None:
    """The kernel's best record, unless it is the rule's own schedule (timed again)."""
    recs = records(db, mod)
    return recs[0] if recs and str(recs[0].trace) != str(rule.trace) else None


def mean_secs(run_secs: Any) -> float:
    return float(sum(float(s) for s in run_secs) / len(run_secs))


def commit(db: Any, mod: Any, sch: Any, secs: float, target: Any) -> None:
    """Record `sch` (a schedule of kernel `mod`) as measured at `secs`."""
    from tvm.s_tir import meta_schedule as ms

    db.commit_tuning_record(ms.database.TuningRecord(
        sch.trace, db.commit_workload(mod), [secs], target,
        ms.arg_info.ArgInfo.from_prim_func(mod["main"])))
