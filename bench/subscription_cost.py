"""What consuming through FastStream costs, against consuming straight through aio-pika.

Three ways of consuming one durable quorum queue, in this process, in one run, with the
same prefetch (``--prefetch``, default the fleet's 20) and batch size (``--batch-size``,
default the fleet's 10):

* (a) bare aio-pika: a channel with the prefetch as QoS, ``queue.consume`` with a callback
  that counts and acks every ``batch size``-th delivery with one ``multiple`` ack; the floor
  of the transport;
* (b) the fleet's ``Subscription`` (``workers.runtime.subscription``, ``FLEET_CONSUMER=
  aio-pika``): a task per delivery, ``Batches``, ``process_and_settle``;
* (c) the fleet's ``FastStreamSubscription`` (``workers.runtime.faststream_subscription``,
  ``FLEET_CONSUMER=faststream``): the same, each delivery through a FastStream subscriber.

With ``--full``, two more: (d) and (e), the fleet's real consumer (an inventory worker in
this process, with ``FLEET_CONSUMER=aio-pika`` and ``faststream``; its decoding, its
transaction per batch in PostgreSQL; ``consumer_throughput.time_fleet``), which is the
direct path the goal is set against. And always a last row: FastStream's own CPU per
delivery without a broker (``FleetSubscriber.consume`` called on a stand-in delivery, with a
``receive`` that does nothing), which the noise of a shared machine does not reach.

(b) and (c) are fed to a stand-in consumer whose ``process_batch`` returns an applied
outcome per delivery: no decoding, no database, so what is left is the cost of consuming.
Each run preloads N persistent messages (the body of a typical ``stock.reserved``, with
publisher confirms, untimed), then times from the start of consuming until every delivery
was processed and the subscription stopped (its acks sent, its channel closed); the queue
must then be empty and every message processed exactly once. The methods take turns,
``--runs`` rounds, each round in another order; the table shows medians.

How to read it: ``cpu ms/msg`` is this process's CPU time in the timed window over N (the
broker runs elsewhere; on this machine they share two cores, so compare within a run).
``extra ms/msg`` is a row's CPU per message minus the row before it's, the median over the
rounds of that difference (both ran in the same round, so a shared machine's drift cancels
out): the price of the fleet's batching over the bare transport, then the price of
FastStream over the fleet's direct path. The goal: FastStream adds at most 10 % of the
direct path's CPU per message: (e) over (d) with ``--full``; (c) over (b) is the stricter
reading, against a consumer that does nothing.
Nothing here asserts on time.

    uv run python bench/subscription_cost.py [--messages 4000] [--runs 5] [--full] [--json]
    uv run python bench/subscription_cost.py --profile faststream   # cProfile, one run
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

import aio_pika
from _support import (
    BenchNamespace,
    add_loop_option,
    bench_namespace,
    fresh_namespace,
    run,
    show,
    stock_reserved_body,
)
from aio_pika.abc import AbstractIncomingMessage

from contracts import StockReserved
from workers.runtime import connections
from workers.runtime.batches import Turn
from workers.runtime.consumer import Outcome
from workers.runtime.decision import Decision
from workers.runtime.faststream_subscription import FleetBroker, subscribe, subscribe_handler
from workers.runtime.service import Handler
from workers.runtime.settings import Settings

METHODS = (
    "a. bare aio-pika",
    "b. Subscription (aio-pika)",
    "c. FastStreamSubscription",
)
FULL = ("d. inventory worker, aio-pika", "e. inventory worker, faststream")
ALONE = "FastStream alone (no broker)"
GOAL = 0.10  # FastStream's extra CPU per message, at most this share of the direct path's


def _never(message: object) -> Decision[object]:
    raise NotImplementedError("the stand-in consumer applies nothing")


HANDLER = Handler(service="bench", name="cost", models=(StockReserved,), decide=_never)


class StandInConsumer:
    """``Consumer.process_batch`` without decoding or a database: an applied outcome each."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.processed = 0
        self.ids: set[str | None] = set()
        self.done = asyncio.Event()

    async def process_batch(
        self, handler: Handler, raws: Sequence[AbstractIncomingMessage], turn: Turn | None = None
    ) -> list[Outcome]:
        self.processed += len(raws)
        self.ids.update(raw.message_id for raw in raws)
        if self.processed >= self.expected:
            self.done.set()
        return [Outcome.APPLIED] * len(raws)


