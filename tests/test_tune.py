"""`edgec tune` for real (rule variants, MetaSchedule, local builder and runner) on a two-conv
model: records persist, a second run resumes instead of re-measuring, compile picks the
records up and still matches onnxruntime; bad requests are one-line errors."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from onnx import helper, numpy_helper

from edgec.compiler import compile as compile_model
from edgec.compiler.tuning import KEEP, db_folder, in_model, tune

from conftest import conv_relu_conv, popen_workers, save, tiny_model, workers_left


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return conv_relu_conv(tmp_path_factory.mktemp("tune") / "small.onnx")


def test_tune_resume_and_compile(small, tmp_path):
    from edgec import targets

    lines: list[str] = []
    first = tune(small, trials=16, db_root=tmp_path, progress=lines.append)
    assert not workers_left(), "tune left MetaSchedule worker processes running"
    folder = db_folder(tmp_path, targets.get("host"))
    assert first.database == folder
    records = (folder / "records.json").read_text().splitlines()
    tuned = [t for t in first.tasks if t.trials > 0]
    assert tuned and 0 < sum(t.trials for t in first.tasks) <= 16
    for t in first.tasks:  # the baseline record makes best <= what compile does without tuning
        assert 0 < t.best_us <= t.baseline_us < float("inf")
    assert len(records) >= 16 + len(first.tasks)
    # a progress line per kernel tuned ([i/n]: which kernel comes first depends on the timed
    # shares, and the first may be skipped as kept or too small on a loaded machine)
    assert any(re.match(r"\[\d+/\d+\] ", line) and "trials" in line for line in lines), lines
    # the rule's own variants (codegen/cpu_knobs.py) come first, and count as trials
    assert any("trials, rule variants)" in line for line in lines), lines
    # edgec's own schedules (baseline, rule variants) are committed as one mean; MetaSchedule's
    # candidates with their 10 cold runs (test_in_model checks those)
    run_secs = [json.loads(line)[1][1] for line in records]
    assert {len(s) for s in run_secs} <= {1, 10}, run_secs

    # A kernel whose best candidate beat the rule's schedule had both timed again (measure.rematch):
    # the baseline's trace then has a second record.
    by_kernel: dict[int, list] = {}
    for line in records:
        kernel, (trace, secs, *_) = json.loads(line)
        by_kernel.setdefault(kernel, []).append((json.dumps(trace), float(np.mean(secs))))
    for recs in by_kernel.values():
        if min(recs, key=lambda r: r[1])[0] != recs[0][0]:
            assert [t for t, _ in recs].count(recs[0][0]) == 2, recs

    second = tune(small, trials=16, db_root=tmp_path, progress=lines.append)
    assert (folder / "records.json").read_text().splitlines() == records  # resumed, not redone
    assert {t.name: t.trials for t in second.tasks} == {t.name: t.trials for t in first.tasks}

    result = compile_model(small, output=tmp_path / "art", tuning_db=tmp_path)
    kernels = result.manifest["codegen"]["kernels"]
    # tune's in-model check may leave a record to the rules (slower inside the model than
    # alone): that kernel keeps its rule's schedule, and the note counts it apart
    kept = result.manifest["codegen"]["kept_rule"]
    rule_verdicts = [v.kernel for v in in_model.read(folder).values() if v.keep == "rule"]
    assert sorted(kept) == sorted(rule_verdicts), (kept, rule_verdicts)
    assert all(kernels[k] not in ("tuned", "elementwise") for k in kept), (kernels, kept)
    assert {v for k, v in kernels.items() if k not in kept} <= {"tuned", "elementwise"}, kernels
    n_tuned = sum(v == "tuned" for v in kernels.values())
    assert n_tuned + len(kept) == len(first.tasks), (kernels, kept)
    assert result.manifest["validation"]["ok"], result.manifest["validation"]
    covered = f"{n_tuned} of {len(kernels)} kernels covered by the tuning database"
    assert any(covered in n for n in result.notes), result.notes
    assert any(f"({len(kept)} more left to the rules" in n for n in result.notes) == bool(kept)

    plain = compile_model(small, output=tmp_path / "plain", tuning_db=tmp_path, use_tuned=False)
    assert "tuned" not in plain.manifest["codegen"]["kernels"].values()
    manifest = json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert manifest["codegen"]["tuning_db"] == str(folder)


def test_merged_conv_depthwise_gets_rule_variants_only(tmp_path):
    # conv -> depthwise becomes one channel-chunked kernel, which MetaSchedule's space cannot
    # express: it gets its rule's variants (other tiles and chunks), and MetaSchedule's trials
    # go to the conv after it
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("w1", (64, 16, 1, 1)), ("w2", (64, 1, 3, 3)), ("w3", (16, 64, 1, 1)))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], group=64, pads=[1] * 4),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Conv", ["r2", "w3"], ["y"])]
    model = save(tiny_model(nodes, [1, 16, 28, 28], inits), tmp_path / "block.onnx")
    report = tune(model, trials=16, db_root=tmp_path / "db", progress=lambda _: None)
    merged = [t for t in report.tasks if t.name.count("conv2d") == 2]
    assert len(merged) == 1 and merged[0].skipped == KEEP["conv_depthwise"], report.tasks
    assert 0 < merged[0].trials < 16, report.tasks  # its variants (test_cpu_knobs: 4-10)
    assert merged[0].best_us <= merged[0].baseline_us < float("inf")
    assert all(t.trials > 0 for t in report.tasks if "conv2d" in t.name), report.tasks
    assert sum(t.trials for t in report.tasks) == 16, "\n".join(map(str, report.tasks))
    result = compile_model(model, output=tmp_path / "art", tuning_db=tmp_path / "db")
    assert result.manifest["validation"]["ok"], result.manifest["validation"]


def test_close_stops_a_runners_worker_processes():
    """A MetaSchedule runner keeps a popen_worker for its life; measure.close stops it (tune
    closes its runner on leaving, error or not, through measure.measuring)."""
    from edgec.compiler.tuning import measure

    before = set(popen_workers())
    runner = measure.local_runner()  # its pool starts a worker for a sanity check
    assert set(popen_workers()) - before
    measure.close(runner)
    assert not set(workers_left()) - before


def test_tune_cli_errors(cli, small):
    code, _, err = cli("tune", str(small), "--target", "rpi4")
    assert code == 2 and err.count("\n") == 1 and "--tracker" in err
    code, _, err = cli("tune", str(small), "--time", "ten minutes")
    assert code == 2 and "bad --time" in err


def test_best_other_tells_the_rule_timed_again_from_a_new_schedule():
    """A search that times the rule's own schedule again (faster than its baseline read) has
    found nothing new: the in-model check and the progress line must not treat it as a win."""
    import tvm
    from tvm import s_tir, te
    from tvm.s_tir import meta_schedule as ms

    from edgec import targets
    from edgec.compiler.tuning.db import best_other

    a = te.placeholder((64, 64), name="a")
    b = te.compute((64, 64), lambda i, j: a[i, j] * 2.0, name="b")
    mod = tvm.IRModule({"main": te.create_prim_func([a, b])})
    target = targets.get("host").tvm_target()
    db = ms.database.MemoryDatabase()

    def record(sch, secs):
        db.commit_tuning_record(ms.database.TuningRecord(
            sch.trace, db.commit_workload(mod), [secs], target,
            ms.arg_info.ArgInfo.from_prim_func(mod["main"])))

    rule = s_tir.Schedule(mod)
    rule.parallel(rule.get_loops(rule.get_sblock("b"))[0])
    record(rule, 2e-6)
    record(rule, 1e-6)  # the same schedule, read faster later
    assert best_other(db, mod, rule) is None
    other = s_tir.Schedule(mod)
    other.vectorize(other.split(other.get_loops(other.get_sblock("b"))[1], [None, 8])[1])
    record(other, 0.5e-6)
    found = best_other(db, mod, rule)
    assert found is not None and str(found.trace) == str(other.trace)
