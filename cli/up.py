"""``fleet up``: the whole fleet on one machine, every service in its own process.

A supervisor in the spirit of foreman or honcho: it prefixes each process's output with
its name, restarts a worker that dies (waiting longer after each quick death, and saying
so), and on Ctrl-C or SIGTERM asks every worker to stop gracefully, then waits for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time

import typer

from cli.db import service_databases
from cli.output import JsonOption, fail, print_json
from db.provision import provision
from workers import services
from workers.runtime import declare_topology
from workers.settings import get_settings

# A worker that ran this long before dying is restarted at once; quicker deaths wait
# 1, 2, 4 ... up to MAX_BACKOFF seconds.
HEALTHY_RUN_SECONDS = 30.0
MAX_BACKOFF_SECONDS = 30.0
STOP_GRACE_SECONDS = 30.0


class Supervisor:
    def __init__(self, names: list[str], replicas: int, as_json: bool) -> None:
        self.labels = [
            (name, f"{name}.{i}" if replicas > 1 else name)
            for name in names
            for i in range(1, replicas + 1)
        ]
        self.as_json = as_json
        self.stopping = asyncio.Event()
        self.children: dict[str, asyncio.subprocess.Process] = {}
        self.width = max(len(label) for _, label in self.labels)

    def say(self, label: str, line: str) -> None:
        if self.as_json:
            print_json_line({"process": label, "line": line})
        else:
            print(f"{label:<{self.width}} | {line}", flush=True)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.stop)
        await asyncio.gather(*(self.keep_running(service, label) for service, label in self.labels))

    def stop(self) -> None:
        if self.stopping.is_set():
            return
        self.stopping.set()
        for process in self.children.values():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)

    async def keep_running(self, service: str, label: str) -> None:
        backoff = 1.0
        while not self.stopping.is_set():
            started = time.monotonic()
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "cli",
                "worker",
                service,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the supervisor only; it stops them
            )
            self.children[label] = process
            self.say(label, f"started (pid {process.pid})")
            assert process.stdout is not None
            async for raw in process.stdout:
                self.say(label, raw.decode(errors="replace").rstrip())
            code = await self._wait(process)
            del self.children[label]
            if self.stopping.is_set():
                self.say(label, f"stopped (exit {code})")
                return
            if time.monotonic() - started >= HEALTHY_RUN_SECONDS:
                backoff = 1.0
            self.say(label, f"died (exit {code}); restarting in {backoff:.0f}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), timeout=backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    async def _wait(self, process: asyncio.subprocess.Process) -> int:
        try:
            return await asyncio.wait_for(
                process.wait(), timeout=STOP_GRACE_SECONDS if self.stopping.is_set() else None
            )
        except TimeoutError:
            process.kill()
            return await process.wait()


def print_json_line(data: dict[str, str]) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


def up(
    only: str | None = typer.Option(
        None, "--services", help="Comma-separated, e.g. inventory,payment (default: all)."
    ),
    replicas: int = typer.Option(1, "--replicas", min=1, max=16, help="Processes per service."),
    as_json: bool = JsonOption,
) -> None:
    """Run every service as its own process (databases and topology created if missing)."""
    runnable = services.runnable()
    names = runnable if only is None else [name.strip() for name in only.split(",") if name.strip()]
    unknown = [name for name in names if name not in runnable]
    if unknown or not names:
        fail(
            f"unknown service(s) {', '.join(unknown) or '(none given)'};"
            f" runnable: {', '.join(runnable)}",
            2,
        )
    settings = get_settings()

    async def prepare() -> None:
        await provision(settings.pg_admin_url, service_databases(settings))
        await declare_topology(settings, [services.load(name) for name in runnable])

    asyncio.run(prepare())
    supervisor = Supervisor(names, replicas, as_json)
    if as_json:
        print_json(
            {
                "namespace": settings.namespace,
                "processes": [label for _, label in supervisor.labels],
            }
        )
    asyncio.run(supervisor.run())
