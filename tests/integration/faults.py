"""Faults the tests inflict for real: a process's broker connections closed from the
broker's side (``rabbitmqctl close_connection``), as a broker restart or a network cut
looks to its clients."""

from __future__ import annotations

import asyncio
import os
import shutil

import pytest

needs_rabbitmqctl = pytest.mark.skipif(
    shutil.which("rabbitmqctl") is None, reason="needs the broker's rabbitmqctl"
)


def client_ports(pid: int) -> set[int]:
    """The local TCP ports of process ``pid``'s sockets (read from /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target.removeprefix("socket:[").removesuffix("]"))
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


async def rabbitmqctl(*arguments: str) -> str:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", *arguments, stdout=asyncio.subprocess.PIPE
    )
    output, _ = await process.communicate()
    assert process.returncode == 0, arguments
    return output.decode()


async def cut_broker_connections(pid: int, why: str = "cut by a test") -> int:
    """Close every broker connection of process ``pid`` from the broker's side; how many
    there were."""
    ports = client_ports(pid)
    listed = await rabbitmqctl("list_connections", "pid", "peer_port", "--no-table-headers")
    closed = 0
    for line in listed.splitlines():
        fields = line.split()
        if len(fields) == 2 and int(fields[1]) in ports:
            await rabbitmqctl("close_connection", fields[0], why)
            closed += 1
    return closed
