"""A private PostgreSQL server for the fault tests: a cluster of its own, made with the
machine's PostgreSQL 15 binaries (``initdb``, ``pg_ctl``) in a temporary directory, on a free
port, so a test can restart or crash it without touching the shared server on 5432.

    async with PrivateServer() as server:          # initdb, then started
        settings = namespace_settings((amqp_url, server.admin_url))
        await server.restart(mode="immediate")     # a crash: recovery from the WAL on start
    # stopped, its directory removed, even when the test failed

``initdb`` and ``postgres`` refuse to run as root: as root (as here and on CI) every command
runs as the ``postgres`` OS user (``runuser -u postgres --``), in a directory it owns.
Authentication is ``trust`` and the superuser is ``postgres``, as on the shared server; with
``password_auth=True``, every other role must give its password over TCP (scram-sha-256),
as a production server asks.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import socket
import tempfile
from pathlib import Path
from types import TracebackType

import pytest

PG_BIN = Path("/usr/lib/postgresql/15/bin")
OS_USER = "postgres"  # who runs the server when the tests run as root

needs_postgresql_binaries = pytest.mark.skipif(
    not (PG_BIN / "initdb").exists(), reason="needs PostgreSQL 15's initdb and pg_ctl"
)

# Every worker of a fleet keeps a pool, its relay a connection; the tests' own engines too.
MAX_CONNECTIONS = 300


class PrivateServer:
    def __init__(self, *, bin_dir: Path = PG_BIN, password_auth: bool = False) -> None:
        self.bin_dir = bin_dir
        self.port = _free_port()
        self.password_auth = password_auth
        self.directory: Path | None = None  # made by start()

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def data_directory(self) -> Path:
        assert self.directory is not None, "the server was never started"
        return self.directory / "data"

    @property
    def log_file(self) -> Path:
        assert self.directory is not None, "the server was never started"
        return self.directory / "server.log"

    async def __aenter__(self) -> PrivateServer:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Make the cluster on first use, then start it and wait until it accepts
        connections (after crash recovery, when the last stop was immediate)."""
        if self.directory is None:
            await self._init()
        await self._pg_ctl("start", "-l", str(self.log_file), "-t", "120")

    async def restart(self, mode: str = "immediate", *, down_for: float = 0.0) -> None:
        """Stop with ``pg_ctl -m mode`` (immediate: every backend killed, no checkpoint, as
        a crash), stay down ``down_for`` seconds, then start again."""
        await self._pg_ctl("stop", "-m", mode)
        await asyncio.sleep(down_for)
        await self.start()

    async def stop(self) -> None:
        """Stop the server (fast: sessions are ended) and remove its directory."""
        if self.directory is None:
            return
        if (self.data_directory / "postmaster.pid").exists():
            try:
                await self._pg_ctl("stop", "-m", "fast", "-t", "60")
            except AssertionError:
                await self._pg_ctl("stop", "-m", "immediate")
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory = None

    def log(self, lines: int = 40) -> str:
        """The last lines of the server's log."""
        if self.directory is None or not self.log_file.exists():
            return ""
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    async def _init(self) -> None:
        directory = Path(tempfile.mkdtemp(prefix="fleet-pg-"))
        if os.geteuid() == 0:
            user = pwd.getpwnam(OS_USER)
            os.chown(directory, user.pw_uid, user.pw_gid)
        self.directory = directory
        await self._run(
            "initdb",
            "-D",
            str(self.data_directory),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",  # the cluster is thrown away after the test
        )
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{directory}'",
            "max_connections": str(MAX_CONNECTIONS),
        }
        _append_settings(self.data_directory / "postgresql.conf", settings)
        if self.password_auth:
            # First match wins: the admin as on the shared server, every other role by
            # password (SCRAM), also on the socket, so no role gets in without its own.
            (self.data_directory / "pg_hba.conf").write_text(
                "local all postgres trust\n"
                "host all postgres 127.0.0.1/32 trust\n"
                "local all all scram-sha-256\n"
                "host all all 127.0.0.1/32 scram-sha-256\n"
            )

    async def _pg_ctl(self, action: str, *options: str) -> None:
        await self._run("pg_ctl", action, "-D", str(self.data_directory), "-w", *options)

    async def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin_dir / program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", OS_USER, "--", *command]
        process = await asyncio.create_subprocess_exec(
            *command,
            cwd=self.directory,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        if process.returncode != 0:
            raise AssertionError(
                f"{program} {' '.join(args)} exited {process.returncode}:\n"
                f"{output.decode(errors='replace')}\n{self.log()}"
            )


def _append_settings(conf: Path, settings: dict[str, str]) -> None:
    with open(conf, "a") as lines:
        lines.writelines(f"{key} = {value}\n" for key, value in settings.items())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
