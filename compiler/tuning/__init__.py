"""Tuning: `edgec tune` searches schedules per kernel, records them, and checks them in the model.

    search.py    `tune` (the command): tasks from the `cpu` pipeline's kernels, search, report
    measure.py   builders and runners (local or RPC tracker), knob variants, re-timing records
    db.py        the per-target record database compile reads (codegen/tuned.py applies it)
    in_model.py  each tuned record timed inside the whole model against edgec's rule; the
                 verdict decides which records compile uses
"""

from .db import db_folder, default_db_root, open_db
from .search import KEEP, TuneReport, tune

__all__ = ["KEEP", "TuneReport", "db_folder", "default_db_root", "open_db", "tune"]
