"""What `edgec compress` and `edgec quantize` share on the command line: run the step and
write its model, report and summary; or, under compile (--compress, --int8), run it into a
temporary .onnx that compile then builds, the step's record in the manifest.
Exit status: 0 written (a budget nothing meets leaves the model as it was, with a warning),
2 bad input."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Step:
    name: str  # the command, and its key in the manifest
    flag: str  # compile's flag that runs it first (args attribute)
    suffix: str  # of the temporary model compile builds
    run: Callable[..., Any]  # (model, output=, options=) -> result with .warnings, .to_json()
    options: Callable[[argparse.Namespace], Any]  # flags -> options (with max_accuracy_drop)
    summary: Callable[[Any], list[str]]
    report: Callable[..., Any]  # (result, folder, name, validation) -> page


def validation(args: argparse.Namespace, drop: float) -> dict[str, Any] | None:
    """harness validate of the original and the written model (-o) compiled for --target,
    where it runs here, into REPORT/validation/ (None elsewhere); `drop`: the budget."""
    from edgec import targets
    from edgec.cli import input_shapes_arg
    from edgec.cli_validate import preprocess_overrides
    from edgec.harness import report
    from edgec.harness.validate import Budget, Options, validate

    if not targets.get(args.target).runs_here():
        return None
    opts = Options(data=args.data, budget=Budget(drop), target=args.target,
                   preprocess=preprocess_overrides(args),
                   input_shapes=input_shapes_arg(args.input_shape))
    result = validate(args.model, [args.model, args.output], opts)
    report.write(result, Path(args.report) / "validation")
    return result


def _warn(result: Any) -> None:
    for w in result.warnings:
        print(f"edgec: warning: {w}", file=sys.stderr)


def run_command(args: argparse.Namespace, step: Step) -> int:
    """`edgec compress|quantize MODEL -o OUT [--report DIR] [--json]`."""
    from edgec.errors import EdgecError

    if not args.model or not args.output:
        raise EdgecError(f"{step.name} needs a model and -o OUTPUT.onnx")
    opts = step.options(args)
    result = step.run(args.model, output=args.output, options=opts)
    _warn(result)
    if args.report:
        checked = validation(args, opts.max_accuracy_drop) if result.output else None
        step.report(result, Path(args.report), Path(args.model).stem, checked)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print("\n".join(step.summary(result)))
        print(f"wrote {result.output}")
    return 0


def compile_after(args: argparse.Namespace, compile_cmd: Any, step: Step) -> int:
    """compile --compress / --int8: the step into a temporary .onnx, then `compile_cmd`
    (cmd_compile) compiles that, the step's record in the manifest under its name."""
    import tempfile

    opts = step.options(args)
    with tempfile.TemporaryDirectory(prefix=f"edgec-{step.name}-") as tmp:
        model = Path(tmp) / f"{Path(args.model).stem}.{step.suffix}.onnx"
        result = step.run(args.model, output=model, options=opts)
        _warn(result)
        print("\n".join(step.summary(result)))
        record = {**result.to_json(), "source": args.model, "output": None}
        setattr(args, step.flag, False)
        args.model = str(model)
        return compile_cmd(args, lossy={step.name: record})
