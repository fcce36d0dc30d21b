"""Who runs a command, as every command that changes something records it in the audit
log (the library asks each caller for the name; the console gives its token's name)."""

from __future__ import annotations

import getpass
import os


def operator_name() -> str:
    """$USER, else the login name."""
    name = os.environ.get("USER")
    if name:
        return name
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        return "unknown"
