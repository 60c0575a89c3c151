"""Every statement the package sends stands in :mod:`pgcli_jit.server.statements`.

String constants are read from the AST of every module (f-string parts included), as
``tests/test_layers.py`` reads imports: a SQL literal naming the ``jit`` schema anywhere
else fails, so a call into the schema cannot hide in a backend, an admin command or the demo.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from pgcli_jit.server import statements

PACKAGE = Path(__file__).resolve().parent.parent / "pgcli_jit"
HOME = PACKAGE / "server" / "statements.py"
VERBS = ("SELECT|INSERT|UPDATE|DELETE|WITH|CREATE|ALTER|DROP|GRANT|REVOKE|SET|RESET|LISTEN|NOTIFY|"
         "ROLLBACK|COMMIT|BEGIN|TRUNCATE|CALL|COPY|DO")
#: a string that starts like a statement (lines of ``--`` comments before it allowed), in
#: upper case as the package writes SQL; "set ca_cert ..." is a hint, not a statement
STATEMENT = re.compile(rf"^\s*(?:--[^\n]*\n\s*)*({VERBS})\s")
#: any case, for text that also names the jit schema
ANY_CASE = re.compile(STATEMENT.pattern, re.IGNORECASE)
#: a name in the schema's namespaces: ``jit.request(``, ``jit_data.leases``
NAMES_JIT = re.compile(r"\bjit(?:_data)?\.\w")
#: SQL text that is not sent from here, and why
NOT_SENT = {
    # setup --print: the psql script an operator runs himself (apply() sends its statements)
    PACKAGE / "server" / "__init__.py",
    # the user's own session state carried over a reconnect; the shell's, not the broker's
    PACKAGE / "shell" / "session_state.py",
}


def docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def sql_literals(source: str, name: str = "<source>",
                 shape: re.Pattern[str] = STATEMENT) -> list[tuple[int, str]]:
    """(line, text) of every string constant of that ``shape``; docstrings aside."""
    tree = ast.parse(source, name)
    skip = docstrings(tree)
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
            and shape.match(node.value)]


def outside(shape: re.Pattern[str], naming: re.Pattern[str] | None = None,
            exempt: frozenset[Path] = frozenset()) -> list[str]:
    """The SQL literals of every module but this one's home, as ``file:line: text``."""
    return sorted(f"{path.relative_to(PACKAGE.parent)}:{line}: {text.strip()[:60]!r}"
                  for path in PACKAGE.rglob("*.py") if path != HOME and path not in exempt
                  for line, text in sql_literals(path.read_text(), str(path), shape)
                  if naming is None or naming.search(text))


def test_no_sql_naming_the_jit_schema_outside_the_statements_module() -> None:
    assert outside(ANY_CASE, NAMES_JIT) == []


def test_no_other_statement_is_sent_from_elsewhere() -> None:
    """``SET ROLE``, ``LISTEN`` and the demo's DDL name no ``jit.`` function: statements all the same."""
    assert outside(STATEMENT, exempt=frozenset(NOT_SENT)) == []


def test_the_walk_finds_sql_in_functions_f_strings_and_after_comments() -> None:
    """The control: the detector sees what the package would hide, and nothing of prose."""
    source = '''
def f(conn, x):
    conn.execute(f"SELECT jit.renew({x})")
    conn.execute("-- why\\nselect * from jit_data.leases")
    conn.execute(sql.SQL("SET ROLE {}").format(x))
    return "a transaction is open: COMMIT or ROLLBACK first", "set ca_cert to the CA bundle"
'''
    found = sorted(text for _, text in sql_literals(source, shape=ANY_CASE) if NAMES_JIT.search(text))
    assert found == ["-- why\nselect * from jit_data.leases", "SELECT jit.renew("]
    assert sorted(text for _, text in sql_literals(source)) == ["SELECT jit.renew(", "SET ROLE {}"]


def test_every_statement_of_the_module_is_found_and_sent() -> None:
    """Each constant reads as a statement to the walk above, and some module sends it."""
    names = [n for n in vars(statements) if n.isupper() and not n.startswith("_")]
    assert names
    assert [n for n in names if not STATEMENT.match(getattr(statements, n))] == []
    text = "\n".join(p.read_text() for p in PACKAGE.rglob("*.py") if p != HOME)
    used = {*names, *(n for n in vars(statements) if callable(getattr(statements, n))
                      and getattr(getattr(statements, n), "__module__", "") == statements.__name__)}
    assert sorted(n for n in used if f"statements.{n}" not in text) == []
