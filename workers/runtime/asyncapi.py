"""The fleet's AsyncAPI 3.0 document: every handler's queue and every message a service emits.

    document = asyncapi.generate(settings, catalog.load_all())   # a JSON-ready dict

FastStream writes the document from a broker's subscribers and publishers. The subscribers
are the very ones that consume (``workers.runtime.faststream_subscription.subscribe_handler``,
as a worker with ``FLEET_CONSUMER=faststream`` declares them), on a ``FleetBroker`` that is
never connected, so nothing is declared and nothing consumed:

- per handler, the subscriber of its queue ``<ns>.<service>.<handler>``; its function's
  signature takes the newest contract model of each type it handles (a union for several),
  which is where FastStream reads the payload schema from (the function itself is never
  called here; a consuming worker's gets the raw delivery, FastDepends being off);
- per type a service emits, a publisher on the exchange its kind goes to, routing key = type,
  with the newest contract model as its schema.

Everything comes from ``Service``, ``Handler.queue_spec`` and the contract registry, so a new
handler, binding, type or version appears without a change here.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import metadata
from typing import Any

from aio_pika.abc import AbstractIncomingMessage
from faststream.rabbit import ExchangeType, RabbitBroker, RabbitExchange
from faststream.specification import AsyncAPI

from contracts.envelope import CAUSATION_HEADER, STREAM_VERSION_HEADER, VERSION_HEADER
from contracts.routing import exchange_for
from workers.runtime.faststream_subscription import FleetBroker, newest_model, subscribe_handler
from workers.runtime.service import Service
from workers.runtime.settings import Settings

TITLE = "fleet"

_ENVELOPE = f"""Every message's body is the JSON of its contract model (the newest version \
is shown; consumers upcast older ones). The envelope travels in AMQP properties: \
message_id (UUID, the idempotency key), type (the message type, e.g. order.placed), \
correlation_id (the order/saga id), timestamp, app_id (the producing service), content_type \
application/json; and in headers: {VERSION_HEADER} (the contract version of the body), \
{CAUSATION_HEADER} (the message id of the message that caused it), and on the order \
service's events {STREAM_VERSION_HEADER} (the event's version in its order stream). Events \
go to the topic exchange <ns>.events with routing key = type, commands to <ns>.commands; \
each handler reads its own quorum queue <ns>.<service>.<handler>."""

# The envelope headers, as a schema on every message (AMQP properties have no place there).
_HEADERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        VERSION_HEADER: {"type": "integer", "minimum": 1, "description": "contract version"},
        CAUSATION_HEADER: {
            "type": "string",
            "format": "uuid",
            "description": "message id of the message that caused this one",
        },
        STREAM_VERSION_HEADER: {
            "type": "integer",
            "minimum": 1,
            "description": "the event's version in its order stream (order events only)",
        },
    },
    "required": [VERSION_HEADER],
}


def build_broker(settings: Settings, services: Sequence[Service]) -> RabbitBroker:
    """A broker for the document only: the workers' subscribers and the services'
    publishers, never connected, so nothing is declared."""
    broker = FleetBroker(settings)
    for service in services:
        for handler in service.handlers:
            subscribe_handler(
                broker, settings.namespace, handler, _never_called(), prefetch=settings.prefetch
            )
        for type_ in service.emits:
            _publish(broker, settings.namespace, service, type_)
    return broker


def _never_called() -> Any:
    """The subscriber's function where nothing consumes: a function of its own per handler
    (``subscribe_handler`` gives it the handler's name and payload signature)."""

    async def receive(delivery: AbstractIncomingMessage) -> None:
        raise NotImplementedError("documentation only")

    return receive


def _publish(broker: RabbitBroker, namespace: str, service: Service, type_: str) -> None:
    model = newest_model(type_)
    exchange = exchange_for(namespace, model.KIND)
    broker.publisher(
        routing_key=type_,
        # exchange_for names one of the two topic exchanges workers.runtime.topology declares.
        exchange=RabbitExchange(exchange, type=ExchangeType.TOPIC, declare=False),
        title=f"{service.name}:{type_}",
        description=(
            f"Service {service.name} emits the {model.KIND} {type_} (v{model.VERSION}, "
            f"{model.__name__}) to {exchange} with routing key {type_}, through its outbox."
        ),
        schema=model,
        persist=True,
        mandatory=True,
    )


def _project_version() -> str:
    try:
        return metadata.version("fleet")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "0"


def generate(settings: Settings, services: Sequence[Service]) -> dict[str, Any]:
    """The AsyncAPI 3.0 document as a JSON-ready dict."""
    broker = build_broker(settings, services)
    specification = AsyncAPI(
        broker,
        title=TITLE,
        version=_project_version(),
        description=_ENVELOPE,
        schema_version="3.0.0",
    ).to_specification()
    document: dict[str, Any] = specification.to_jsonable()
    for message in document.get("components", {}).get("messages", {}).values():
        message.setdefault("headers", _HEADERS)
    operations = document.get("operations", {})
    for service in services:
        for handler in service.handlers:
            spec = handler.queue_spec(settings.namespace)
            # FastStream lists one routing key per queue (the queue's name when it has
            # several); the operation's cc names every key the queue is bound by.
            amqp = operations.get(spec.name, {}).get("bindings", {}).get("amqp")
            if amqp is not None:
                amqp["cc"] = [key for _, key in spec.bindings]
    # FastStream's order varies from run to run; sorted, a regenerated document diffs cleanly.
    components = document.get("components", {})
    for section, holder in (
        ("channels", document),
        ("operations", document),
        ("messages", components),
        ("schemas", components),
    ):
        if section in holder:
            holder[section] = dict(sorted(holder[section].items()))
    return document


def counts(document: dict[str, Any]) -> dict[str, int]:
    """How many channels, operations and messages ``document`` describes."""
    return {
        "channels": len(document.get("channels", {})),
        "operations": len(document.get("operations", {})),
        "messages": len(document.get("components", {}).get("messages", {})),
    }
