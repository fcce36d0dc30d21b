"""Running the fleet's coroutines on the event loop the settings choose.

    result = loop.run(main(), settings)

uvloop is the default: a worker's per-message cost is mostly event-loop and protocol code,
and uvloop cuts the CPU of each delivery (bench/consumer_throughput.py --loop). It is not
built for Windows; there, and with ``FLEET_EVENT_LOOP=asyncio``, asyncio's own loop runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from workers.runtime.settings import Settings

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T], settings: Settings) -> T:
    if settings.event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:  # not installed here (Windows): asyncio's loop does the same work
            pass
        else:
            return uvloop.run(main)
    return asyncio.run(main)