async def preload(settings: Settings, queue: str, count: int) -> None:
    body = stock_reserved_body()
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        for start in range(0, count, 500):
            await asyncio.gather(
                *(
                    channel.default_exchange.publish(
                        aio_pika.Message(
                            body,
                            message_id=str(uuid.uuid4()),
                            content_type="application/json",
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key=queue,
                    )
                    for _ in range(start, min(start + 500, count))
                )
            )
    finally:
        await connection.close()


async def consume_bare(settings: Settings, queue_name: str, count: int) -> StandInConsumer:
    """(a): count and ack every batch-size-th delivery (multiple), the last one at the end."""
    counter = StandInConsumer(count)
    connection = await connections.connect_robust(settings.broker_urls)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=settings.prefetch)
        queue = await channel.declare_queue(queue_name, passive=True)
        every = settings.batch_size

        async def on_delivery(message: AbstractIncomingMessage) -> None:
            counter.processed += 1
            counter.ids.add(message.message_id)
            if counter.processed % every == 0 or counter.processed == count:
                await message.ack(multiple=True)
            if counter.processed >= count:
                counter.done.set()

        tag = await queue.consume(on_delivery)
        await counter.done.wait()
        await queue.cancel(tag)
        await channel.close()
    finally:
        await connection.close()
    return counter


async def consume_fleet(settings: Settings, count: int) -> StandInConsumer:
    """(b) or (c), as ``settings.consumer`` says, exactly as a worker builds them."""
    consumer = StandInConsumer(count)
    connection = await connections.connect_robust(settings.broker_urls)
    try:
        (subscription,) = subscribe(connection, settings, [HANDLER], consumer)  # type: ignore[arg-type]
        await subscription.start()
        await consumer.done.wait()
        await subscription.stop()
    finally:
        await connection.close()
    return consumer


Consume = Callable[[], Awaitable[StandInConsumer]]


def consumers(settings: Settings, queue: str, count: int) -> dict[str, Consume]:
    direct = settings.model_copy(update={"consumer": "aio-pika"})
    faststream = settings.model_copy(update={"consumer": "faststream"})
    return {
        METHODS[0]: lambda: consume_bare(settings, queue, count),
        METHODS[1]: lambda: consume_fleet(direct, count),
        METHODS[2]: lambda: consume_fleet(faststream, count),
    }


async def measure(
    bench: BenchNamespace, queue: str, count: int, consume: Consume
) -> dict[str, Any]:
    await bench.purge(queue)
    await preload(bench.settings, queue, count)
    queued = await bench.depth(queue)
    started, cpu = time.perf_counter(), time.process_time()
    consumer = await asyncio.wait_for(consume(), timeout=300)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    left = await bench.depth(queue)
    error = None
    if (queued, consumer.processed, len(consumer.ids), left) != (count, count, count, 0):
        error = (
            f"preloaded {queued} of {count}; processed {consumer.processed} "
            f"({len(consumer.ids)} distinct); {left} left in the queue"
        )
    return {"seconds": seconds, "cpu s": cpu, "error": error}


async def measure_full(bench: BenchNamespace, count: int, consumer: str) -> dict[str, Any]:
    """(d) or (e): ``consumer_throughput.time_fleet`` with ``FLEET_CONSUMER=consumer``."""
    import consumer_throughput

    settings = bench.settings.model_copy(update={"consumer": consumer})
    return await consumer_throughput.time_fleet(
        dataclasses.replace(bench, settings=settings), count, settings.prefetch
    )


