"""Private RabbitMQ nodes for the fault and cluster tests: extra nodes of the machine's own
``rabbitmq-server`` (Debian's 3.10) on other ports, each with its own data, log and config
files under a directory of the test's, so a test can stop, restart or freeze a broker without
touching the shared one (``rabbit@localhost`` on 5672, which other tests use meanwhile).

What a second node on this machine needs besides its name, ports and directories:

- its own config file: ``/etc/rabbitmq/rabbitmq.conf`` pins the listener to 5672;
- its own ``rabbitmq-env.conf``: the machine's sets ``NODENAME=rabbit@localhost``;
- its own enabled-plugins file with nothing in it: the management plugin would take 15672;
- its own Erlang cookie (``$HOME/.erlang.cookie``, for the node and for ``rabbitmqctl``):
  the private nodes share one cookie among themselves, which is not the machine's, so a
  ``rabbitmqctl`` of these helpers cannot reach ``rabbit@localhost`` even by mistake;
- the machine's epmd (started by the shared node; a node starts one if none runs).

The node runs ``/usr/lib/rabbitmq/bin/rabbitmq-server`` directly as the test's user (the
``/usr/sbin`` wrappers switch to the ``rabbitmq`` user and its cookie). On this 2-core
machine a node answers AMQP about 4 s after it is launched.

Use::

    async with private_nodes(tmp_path) as nodes:
        node = await nodes.start("fault1")          # free ports picked
        ... node.amqp_url, await node.stop_app(), await node.start_app(),
        ... node.freeze(), node.thaw(), await node.rabbitmqctl("list_queues")
        cluster = await nodes.cluster("hare", 3)    # three joined nodes
    # every node stopped, its files removed, even when the test failed
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

import aio_pika
import pytest

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
HOST = "localhost"  # short node names, as the machine's own node has (rabbit@localhost)

# Shared by every private node (clustered nodes need one cookie) and unlike the machine's.
PRIVATE_COOKIE = "FLEETPRIVATETESTNODES"

# util-linux's setpriv (Debian's base system) sets the launcher's parent-death signal.
PARENT_DEATH_SIGNAL = (
    ("setpriv", "--pdeathsig", "TERM", "--") if shutil.which("setpriv") is not None else ()
)

needs_rabbitmq_server = pytest.mark.skipif(
    not (RABBITMQ_BIN / "rabbitmq-server").exists(),
    reason="needs the machine's rabbitmq-server to run private nodes",
)


class RabbitNode:
    """One private RabbitMQ node: ``name@localhost`` listening on 127.0.0.1:``port``, its
    files under ``base/name``."""

    def __init__(
        self,
        name: str,
        port: int,
        base: Path,
        *,
        dist_port: int | None = None,
        schedulers: int = 1,
        config: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.port = port
        self.dist_port = dist_port if dist_port is not None else port + 20000
        self.directory = Path(base) / name
        self.schedulers = schedulers
        # More rabbitmq.conf lines, e.g. {"heartbeat": "5"}.
        self.config = dict(config or {})
        self.process: asyncio.subprocess.Process | None = None

    @property
    def node(self) -> str:
        return f"{self.name}@{HOST}"

    @property
    def running(self) -> bool:
        """Started by this object and not stopped since (it may be frozen or app-stopped)."""
        return self.process is not None and self.process.returncode is None

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def beam_pid(self) -> int:
        """The Erlang VM's process (the launcher script is its parent)."""
        return int((self.directory / "node.pid").read_text().strip())

    def _environment(self) -> dict[str, str]:
        directory = self.directory
        erl_args = (
            f"+S {self.schedulers}:{self.schedulers} -kernel inet_dist_use_interface {{127,0,0,1}}"
        )
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))},
            "HOME": str(directory),  # the cookie, for the node and for rabbitmqctl
            "RABBITMQ_CONF_ENV_FILE": str(directory / "rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(directory / "log"),
            "RABBITMQ_CONFIG_FILE": str(directory / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(directory / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(directory / "node.pid"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": erl_args,
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def _write_files(self) -> None:
        directory = self.directory
        (directory / "mnesia").mkdir(parents=True, exist_ok=True)
        (directory / "log").mkdir(exist_ok=True)
        (directory / "rabbitmq-env.conf").write_text("")
        (directory / "enabled_plugins").write_text("[].\n")
        lines = {"listeners.tcp.default": f"127.0.0.1:{self.port}", **self.config}
        (directory / "rabbitmq.conf").write_text(
            "".join(f"{key} = {value}\n" for key, value in lines.items())
        )
        cookie = directory / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(PRIVATE_COOKIE)
            cookie.chmod(0o400)  # Erlang refuses a cookie others can read

    async def rabbitmqctl(self, *args: str, timeout: float = 60.0) -> str:
        """``rabbitmqctl -n name@localhost *args``; its output, or AssertionError with it."""
        code, output = await self._ctl(*args, timeout=timeout)
        if code != 0:
            raise AssertionError(f"rabbitmqctl {' '.join(args)} on {self.node}: {output}")
        return output

    async def _ctl(self, *args: str, timeout: float) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            str(RABBITMQ_BIN / "rabbitmqctl"),
            "-q",
            "-n",
            self.node,
            *args,
            env=self._environment(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            output, _ = await asyncio.wait_for(process.communicate(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            return -1, f"no answer within {timeout}s"
        assert process.returncode is not None
        return process.returncode, output.decode(errors="replace")

    async def start(self, timeout: float = 90.0) -> None:
        """Launch the node and wait until it answers AMQP."""
        if self.process is not None and self.process.returncode is None:
            raise RuntimeError(f"{self.node} is already running")
        self._write_files()
        # A node of this name left running by a killed test run (it has our cookie, so only
        # private nodes answer this).
        await self._ctl("stop", timeout=15)
        log = self._console_log()
        try:
            self.process = await asyncio.create_subprocess_exec(
                # If the test run dies without stopping its nodes (killed, timed out), the
                # launcher gets SIGTERM, on which it stops the node gracefully.
                *PARENT_DEATH_SIGNAL,
                str(RABBITMQ_BIN / "rabbitmq-server"),
                cwd=self.directory,
                env=self._environment(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C of the test run does not reach it first
            )
        finally:
            log.close()
        await self.wait_until_serving(timeout)

    def _console_log(self) -> BinaryIO:
        return open(self.directory / "log" / "stdout.log", "ab")

    async def wait_until_serving(self, timeout: float = 90.0) -> None:
        """Until an AMQP connection opens (the app may be stopped, frozen or booting)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.returncode is not None:
                raise AssertionError(f"{self.node} exited {self.process.returncode}:\n{self.log()}")
            try:
                # A plain TCP connect first: aio-pika logs every refused attempt as an error.
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", self.port), 2
                )
                writer.close()
                connection = await aio_pika.connect(self.amqp_url, timeout=2)
            except (OSError, TimeoutError, aio_pika.exceptions.AMQPError):
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"{self.node} did not answer within {timeout}s:\n{self.log()}"
                    ) from None
                await asyncio.sleep(0.25)
            else:
                await connection.close()
                return

    def log(self, lines: int = 30) -> str:
        """The last lines of the node's console output and log file."""
        found = []
        for path in (
            self.directory / "log" / "stdout.log",
            self.directory / "log" / f"{self.node}.log",
        ):
            if path.exists():
                found += path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(found)

    async def stop_app(self) -> None:
        """Stop the RabbitMQ application; the Erlang node stays up (as for a cluster join)."""
        await self.rabbitmqctl("stop_app")

    async def start_app(self, timeout: float = 90.0) -> None:
        await self.rabbitmqctl("start_app", timeout=timeout)
        await self.wait_until_serving(timeout)

    def freeze(self) -> None:
        """SIGSTOP the node's VM: its sockets stay open, nothing answers (a hung broker)."""
        os.kill(self.beam_pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.beam_pid, signal.SIGCONT)

    async def join(self, other: RabbitNode) -> None:
        """Make this node a member of ``other``'s cluster (its own data is reset)."""
        await self.stop_app()
        await self.rabbitmqctl("reset")
        await self.rabbitmqctl("join_cluster", other.node)
        await self.start_app()

    async def running_nodes(self) -> list[str]:
        """The cluster members this node sees running."""
        status = await self.rabbitmqctl("cluster_status", "--formatter", "json")
        running: list[str] = json.loads(status)["running_nodes"]
        return running

    async def stop(self, *, keep_data: bool = False) -> None:
        """Stop the node (killed if it does not stop in time) and remove its files, unless
        ``keep_data``: then ``start()`` brings it back as it was (a cluster member rejoins)."""
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(OSError, ValueError):
                self.thaw()  # a frozen node cannot stop itself
            code, _ = await self._ctl("stop", timeout=30)
            if code != 0:
                with contextlib.suppress(OSError, ValueError):
                    os.kill(self.beam_pid, signal.SIGKILL)
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                os.killpg(self.process.pid, signal.SIGKILL)
                await self.process.wait()
        if not keep_data:
            shutil.rmtree(self.directory, ignore_errors=True)


def free_port() -> int:
    """A port nothing listens on, whose distribution port (+20000) is free too."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port + 20000 < 65536 and _free(port + 20000):
            return port


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class PrivateNodes:
    """The nodes a test started (``private_nodes``); names get a random suffix so that two
    test runs on one machine (one epmd) do not clash."""

    def __init__(self, base: Path) -> None:
        self.base = Path(base)
        self.nodes: list[RabbitNode] = []
        self._suffix = secrets.token_hex(2)

    async def start(
        self, name: str, port: int | None = None, *, config: Mapping[str, str] | None = None
    ) -> RabbitNode:
        """A new node, started (``config``: more rabbitmq.conf lines)."""
        node = RabbitNode(f"{name}{self._suffix}", port or free_port(), self.base, config=config)
        self.nodes.append(node)
        await node.start()
        return node

    async def cluster(
        self, name: str, size: int = 3, *, config: Mapping[str, str] | None = None
    ) -> list[RabbitNode]:
        """``size`` fresh nodes joined into one cluster; the first is the seed."""
        members = list(
            await asyncio.gather(*(self.start(f"{name}{i}", config=config) for i in range(size)))
        )
        for member in members[1:]:
            await member.join(members[0])
        return members

    async def stop_all(self) -> None:
        await asyncio.gather(*(node.stop() for node in self.nodes), return_exceptions=True)


@contextlib.asynccontextmanager
async def private_nodes(base: Path | str) -> AsyncIterator[PrivateNodes]:
    """Private nodes under ``base``, all stopped and removed when the block ends, however."""
    nodes = PrivateNodes(Path(base))
    try:
        yield nodes
    finally:
        await nodes.stop_all()


def members(nodes: Sequence[RabbitNode]) -> list[str]:
    """The node names of ``nodes``, as ``cluster_status`` and ``list_queues members`` name them."""
    return sorted(node.node for node in nodes)
