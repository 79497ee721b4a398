"""The layers of docs/architecture.md, enforced: who may import whom, and where torch and pydantic may appear.

Every module under hpcgpu/ is parsed (imports inside functions count too). A broken rule fails
with the module, the line and the rule; `check_tree` is also run against a tree with a planted
violation, so the test is shown to be able to fail.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hpcgpu"

#: layer -> the hpcgpu layers it may import
ALLOWED: dict[str, set[str]] = {
    "contract": {"contract"},
    "backend-api": {"contract"},
    "node-half": {"contract", "backend-api", "node-half"},
    "agent": {"contract", "backend-api", "node-half", "agent"},
    "worker": {"contract", "worker"},
    "host": {"contract", "host", "backend-api", "backend-host"},
    "backend-host": {"contract", "host", "backend-api", "backend-host", "node-half", "agent"},
    "doctor": {"contract", "doctor", "host"},
    "cli": {"contract", "host", "backend-api", "backend-host", "agent", "doctor", "cli"},
}
#: third-party modules a layer may import: torch only where ranks or agents run; pydantic only on the host
TORCH_LAYERS = {"worker", "agent", "doctor"}
PYDANTIC_LAYERS = {"host"}
#: layers whose modules may import torch at module level (the others only inside functions)
TORCH_AT_TOP = {"worker"}


def layer_of(module: str) -> str:
    """hpcgpu.host.plan -> host; hpcgpu.backends.slurm.node -> node-half; ..."""
    parts = module.split(".")
    if parts[:2] == ["hpcgpu", "contract"]:
        return "contract"
    if parts[:2] == ["hpcgpu", "backends"]:
        if len(parts) == 2:
            return "backend-api"
        return "node-half" if len(parts) > 3 and parts[3].startswith("node") else "backend-host"
    if parts[:2] in (["hpcgpu", "worker"], ["hpcgpu", "examples"]) or module == "hpcgpu.dist":
        return "worker"
    for name in ("host", "agent", "doctor", "cli"):
        if parts[:2] == ["hpcgpu", name]:
            return name
    return "cli"  # hpcgpu/__init__.py, hpcgpu/__main__.py: the command line's entry


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_only(tree: ast.Module) -> set[int]:
    """ids of the nodes under `if TYPE_CHECKING:` (never run: annotations only)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING":
            skipped |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skipped


def imports(tree: ast.Module, module: str, is_package: bool):
    """(line, imported module, at module level?) for every import in the file that can run."""
    top = set(map(id, tree.body))
    skipped = _type_checking_only(tree)
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, id(node) in top
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = module.split(".") if is_package else module.split(".")[:-1]
                pkg = pkg[: len(pkg) - node.level + 1]
                base = ".".join(pkg + ([base] if base else []))
            if base == "hpcgpu" or base.endswith(".backends"):  # `from hpcgpu import dist`: the submodules
                for alias in node.names:
                    yield node.lineno, f"{base}.{alias.name}" if base == "hpcgpu" else base, id(node) in top
            else:
                yield node.lineno, base, id(node) in top


def check_tree(root: Path) -> list[str]:
    """Every broken rule in the package at root, one line each."""
    problems = []
    stdlib = set(sys.stdlib_module_names)
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        layer = layer_of(module)
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        for line, target, at_top in imports(ast.parse(source), module, path.name == "__init__.py"):
            if "layer-exception" in lines[line - 1]:
                continue  # documented where it stands (a rank without a plan validating ./hpcgpu.yaml)
            where = f"{path.relative_to(root.parent)}:{line} ({layer})"
            head = target.split(".")[0]
            if head == "mutmut" and "__mutmut_" in source:
                continue  # the trampolines `make mutate` adds to its copy of the package (docs/development.md)
            if head == "hpcgpu":
                if target in ("hpcgpu", "hpcgpu.__init__"):
                    continue
                other = layer_of(target)
                if other not in ALLOWED[layer]:
                    problems.append(f"{where} imports {target} ({other}): {layer} may import {sorted(ALLOWED[layer])}")
            elif head == "torch" and (layer not in TORCH_LAYERS or (at_top and layer not in TORCH_AT_TOP)):
                problems.append(f"{where} imports torch" + (" at module level" if layer in TORCH_LAYERS else ""))
            elif head == "pydantic" and layer not in PYDANTIC_LAYERS:
                problems.append(f"{where} imports pydantic: only the host layer may")
            elif layer == "contract" and head not in stdlib and head != "__future__":
                problems.append(f"{where} imports {target}: the contract uses the standard library only")
    return problems