async def faststream_alone(settings: Settings, queue: str, calls: int) -> dict[str, Any]:
    """FastStream's CPU per delivery by itself: the subscriber as the worker declares it,
    started on the (empty) queue, its ``consume`` (what aio-pika calls per delivery) called
    ``calls`` times with a stand-in delivery and a ``receive`` that does nothing; less the
    same calls of ``receive`` straight."""
    received = 0

    async def receive(delivery: AbstractIncomingMessage) -> None:
        nonlocal received
        received += 1

    connection = await connections.connect_robust(settings.broker_urls)
    broker = FleetBroker(settings, connection=connection)
    try:
        subscriber = subscribe_handler(
            broker, settings.namespace, HANDLER, receive, prefetch=settings.prefetch
        )
        await broker.connect()
        await subscriber.open()
        await subscriber.resume()
        delivery: Any = object()  # the parser and decoder pass it on without reading it
        for _ in range(1_000):
            await subscriber.consume(delivery)
        cpu = time.process_time()
        for _ in range(calls):
            await subscriber.consume(delivery)
        through_faststream = time.process_time() - cpu
        cpu = time.process_time()
        for _ in range(calls):
            await receive(delivery)
        straight = time.process_time() - cpu
    finally:
        await broker.stop()
        await connection.close()
    error = None if received == 2 * calls + 1_000 else f"received {received}"
    return {"cpu s": through_faststream - straight, "error": error}


async def main(
    count: int, runs: int, prefetch: int, batch_size: int, full: bool, as_json: bool
) -> None:
    settings = Settings(namespace=fresh_namespace(), prefetch=prefetch, batch_size=batch_size)
    methods = METHODS + (FULL if full else ())
    samples: dict[str, list[dict[str, Any]]] = {method: [] for method in (*methods, ALONE)}
    async with bench_namespace(settings) as bench:
        queue = HANDLER.queue(settings.namespace)
        await bench.declare_quorum_queue(queue)
        if full:
            import consumer_throughput

            await consumer_throughput.seed(settings, stock_each=2 * count * runs + 1)
        warm_up = min(count, 500)  # untimed: imports, FastStream's first set-up
        await measure(bench, queue, warm_up, consumers(settings, queue, warm_up)[METHODS[2]])
        ways: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
            method: partial(measure, bench, queue, count, consume)
            for method, consume in consumers(settings, queue, count).items()
        }
        if full:
            ways[FULL[0]] = partial(measure_full, bench, count, "aio-pika")
            ways[FULL[1]] = partial(measure_full, bench, count, "faststream")
        for round_ in range(runs):
            turn = round_ % len(methods)
            for method in methods[turn:] + methods[:turn]:
                try:
                    result = await ways[method]()
                except Exception as error:
                    result = {"error": f"{type(error).__name__}: {error}"}
                samples[method].append(result)
                print(f"run {round_ + 1}/{runs} {method}: {_brief(result, count)}", file=sys.stderr)
            await bench.purge(queue)
            alone = await faststream_alone(settings, queue, ALONE_CALLS)
            samples[ALONE].append(alone)
            print(f"run {round_ + 1}/{runs} {ALONE}: {_brief(alone, ALONE_CALLS)}", file=sys.stderr)
    rows = [_row(method, samples[method], count) for method in methods]
    alone_row = _row(ALONE, samples[ALONE], ALONE_CALLS)
    alone_row["extra ms/msg"] = alone_row.pop("cpu ms/msg", None)
    for low, high in ((0, 1), (1, 2), (3, 4))[: 3 if full else 2]:
        _extra(rows[high], samples[methods[low]], samples[methods[high]], count)
    _goal(rows[1], rows[2])
    if full:
        _goal(rows[3], rows[4])
    _goal(rows[1], alone_row)
    show(
        f"consuming through FastStream vs straight through aio-pika, {count} messages, "
        f"{runs} runs each, interleaved (quorum queue, prefetch {prefetch}, batch "
        f"{batch_size}; medians)",
        [
            "method",
            "runs",
            "msg/s",
            "cpu ms/msg",
            "cpu ms/msg min",
            "cpu ms/msg max",
            "extra ms/msg",
            "vs direct",
            "goal",
            "met",
        ],
        [*rows, alone_row],
        as_json,
    )


ALONE_CALLS = 20_000


def _brief(result: dict[str, Any], count: int) -> str:
    if result.get("error"):
        return f"error: {result['error']}"
    rate = f"{count / result['seconds']:,.0f} msg/s, " if result.get("seconds") else ""
    return f"{rate}{1000 * result['cpu s'] / count:.4f} ms CPU/msg"


