"""The answer toolkit (``backends/answers.py``) every backend reads untrusted JSON with."""

from __future__ import annotations

from typing import Any

import pytest

from pgcli_jit.backends import answers
from pgcli_jit.backends.answers import AnswerError
from pgcli_jit.backends.credential_json import CredentialFormatError, parse_object
from pgcli_jit.backends.postgres.answers import Answer as PostgresAnswer
from pgcli_jit.backends.vault.backend import Answer as VaultAnswer
from pgcli_jit.core.errors import BackendError

NOW = 1_800_000_000.0


def why(fn: Any, *args: Any, **kwargs: Any) -> tuple[str | None, str]:
    with pytest.raises(AnswerError) as info:
        fn(*args, **kwargs)
    return info.value.key, info.value.why


@pytest.mark.parametrize("value", [True, "60", float("nan"), float("inf"), 10**400, 0, -1])
def test_a_length_of_time_is_a_positive_finite_number(value: Any) -> None:
    assert why(answers.seconds, {"ttl": value}, "ttl") == ("ttl", "must be a positive number of seconds")


def test_a_length_past_the_limit_says_the_limit() -> None:
    key, text = why(answers.seconds, {"ttl": 2**100}, "ttl")
    assert key == "ttl" and text.startswith("is longer than 366 days")
    assert answers.seconds({"d": 0}, "d", zero=True) == 0.0
    assert answers.seconds({}, "d", zero=True, default=0.0) == 0.0


def test_text_never_quotes_the_value() -> None:
    secret = "hunter2-\x1b[2J"
    for fn in (answers.text, answers.secret):
        with pytest.raises(AnswerError) as info:
            fn({"k": [secret]}, "k")
        assert "hunter2" not in str(info.value)
    assert why(answers.text, {"k": secret}, "k") == ("k", "holds a control character or is longer than 1024")
    assert why(answers.secret, {"k": "a\0b"}, "k") == ("k", "holds a NUL character")
    assert answers.secret({"k": secret}, "k") == secret  # a password may hold anything but NUL


def test_names_strict_or_informational() -> None:
    mixed = {"who": ["alice", 7, "b\x1bob", "carol"]}
    assert answers.names(mixed, "who", strict=False) == ["alice", "carol"]
    assert why(answers.names, mixed, "who") == ("who", "must be a list of names")
    assert answers.names({}, "who") == []


def test_the_same_mistake_reads_the_same_in_every_backend() -> None:
    """The words come from the toolkit; each backend only puts them in its frame."""
    with pytest.raises(CredentialFormatError) as broker:
        parse_object({"version": 1, "username": "u", "password": "p", "ttl": 60, "lease_id": 7}, now=NOW)
    with pytest.raises(AnswerError) as vault:
        VaultAnswer({"lease_id": 7}).lease_id()
    pg = PostgresAnswer({"reason": 7}, NOW, lambda message, hint: BackendError(message, hint=hint))
    with pytest.raises(BackendError) as server:
        pg.text("reason")
    assert str(broker.value) == str(vault.value) == '"lease_id" must be a string, not a number'
    assert "the server's answer is malformed: reason must be a string, not a number" in str(server.value)


def test_a_server_time_is_held_within_the_limit_both_ways() -> None:
    pg = PostgresAnswer({"server_now": NOW, "past": NOW - 400 * 86400, "soon": NOW + 60}, NOW,
                        lambda message, hint: BackendError(message, hint=hint))
    assert pg.when("soon") == NOW + 60
    with pytest.raises(BackendError, match="past is more than 366 days"):
        pg.when("past")
