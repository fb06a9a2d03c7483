"""The in-model check of tuned records (compiler/tuning/in_model.py), for real: MetaSchedule's own
candidates, kernels timed inside a built model, compile honouring the verdicts and still
matching onnxruntime."""

from __future__ import annotations

import json

import pytest

from edgec import targets
from edgec.compiler import compile as compile_model
from edgec.compiler import frontend, passes
from edgec.compiler.tuning import db_folder, in_model, open_db, tune

from conftest import conv_relu_conv


def _promote(db, secs: float, avoid: frozenset = frozenset()):
    """Make the fastest MetaSchedule candidate that is not the rule's schedule (nor in `avoid`)
    its kernel's best record, by committing it again with a time of `secs`."""
    from tvm.s_tir import meta_schedule as ms

    from edgec.compiler.codegen.cpu.schedules import cpu_shape, schedule

    cpu = cpu_shape(targets.get("host").tvm_target())
    records = [r for r in db.get_all_tuning_records() if r.run_secs and float(r.run_secs[0]) < 1]
    rule = lambda r: str(schedule(r.workload.mod["main"], cpu)[1].trace)  # noqa: E731
    best = min((r for r in records if str(r.trace) not in avoid | {rule(r)}),
               key=lambda r: float(r.run_secs[0]))
    db.commit_tuning_record(ms.database.TuningRecord(best.trace, best.workload, [secs],
                                                     best.target, best.args_info))
    return best.workload.mod, str(best.trace)


# Without Winograd: _promote takes the fastest candidate of any kernel, and the cheap transform
# kernels' candidates can lower to the rule's own code.
pytestmark = pytest.mark.usefixtures("direct_convs")


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, direct_convs):
    tmp = tmp_path_factory.mktemp("in_model")
    src = conv_relu_conv(tmp / "small.onnx")
    # MetaSchedule's candidates only: test_tune covers the rule variants tried before them
    tune(src, trials=16, db_root=tmp / "db", knobs=False, progress=lambda _: None)
    folder = db_folder(tmp / "db", targets.get("host"))
    # tune's own check may already have judged the candidates these tests promote, or turned
    # another kernel's record down: the tests start from no verdicts
    (folder / in_model.VERDICTS).unlink(missing_ok=True)
    model, front = frontend.load(src)
    model, _ = passes.run_passes(model, passes.select())
    return src, model, front.input_shapes, tmp / "db", folder


def test_search_times_candidates_cold(tuned):
    """MetaSchedule's candidates are timed as the model runs them: 10 single calls, weights
    flushed before each (measure.evaluator), not its default 100 ms of back-to-back calls."""
    folder = tuned[4]
    run_secs = [json.loads(line)[1][1] for line in
                (folder / "records.json").read_text().splitlines()]
    assert 10 in {len(s) for s in run_secs}, run_secs


def _key(db, workload):
    from edgec.compiler.codegen.tuned import record_key

    return record_key(db, workload, targets.get("host").tvm_target())


def test_candidate_is_timed_in_the_model_and_compile_follows_the_verdict(tuned, tmp_path):
    src, model, shapes, root, folder = tuned
    db = open_db(folder)
    key = _key(db, _promote(db, 1e-9)[0])
    lines: list[str] = []
    verdicts = in_model.check(model, targets.get("host"), shapes, folder, db, {key},
                              rounds=3, runs=20, progress=lines.append)
    assert list(verdicts) == [key], lines
    v = verdicts[key]
    assert v.calls == 1 and v.tuned_us > 0 and v.rule_us > 0
    assert v.keep == ("tuned" if v.tuned_us <= (1 - in_model.MARGIN) * v.rule_us else "rule")
    assert in_model.read(folder)[key] == v  # rounded as written

    # Timed once: a second check with the same record does nothing
    assert in_model.check(model, targets.get("host"), shapes, folder, db, {key},
                          progress=lines.append) == {}

    # compile follows the verdict, whichever way it went, and then the other way
    for keep in (v.keep, {"rule": "tuned", "tuned": "rule"}[v.keep]):
        data = json.loads((folder / in_model.VERDICTS).read_text())
        data[key]["keep"] = keep
        (folder / in_model.VERDICTS).write_text(json.dumps(data))
        result = compile_model(src, output=tmp_path / keep, tuning_db=root)
        gen = result.manifest["codegen"]
        assert result.manifest["validation"]["ok"], result.manifest["validation"]
        if keep == "rule":
            assert gen["kept_rule"] == [v.kernel] and gen["kernels"][v.kernel] != "tuned"
            assert any("1 more left to the rules" in n for n in result.notes), result.notes
        else:
            assert gen["kept_rule"] == [] and gen["kernels"][v.kernel] == "tuned"


def test_a_new_best_record_is_judged_again(tuned, tmp_path):
    src, model, shapes, root, folder = tuned
    db = open_db(folder)
    mod, trace = _promote(db, 1e-9)
    old = _key(db, mod)
    data = {old: {"kernel": "k", "calls": 1, "tuned_us": 2.0, "rule_us": 1.0, "keep": "rule"}}
    (folder / in_model.VERDICTS).write_text(json.dumps(data))
    new = _key(db, _promote(db, 1e-10, frozenset({trace}))[0])  # another candidate is best
    assert new != old
    result = compile_model(src, output=tmp_path / "art", tuning_db=root)
    assert result.manifest["codegen"]["kept_rule"] == []  # the verdict was on another record
    verdicts = in_model.check(model, targets.get("host"), shapes, folder, db, {old, new},
                              rounds=2, runs=10, progress=lambda _: None)
    assert list(verdicts) == [new]
    assert set(json.loads((folder / in_model.VERDICTS).read_text())) == {old, new}
