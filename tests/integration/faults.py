"""Faults the tests inflict for real: a process's broker connections closed from the
broker's side (``rabbitmqctl close_connection``), as a broker restart or a network cut
looks to its clients."""

from __future__ import annotations

import asyncio
import shutil

import pytest

# client_ports: re-exported for the tests that match a process's sockets.
from workers.operations.chaos import client_ports, close_broker_connections

__all__ = ["client_ports", "cut_broker_connections", "needs_rabbitmqctl", "rabbitmqctl"]

needs_rabbitmqctl = pytest.mark.skipif(
    shutil.which("rabbitmqctl") is None, reason="needs the broker's rabbitmqctl"
)


async def rabbitmqctl(*arguments: str) -> str:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", *arguments, stdout=asyncio.subprocess.PIPE
    )
    output, _ = await process.communicate()
    assert process.returncode == 0, arguments
    return output.decode()


async def cut_broker_connections(pid: int, why: str = "cut by a test") -> int:
    """Close every broker connection of process ``pid`` from the broker's side; how many
    there were (``fleet chaos`` does the same to its workers)."""
    return await close_broker_connections(pid, why)
