"""Reading "permission denied": what privilege on which object a failed statement lacked.

Pure code: from the server's error (SQLSTATE 42501 and its primary message) and the
statement that failed, the :class:`Denial` the shell asks the broker about, or None.  The
message names the object (``permission denied for table orders``) but not the privilege and
not the schema, so both are read from the statement: the privilege from what the statement
does to that object, the schema from how the statement spells it.  Anything that cannot be
read for certain gives None: the offer is right or absent, never wrong.  In particular an
object the statement does not name itself (a table behind a view, a sequence behind a
column default, a function's own 42501 with text of its own) gives no offer.

The messages read are PostgreSQL's own (``aclcheck_error`` and ``aclcheck_error_col``, the
same words from 11 to 18): ``permission denied for <kind> <name>`` and ``permission denied for
column <column> of relation <name>``.  ``permission denied to set role``, ``must be owner of``
and the like name no privilege a profile could grant here, and give None; so does a schema's
USAGE (the object the statement wanted in it is one the caller cannot name).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pgcli_jit.backends.base import Privilege

#: the SQLSTATE of every privilege error (insufficient_privilege)
INSUFFICIENT_PRIVILEGE = "42501"
#: longer statements or messages are not read (a pasted dump is not a statement to retry)
MAX_STATEMENT = 100_000
MAX_MESSAGE = 1000

#: the kinds of object the server's lookup answers for, as the message names them
RELATIONS = ("table", "view", "materialized view", "foreign table", "relation")
KINDS = (*RELATIONS, "sequence", "schema", "function", "procedure", "database")
_OBJECT = re.compile(r"permission denied for (" + "|".join(sorted(KINDS, key=len, reverse=True))
                     + r") (.+)", re.DOTALL)
_COLUMN = re.compile(r"permission denied for column (.+) of relation (.+)", re.DOTALL)
#: a token of SQL: a string, a quoted identifier, a word, a dot, an opening parenthesis, or
#: any other character (comments are gone: pgcli strips them before the statement is sent)
_TOKEN = re.compile(r"""(?P<str>[Ee]?'(?:[^']|'')*')|(?P<qid>"(?:[^"]|"")+")|(?P<word>[^\W\d][\w$]*)"""
                    r"""|(?P<dot>\.)|(?P<paren>\()|(?P<dollar>\$[^\W\d]?\w*\$)|(?P<other>\S)""")


