"""The bounds every input is held to, in one place so the docs can quote them.

Each limit is far above any real use and far below what breaks something:
a datetime past year 9999, a regex or ``shlex`` over megabytes of text, a
broker that prints hundreds of megabytes into memory.
"""

from __future__ import annotations

#: The longest lease, TTL, max TTL or renewal window anything may ask for or answer
#: with: 366 days.  Vault's own default ``max_lease_ttl`` is 32 days.
MAX_DURATION = 366 * 86400.0
#: A duration as text: ``1h30m`` is 5 characters; nothing sane needs 64.
MAX_DURATION_TEXT = 64
#: A ``--reason`` (and an approver's comment or denial): a ticket reference and a sentence
#: or two.  The server holds reasons and notes to the same bound (``jit.request``,
#: ``jit.approve``/``jit.deny``); tests/test_sql_bounds.py reads the SQL to keep them equal.
MAX_REASON = 1000
#: A server profile's name, as the server's table and ``jit.request`` accept it: a name
#: that the client shows and passes on must be one the server could have made.
PROFILE_NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
#: Profile names, requester names and other identifiers.
MAX_NAME = 200
#: What is read from a broker (a command's stdout or stderr, an HTTP body): 4 MiB.
MAX_OUTPUT = 4 * 1024 * 1024
#: A broker message (stderr tail, HTTP error text) as shown on one line.
MAX_MESSAGE = 300
