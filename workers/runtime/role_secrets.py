"""Each database role's own secret (its password), kept where only the operator can read it.

``fleet db init`` gives every login role of a namespace a secret of its own: the one the
operator gave (``FLEET_DB_URLS``, ``FLEET_DB_SECRETS``) or, where none was given, a random
one generated once and kept in the namespace's secrets file; a process that connects as a
role reads that role's entry alone (``Settings.secret_for``).

The secrets file is a JSON object, role name -> secret, of mode 0600, in a directory made
0700 when fleet makes it. It is always written whole to a new temporary file, created 0600
from the start (never readable by others, even for a moment), then renamed over the old
one, so a reader sees the old file or the new one, never half of one. A file that group or
others may read or write is refused: it may already have leaked, so it is not used.

    generated = ensure(path, ["fleet_payment", "fleet_ops"])   # idempotent
    password = read(path, "fleet_payment")
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

# Bytes of randomness in a generated secret (43 URL-safe characters).
SECRET_BYTES = 32
FILE_MODE = 0o600
DIRECTORY_MODE = 0o700


class SecretsError(Exception):
    """A secret missing, refused or unsafely kept: a setting to fix (the CLI's exit 2). The
    message is one line, and names roles and files, never a secret."""


class MissingSecret(SecretsError):
    """A role has no secret: none given, none kept."""


class InsecureSecretsFile(SecretsError):
    """The secrets file is open to group or others, or is not what fleet writes."""


class SharedSecret(SecretsError):
    """Two roles were given one secret (or a role an empty one)."""


def default_path(namespace: str, environ: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_CONFIG_HOME/fleet/<namespace>.secrets.json``, ``~/.config/...`` without it
    (the XDG Base Directory rule: a relative XDG_CONFIG_HOME is ignored)."""
    config = environ.get("XDG_CONFIG_HOME", "")
    if os.path.isabs(config):
        return Path(config) / "fleet" / f"{namespace}.secrets.json"
    try:
        home = Path.home()
    except RuntimeError:  # no HOME and no passwd entry (a container's arbitrary uid)
        raise SecretsError(
            "no home directory to keep the roles' secrets in: set FLEET_SECRETS_FILE"
        ) from None
    return home / ".config" / "fleet" / f"{namespace}.secrets.json"


def read(path: Path, role: str) -> str:
    """The secret kept for ``role``: its entry alone is kept from the file."""
    kept = _load(path)
    if kept is None:
        raise MissingSecret(
            f"no secret for role {role}: {path} does not exist (run 'fleet db init', or give"
            " the role's secret in FLEET_DB_SECRETS or FLEET_DB_URLS)"
        )
    try:
        return kept[role]
    except KeyError:
        raise MissingSecret(
            f"no secret for role {role} in {path} (run 'fleet db init', or give the role's"
            " secret in FLEET_DB_SECRETS or FLEET_DB_URLS)"
        ) from None


def ensure(path: Path, roles: Iterable[str]) -> list[str]:
    """A secret kept for each of ``roles``: generated for those that have none, kept as it
    is for the others. Returns the roles whose secret was generated now. Two runs at once
    (two ``fleet db init``) take turns, so each role gets one secret."""
    wanted = list(dict.fromkeys(roles))
    if not wanted:
        return []  # no file is made for nothing
    path.parent.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    with _locked(path.parent):
        kept = _load(path) or {}
        generated = [role for role in wanted if role not in kept]
        if generated:
            kept.update({role: secrets.token_urlsafe(SECRET_BYTES) for role in generated})
            _write(path, kept)
    return generated


def forget(path: Path, roles: Iterable[str]) -> list[str]:
    """Removes the secrets of ``roles`` (their namespace is torn down); the file goes once
    it holds none. Returns the roles that had one."""
    if not path.exists():
        return []
    with _locked(path.parent):
        kept = _load(path) or {}
        gone = [role for role in dict.fromkeys(roles) if kept.pop(role, None) is not None]
        if not kept:
            path.unlink(missing_ok=True)
        elif gone:
            _write(path, kept)
    return gone


def kept_roles(path: Path) -> list[str]:
    """The roles the file keeps a secret for (their names only)."""
    return sorted(_load(path) or {})


def check_distinct(secret_of: Mapping[str, str]) -> None:
    """Refuses an empty secret, and one secret given to two roles: whoever holds one role's
    credentials could log in as the other."""
    role_of: dict[str, str] = {}
    for role, secret in secret_of.items():
        if not secret:
            raise SharedSecret(f"role {role} was given an empty secret")
        if secret in role_of:
            raise SharedSecret(
                f"roles {role_of[secret]} and {role} were given the same secret: each role"
                " needs its own (FLEET_DB_SECRETS, FLEET_DB_URLS)"
            )
        role_of[secret] = role


def _load(path: Path) -> dict[str, str] | None:
    """The file's secrets, or None when there is no file. Its mode is checked on the file
    opened, so it cannot be swapped between the check and the read."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise SecretsError(f"cannot read secrets file {path}: {error.strerror or error}") from None
    with os.fdopen(descriptor, encoding="utf-8") as file:
        _check_private(path, os.fstat(file.fileno()))
        try:
            kept = json.load(file)
        except (ValueError, UnicodeDecodeError):
            kept = None
    if not isinstance(kept, dict) or not all(
        isinstance(role, str) and isinstance(secret, str) for role, secret in kept.items()
    ):
        # Nothing of its content is shown: it may hold secrets.
        raise InsecureSecretsFile(
            f"secrets file {path} is not a JSON object of role names to secrets"
        )
    return kept


def _check_private(path: Path, status: os.stat_result) -> None:
    if os.name != "posix":
        return  # modes mean nothing there; the user's profile directory is private
    if not stat.S_ISREG(status.st_mode):
        raise InsecureSecretsFile(f"secrets file {path} is not a regular file")
    if status.st_mode & 0o077:
        raise InsecureSecretsFile(
            f"secrets file {path} is open to group or others (mode"
            f" {stat.S_IMODE(status.st_mode):04o}): refused; 'chmod 600 {path}' if nobody else"
            " read it, else give every role a new secret"
        )


def _write(path: Path, kept: Mapping[str, str]) -> None:
    """The whole file anew: a temporary file beside it, created 0600, then renamed over it."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            json.dump(dict(sorted(kept.items())), file, indent=2)
            file.write("\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    """The rename made durable (POSIX: a directory's entries are synced through it)."""
    if os.name != "posix":
        return
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """An exclusive lock on the directory (flock, released when the process ends): read,
    add, write as one step. Where there is no flock (Windows), none."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock
