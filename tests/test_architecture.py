"""The tree's rules, checked: docs/ARCHITECTURE.md names what exists, runtime/ never imports
compiler/, and no module imports another module's private names."""

from __future__ import annotations

import ast
import re

from conftest import REPO

PACKAGES = ["compiler", "runtime", "targets", "models", "harness", "edgec"]


def _modules():
    for pkg in PACKAGES:
        yield from sorted((REPO / pkg).rglob("*.py"))


def _imports(path):
    """(module, names) of each import in a file; relative imports resolved to edgec.*"""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, []
        elif isinstance(node, ast.ImportFrom):
            yield ("." * node.level) + (node.module or ""), [a.name for a in node.names]


def test_architecture_doc_names_every_codegen_module_and_only_real_paths():
    doc = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    for path in re.findall(r"`((?:compiler|runtime|targets|edgec|models|tests|benchmarks)/"
                           r"[\w/.]+)`", doc):
        assert (REPO / path).exists(), f"ARCHITECTURE.md names {path}, which does not exist"
    for path in (REPO / "compiler" / "codegen").glob("*/*.py"):
        if path.name != "__init__.py":
            assert re.search(rf"`{path.stem}(\.py)?`", doc), \
                f"ARCHITECTURE.md does not name {path.relative_to(REPO)}"


def test_runtime_never_imports_compiler():
    """Neither in its source nor when loaded: a process that imports edgec.runtime (and
    loads and runs an artifact) has no edgec.compiler module."""
    import subprocess
    import sys

    for path in (REPO / "runtime").rglob("*.py"):
        for module, _ in _imports(path):
            assert not module.startswith(("edgec.compiler", "..compiler")), (path, module)
    code = ("import sys, edgec, edgec.runtime, edgec.runtime.device, edgec.runtime.bundle; "
            "print(sorted(m for m in sys.modules if m.startswith('edgec.compiler')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd="/", check=True).stdout.strip()
    assert out == "[]", out


def test_no_module_uses_private_names_of_another():
    """Neither `from edgec.x import _name` nor `module._name` on an imported edgec module."""
    for path in _modules():
        tree = ast.parse(path.read_text())
        aliases = set()
        for module, names in _imports(path):
            if module.startswith(("edgec", ".")):
                private = [n for n in names if n.startswith("_") and n != "__version__"]
                assert not private, f"{path.relative_to(REPO)} imports {private} from {module}"
                aliases.update(names)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id in aliases and node.attr.startswith("_") \
                    and not node.attr.startswith("__"):
                raise AssertionError(f"{path.relative_to(REPO)}:{node.lineno} reads "
                                     f"{node.value.id}.{node.attr}")
