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

from workers.operations import InvalidRequest
from workers.runtime import catalog

# A worker that ran this long before dying is restarted at once; quicker deaths wait
# 1, 2, 4 ... up to MAX_BACKOFF seconds.
HEALTHY_RUN_SECONDS = 30.0
MAX_BACKOFF_SECONDS = 30.0
STOP_GRACE_SECONDS = 30.0


class Supervisor:
    def __init__(
        self, names: list[str], replicas: int, as_json: bool, metrics_port: int = 0
    ) -> None:
        self.labels = [
            (name, f"{name}.{i}" if replicas > 1 else name)
            for name in names
            for i in range(1, replicas + 1)
        ]
        # Each process's /metrics port, from metrics_port upwards in the order of labels
        # (deploy/prometheus.yml lists them); 0: no metrics served.
        self.metrics_ports = {
            label: metrics_port + index if metrics_port else 0
            for index, (_, label) in enumerate(self.labels)
        }
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
            port = self.metrics_ports[label]
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "cli",
                "worker",
                service,
                *(["--metrics-port", str(port)] if port else []),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the supervisor only; it stops them
            )
            self.children[label] = process
            metrics_note = f"; metrics on http://127.0.0.1:{port}/metrics" if port else ""
            self.say(label, f"started (pid {process.pid}){metrics_note}")
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


def chosen_services(only: str | None) -> list[str]:
    """The services named in ``only`` (comma-separated), or all of them."""
    names = list(catalog.SERVICES) if only is None else [n.strip() for n in only.split(",")]
    names = [name for name in names if name]
    unknown = [name for name in names if name not in catalog.SERVICES]
    if unknown or not names:
        raise InvalidRequest(
            f"unknown service(s) {', '.join(unknown) or '(none given)'};"
            f" runnable: {', '.join(catalog.SERVICES)}"
        )
    return names
