"""Fuzzed messages through the real broker to every service running as a process.

Hypothesis makes the messages: every contract type at every released version, with bodies
valid, mutated (a field dropped, of a wrong type, huge, duplicated, one too many) or not
JSON at all (empty, invalid UTF-8, nested thousands deep), and properties and headers
missing, garbled, not UTF-8 or of odd AMQP types. They go, confirmed, straight to handler
queues and through the exchanges by routing key. The workers run without their relays, so
what reaches a queue is what this test sent, and every delivery is accounted for: applied
(an inbox row), dead-lettered with a reason (x-error-type and x-error-message in the DLQ),
left to another saga style (acked, no trace but the worker's outcome counter) or unrouted
(in the unrouted DLQ). None is lost, a message that breaks its contract is never applied,
one that keeps it is never refused for its contract, and afterwards the same workers, their
relays started, complete an order of each saga style.

    FLEET_FUZZ_EXAMPLES=2000 uv run pytest tests/integration/test_fuzz_messages.py
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pika
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from contracts import ContractError, Envelope, Message, encode_message, registry
from contracts.envelope import VERSION_HEADER
from contracts.routing import commands_exchange, events_exchange, replays_exchange
from contracts.schemas import schema_text
from tests.integration.conftest import namespace_settings, namespaced_fleet
from tests.integration.sagas import SagaFleet
from tests.integration.support import (
    Fleet,
    FleetProcess,
    free_ports,
    reserve_command,
    scrape,
    value,
    wait_for,
)
from workers.operations import dead_letters
from workers.orchestrator.settings import OrchestratorSettings
from workers.runtime import catalog, topology
from workers.runtime.consumer import Outcome
from workers.runtime.service import Handler

pytestmark = pytest.mark.integration


def _subclasses(cls: type) -> list[type]:
    found: list[type] = []
    direct: type
    for direct in cls.__subclasses__():
        found += [direct, *_subclasses(direct)]
    return found


EXAMPLES = int(os.environ.get("FLEET_FUZZ_EXAMPLES", "300"))
RELEASED = registry.released()
SERVICES = catalog.load_all()
HANDLERS = [handler for service in SERVICES for handler in service.handlers]
# The outcomes a delivery ends with (a retry comes back, and ends with one of these).
FINAL = (Outcome.APPLIED, Outcome.IGNORED, Outcome.DUPLICATE, Outcome.DEAD_LETTERED)
CONTRACT_ERRORS = {cls.__name__ for cls in (ContractError, *_subclasses(ContractError))}
CASE_HEADER = "x-fuzz-case"  # which case a delivery was (set last: fuzzing cannot drop it)
# Headers the broker itself reads (sender-selected routing, its own dead-letter records):
# fuzzing them tests RabbitMQ, not the fleet, on a broker others use.
BROKER_HEADERS = re.compile(
    r"^(cc|bcc|x-death|x-first-death.*|x-last-death.*|x-delivery-.*)$", re.I
)


# --- What a case is. ----------------------------------------------------------------------

Text = str | bytes | None  # an AMQP short string as sent: bytes may be no UTF-8 at all


@dataclass
class Case:
    """One fuzzed message and where it goes: a handler's queue (``queue``), or an exchange
    (``"events"``, ``"commands"``, ``"replays"``) with a routing key."""

    contract: tuple[str, int]  # the (type, version) its body was made from
    body: bytes
    message_id: Text
    type: Text
    correlation_id: Text
    app_id: Text
    content_type: Text
    timestamp: int | None
    headers: dict[str | bytes, Any]
    queue: str | None = None  # a handler's name, service.handler
    exchange: str | None = None
    routing_key: str = ""
    number: int = -1

    def properties(self) -> pika.BasicProperties:
        return pika.BasicProperties(
            message_id=self.message_id,
            type=self.type,
            correlation_id=self.correlation_id,
            app_id=self.app_id,
            content_type=self.content_type,
            timestamp=self.timestamp,
            headers={**self.headers, CASE_HEADER: self.number},
            delivery_mode=2,
        )


# --- Strategies. --------------------------------------------------------------------------

UUID_TEXT = st.uuids().map(str)
# Text an AMQP client can send; JSON also takes a lone surrogate (escaped).
ODD_TEXT = st.sampled_from(["", " ", "\x00", "é", "\u2028", "\U0001d54f", "null", "1e309"])
INVALID_UTF8 = st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80abc", b"\xfe\xff"])
SHORT_TEXT = st.text(max_size=40) | ODD_TEXT
# Anything JSON can hold, for fields of the wrong type.
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.just(10**400)
    | st.floats(allow_nan=False)
    | SHORT_TEXT
    | st.just("\ud800"),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(SHORT_TEXT, inner, max_size=3),
    max_leaves=8,
)
# Header values pika can encode: every AMQP field type it knows.
HEADER_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.sampled_from([2**63 - 1, -(2**63), 0, -1, 1, 2, 3])
    | st.decimals(min_value=-(10**6), max_value=10**6, places=2, allow_nan=False)
    | st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2100, 1, 1))
    | st.text(max_size=300)
    | ODD_TEXT
    | st.binary(max_size=50)
    | INVALID_UTF8,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=6,
)
HEADER_NAMES = (
    st.sampled_from(
        [
            VERSION_HEADER,
            "x-attempts",
            "x-causation-id",
            "x-stream-version",
            "x-replay-id",
            "x-replay-expected",
            "traceparent",
            "x-error-type",
            "x-original-queue",
        ]
    )
    | st.text(min_size=1, max_size=30).filter(lambda name: not BROKER_HEADERS.match(name))
    | INVALID_UTF8
)
GOOD = {
    "sku": ["WIDGET", "RARE"],
    "customer_id": ["rich", "poor"],
    "currency": ["EUR"],
    "country": ["DE", "XX"],
    "amount": ["1.00", "9.90", "0.5", "100"],
}


def from_schema(
    node: dict[str, Any], root: dict[str, Any], name: str = ""
) -> st.SearchStrategy[Any]:
    """Values of the small part of JSON Schema the contracts' snapshots use, biased to
    ones the fleet knows (its SKUs, customers, currency), so that many are applied."""
    if "$ref" in node:
        return from_schema(root["$defs"][node["$ref"].rsplit("/", 1)[1]], root, name)
    if "anyOf" in node:
        return st.one_of([from_schema(option, root, name) for option in node["anyOf"]])
    if "const" in node:
        return st.just(node["const"])
    if "enum" in node:
        return st.sampled_from(node["enum"])
    kind = node.get("type")
    if kind == "object":
        properties = node.get("properties", {})
        required = set(node.get("required", ()))
        parts = {key: from_schema(sub, root, key) for key, sub in properties.items()}
        return st.fixed_dictionaries(
            {key: part for key, part in parts.items() if key in required},
            optional={key: part for key, part in parts.items() if key not in required},
        )
    if kind == "array":
        minimum = node.get("minItems", 0)
        return st.lists(from_schema(node["items"], root, name), min_size=minimum, max_size=3)
    if kind == "integer":
        low = node.get("minimum", 0)
        return st.integers(low, low + 5)
    if kind == "null":
        return st.none()
    if kind == "string":
        if node.get("format") == "uuid":
            return UUID_TEXT
        known = st.sampled_from(GOOD[name]) if name in GOOD else None
        if "pattern" in node:
            made = st.from_regex(node["pattern"], fullmatch=True)
            return made if known is None else known | made
        made = st.text(min_size=node.get("minLength", 0), max_size=12)
        return made if known is None else known | made
    return JSON_VALUES


def _mutations(payload: dict[str, Any]) -> st.SearchStrategy[bytes]:
    """The payload broken one way: a field dropped, of the wrong type, huge or duplicated,
    or one field too many."""
    keys = sorted(payload)
    encoded = json.dumps(payload).encode()
    options = [st.just(encoded)]
    options.append(
        st.dictionaries(SHORT_TEXT, JSON_VALUES, min_size=1, max_size=2).map(
            lambda extra: json.dumps({**payload, **extra}).encode()
        )
    )
    if keys:
        key = st.sampled_from(keys)
        options += [
            key.map(lambda k: json.dumps({x: v for x, v in payload.items() if x != k}).encode()),
            st.tuples(key, JSON_VALUES).map(
                lambda kv: json.dumps({**payload, kv[0]: kv[1]}).encode()
            ),
            key.map(lambda k: json.dumps({**payload, k: "x" * 300_000}).encode()),
            # The same name twice, the second spelling of the value last.
            st.tuples(key, JSON_VALUES).map(
                lambda kv: encoded[:-1] + f", {json.dumps(kv[0])}: {json.dumps(kv[1])}}}".encode()
            ),
        ]
    return st.one_of(options)


NOT_JSON = st.one_of(
    st.just(b""),
    st.binary(max_size=200),
    INVALID_UTF8.map(lambda bad: b'{"order_id": "' + bad + b'"}'),
    st.integers(1, 100_000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(1, 5_000).map(lambda depth: b'{"a":' * depth + b"1" + b"}" * depth),
    JSON_VALUES.map(lambda value: json.dumps(value).encode()),
)


def bodies(model: type[Message]) -> st.SearchStrategy[bytes]:
    schema = json.loads(schema_text(model))
    payloads = from_schema(schema, schema)
    valid = payloads.map(lambda payload: json.dumps(payload).encode())
    return st.one_of(valid, valid, payloads.flatmap(_mutations), NOT_JSON)


def texts(good: st.SearchStrategy[str]) -> st.SearchStrategy[Text]:
    """An AMQP short string: mostly ``good``, else absent, empty, odd or not UTF-8."""
    return st.one_of(good, good, good, st.none(), SHORT_TEXT, INVALID_UTF8)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    type_, version, model = draw(st.sampled_from(RELEASED))
    versions = sorted(v for t, v, _ in RELEASED if t == type_)
    version_header = draw(
        st.one_of(
            st.just(version),
            st.just(version),
            st.sampled_from([*versions, 0, -1, max(versions) + 1]),
            st.sampled_from([str(version), f" {version} ", "v1", ""]),
            HEADER_VALUES,
            st.just(None),  # absent
        )
    )
    headers = draw(st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=4))
    headers.pop(VERSION_HEADER, None)
    if version_header is not None:
        headers[VERSION_HEADER] = version_header
    case = Case(
        contract=(type_, version),
        body=draw(bodies(model)),
        message_id=draw(texts(UUID_TEXT | UUID_TEXT.map(str.upper))),
        type=draw(texts(st.just(type_) | st.sampled_from([t for t, _, _ in RELEASED]))),
        correlation_id=draw(texts(UUID_TEXT)),
        app_id=draw(texts(st.just("fuzz"))),
        content_type=draw(texts(st.just("application/json"))),
        timestamp=draw(st.none() | st.integers(0, 2**32) | st.sampled_from([2**40, 2**63])),
        headers=headers,
    )
    if draw(st.integers(0, 2)) == 0:  # a third keep every property: only the body is fuzzed
        case.message_id, case.type = str(uuid.uuid4()), type_
        case.correlation_id = case.app_id = case.content_type = None
        case.headers = {VERSION_HEADER: version}
    readers = [h for h in HANDLERS if type_ in h.types]
    target = draw(st.integers(0, 9))
    if target < 4 and readers:  # to its handler's queue
        case.queue = draw(st.sampled_from(readers)).consumer
    elif target < 6:  # to any handler's queue: mostly not its business
        case.queue = draw(st.sampled_from(HANDLERS)).consumer
    elif target < 9:  # through the exchange of its kind, keyed by its type
        case.exchange = "events" if model.KIND == "event" else "commands"
        case.routing_key = type_
    else:  # anywhere, with any key: routed by the broker, maybe nowhere
        case.exchange = draw(st.sampled_from(["events", "commands", "replays"]))
        case.routing_key = draw(st.sampled_from(["order_view", "order"]) | st.text(max_size=40))
    return case


def regressions(ns: str) -> dict[str, Case]:
    """Cases the fuzzing found, kept as they were: each took a worker's connection down at
    every redelivery, or made its dead letter unpublishable, until the broker dead-lettered
    it with no reason of ours (the fixes are in workers/runtime/consumer.py)."""
    body = encode_message(reserve_command(str(uuid.uuid4()), ("WIDGET", 1)))

    def case(**changes: Any) -> Case:
        made = Case(
            contract=("inventory.reserve_stock", 1),
            body=body,
            message_id=str(uuid.uuid4()),
            type="inventory.reserve_stock",
            correlation_id=None,
            app_id=None,
            content_type="application/json",
            timestamp=None,
            headers={VERSION_HEADER: 1},
            queue="inventory.reserve_stock",
        )
        return dataclasses.replace(made, **changes)

    return {
        "message id not UTF-8": case(message_id=b"\xff\xfe"),
        "type not UTF-8": case(type=b"inventory.\xc3\x28"),
        "header name not UTF-8": case(message_id=b"bad", headers={VERSION_HEADER: 1, b"\xff": 1}),
        # Read as no timestamp: a message like any other, applied.
        "timestamp past year 9999": case(timestamp=2**63),
        # Dead-lettered (no version) with x-attempts + 1: no AMQP integer holds that.
        "x-attempts at the int64 maximum": case(headers={"x-attempts": 2**63 - 1}),
    }


def generated(count: int) -> list[Case]:
    """``count`` cases, the same ones on every run (derandomized)."""
    made: list[Case] = []

    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(cases())
    def collect(case: Case) -> None:
        made.append(case)

    collect()
    return made


# --- What the consumer must make of a case (where that is certain from the case alone). ----


def verdict(case: Case, handler: Handler) -> str:
    """ "refused": it breaks its contract for ``handler`` (a dead letter of a contract error);
    "kept": it keeps it (never refused for its contract); "either": it depends on how
    odd values travel (bytes, AMQP types), so only the accounting applies."""
    if case.type is None or case.type == "":
        return "refused"
    if not isinstance(case.type, str):
        return "either"
    if case.type not in handler.types:
        return "refused"
    if case.message_id is None or case.message_id == "":
        return "refused"
    if not isinstance(case.message_id, str):
        return "either"
    version = case.headers.get(VERSION_HEADER)
    if version is None:
        return "refused"
    if isinstance(version, bool) or not isinstance(version, int | str):
        return "either"
    try:
        envelope = Envelope.from_amqp(
            message_id=case.message_id, type=case.type, headers={VERSION_HEADER: version}
        )
        registry.decode(envelope.type, envelope.version, case.body)
    except ContractError:
        return "refused"
    return "kept"


# --- Sending. -----------------------------------------------------------------------------


def publish_all(amqp_url: str, ns: str, fuzzed: list[Case]) -> list[Case]:
    """Publish every case, confirmed; the cases the broker took. (One it refuses closes the
    channel, so a new one is opened for the next.)"""
    exchanges = {
        "events": events_exchange(ns),
        "commands": commands_exchange(ns),
        "replays": replays_exchange(ns),
    }
    queues = {h.consumer: h.queue(ns) for h in HANDLERS}
    taken: list[Case] = []
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for case in fuzzed:
            if case.queue is not None:
                exchange, routing_key = "", queues[case.queue]
            else:
                assert case.exchange is not None
                exchange, routing_key = exchanges[case.exchange], case.routing_key
            try:
                channel.basic_publish(
                    exchange, routing_key, case.body, case.properties(), mandatory=True
                )
            except (pika.exceptions.AMQPError, ValueError, TypeError) as error:
                print(f"case {case.number} not sent: {type(error).__name__}: {error}")
                if channel.is_closed:
                    channel = connection.channel()
                    channel.confirm_delivery()
                continue
            taken.append(case)
    finally:
        connection.close()
    return taken


def destinations(case: Case, ns: str) -> list[Handler | None]:
    """The handlers whose queues the case reaches (None: the unrouted DLQ)."""
    if case.queue is not None:
        return [h for h in HANDLERS if h.consumer == case.queue]
    exchange = {"events": events_exchange(ns), "commands": commands_exchange(ns)}.get(
        case.exchange or "", replays_exchange(ns)
    )
    # No binding key has a wildcard: a topic exchange routes by the exact key here.
    bound = [h for h in HANDLERS if (exchange, case.routing_key) in h.queue_spec(ns).bindings]
    return list(bound) or [None]


# --- The fleet. ---------------------------------------------------------------------------


@dataclass
class FuzzFleet:
    sagas: SagaFleet
    ports: dict[str, int]
    relays: list[FleetProcess] = field(default_factory=list)

    @property
    def fleet(self) -> Fleet:
        return self.sagas.fleet

    async def outcomes(self) -> Counter[tuple[str, Outcome]]:
        """Each handler's deliveries by outcome, from its worker's /metrics."""
        counted: Counter[tuple[str, Outcome]] = Counter()
        for service in SERVICES:
            samples = await scrape(self.ports[service.name])
            for handler in service.handlers:
                for outcome in Outcome:
                    found = value(
                        samples,
                        "fleet_messages_handled_total",
                        handler=handler.name,
                        outcome=outcome.value,
                    )
                    counted[handler.consumer, outcome] = int(found)
        return counted


@pytest.fixture(scope="module")
async def fuzz_fleet(server_urls: tuple[str, str]) -> AsyncIterator[FuzzFleet]:
    # Two connections per worker: the server is shared with other tests' fleets.
    settings = namespace_settings(server_urls, db_pool_size=2)
    sections = [OrchestratorSettings(step_timeout_seconds=5.0)]
    async with namespaced_fleet(settings, sections) as fleet:
        sagas = SagaFleet(fleet)
        await sagas.seed({"WIDGET": 1_000_000, "RARE": 1}, {"rich": "1000000.00", "poor": "1.00"})
        ports = dict(zip(catalog.SERVICES, free_ports(len(catalog.SERVICES)), strict=True))

        async def start(service: str) -> None:
            # No relay: what reaches a queue is only what the test sent.
            process = await fleet.spawn(
                "worker", service, "--no-relay", "--metrics-port", str(ports[service])
            )
            sagas.workers[service] = process
            await process.wait_for_line("consuming", timeout=90)  # six start at once

        await asyncio.gather(*(start(service) for service in catalog.SERVICES))
        fuzz = FuzzFleet(sagas, ports)
        yield fuzz
        for process in (*fuzz.relays, *sagas.workers.values()):
            assert await process.terminate() == 0, "\n".join(process.lines[-30:])


# --- The test. ----------------------------------------------------------------------------


def _header(letter: dead_letters.DeadLetter, name: str) -> Any:
    found = letter.headers.get(name)
    return found.decode(errors="replace") if isinstance(found, bytes | bytearray) else found


def _sent_to(fuzz_fleet: FuzzFleet, taken: list[Case]) -> Iterator[tuple[Case, Handler | None]]:
    for case in taken:
        for handler in destinations(case, fuzz_fleet.fleet.ns):
            yield case, handler


async def test_each_fuzzed_message_is_applied_or_dead_lettered_and_the_fleet_serves_on(
    fuzz_fleet: FuzzFleet,
) -> None:
    fleet = fuzz_fleet.fleet
    ns, settings = fleet.ns, fleet.settings
    found_before = regressions(ns)
    fuzzed = [*generated(EXAMPLES), *found_before.values()]
    for number, case in enumerate(fuzzed):
        case.number = number
    taken = await asyncio.to_thread(publish_all, settings.amqp_url, ns, fuzzed)
    # The broker takes what pika can encode; a case it refused would be a test bug here.
    assert len(taken) == len(fuzzed), "the broker refused some cases (see the output)"
    deliveries = list(_sent_to(fuzz_fleet, taken))
    expected = Counter(handler.consumer for _, handler in deliveries if handler is not None)

    # Quiet: every delivery has ended (a retry comes back and ends too).
    async def all_ended() -> bool:
        counted = await fuzz_fleet.outcomes()
        return all(
            sum(counted[h.consumer, outcome] for outcome in FINAL) >= expected[h.consumer]
            for h in HANDLERS
        )

    await wait_for(all_ended, timeout=180, interval=0.5)
    for process in fuzz_fleet.sagas.workers.values():
        assert process.process.returncode is None, "\n".join(process.lines[-30:])
    counted = await fuzz_fleet.outcomes()

    # Evidence of each delivery: an inbox row of its handler, or a dead letter.
    applied: dict[str, set[str]] = {}
    letters: dict[str, list[dead_letters.DeadLetter]] = {}
    for handler in HANDLERS:
        async with fleet.connection(handler.service) as conn:
            rows = await conn.fetch(
                "SELECT message_id FROM inbox WHERE consumer = $1", handler.consumer
            )
        applied[handler.consumer] = {row["message_id"] for row in rows}
        dlq = topology.dead_letter_queue(handler.queue(ns))
        letters[handler.consumer] = await dead_letters.browse(settings, dlq, 100_000)
    unrouted = await dead_letters.browse(settings, topology.unrouted_queue(ns), 100_000)

    problems: list[str] = []
    # None lost, none counted twice: per handler, what was sent is what ended, and each
    # ending left its trace (an inbox row per application, a letter per dead-lettering).
    for handler in HANDLERS:
        name = handler.consumer
        ended = {outcome: counted[name, outcome] for outcome in FINAL}
        if sum(ended.values()) != expected[name]:
            problems.append(f"{name}: {expected[name]} sent, outcomes {ended}")
        if len(applied[name]) != ended[Outcome.APPLIED]:
            problems.append(f"{name}: {len(applied[name])} inbox rows, {ended}")
        if len(letters[name]) != ended[Outcome.DEAD_LETTERED]:
            problems.append(f"{name}: {len(letters[name])} dead letters, {ended}")
        for letter in letters[name]:
            if not _header(letter, "x-error-type") or not _header(letter, "x-error-message"):
                problems.append(f"{name}: a dead letter without a reason: {letter.headers}")
    unroutable = sum(handler is None for _, handler in deliveries)
    if len(unrouted) != unroutable:
        problems.append(f"{unroutable} unroutable sent, {len(unrouted)} in the unrouted DLQ")

    # Each case where it belongs: one that breaks its contract dead-lettered for it, one
    # that keeps it never refused for its contract.
    letter_of = {
        (name, _header(letter, CASE_HEADER)): letter
        for name, found in letters.items()
        for letter in found
    }
    verdicts: Counter[str] = Counter()
    for case, reached in deliveries:
        if reached is None:
            continue
        said = verdict(case, reached)
        verdicts[said] += 1
        dead = letter_of.get((reached.consumer, case.number))
        error = _header(dead, "x-error-type") if dead else None
        if said == "refused" and error not in CONTRACT_ERRORS:
            problems.append(f"case {case.number} to {reached.consumer}: not refused ({case})")
        if said == "kept" and error in CONTRACT_ERRORS:
            reason = _header(dead, "x-error-message") if dead else None
            problems.append(f"case {case.number} to {reached.consumer}: refused: {reason}")
    for name, case in found_before.items():
        dead = letter_of.get(("inventory.reserve_stock", case.number))
        if case.timestamp is not None:
            if (
                not isinstance(case.message_id, str)
                or case.message_id not in applied[case.queue or ""]
            ):
                problems.append(f"{name}: not applied")
        elif dead is None or _header(dead, "x-error-type") not in CONTRACT_ERRORS:
            problems.append(f"{name}: not dead-lettered for its contract")
    assert not problems, "\n".join(problems[:30])
    # The fuzzing reached every kind of ending (else it tested less than it says).
    totals = Counter(
        {outcome: sum(counted[h.consumer, outcome] for h in HANDLERS) for outcome in FINAL}
    )
    print(f"{len(taken)} cases, {len(deliveries)} deliveries: {dict(totals)}, {dict(verdicts)}")
    assert totals[Outcome.APPLIED] and totals[Outcome.DEAD_LETTERED] and totals[Outcome.IGNORED]

    # The same workers serve on: with their relays, an order of each style completes.
    for service in catalog.SERVICES:
        relay = await fleet.spawn("relay", service)
        await relay.wait_for_line("relay: active", timeout=60)
        fuzz_fleet.relays.append(relay)
    for style in ("orchestration", "choreography"):
        order_id = await fuzz_fleet.sagas.place("rich", ("WIDGET", 1, "2.00"), saga=style)
        status = await fuzz_fleet.sagas.ended(order_id, timeout=90)
        assert status["status"] == "CONFIRMED", status
