"""The layers of lmc, checked on its import graph (README, "Architecture").

    interface  lmc.cli, lmc.plots          may import everything below
    workflows  lmc.workflows               core, training & storage, base
    training   lmc.training                core (but not pruning or analyses), base
    core       lmc.core                    base only
    base       lmc.errors, lmc.files, lmc.constants, lmc._version

A function-level import of an lmc module needs a comment on its line or the line above
saying why (they hide dependencies from a reader of the module's head).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "lmc"
BASE = {"lmc.errors", "lmc.files", "lmc.constants", "lmc._version"}
LAYERS = ("base", "core", "training", "workflows", "interface")
# training & storage never import pruning or the analyses of the core
TRAINING_MAY_NOT = ("lmc.core.prune", "lmc.core.prune_ratio", "lmc.core.curvature",
                    "lmc.core.interpolate")


def layer_of(module: str) -> str | None:
    if module == "lmc" or not module.startswith("lmc."):
        return None  # the package's flat API (lmc/__init__.py) re-exports every layer
    if module in BASE:
        return "base"
    part = module.split(".")[1]
    return {"core": "core", "training": "training", "workflows": "workflows", "cli": "interface",
            "plots": "interface"}.get(part, "unknown")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(source: str, package: str) -> list[tuple[str, int, bool]]:
    """(imported lmc module, line, inside a function) for every import in `source`."""
    tree = ast.parse(source)
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative import
                    base = ".".join(package.split(".")[: len(package.split(".")) - child.level
                                                      + 1] + ([base] if base else []))
                for a in child.names:
                    target = f"{base}.{a.name}"
                    # `from lmc.core import masks` imports the module lmc.core.masks
                    is_module = (ROOT.parent / Path(*target.split("."))).with_suffix(".py")
                    found.append((target if is_module.exists() else base, child.lineno,
                                  in_function))
            visit(child, inside)

    visit(tree, False)
    return [(m, line, f) for m, line, f in found if m == "lmc" or m.startswith("lmc.")]


def violations(module: str, source: str) -> list[str]:
    own = layer_of(module)
    lines = source.splitlines()
    problems = []
    for target, line, in_function in imports(source, module):
        theirs = layer_of(target)
        where = f"{module}:{line} imports {target}"
        if own is not None and theirs is None and own != "interface":
            problems.append(f"{where} (the flat API, which imports every layer)")
        elif own is not None and theirs is not None:
            if theirs == "unknown" or own == "unknown":
                problems.append(f"{where} (a module outside the known layers)")
            elif LAYERS.index(theirs) > LAYERS.index(own):
                problems.append(f"{where} ({own} may not import {theirs})")
            elif own == "training" and target.startswith(TRAINING_MAY_NOT):
                problems.append(f"{where} (storage and training never import pruning or "
                                "analyses)")
        if in_function:
            context = lines[line - 1] + (lines[line - 2] if line > 1 else "")
            if "#" not in context:
                problems.append(f"{where} inside a function without a comment saying why")
    return problems


def lmc_modules() -> list[tuple[str, str]]:
    return [(module_name(p), p.read_text()) for p in sorted(ROOT.rglob("*.py"))]


def test_layers_hold():
    problems = [v for module, source in lmc_modules() for v in violations(module, source)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(("module", "source", "expected"), [
    ("lmc.core.bad", "from lmc.training.runs import Run\n", "core may not import training"),
    ("lmc.core.bad", "import lmc.workflows.imp\n", "core may not import workflows"),
    ("lmc.training.bad", "from lmc.core import prune\n", "never import pruning"),
    ("lmc.workflows.bad", "from lmc.cli import main\n", "workflows may not import interface"),
    ("lmc.core.bad", "from lmc import masks\n", "the flat API"),
    ("lmc.core.bad", "def f():\n    from lmc.core import masks\n", "without a comment"),
])
def test_a_violating_import_is_caught(module, source, expected):
    assert any(expected in v for v in violations(module, source))


def test_allowed_imports_pass():
    assert not violations("lmc.workflows.ok", "from lmc.core.masks import density\n"
                          "from lmc.training.runs import Run\nimport lmc.errors\n")
    assert not violations("lmc.cli.ok", "import lmc\nfrom lmc.workflows.imp import run_imp\n")
    assert not violations("lmc.core.ok", "def f():\n    # needs matplotlib only here\n"
                          "    from lmc.core import masks\n")