@dataclass(frozen=True)
class Denial:
    """What the failed statement lacked: every privilege in ``needed`` on one object (an
    UPDATE with a WHERE reads the table too); ``target`` is how the object is shown until the
    server says how it names it."""

    needed: tuple[Privilege, ...]
    target: str
    #: the statement named the object with its schema (or it lives in none): any login
    #: resolves it to the same object, not only the one whose search_path ran the statement
    qualified: bool = True
    #: for an UPDATE denied on its table: UPDATE on each column it sets (and SELECT on the
    #: table if it reads any), which a profile granting those columns only would allow
    by_column: tuple[Privilege, ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(p.column for p in self.by_column if p.column is not None)

    @property
    def privilege(self) -> str:
        return self.needed[0].privilege


@dataclass(frozen=True)
class _Word:
    """An identifier of the statement: its value (folded as PostgreSQL folds it) and whether
    a dot follows or precedes it."""

    value: str
    quoted: bool


def read_denial(sqlstate: str | None, message: str | None, statement: str) -> Denial | None:
    """The denial a 42501 error reports for ``statement``, or None when it cannot be read
    for certain."""
    if sqlstate != INSUFFICIENT_PRIVILEGE or not message or len(message) > MAX_MESSAGE:
        return None
    if not statement.strip() or len(statement) > MAX_STATEMENT or "\x00" in statement:
        return None
    message = message.strip()
    column = None
    found = _COLUMN.fullmatch(message)
    if found:
        column, kind, name = found.group(1), "table", found.group(2)
    else:
        found = _OBJECT.fullmatch(message)
        if not found:
            return None
        kind, name = found.group(1), found.group(2)
    if not name or any(ord(ch) < 32 or ord(ch) == 127 for ch in name + (column or "")):
        return None
    return _denial(kind, name, column, statement)


def _denial(kind: str, name: str, column: str | None, statement: str) -> Denial | None:
    tokens = tokenize(statement)
    if tokens is None:
        return None
    privileges = needed_privileges(kind, name, tokens)
    if not privileges:
        return None
    if kind in ("schema", "database"):
        obj, qualified = quote_ident(name), True
    else:
        schema = qualifier(name, tokens, strings_too=kind == "sequence")
        if schema is None:
            return None
        qualified = schema != ""
        obj = f"{quote_ident(schema)}.{quote_ident(name)}" if qualified else quote_ident(name)
    show = obj + (f".{quote_ident(column)}" if column else "")
    by_column: tuple[Privilege, ...] = ()
    if kind in RELATIONS and column is None and privileges[0] == "UPDATE":
        by_column = _by_column(kind, obj, tokens, reads="SELECT" in privileges)
    return Denial(tuple(Privilege(p, kind, obj, column) for p in privileges), show, qualified, by_column)


def _by_column(kind: str, obj: str, tokens: list[tuple[str, str]], reads: bool) -> tuple[Privilege, ...]:
    """UPDATE on each column an UPDATE sets, and SELECT on the table when the statement reads
    it (a WHERE, or a column in a SET expression); nothing when the SET list is not plain."""
    found = set_columns(tokens)
    if not found:
        return ()
    columns, reads_columns = found
    select = (Privilege("SELECT", kind, obj),) if reads or reads_columns else ()
    return tuple(Privilege("UPDATE", kind, obj, c) for c in columns) + select


#: words in a SET expression that read no column
_NOT_COLUMNS = frozenset({"NULL", "TRUE", "FALSE", "DEFAULT", "CURRENT_USER", "SESSION_USER",
                          "CURRENT_TIMESTAMP", "CURRENT_DATE", "LOCALTIMESTAMP", "AND", "OR", "NOT"})


def set_columns(tokens: list[tuple[str, str]]) -> tuple[list[str], bool] | None:
    """The columns ``UPDATE ... SET a = x, b = y`` sets, and whether an expression names a
    column; None for anything else (a row of columns, a subscript, a field)."""
    start = next((i for i, (k, t) in enumerate(tokens) if k == "word" and t.upper() == "SET"), None)
    if start is None:
        return None
    parts: list[list[tuple[str, str]]] = [[]]
    depth = 0
    for kind, text in tokens[start + 1:]:
        if depth == 0 and kind == "word" and text.upper() in ("WHERE", "FROM", "RETURNING"):
            break
        depth += 1 if kind == "paren" else -1 if text == ")" else 0
        if depth == 0 and text == ",":
            parts.append([])
        else:
            parts[-1].append((kind, text))
    columns, reads = [], False
    for part in parts:
        if len(part) < 3 or part[0][0] not in ("word", "qid") or part[1][1] != "=":
            return None
        columns.append(_ident(*part[0]) or "")
        reads = reads or _names_a_column(part[2:])
    return columns, reads


def _names_a_column(expression: list[tuple[str, str]]) -> bool:
    """Whether an expression may read a column: a quoted name, or a word that is no function
    call, no type after ``::`` and none of the constants above."""
    for i, (kind, text) in enumerate(expression):
        if kind == "qid":
            return True
        if kind != "word" or text.upper() in _NOT_COLUMNS:
            continue
        called = i + 1 < len(expression) and expression[i + 1][0] == "paren"
        cast = i >= 1 and expression[i - 1][1] == ":"
        if not (called or cast):
            return True
    return False


def tokenize(statement: str) -> list[tuple[str, str]] | None:
    """The statement as (kind, text) tokens; None for dollar-quoted text (not read)."""
    tokens = [(m.lastgroup or "other", m.group()) for m in _TOKEN.finditer(statement)]
    if any(kind == "dollar" for kind, _ in tokens):
        return None
    return tokens


def _ident(kind: str, text: str) -> str | None:
    """An identifier's value as PostgreSQL reads it: folded to lower case unless quoted."""
    if kind == "qid":
        return text[1:-1].replace('""', '"')
    if kind == "word":
        return text.lower()
    return None


def _words(tokens: list[tuple[str, str]]) -> list[str]:
    return [text.upper() for kind, text in tokens if kind == "word"]


def qualifier(name: str, tokens: list[tuple[str, str]], strings_too: bool = False) -> str | None:
    """The schema the statement names ``name`` in: ``""`` when it names it unqualified (the
    search path decides, as it did for the statement), None when the statement does not name
    it or names it in more than one way (which one failed is not said)."""
    seen: set[str] = set()
    for i, (kind, text) in enumerate(tokens):
        if strings_too and kind == "str" and text[:1] not in "Ee":
            inner = tokenize(text[1:-1].replace("''", "'")) or []
            schema = qualifier(name, inner) if len(inner) <= 3 else None
            if schema is not None:
                seen.add(schema)
            continue
        if _ident(kind, text) != name:
            continue
        if i + 1 < len(tokens) and tokens[i + 1][0] == "dot":
            continue  # a schema or table of that name, not the object itself
        if i >= 2 and tokens[i - 1][0] == "dot":
            schema = _ident(*tokens[i - 2])
            if schema is None:
                return None
            seen.add(schema)
        else:
            seen.add("")
    return seen.pop() if len(seen) == 1 else None


def needed_privileges(kind: str, name: str, tokens: list[tuple[str, str]]) -> tuple[str, ...]:
    """Which privileges on the object the statement needed, from what it does to it."""
    words = _words(tokens)
    if not words:
        return ()
    verb = words[0]
    if kind in RELATIONS:
        return _relation_privileges(verb, words, name, tokens)
    if kind == "sequence":
        return ("UPDATE",) if "SETVAL" in words else ("USAGE",)
    if kind == "schema":
        # USAGE is denied for an object in the schema, which the caller cannot name: a
        # profile with USAGE alone may still not allow the statement, so none is offered
        return ("CREATE",) if verb == "CREATE" else ()
    if kind in ("function", "procedure"):
        return ("EXECUTE",)
    if kind == "database" and verb == "CREATE" and len(words) > 1 and words[1] in ("SCHEMA", "EXTENSION"):
        return ("CREATE",)
    return ()


#: statements that only read the relations they name
_READS = frozenset({"SELECT", "TABLE", "VALUES"})
#: words after which an UPDATE, DELETE or INSERT reads its own table too
_READS_TARGET = frozenset({"WHERE", "RETURNING", "CONFLICT", "FROM", "USING"})


def _relation_privileges(verb: str, words: list[str], name: str,
                         tokens: list[tuple[str, str]]) -> tuple[str, ...]:
    if verb in _READS or (verb == "WITH" and not {"INSERT", "UPDATE", "DELETE", "MERGE"} & set(words)):
        return ("SELECT",)
    target = _target(verb, tokens)
    if target is None:
        return ()
    if target != name:
        # a relation the statement reads (FROM, JOIN, a subquery); TRUNCATE and COPY name no other
        return ("SELECT",) if verb in ("UPDATE", "DELETE", "INSERT") else ()
    if verb == "COPY":
        return ("INSERT",) if "FROM" in words else ("SELECT",)
    if verb == "TRUNCATE":
        return ("TRUNCATE",)
    reads = bool(_READS_TARGET & set(words[2:])) or (verb == "INSERT" and "SELECT" in words)
    return (verb, "SELECT") if reads else (verb,)


#: where each verb names the relation it writes, after these words
_TARGET_AFTER = {"UPDATE": ("UPDATE",), "DELETE": ("FROM",), "INSERT": ("INTO",),
                 "TRUNCATE": ("TRUNCATE", "TABLE"), "COPY": ("COPY",)}


def _target(verb: str, tokens: list[tuple[str, str]]) -> str | None:
    """The relation an UPDATE, DELETE, INSERT, TRUNCATE or COPY writes (or COPY reads), by
    its name without schema; None for any other statement (no offer)."""
    after = _TARGET_AFTER.get(verb)
    if after is None:
        return None
    i = 0
    while i < len(tokens) and not (tokens[i][0] == "word" and tokens[i][1].upper() == verb):
        i += 1
    i += 1
    while i < len(tokens) and tokens[i][0] == "word" and tokens[i][1].upper() in (*after, "ONLY"):
        i += 1
    last = None
    while i < len(tokens):
        value = _ident(*tokens[i])
        if value is None:
            return None
        last = value
        if i + 1 < len(tokens) and tokens[i + 1][0] == "dot":
            i += 2
            continue
        break
    return last


_PLAIN = re.compile(r"[a-z_][a-z0-9_$]*")


def quote_ident(name: str) -> str:
    """``name`` as SQL spells it: quoted unless a plain lower-case word (a keyword quoted
    too would be needed for SQL, but the server's lookup reads names, not statements)."""
    return name if _PLAIN.fullmatch(name) else '"' + name.replace('"', '""') + '"'
