"""The AsyncAPI document (workers/runtime/asyncapi.py) and the ``emits`` declarations it is
built from."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

import contracts
from contracts import Message, UnknownMessageType, registry
from contracts.routing import exchange_for
from workers.runtime import asyncapi, catalog
from workers.runtime.service import Service
from workers.runtime.settings import Settings

NAMESPACE = "tdocs"  # not the default, so the test sees the settings' namespace is used


@pytest.fixture(scope="module")
def all_services() -> list[Service]:
    return catalog.load_all()


@pytest.fixture(scope="module")
def document(all_services: list[Service]) -> dict[str, Any]:
    return asyncapi.generate(Settings(namespace=NAMESPACE), all_services)


def resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """``node``, or what its ``$ref`` (a local JSON pointer) points at."""
    while "$ref" in node:
        pointer = node["$ref"]
        assert pointer.startswith("#/"), pointer
        target: Any = document
        for part in pointer[2:].split("/"):
            target = target[unquote(part).replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [
            *([node["$ref"]] if isinstance(node.get("$ref"), str) else []),
            *(ref for value in node.values() for ref in refs(value)),
        ]
    if isinstance(node, list):
        return [ref for value in node for ref in refs(value)]
    return []


def payload_titles(document: dict[str, Any], operation: dict[str, Any]) -> set[str]:
    """The titles of the schemas an operation's messages carry (each member of a union)."""
    titles: set[str] = set()
    for message_ref in operation["messages"]:
        message = resolve(document, message_ref)
        payload = resolve(document, message["payload"])
        members = payload.get("anyOf") or payload.get("oneOf") or [payload]
        titles.update(resolve(document, member)["title"] for member in members)
    return titles


def newest(type_: str) -> type[Message]:
    return registry.model_for(type_, registry.latest_version(type_))


def send_operations(document: dict[str, Any], exchange: str, address: str) -> list[dict[str, Any]]:
    found = []
    for operation in document["operations"].values():
        channel = resolve(document, operation["channel"])
        bound = channel.get("bindings", {}).get("amqp", {}).get("exchange", {}).get("name")
        if operation["action"] == "send" and bound == exchange and channel["address"] == address:
            found.append(operation)
    return found


def test_the_document_has_the_asyncapi_3_shape_and_every_reference_resolves(
    document: dict[str, Any],
) -> None:
    assert document["asyncapi"] == "3.0.0"
    assert document["info"]["title"] and document["info"]["version"]
    assert document["channels"] and document["operations"]
    assert document["components"]["messages"] and document["components"]["schemas"]
    for operation in document["operations"].values():
        assert operation["action"] in {"send", "receive"}
        assert resolve(document, operation["channel"])["messages"]
        assert operation["messages"]
    for ref in refs(document):
        resolve(document, {"$ref": ref})  # raises KeyError on a dangling reference
    for message in document["components"]["messages"].values():
        assert message["headers"]["required"] == ["x-contract-version"]
    json.dumps(document)  # plain JSON all the way down


def test_the_order_service_events_are_send_operations_with_their_payloads(
    document: dict[str, Any],
) -> None:
    events = f"{NAMESPACE}.events"
    for type_ in ("order.placed", "order.confirmed", "order.rejected"):
        (operation,) = send_operations(document, events, type_)
        assert payload_titles(document, operation) == {newest(type_).__name__}
        payload = resolve(document, resolve(document, operation["messages"][0])["payload"])
        assert "order_id" in payload["properties"]
        assert "order" in resolve(document, operation["channel"])["description"]
    placed = send_operations(document, events, "order.placed")[0]
    message = resolve(document, placed["messages"][0])
    fields = resolve(document, message["payload"])["properties"]
    assert {"order_id", "customer_id", "items", "total", "country"} <= set(fields)
    assert resolve(document, fields["total"])["properties"]["amount"]["type"] == "string"


def test_the_order_view_projection_is_a_receive_operation_with_every_type_it_handles(
    document: dict[str, Any],
) -> None:
    handler = next(h for h in catalog.load("order_view").handlers if h.name == "project")
    queue = handler.queue(NAMESPACE)
    operation = document["operations"][queue]
    assert operation["action"] == "receive"
    channel = resolve(document, operation["channel"])
    assert channel["bindings"]["amqp"]["queue"]["name"] == queue
    assert payload_titles(document, operation) == {newest(t).__name__ for t in handler.types}
    assert operation["bindings"]["amqp"]["cc"] == list(handler.types)
    assert all(type_ in channel["description"] for type_ in handler.types)


