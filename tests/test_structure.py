"""The package's shape, checked from its sources (AST, nothing imported): no use of other projects' private
names, no module over 500 lines, no import cycle among pytest_baseimage modules."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pytest_baseimage"
# The programs that run inside the candidate read the image's own packages; what they look at there is the
# point (e.g. ONNX Runtime's OpenVINO device list, which has no public name), so they are not scanned.
IN_CONTAINER = PACKAGE / "incontainer"
MAX_LINES = 500


def sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if IN_CONTAINER not in p.parents)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def own_names(tree: ast.Module) -> set[str]:
    """Names bound to this package's modules or to names defined in them (`from . import x`, `from .m import y`)."""
    names = {"self", "cls"}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("pytest_baseimage")):
            names.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.asname or a.name for a in node.names if a.name.startswith("pytest_baseimage"))
        elif isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            names.add(node.name)
    return names


def foreign_private_uses(path: Path) -> list[str]:
    """`x._name` where x is not self, cls or one of ours; `from other import _name`; getattr(x, "_name")."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    ours = own_names(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if not (isinstance(root, ast.Name) and root.id in ours):
                found.append(f"{path.name}:{node.lineno}: .{node.attr}")
        elif isinstance(node, ast.ImportFrom) and not node.level and not (node.module or "").startswith("pytest_b"):
            found += [f"{path.name}:{node.lineno}: import {a.name}" for a in node.names if _private(a.name)]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr")
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _private(node.args[1].value)
        ):
            found.append(f"{path.name}:{node.lineno}: {node.func.id}(…, {node.args[1].value!r})")
    return sorted(found, key=lambda use: (int(use.split(":")[1]), use))


def test_no_module_uses_another_projects_private_names():
    found = [use for path in sources() for use in foreign_private_uses(path)]
    assert found == []


def test_the_scan_finds_what_it_is_for(tmp_path):
    """The forms that were in the code before (docker's api._url/_get/_version, pytest's parser._groups)."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from . import engine\n"
        "from _pytest.config import _prepareconfig\n"
        "def f(client, parser, config):\n"
        "    client.api._version = '1.41'\n"
        "    client.api._get(client.api._url('/_ping'))\n"
        "    engine._ours(parser._groups, getattr(config.option, '_x'))\n"
        "    self._fine = engine.x._also_ours\n"
    )
    assert foreign_private_uses(sample) == [
        "sample.py:2: import _prepareconfig",
        "sample.py:4: ._version",
        "sample.py:5: ._get",
        "sample.py:5: ._url",
        "sample.py:6: ._groups",
        "sample.py:6: getattr(…, '_x')",
    ]


def test_no_module_is_over_500_lines():
    sizes = {module_name(p): len(p.read_text(encoding="utf-8").splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {name: lines for name, lines in sizes.items() if lines > MAX_LINES} == {}


def imports_of(path: Path) -> set[str]:
    """The pytest_baseimage modules this module imports at its top level or in functions (any import counts)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("pytest_baseimage"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            if not module.startswith("pytest_baseimage"):
                continue
            found.add(module)
            found.update(f"{module}.{a.name}" for a in node.names)  # `from . import x` imports module x
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in sources()}
    graph = {}
    for name, path in modules.items():
        graph[name] = {m for m in imports_of(path) if m in modules and m != name and not name.startswith(m + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_there_is_no_import_cycle_among_the_packages_modules():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_core_imports_no_pytest():
    """engine, probe, stages, target, the composition root and the registry core work without pytest."""
    import subprocess
    import sys

    core = ["engine", "probe", "stages", "target", "composition", "registry", "gpu", "scoring"]
    code = (
        "import sys\n"
        + "".join(f"import pytest_baseimage.{name}\n" for name in core)
        + "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pytest', '_pytest')))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"
