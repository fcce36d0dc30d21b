"""Who may act in the web console, and forms that cannot be sent from another site.

Reading needs nothing; every action needs ``FLEET_CONSOLE_TOKEN`` (``name:secret``, or a
bare secret whose name is ``console``). Logging in with the token sets a session cookie
that is an HMAC of the token, never the token itself, and expires; every form carries a
CSRF token, an HMAC of that session cookie and a nonce of its own, so a page of another
site, which can neither read the cookie nor compute the HMAC, cannot make a valid form.
The cookie is also SameSite=Strict, so a browser does not send it from another site at all.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

SESSION_COOKIE = "fleet_console_session"
# A login lasts this long; changing the token ends every session at once.
SESSION_SECONDS = 12 * 3600
DEFAULT_NAME = "console"

NOT_CONFIGURED = "the console has no token configured: set FLEET_CONSOLE_TOKEN to enable actions"
LOG_IN = "actions need the console token; log in"
BAD_CSRF = (
    "the form carries no CSRF token valid for your session (sent from another page?);"
    " reload the page and try again"
)
WRONG_TOKEN = "wrong token"


class Refused(Exception):
    """An action refused for want of a token, a login or a valid form (a 403 page)."""


@dataclass(frozen=True)
class ConsoleToken:
    name: str  # who acts, as the audit log records it
    secret: str

    @classmethod
    def parse(cls, configured: str | None) -> ConsoleToken | None:
        """``name:secret`` or a bare secret; None when unset or with an empty secret."""
        if configured is None or not configured.strip():
            return None
        name, colon, secret = configured.strip().partition(":")
        if not colon:
            name, secret = DEFAULT_NAME, name
        if not secret:
            return None
        return cls(name.strip() or DEFAULT_NAME, secret)

    def accepts(self, given: str) -> bool:
        """The operator typed the token as configured, or its secret alone."""
        typed = given.strip().encode()
        whole = f"{self.name}:{self.secret}".encode()
        # Both compared, always: the time taken says nothing about which one was close.
        matches_secret = hmac.compare_digest(typed, self.secret.encode())
        matches_whole = hmac.compare_digest(typed, whole)
        return matches_secret or matches_whole

    def _mac(self, *parts: str) -> str:
        message = "\x00".join(parts).encode()
        return hmac.new(self.secret.encode(), message, hashlib.sha256).hexdigest()

    def session(self, now: float) -> str:
        """The session cookie's value for a login at ``now`` (seconds since the epoch)."""
        issued = str(int(now))
        return f"{issued}.{self._mac('session', self.name, issued)}"

    def session_valid(self, value: str | None, now: float) -> bool:
        if not value:
            return False
        issued, _, mac = value.partition(".")
        if not issued.isdigit():
            return False
        if not hmac.compare_digest(mac, self._mac("session", self.name, issued)):
            return False
        return 0 <= now - int(issued) <= SESSION_SECONDS

    def csrf(self, session: str) -> str:
        """A CSRF token for one form of ``session``: a fresh nonce and its HMAC."""
        nonce = secrets.token_urlsafe(16)
        return f"{nonce}.{self._mac('csrf', session, nonce)}"

    def csrf_valid(self, session: str, token: str | None) -> bool:
        if not token:
            return False
        nonce, _, mac = token.partition(".")
        return bool(nonce) and hmac.compare_digest(mac, self._mac("csrf", session, nonce))


def authorise(token: ConsoleToken | None, session: str | None, csrf: str | None, now: float) -> str:
    """The operator's name if an action may go ahead; else ``Refused`` saying why."""
    if token is None:
        raise Refused(NOT_CONFIGURED)
    if session is None or not token.session_valid(session, now):
        raise Refused(LOG_IN)
    if not token.csrf_valid(session, csrf):
        raise Refused(BAD_CSRF)
    return token.name
