"""A private MariaDB server for the fault tests: a data directory of its own, made with the
machine's ``mariadb-install-db`` in a temporary directory and served by ``mariadbd`` on a
free port, so a test can stop or kill it without touching the shared server on 3306.

    async with PrivateMariaDB() as server:          # installed, then started
        settings = namespace_settings(urls, mariadb_admin_url=server.admin_url, ...)
        await server.restart(down_for=45)           # stopped (SIGTERM), started again
    # stopped, its directory removed, even when the test failed

``mariadbd`` will not run as root: as root (as here and on CI) it runs as the ``mysql`` OS
user, in a directory that user owns. The admin is ``root`` without a password, as on the
shared server.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import tempfile
from pathlib import Path
from types import TracebackType

import pytest

from tests.integration.pg_server import _free_port

INSTALL_DB = shutil.which("mariadb-install-db") or "/usr/bin/mariadb-install-db"
MARIADBD = "/usr/sbin/mariadbd"
OS_USER = "mysql"

needs_mariadb_binaries = pytest.mark.skipif(
    not (Path(INSTALL_DB).exists() and Path(MARIADBD).exists()),
    reason="needs MariaDB's mariadb-install-db and mariadbd",
)


class PrivateMariaDB:
    def __init__(self) -> None:
        self.port = _free_port()
        self.directory: Path | None = None  # made by start()
        self.process: asyncio.subprocess.Process | None = None

    @property
    def admin_url(self) -> str:
        return f"mysql://root@127.0.0.1:{self.port}/"

    @property
    def log_file(self) -> Path:
        assert self.directory is not None, "the server was never started"
        return self.directory / "server.log"

    async def __aenter__(self) -> PrivateMariaDB:
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
        """Install the data directory on first use, then start the server and wait until it
        answers (after crash recovery, when it was killed)."""
        if self.directory is None:
            await self._install()
        assert self.directory is not None
        command = [
            MARIADBD,
            "--no-defaults",
            f"--datadir={self.directory / 'data'}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--socket={self.directory / 'mariadb.sock'}",
            f"--pid-file={self.directory / 'mariadb.pid'}",
            f"--log-error={self.log_file}",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=32M",
            "--max-connections=300",
        ]
        if os.geteuid() == 0:
            command = ["runuser", "-u", OS_USER, "--", *command]
        self.process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        for _ in range(240):
            if await self._answers():
                return
            if self.process.returncode is not None:
                break
            await asyncio.sleep(0.5)
        raise AssertionError(f"the private MariaDB did not start:\n{self.log()}")

    async def restart(self, *, down_for: float = 0.0, kill: bool = False) -> None:
        """Stop (SIGTERM: a clean shutdown; ``kill``: SIGKILL, as a crash), stay down
        ``down_for`` seconds, then start again."""
        await self._stop_process(signal.SIGKILL if kill else signal.SIGTERM)
        await asyncio.sleep(down_for)
        await self.start()

    async def stop(self) -> None:
        """Stop the server and remove its directory."""
        await self._stop_process(signal.SIGTERM)
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def log(self, lines: int = 40) -> str:
        if self.directory is None or not self.log_file.exists():
            return ""
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    async def _stop_process(self, sig: signal.Signals) -> None:
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        # runuser passes the signal on to the server it started (same session).
        os.killpg(process.pid, sig)
        try:
            await asyncio.wait_for(process.wait(), timeout=60)
        except TimeoutError:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()

    async def _install(self) -> None:
        directory = Path(tempfile.mkdtemp(prefix="fleet-mariadb-"))
        if os.geteuid() == 0:
            user = pwd.getpwnam(OS_USER)
            os.chown(directory, user.pw_uid, user.pw_gid)
        self.directory = directory
        process = await asyncio.create_subprocess_exec(
            INSTALL_DB,
            "--no-defaults",
            f"--datadir={directory / 'data'}",
            *([f"--user={OS_USER}"] if os.geteuid() == 0 else []),
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            cwd=directory,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        if process.returncode != 0:
            said = output.decode(errors="replace")
            raise AssertionError(f"mariadb-install-db exited {process.returncode}:\n{said}")

    async def _answers(self) -> bool:
        process = await asyncio.create_subprocess_exec(
            "mariadb-admin",
            "--no-defaults",
            "-h127.0.0.1",
            f"-P{self.port}",
            "-uroot",
            "--connect-timeout=2",
            "ping",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        return await process.wait() == 0