def test_every_module_keeps_to_its_layer():
    problems = check_tree(PACKAGE)
    assert not problems, "layer rules broken (docs/architecture.md):\n" + "\n".join(problems)


@pytest.mark.parametrize("module, planted, rule", [
    ("agent/node.py", "from hpcgpu.host.spec import Spec", "agent may import"),
    ("worker/rank.py", "import pydantic", "only the host layer"),
    ("host/plan.py", "import torch", "imports torch"),
    ("contract/plan.py", "import yaml", "standard library only"),
    ("contract/states.py", "if TYPE_CHECKING:\n    pass\nfrom hpcgpu.host import spec", "contract may import"),
    ("backends/slurm/node.py", "from hpcgpu.host.runs import find_run", "node-half may import"),
    ("agent/node.py", "import torch", "torch at module level"),
])
def test_a_planted_violation_is_caught(tmp_path, module, planted, rule):
    import shutil

    copy = tmp_path / "hpcgpu"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / module
    target.write_text(planted + "\n" + target.read_text())
    problems = check_tree(copy)
    assert any(module in p and rule in p for p in problems), problems


PROBE = """
import sys
import {module}
bad = sorted(m for m in sys.modules if m.split(".")[0] in {forbidden!r} or m.startswith({prefixes!r}))
print("LOADED=" + ",".join(bad))
"""


@pytest.mark.parametrize("module, forbidden, prefixes", [
    # the host side: the CLI verbs, the launch flow, both backends' host halves
    ("hpcgpu.cli.run_cmd, hpcgpu.cli.submit_cmd, hpcgpu.host.launch, hpcgpu.backends.slurm.backend, "
     "hpcgpu.backends.local.backend", ("torch",), ("hpcgpu.worker", "hpcgpu.agent.rendezvous")),
    # what a node agent loads before torch: the contract and the node halves, never the host layer
    ("hpcgpu.agent.node, hpcgpu.backends.local.node, hpcgpu.backends.slurm.node, hpcgpu.backends.slurm.node_command",
     ("pydantic", "torch"), ("hpcgpu.host", "hpcgpu.cli")),
    # a rank: the worker with torch, never pydantic or the host layer
    ("hpcgpu.worker.__main__, hpcgpu.worker.trainer, hpcgpu.dist", ("pydantic",), ("hpcgpu.host", "hpcgpu.cli")),
])
def test_what_each_layer_loads_in_practice(module, forbidden, prefixes):
    code = PROBE.format(module=module, forbidden=forbidden, prefixes=prefixes)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("LOADED="), out.stdout


def module_graph(root: Path) -> dict[str, set[str]]:
    """module -> the hpcgpu modules it imports (inside functions too: a lazy import cycle is still a cycle)."""
    names = {module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in names.items():
        deps = set()
        for _, target, _top in imports(ast.parse(path.read_text(encoding="utf-8")), module, path.name == "__init__.py"):
            while target.startswith("hpcgpu") and target not in names and "." in target:
                target = target.rsplit(".", 1)[0]  # `from pkg.mod import name`: the module is pkg.mod
            if target in names and target != module:
                deps.add(target)
        graph[module] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle (as a path that ends where it starts), or [] when there is none."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_no_import_cycle():
    graph = module_graph(PACKAGE)
    # a package's __init__ importing its own submodules is how packages work, not a cycle to fix
    for module in graph:
        graph[module] = {d for d in graph[module] if not module.startswith(d + ".")}
    assert find_cycle(graph) == [], "import cycle: " + " -> ".join(find_cycle(graph))
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # the check can fail
