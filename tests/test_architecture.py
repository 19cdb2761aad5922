"""
The architecture, read from the code: the import graph has no circles, each
part imports only the parts below it, modules stay small, and
``docs/architecture.rst`` names exactly the modules that exist.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterator

from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "proxypypi")

#: Modules of the package root that every part may stand on.
FLOOR = {"__init__", "names", "interfaces", "internals", "sizes", "text", "durations", "waiting"}

#: Each part and the parts it may import (besides itself and the floor),
#: lowest first.
ALLOWED: dict[str, set[str]] = {
    "config": set(),
    "simple": {"config"},
    "upstream": {"config", "simple"},
    "policy": {"config", "simple"},
    "cache": {"config", "simple", "upstream", "policy"},
    "private": {"config", "simple", "upstream", "policy", "cache"},
    "ops": {"config", "simple", "upstream", "policy", "cache", "private"},
    "web": {"config", "simple", "upstream", "policy", "cache", "private", "ops"},
    "service": {"config", "simple", "upstream", "policy", "cache", "private", "ops", "web"},
    "testing": set(),
}

#: The most lines a module may have, and the modules allowed more (a
#: parser with one job), with the reason.
MAX_LINES = 450
LONGER = {"proxypypi.simple.parse": "one parser: the HTML and JSON pages of untrusted upstreams"}


def modules() -> dict[str, str]:
    """
    Every module of the package: dotted name to file path.
    """
    found = {}
    for directory, dirs, files in os.walk(PACKAGE):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                found[dotted.removesuffix(".__init__")] = path
    return found


def imports(path: str, known: dict[str, str]) -> Iterator[str]:
    """
    The package modules ``path`` imports, anywhere in it (a function-level
    import is an import too).
    """
    tree = ast.parse(open(path, encoding="utf-8").read())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; write it absolute")
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                target = candidate if candidate in known else node.module
                if target in known:
                    yield target
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    yield alias.name


def part(module: str) -> str:
    """
    The part a module belongs to: its folder, or ``floor``.
    """
    pieces = module.split(".")
    if len(pieces) == 1 or (len(pieces) == 2 and pieces[1] in FLOOR):
        return "floor"
    return pieces[1]


class ImportGraphTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.modules = modules()
        self.graph = {
            m: {t for t in imports(p, self.modules) if t != m} for m, p in self.modules.items()
        }

    def test_every_folder_is_a_known_part(self) -> None:
        """Each module is on the floor or in one of the parts the rules name."""
        unknown = {m for m in self.modules if part(m) not in ALLOWED and part(m) != "floor"}
        self.assertEqual(unknown, set())

    def test_parts_import_only_below(self) -> None:
        """The floor imports no part; each part imports only the parts below it."""
        wrong = []
        for module, targets in sorted(self.graph.items()):
            here = part(module)
            allowed = {"floor", here} | ALLOWED.get(here, set())
            if here == "floor":
                allowed = {"floor"}
            for target in sorted(targets):
                if part(target) not in allowed:
                    wrong.append(f"{module} imports {target}")
        self.assertEqual(wrong, [])

    def test_no_module_cycle(self) -> None:
        """No module reaches itself through its imports."""
        cycles = []
        for start in sorted(self.graph):
            seen: set[str] = set()
            stack = list(self.graph[start])
            while stack:
                current = stack.pop()
                if current == start:
                    cycles.append(start)
                    break
                if current not in seen:
                    seen.add(current)
                    stack.extend(self.graph[current])
        self.assertEqual(cycles, [])

    def test_modules_stay_small(self) -> None:
        """Every module has one job; beyond the line ceiling only the named exceptions."""
        long = []
        for module, path in sorted(self.modules.items()):
            with open(path, encoding="utf-8") as f:
                lines = sum(1 for _ in f)
            if lines > MAX_LINES and module not in LONGER:
                long.append(f"{module}: {lines} lines")
        self.assertEqual(long, [])


class TestLayoutTests(SynchronousTestCase):
    def test_no_test_module_imports_another(self) -> None:
        """Test modules share helpers through tests/support only, never one another."""
        tests = os.path.join(ROOT, "tests")
        wrong = []
        for name in sorted(os.listdir(tests)):
            if not name.endswith(".py"):
                continue
            tree = ast.parse(open(os.path.join(tests, name), encoding="utf-8").read())
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and (node.level or ""):
                    wrong.append(f"{name}: relative import")
                module = node.module if isinstance(node, ast.ImportFrom) else None
                if module and module.startswith("tests") and not module.startswith("tests.support"):
                    wrong.append(f"{name} imports {module}")
        self.assertEqual(wrong, [])


class MapTests(SynchronousTestCase):
    def test_map_names_every_module_and_nothing_else(self) -> None:
        """docs/architecture.rst names each module's file, and every path it names exists."""
        with open(os.path.join(ROOT, "docs", "architecture.rst"), encoding="utf-8") as f:
            text = f.read()
        mentioned = set(re.findall(r"``([a-z_/]+\.py)``", text))
        mentioned |= set(re.findall(r"(?<![\w/])((?:[a-z_]+/)+[a-z_]+\.py)", text))
        missing = []
        for module, path in modules().items():
            relative = os.path.relpath(path, PACKAGE)
            name = os.path.basename(relative)
            if module == "proxypypi" or name == "__init__.py" and relative.count(os.sep) == 1:
                continue
            if relative not in mentioned and name not in mentioned:
                missing.append(relative)
        self.assertEqual(missing, [], "modules docs/architecture.rst does not name")
        for relative in sorted(p for p in mentioned if "/" in p):
            candidates = [os.path.join(PACKAGE, relative), os.path.join(ROOT, relative)]
            self.assertTrue(any(os.path.exists(c) for c in candidates), relative)
