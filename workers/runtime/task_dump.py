"""What a running process is waiting on: every asyncio task's stack, logged on SIGUSR1.

    kill -USR1 <pid of a fleet worker>

A worker that holds deliveries and does nothing (a confirm that never comes, a lock that is
never released) says nothing in its log; its tasks' stacks say where each one waits.
"""

from __future__ import annotations

import asyncio
import io
import logging
import signal

log = logging.getLogger("fleet.tasks")


def stacks(tasks: set[asyncio.Task[object]]) -> str:
    """Each task's name and where it waits, innermost frame last."""
    out = io.StringIO()
    for task in sorted(tasks, key=lambda task: task.get_name()):
        out.write(f"task {task.get_name()}: {task.get_coro()!r}\n")
        task.print_stack(limit=12, file=out)
    return out.getvalue()


def log_stacks() -> None:
    tasks = asyncio.all_tasks()
    log.warning("%d tasks (SIGUSR1):\n%s", len(tasks), stacks(tasks))


def dump_on_sigusr1() -> None:
    """In the running loop: SIGUSR1 logs every task's stack (where signals exist)."""
    if hasattr(signal, "SIGUSR1"):
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, log_stacks)
