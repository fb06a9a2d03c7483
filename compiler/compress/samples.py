"""The samples compress works on: --data split into calibration and held-out feeds.

Model calls (one per batch of the model's batch dim) are shuffled with a fixed seed, then
taken alternately: even positions calibrate the fits (at most `calibration` samples), odd ones
are held out to judge them (at most `held_out`), so a folder sorted by class gives both every
class. Only the picked samples are kept in memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgec.errors import EdgecError

MIN_SAMPLES = 4


def split(model: onnx.ModelProto, data: str | Path, preprocess: dict[str, Any],
          calibration: int, held_out: int, seed: int = 0
          ) -> tuple[list[dict], list[dict], np.ndarray | None]:
    """Calibration feeds, held-out feeds and the held-out labels (None: unlabeled data)."""
    from edgec.compiler import tensor_specs
    from edgec.harness.data import open_data
    from edgec.harness.metrics import num_classes
    from edgec.harness.preprocess import resolve

    specs = tensor_specs(list(model.graph.input), {t.name for t in model.graph.initializer})
    dataset = open_data(data, specs, resolve(model, specs[0], preprocess),
                        num_classes(tensor_specs(list(model.graph.output), set())))
    per = specs[0]["shape"][0] or 1
    calls = dataset.count // per
    if calls * per < MIN_SAMPLES:
        raise EdgecError(f"compress needs at least {MIN_SAMPLES} samples in {data}, it has "
                         f"{dataset.count}")
    order = np.random.default_rng(seed).permutation(calls)
    calib_at = {int(i): k for k, i in enumerate(order[0::2][:max(1, calibration // per)])}
    held_at = {int(i): k for k, i in enumerate(order[1::2][:max(1, held_out // per)])}
    calib: list = [None] * len(calib_at)
    held: list = [None] * len(held_at)
    labels: list = [None] * len(held_at)
    call = 0
    for feeds, lab in dataset.batches(64):
        for j, feed in enumerate(feeds):
            if call in calib_at:
                calib[calib_at[call]] = feed
            elif call in held_at:
                held[held_at[call]] = feed
                labels[held_at[call]] = None if lab is None else lab[j * per:(j + 1) * per]
            call += 1
    return calib, held, None if dataset.labels is None else np.concatenate(labels)
