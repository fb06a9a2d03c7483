"""`edgec validate`: what each candidate costs in accuracy and buys in latency, on real data.

    edgec validate REF.onnx CANDIDATE... --data D [--device qemu|ssh://...] [--report DIR]

The reference (an fp32 ONNX model, run by onnxruntime as written) and every candidate (ONNX
models and edgec artifacts, any mix) run on every sample of the data; each candidate is scored
against the labels (top-1, top-5) and against the reference (top-1 agreement, max/mean error,
SQNR per output; harness/metrics.py). Cost comes from the ONNX each was built from; latency
from each model timed alone in its own process (harness/latency.py), onnxruntime on the
reference being the baseline. A candidate is within budget when its top-1 accuracy is at most
`max_accuracy_drop` points below the reference's and, where `min_agreement` is set, its top-1
agreement is at least that (in %). Data without labels is judged by agreement alone, at
least 100 - max_accuracy_drop % unless `min_agreement` says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgec.errors import EdgecError

from .metrics import Scores, classifier_output, num_classes
from .models import Model, check_same_interface, open_model


@dataclass(frozen=True)
class Budget:
    max_accuracy_drop: float = 1.0  # top-1 points below the reference's
    min_agreement: float | None = None  # % of samples with the reference's top-1


@dataclass
class Options:
    data: str | Path
    budget: Budget = field(default_factory=Budget)
    device: str | None = None
    threads: int | None = None
    preprocess: dict[str, Any] = field(default_factory=dict)  # overrides of the model's spec
    input_shapes: dict[str, list[int]] | None = None
    latency_seconds: float = 2.0
    processes: int = 3  # fresh processes each model is timed in; the best one counts
    limit: int | None = None  # first N samples only
    batch: int = 64
    target: str | None = None  # compile ONNX candidates for this target first


def _evaluate(ref: Model, models: list[Model], dataset: Any, opts: Options) -> list[dict]:
    """Run every model on every sample; scores of the reference and of each candidate."""
    from .progress import progress

    cls = classifier_output(ref.outputs)
    scores = [Scores(cls) for _ in [ref, *models]]
    total = dataset.count if opts.limit is None else min(opts.limit, dataset.count)
    per_feed = ref.inputs[0]["shape"][0]  # samples per call: the model's batch dim
    labels, seen = [], 0
    batches = progress(dataset.batches(opts.batch), total=-(-total // opts.batch),
                       label="validate")
    for feeds, batch_labels in batches:
        feeds = feeds[: -(-(total - seen) // per_feed)]
        if not feeds:
            break
        want = ref.run(feeds)
        for model, score in zip([ref, *models], scores):
            got = want if model is ref else model.run(feeds)
            for g, w in zip(got, want):
                score.add(g, w)
        if batch_labels is not None:
            labels.append(np.asarray(batch_labels)[: len(feeds) * per_feed])
        seen += len(feeds) * per_feed
    y = np.concatenate(labels).astype(np.int64) if labels else None
    return [{**s.summary(y), "samples": seen} for s in scores]


def _latencies(models: list[Model], feed: dict[str, np.ndarray], opts: Options
               ) -> list[dict[str, Any]]:
    """Every model that runs here timed alone in fresh processes, the models taking turns
    (harness/latency.round_robin); a bundle on a device by its runner there; none under
    qemu."""
    from edgec.runtime import speed_note
    from edgec.runtime.artifact import read_manifest

    from .latency import round_robin

    here = [m for m in models if m.kind == "onnx" or m.device == "here"]
    for m in here:
        m.release()
    subjects = [("onnxruntime" if m.kind == "onnx" else "edgec", m.path, m.threads) for m in here]
    timed = dict(zip(map(id, here), round_robin(subjects, feed, opts.latency_seconds,
                                                 opts.processes)))
    out = []
    for m in models:
        if id(m) in timed:
            where = "onnxruntime" if m.kind == "onnx" else "edgec"
            note = speed_note(read_manifest(Path(m.path))) if m.kind != "onnx" else ""
            out.append({**timed[id(m)], "where": f"{where}, this machine", "note": note})
        elif m.device == "qemu":
            out.append({"skipped": "emulated under qemu: correctness, not device speed"})
        else:
            from edgec.runtime.device import run_bundle

            run = run_bundle(m.path, device=m.device, feed=feed, repeat=50, warmup=5,
                             threads=m.threads)
            if run.emulated:  # the board's run.sh found another architecture: qemu there
                out.append({"skipped": f"emulated on {m.device}: not device speed"})
            else:
                out.append({**(run.latency or {}), "method": "alone",
                            "where": f"edgec runner on {m.device}"})
    return out


def _verdict(ref: dict, cand: dict, budget: Budget) -> dict[str, Any]:
    reasons, ok = [], True
    if "top1" in ref and "top1" in cand:
        drop = 100 * (ref["top1"] - cand["top1"])
        within = drop <= budget.max_accuracy_drop + 1e-9
        ok &= within
        reasons.append(f"top-1 {100 * cand['top1']:.2f}% vs reference {100 * ref['top1']:.2f}%"
                       f": drop {drop:.2f} points {'<=' if within else '>'} "
                       f"{budget.max_accuracy_drop:g}")
    floor = budget.min_agreement
    if floor is None and "top1" not in ref:
        floor = 100 - budget.max_accuracy_drop
    if floor is not None and "agreement_top1" in cand:
        agree = 100 * cand["agreement_top1"]
        ok &= agree >= floor - 1e-9
        reasons.append(f"top-1 agreement {agree:.2f}% {'>=' if agree >= floor else '<'} "
                       f"{floor:g}%")
    if not reasons:
        reasons.append("no classifier output: nothing to judge the budget by")
    return {"ok": bool(ok), "reasons": reasons}


def _entry(model: Model, scores: dict, role: str) -> dict[str, Any]:
    from edgec.compiler import analysis

    cost = analysis.analyze(model.onnx_model)
    return {"name": model.label, "path": str(model.path), "kind": model.kind, "role": role,
            "device": model.device, **scores, "cost": cost.totals(),
            "layers_flops": [{"layer": n.name, "op": n.op, "flops": n.flops}
                             for n in cost.nodes if n.flops]}


def _compiled(candidates: list[str | Path], opts: Options, folder: Path) -> list[Path]:
    """With `opts.target`, each ONNX candidate compiled for it (a bundle where a device runs
    it), so its artifact is what is measured; artifacts and the rest as given."""
    import edgec

    out = []
    for cand in map(Path, candidates):
        if opts.target and cand.is_file() and cand.suffix == ".onnx":
            artifact = folder / f"{cand.stem}-{opts.target}"
            edgec.compile(cand, output=artifact, target=opts.target, validate=False,
                          bundle=opts.device is not None, input_shapes=opts.input_shapes)
            cand = artifact
        out.append(cand)
    return out


def validate(reference: str | Path, candidates: list[str | Path], opts: Options
             ) -> dict[str, Any]:
    """Score and time the reference and each candidate on `opts.data` (see module doc)."""
    import tempfile

    if not candidates:
        raise EdgecError("edgec validate needs at least one candidate after the reference")
    with tempfile.TemporaryDirectory(prefix="edgec-validate-") as tmp:
        return _validate(reference, _compiled(candidates, opts, Path(tmp)), opts)


def _validate(reference: str | Path, candidates: list[Path], opts: Options) -> dict[str, Any]:
    from .data import open_data
    from .preprocess import resolve

    ref = open_model(reference, threads=opts.threads, input_shapes=opts.input_shapes)
    models = [open_model(c, threads=opts.threads, device=opts.device,
                         input_shapes=opts.input_shapes) for c in candidates]
    for m in models:
        check_same_interface(ref, m)
    spec = resolve(ref.onnx_model, ref.inputs[0], opts.preprocess)
    dataset = open_data(opts.data, ref.inputs, spec, num_classes(ref.outputs))
    scores = _evaluate(ref, models, dataset, opts)
    feed = next(iter(dataset.batches(1)))[0][0]
    entries = [_entry(ref, scores[0], "reference")]
    entries += [_entry(m, s, "candidate") for m, s in zip(models, scores[1:])]
    for model, entry in zip([ref, *models], entries):
        entry["layers_ms"] = model.kernel_ms(feed)
    for entry, lat in zip(entries, _latencies([ref, *models], feed, opts)):
        entry["latency"] = lat
    for entry in entries[1:]:
        entry["verdict"] = _verdict(entries[0], entry, opts.budget)
    return {"data": {"path": str(opts.data), "source": dataset.source,
                     "samples": scores[0]["samples"], "labeled": dataset.labels is not None},
            "preprocess": spec.to_json(), "threads": ref.threads,
            "latency_processes": opts.processes,
            "budget": {"max_accuracy_drop": opts.budget.max_accuracy_drop,
                       "min_agreement": opts.budget.min_agreement},
            "reference": entries[0], "candidates": entries[1:],
            "ok": all(e["verdict"]["ok"] for e in entries[1:])}