def _row(method: str, samples: list[dict[str, Any]], count: int) -> dict[str, Any]:
    good = [r for r in samples if not r.get("error")]
    row: dict[str, Any] = {"method": method, "messages": count, "runs": len(good)}
    if good:
        cpu = [1000 * r["cpu s"] / count for r in good]
        if all(r.get("seconds") for r in good):
            row["msg/s"] = statistics.median(count / r["seconds"] for r in good)
        row["cpu ms/msg"] = statistics.median(cpu)
        row["cpu ms/msg min"], row["cpu ms/msg max"] = min(cpu), max(cpu)
    errors = [r["error"] for r in samples if r.get("error")]
    if errors:
        row["error"] = "; ".join(errors)
    return row


def _extra(
    row: dict[str, Any], low: list[dict[str, Any]], high: list[dict[str, Any]], count: int
) -> None:
    """The median over the rounds of (high - low) CPU per message: each pair ran in the
    same round, so a shared machine's slow drift cancels out."""
    pairs = [
        1000 * (b["cpu s"] - a["cpu s"]) / count
        for a, b in zip(low, high, strict=True)
        if not a.get("error") and not b.get("error")
    ]
    if pairs:
        row["extra ms/msg"] = statistics.median(pairs)


def _goal(direct: dict[str, Any], faststream: dict[str, Any]) -> None:
    """FastStream's extra CPU per message as a share of the direct path's."""
    extra = faststream.get("extra ms/msg")
    if extra is None or not direct.get("cpu ms/msg"):
        return
    share = extra / direct["cpu ms/msg"]
    faststream["vs direct"] = f"{share:+.0%} of ({direct['method'][0]})"
    faststream["goal"] = f"<= +{GOAL:.0%}"
    faststream["met"] = "yes" if share <= GOAL else "no"


async def profile(way: str, count: int, prefetch: int, batch_size: int, path: str) -> None:
    """One run of (b) or (c) under cProfile (deterministic: every call of every function,
    so FastStream's own calls per message show), its statistics written to ``path``."""
    import cProfile

    settings = Settings(namespace=fresh_namespace(), prefetch=prefetch, batch_size=batch_size)
    async with bench_namespace(settings) as bench:
        queue = HANDLER.queue(settings.namespace)
        await bench.declare_quorum_queue(queue)
        method = METHODS[1] if way == "aio-pika" else METHODS[2]
        warm_up = min(count, 500)
        await measure(bench, queue, warm_up, consumers(settings, queue, warm_up)[method])
        await bench.purge(queue)
        await preload(settings, queue, count)
        profiler = cProfile.Profile()
        profiler.enable()
        consumer = await consumers(settings, queue, count)[method]()
        profiler.disable()
        assert consumer.processed == count
    profiler.dump_stats(path)
    print(f"profile of {method} written to {path} (pstats)", file=sys.stderr)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=4_000)
    parser.add_argument("--runs", type=int, default=5, help="rounds of the three (median)")
    parser.add_argument("--prefetch", type=int, default=Settings().prefetch)
    parser.add_argument("--batch-size", type=int, default=Settings().batch_size)
    parser.add_argument(
        "--full",
        action="store_true",
        help="also the real inventory consumer (PostgreSQL) both ways: (d) and (e)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--profile",
        choices=("aio-pika", "faststream"),
        help="instead: one run of that path under cProfile (pstats to --profile-out)",
    )
    parser.add_argument("--profile-out", default="subscription_cost.pstats")
    add_loop_option(parser)
    args = parser.parse_args()
    try:
        if args.profile:
            run(
                profile(
                    args.profile, args.messages, args.prefetch, args.batch_size, args.profile_out
                ),
                args.loop,
            )
        else:
            run(
                main(
                    args.messages, args.runs, args.prefetch, args.batch_size, args.full, args.json
                ),
                args.loop,
            )
    except KeyboardInterrupt:
        sys.exit(130)  # cleaned up already (see _support.bench_namespace)


if __name__ == "__main__":
    cli()
