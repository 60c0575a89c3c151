"""The package's shape, checked from its source: no import circles, pgcli only in the shell.

Imports are read from the AST, wherever they stand (module level, inside functions, under
``TYPE_CHECKING``): an import hidden in a function still ties two modules together, and a
circle between them means neither can be read, tested or moved without the other.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pgcli_jit"
#: the third-party libraries only the shell package may import
SHELL_ONLY = ("pgcli", "pgspecial", "prompt_toolkit")
SHELL = "pgcli_jit.shell"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path, name: str, known: set[str]) -> set[str]:
    """Every module (of the package, or the top-level name of a library) that ``path`` imports."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:  # ``from pkg import module`` imports the module
                full = f"{base}.{alias.name}"
                out.add(full if full in known else base)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: {m for m in imported(path, name, known) if m in known and m != name}
            for name, path in mods.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_another_that_imports_it_back() -> None:
    """A package ``__init__`` that hands on a name of its own sub-module is no circle: the
    sub-module never imports the ``__init__``.  Anything else is one."""
    assert circles(graph()) == []


def test_the_walk_sees_imports_inside_functions_and_under_type_checking() -> None:
    """The control: the graph holds the shell's lazy imports and a TYPE_CHECKING-only one."""
    edges = graph()
    assert "pgcli_jit.session.controller" in edges["pgcli_jit.shell.jitshell"]  # inside a function
    assert circles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]


def test_only_the_shell_imports_pgcli_pgspecial_or_prompt_toolkit() -> None:
    mods = modules()
    known = set(mods)
    offenders = sorted(
        f"{name} imports {lib}"
        for name, path in mods.items() if name != SHELL and not name.startswith(f"{SHELL}.")
        for lib in imported(path, name, known) if lib.split(".")[0] in SHELL_ONLY
    )
    assert offenders == []


#: the built-in backends, as modules and as the names profiles use
BACKEND_MODULES = ("pgcli_jit.backends.postgres", "pgcli_jit.backends.vault", "pgcli_jit.backends.command",
                   "pgcli_jit.backends.http", "pgcli_jit.backends.rds", "pgcli_jit.backends.credential_json",
                   "pgcli_jit.backends.httputil")
BACKEND_NAMES = {"postgres", "vault", "command", "http", "aws-rds-iam"}
#: the layers that must treat every backend alike (admin and devtools are the postgres
#: broker's operator CLI and demo: naming it is their job)
BACKEND_BLIND = ("pgcli_jit.core", "pgcli_jit.session", "pgcli_jit.shell")


def names_a_backend(path: Path) -> list[str]:
    """``x.backend == "vault"`` and the like: a comparison of a ``backend`` with a backend's name."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            named = any(isinstance(s, ast.Constant) and s.value in BACKEND_NAMES for s in sides)
            about = any(isinstance(s, ast.Attribute) and s.attr in ("backend", "name") for s in sides)
            if named and about:
                found.append(f"{path.name}:{node.lineno}")
    return found


def test_the_session_and_the_shell_name_no_backend() -> None:
    """What differs between backends is declared on them (capabilities) and read where needed;
    nothing above the backends imports one by module or compares a profile's backend name."""
    mods = modules()
    known = set(mods)
    blind = {n: p for n, p in mods.items() if n.startswith(BACKEND_BLIND)}
    imports = sorted(f"{name} imports {m}" for name, path in blind.items()
                     for m in imported(path, name, known) if m.startswith(BACKEND_MODULES))
    compares = sorted(hit for path in blind.values() for hit in names_a_backend(path))
    assert imports == [] and compares == []


def test_the_shell_reaches_the_session_only_through_its_seam() -> None:
    """Importing the shell loads none of the session's machinery (start-up stays as fast as
    pgcli's); every name of the seam resolves to what its ``TYPE_CHECKING`` line says."""
    code = ("import sys, pgcli_jit.shell.jitshell, pgcli_jit.shell.cli; "
            "print(sorted(m for m in sys.modules if m.startswith(('pgcli_jit.session.controller', "
            "'pgcli_jit.session.manager', 'pgcli_jit.session.config', 'pgcli_jit.backends.base'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    from pgcli_jit.shell import later

    for name in later.__all__:
        assert getattr(later, name) is not None, name


@pytest.mark.parametrize(("module", "names"), [
    ("pgcli_jit.backends.base", ["Backend", "LeaseRequest", "RoleInfo", "PendingRequest",
                                 "ApprovalPending", "NeedsPassword", "Profile", "Lease"]),
    ("pgcli_jit.lease", ["Lease", "Credentials"]),
    ("pgcli_jit.errors", ["JitError", "BackendError", "BackendUnavailable", "NotRenewable",
                          "PermissionDenied", "RequestClosed", "ConfigError", "UsageError"]),
    ("pgcli_jit.testing", ["BackendContract", "FakeClock"]),
])
def test_the_paths_third_party_backends_import_keep_working(module: str, names: list[str]) -> None:
    """Backends outside this repository import these paths: they are declared (``__all__``)
    and hand on the same objects the package uses, so an ``isinstance`` holds across them."""
    mod = importlib.import_module(module)
    assert set(names) <= set(mod.__all__)
    for name in mod.__all__:
        assert getattr(mod, name) is not None
    if module == "pgcli_jit.errors":
        from pgcli_jit.core import errors

        assert mod.JitError is errors.JitError