def test_every_handler_queue_is_a_receive_operation_on_its_bindings(
    document: dict[str, Any], all_services: list[Service]
) -> None:
    receiving = {name for name, op in document["operations"].items() if op["action"] == "receive"}
    expected = set()
    for service in all_services:
        for handler in service.handlers:
            spec = handler.queue_spec(NAMESPACE)
            expected.add(spec.name)
            operation = document["operations"][spec.name]
            channel = resolve(document, operation["channel"])
            assert channel["bindings"]["amqp"]["queue"]["name"] == spec.name
            assert operation["bindings"]["amqp"]["cc"] == [key for _, key in spec.bindings]
            description = channel["description"]
            assert service.name in description and handler.name in description
            for exchange, key in spec.bindings:
                assert f"{exchange} <- {key}" in description
            assert payload_titles(document, operation) == {
                newest(t).__name__ for t in handler.types
            }
    assert receiving == expected  # and no queue of another namespace
    assert all(name.startswith(f"{NAMESPACE}.") for name in receiving)


def test_every_emitted_type_is_a_send_operation_on_its_exchange(
    document: dict[str, Any], all_services: list[Service]
) -> None:
    for service in all_services:
        for type_ in service.emits:
            exchange = exchange_for(NAMESPACE, registry.kind(type_))
            operations = send_operations(document, exchange, type_)
            assert len(operations) >= 1, (service.name, type_)
            titles = set().union(*(payload_titles(document, op) for op in operations))
            assert titles == {newest(type_).__name__}
    sending = [op for op in document["operations"].values() if op["action"] == "send"]
    assert len(sending) == sum(len(service.emits) for service in all_services)


def test_the_document_is_the_same_every_time(all_services: list[Service]) -> None:
    settings = Settings(namespace=NAMESPACE)
    first = json.dumps(asyncapi.generate(settings, all_services))
    assert json.dumps(asyncapi.generate(settings, all_services)) == first


def test_a_service_cannot_declare_that_it_emits_an_unknown_type() -> None:
    with pytest.raises(UnknownMessageType):
        Service("nobody", emits=("no.such.type",))


# --- `emits` against the code -------------------------------------------------------------
#
# What a service emits is decided in its code paths, which cannot run here without servers.
# The guard is static: every contract class *constructed* anywhere in a service's package
# (``StockReserved(...)``, ``domain.command_for``'s commands, aliases such as ``ConfirmOrder``
# resolved through ``contracts``) must be declared in its ``emits``, and every declared type
# must be constructed there. It catches an emit added or removed without the declaration.
# It does not see a message built another way (``model_copy``, ``model_validate``, a model
# looked up in the registry, a message received and sent on), one built in another package,
# nor which exchange a message really goes to (``Send(..., replay_to=...)``); and it takes a
# constructed message for an emitted one. The exceptions below say why, one by one.

DECLARED_NOT_CONSTRUCTED: dict[tuple[str, str], str] = {
    ("order", "order.replay_events"): "the next page is the command's model_copy",
}
CONSTRUCTED_NOT_DECLARED: dict[tuple[str, str], str] = {
    # emits puts a publisher on <ns>.events or <ns>.commands; this one never goes there.
    ("order", "order.events_replayed"): "sent only to <ns>.replays (Send(replay_to=...))",
}

WORKERS = Path(__file__).resolve().parents[2] / "workers"


def constructed_types(package: Path) -> set[str]:
    found: set[str] = set()
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            model = getattr(contracts, name, None) if isinstance(name, str) else None
            if isinstance(model, type) and issubclass(model, Message) and hasattr(model, "TYPE"):
                found.add(model.TYPE)
    return found


@pytest.mark.parametrize("name", catalog.SERVICES)
def test_emits_matches_the_messages_the_service_constructs(name: str) -> None:
    service = catalog.load(name)
    constructed = constructed_types(WORKERS / name)
    declared = set(service.emits)
    unseen = {type_ for (owner, type_) in DECLARED_NOT_CONSTRUCTED if owner == name}
    undeclared = {type_ for (owner, type_) in CONSTRUCTED_NOT_DECLARED if owner == name}
    assert constructed - undeclared <= declared, f"{name} constructs but does not declare"
    assert declared <= constructed | unseen, f"{name} declares types it never constructs"
    assert not declared & undeclared, f"{name} declares a type sent elsewhere"
    assert len(service.emits) == len(declared), f"{name} declares a type twice"
