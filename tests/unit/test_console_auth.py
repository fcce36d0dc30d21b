"""The console's token, session cookie and CSRF tokens (api/console/auth.py)."""

from __future__ import annotations

import pytest

from api.console import auth
from api.console.auth import ConsoleToken, Refused, authorise

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("configured", "name", "secret"),
    [
        ("alice:s3cret", "alice", "s3cret"),
        ("s3cret", "console", "s3cret"),
        ("  bob:with:colons  ", "bob", "with:colons"),
        (":s3cret", "console", "s3cret"),
    ],
)
def test_a_token_is_a_name_and_a_secret(configured: str, name: str, secret: str) -> None:
    assert ConsoleToken.parse(configured) == ConsoleToken(name, secret)


@pytest.mark.parametrize("configured", [None, "", "   ", "alice:"])
def test_no_secret_is_no_token(configured: str | None) -> None:
    assert ConsoleToken.parse(configured) is None


def test_the_login_takes_the_whole_token_or_its_secret_and_nothing_else() -> None:
    token = ConsoleToken("alice", "s3cret")
    assert token.accepts("alice:s3cret")
    assert token.accepts("s3cret")
    assert token.accepts("  s3cret\n")
    for wrong in ("", "alice", "s3cre", "s3cret2", "bob:s3cret", "alice:S3CRET"):
        assert not token.accepts(wrong), wrong


def test_a_session_is_derived_from_the_token_not_the_token() -> None:
    token = ConsoleToken("alice", "s3cret")
    session = token.session(NOW)
    assert "s3cret" not in session and "alice" not in session
    assert token.session_valid(session, NOW + 60)


def test_a_session_expires_and_is_not_valid_before_it_was_made() -> None:
    token = ConsoleToken("alice", "s3cret")
    session = token.session(NOW)
    assert token.session_valid(session, NOW + auth.SESSION_SECONDS)
    assert not token.session_valid(session, NOW + auth.SESSION_SECONDS + 1)
    assert not token.session_valid(session, NOW - 60)


def test_a_session_of_another_token_or_edited_is_refused() -> None:
    token = ConsoleToken("alice", "s3cret")
    session = token.session(NOW)
    assert not ConsoleToken("alice", "other").session_valid(session, NOW)
    assert not ConsoleToken("bob", "s3cret").session_valid(session, NOW)
    issued, mac = session.split(".")
    later = f"{int(issued) + 3600}.{mac}"  # the time moved on, to outlive the expiry
    assert not token.session_valid(later, NOW + 3600)
    for broken in (None, "", "garbage", f"{issued}.", f".{mac}", f"x{issued}.{mac}"):
        assert not token.session_valid(broken, NOW), broken


def test_a_csrf_token_belongs_to_its_session() -> None:
    token = ConsoleToken("alice", "s3cret")
    session = token.session(NOW)
    csrf = token.csrf(session)
    assert token.csrf_valid(session, csrf)
    assert token.csrf(session) != csrf  # a nonce of its own per form
    assert not token.csrf_valid(token.session(NOW + 1), csrf)  # another session's
    assert not ConsoleToken("alice", "other").csrf_valid(session, csrf)
    nonce, mac = csrf.split(".")
    for broken in (None, "", nonce, f"{nonce}.", f".{mac}", f"other{nonce}.{mac}"):
        assert not token.csrf_valid(session, broken), broken


def test_authorise_says_why_an_action_is_refused() -> None:
    token = ConsoleToken("alice", "s3cret")
    session = token.session(NOW)
    assert authorise(token, session, token.csrf(session), NOW) == "alice"
    cases = [
        (None, session, token.csrf(session), auth.NOT_CONFIGURED),
        (token, None, token.csrf(session), auth.LOG_IN),
        (token, "forged.0000", token.csrf(session), auth.LOG_IN),
        (token, session, None, auth.BAD_CSRF),
        (token, session, "made.up", auth.BAD_CSRF),
    ]
    for configured, cookie, csrf, reason in cases:
        with pytest.raises(Refused) as refused:
            authorise(configured, cookie, csrf, NOW)
        assert str(refused.value) == reason
