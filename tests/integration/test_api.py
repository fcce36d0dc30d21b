"""The HTTP API (``fleet api``) as a real process, in front of a fleet whose every service is a
real process: orders placed over HTTP (and through the CLI) read back from the view as they
ended; idempotency, conflicts, bad input, health and OpenAPI."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from contracts.routing import commands_exchange
from tests.integration.conftest import namespace_settings, namespaced_fleet
from tests.integration.sagas import SagaFleet
from tests.integration.support import Fleet, FleetProcess, Line, order_body, start_api, wait_for
from workers.orchestrator.settings import OrchestratorSettings
from workers.order.domain import ORDER_NAMESPACE
from workers.runtime import catalog

pytestmark = pytest.mark.integration

STYLES = ("orchestration", "choreography")
FINAL = ("CONFIRMED", "REJECTED")


@dataclass(frozen=True)
class Case:
    customer: str
    lines: tuple[Line, ...]
    country: str
    status: str
    reason: str | None  # words of the rejection reason
    total_amount: str
    item_count: int


CASES = {
    "confirmed": Case("rich", (("WIDGET", 2, "9.90"),), "DE", "CONFIRMED", None, "19.80", 2),
    "out-of-stock": Case(
        "rich",
        (("WIDGET", 1, "5.00"), ("RARE", 5, "1.00")),
        "DE",
        "REJECTED",
        "out of stock",
        "10.00",
        6,
    ),
    "insufficient-funds": Case(
        "poor", (("WIDGET", 1, "5.00"),), "DE", "REJECTED", "insufficient funds", "5.00", 1
    ),
    "blocked-country": Case("rich", (("WIDGET", 3, "2.00"),), "XX", "REJECTED", "XX", "6.00", 3),
}


@dataclass
class ApiFleet:
    sagas: SagaFleet
    process: FleetProcess
    http: httpx.AsyncClient

    @property
    def fleet(self) -> Fleet:
        return self.sagas.fleet


@pytest.fixture(scope="module")
async def api(server_urls: tuple[str, str]) -> AsyncIterator[ApiFleet]:
    settings = namespace_settings(server_urls, max_attempts=6)
    sections = [OrchestratorSettings(step_timeout_seconds=5.0)]
    async with namespaced_fleet(settings, sections) as fleet:
        sagas = SagaFleet(fleet)
        rich = dict.fromkeys(("rich", "repeat", "lister"), "1000000.00")
        await sagas.seed({"WIDGET": 100_000, "RARE": 1}, {**rich, "poor": "1.00"})
        await asyncio.gather(*(sagas.start(service) for service in catalog.SERVICES))
        process, base_url = await start_api(fleet)
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
            yield ApiFleet(sagas, process, http)
        assert await process.terminate() == 0, "\n".join(process.lines[-20:])
        for worker in sagas.workers.values():
            assert await worker.terminate() == 0


async def place(api: ApiFleet, body: dict[str, Any], key: str | None = None) -> httpx.Response:
    return await api.http.post(
        "/orders", json=body, headers={"Idempotency-Key": key or str(uuid.uuid4())}
    )


def placed_id(response: httpx.Response, key: str) -> str:
    """The order id of a 202, checked against the key it derives from and the Location."""
    assert response.status_code == 202, response.text
    order_id: str = response.json()["order_id"]
    assert order_id == str(uuid.uuid5(ORDER_NAMESPACE, key))
    assert response.headers["location"] == f"/orders/{order_id}"
    return order_id


async def in_view(api: ApiFleet, order_id: str, *, ended: bool = True) -> dict[str, Any]:
    """GET /orders/{id} once the view has the order (and, by default, its end)."""

    async def answer() -> dict[str, Any] | None:
        response = await api.http.get(f"/orders/{order_id}")
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body if not ended or body["order"]["status"] in FINAL else None

    found: dict[str, Any] = await wait_for(answer, timeout=60, interval=0.2)
    return found


def assert_ended_as(answer: dict[str, Any], case: Case, style: str) -> None:
    order = answer["order"]
    assert order["status"] == case.status, order
    assert (order["customer_id"], order["saga"]) == (case.customer, style)
    assert (order["total_amount"], order["currency"], order["item_count"]) == (
        case.total_amount,
        "EUR",
        case.item_count,
    )
    assert order["total"] == f"{case.total_amount} EUR"
    if case.status == "CONFIRMED":
        assert order["payment_id"] and order["tracking_number"], order
        assert order["rejection_reason"] is None
    else:
        assert (order["payment_id"], order["tracking_number"]) == (None, None), order
        assert case.reason is not None and case.reason in order["rejection_reason"], order
    assert set(answer["lag"]) == {"messages_waiting", "last_update"}


# --- Orders end to end. -----------------------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("case_name", list(CASES))
async def test_an_order_placed_over_http_reads_back_as_it_ended(
    api: ApiFleet, case_name: str, style: str
) -> None:
    case = CASES[case_name]
    key = f"http-{uuid.uuid4()}"
    response = await place(
        api, order_body(case.customer, *case.lines, country=case.country, saga=style), key
    )
    order_id = placed_id(response, key)
    assert response.json() == {"order_id": order_id, "status": "PENDING", "idempotency_key": key}
    answer = await in_view(api, order_id)
    assert_ended_as(answer, case, style)
    # The view agrees with the order service's own event store.
    written = await api.sagas.ended(order_id)
    assert written["status"] == case.status


async def test_orders_placed_through_the_cli_read_back_the_same_over_http(api: ApiFleet) -> None:
    kinds = [(name, style) for name in CASES for style in STYLES]

    async def place_with_cli(name: str, style: str) -> str:
        case = CASES[name]
        items = [
            arg for sku, qty, price in case.lines for arg in ("--item", f"{sku}:{qty}:{price}")
        ]
        code, output = await api.fleet.cli(
            "order",
            "place",
            "--customer",
            case.customer,
            *items,
            "--country",
            case.country,
            "--saga",
            style,
            "--json",
        )
        assert code == 0, output
        order_id: str = json.loads(output[output.index("{") :])["order_id"]
        return order_id

    order_ids = await asyncio.gather(*(place_with_cli(name, style) for name, style in kinds))
    for (name, style), order_id in zip(kinds, order_ids, strict=True):
        assert_ended_as(await in_view(api, order_id), CASES[name], style)
    # What the HTTP and CLI orders did leaves every invariant of the fleet holding.
    await api.sagas.quiet_and_verified()


async def test_the_same_key_twice_places_one_order(api: ApiFleet) -> None:
    key = f"repeat-{uuid.uuid4()}"
    body = order_body("repeat", ("WIDGET", 1, "1.00"))
    # Both before the view has the order: both published, the order service places one.
    first, second = await asyncio.gather(place(api, body, key), place(api, body, key))
    order_id = placed_id(first, key)
    assert placed_id(second, key) == order_id
    answer = await in_view(api, order_id)
    assert answer["order"]["status"] == "CONFIRMED"
    assert (await api.http.get(f"/orders/{order_id.upper()}")).json() == answer
    # Once the view has it, the answer says how it ended.
    third = await place(api, body, key)
    assert placed_id(third, key) == order_id
    assert third.json()["status"] == "CONFIRMED"

    listing = await api.http.get("/orders", params={"customer": "repeat"})
    assert listing.status_code == 200, listing.text
    assert [order["order_id"] for order in listing.json()["orders"]] == [order_id]
    assert len(await api.fleet.emitted("order", "order.placed", order_id)) == 1


@pytest.mark.parametrize(
    ("changed", "words"),
    [
        ({"items": [("WIDGET", 2, "1.00")]}, ["total is 1.00 EUR, not 2.00 EUR", "item_count"]),
        ({"customer": "poor"}, ["customer_id is 'rich', not 'poor'"]),
        ({"saga": "choreography"}, ["saga is 'orchestration', not 'choreography'"]),
    ],
    ids=["quantity", "customer", "saga"],
)
async def test_the_same_key_with_other_contents_is_a_conflict(
    api: ApiFleet, changed: dict[str, Any], words: list[str]
) -> None:
    key = f"conflict-{uuid.uuid4()}"
    order_id = placed_id(await place(api, order_body("rich", ("WIDGET", 1, "1.00")), key), key)
    await in_view(api, order_id, ended=False)

    other = order_body(
        changed.get("customer", "rich"),
        *changed.get("items", [("WIDGET", 1, "1.00")]),
        saga=changed.get("saga", "orchestration"),
    )
    response = await place(api, other, key)
    assert response.status_code == 409, response.text
    detail = response.json()["detail"]
    assert order_id in detail and all(word in detail for word in words), detail
    assert len(await api.fleet.emitted("order", "order.placed", order_id)) == 1


async def test_orders_list_filters_by_customer_status_and_limit(api: ApiFleet) -> None:
    confirmed = await place(api, order_body("lister", ("WIDGET", 1, "1.00")))
    rejected = await place(api, order_body("lister", ("WIDGET", 1, "1.00"), country="XX"))
    ids = {confirmed.json()["order_id"], rejected.json()["order_id"]}
    for order_id in ids:
        await in_view(api, order_id)

    response = await api.http.get("/orders", params={"customer": "lister"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert {order["order_id"] for order in answer["orders"]} == ids
    assert isinstance(answer["lag"]["messages_waiting"], int)
    assert answer["lag"]["last_update"] is not None

    response = await api.http.get("/orders", params={"customer": "lister", "status": "REJECTED"})
    [order] = response.json()["orders"]
    assert order["order_id"] == rejected.json()["order_id"]

    response = await api.http.get("/orders", params={"customer": "lister", "limit": 1})
    assert len(response.json()["orders"]) == 1


# --- Bad input, unknown orders. ------------------------------------------------------------

GOOD = order_body("rich", ("WIDGET", 1, "1.00"))
KEY = {"Idempotency-Key": "bad-input"}


def with_line(**changes: Any) -> dict[str, Any]:
    return {**GOOD, "items": [{**GOOD["items"][0], **changes}]}


def mixed_currencies() -> dict[str, Any]:
    dollars = {**GOOD["items"][0], "unit_price": {"amount": "1.00", "currency": "USD"}}
    return {**GOOD, "items": [*GOOD["items"], dollars]}


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "loc", "words"),
    [
        ("POST", "/orders", GOOD, {}, ["header", "Idempotency-Key"], "Field required"),
        (
            "POST",
            "/orders",
            with_line(quantity=0),
            KEY,
            ["body", "items", 0, "quantity"],
            "greater than or equal to 1",
        ),
        (
            "POST",
            "/orders",
            with_line(unit_price={"amount": 9.9, "currency": "EUR"}),
            KEY,
            ["body", "items", 0, "unit_price", "amount"],
            "decimal string",
        ),
        ("POST", "/orders", mixed_currencies(), KEY, ["body"], "same currency"),
        (
            "POST",
            "/orders",
            with_line(unit_price={"amount": "-1.00", "currency": "EUR"}),
            KEY,
            ["body"],
            "items.0.unit_price must not be negative",
        ),
        ("POST", "/orders", {**GOOD, "items": []}, KEY, ["body", "items"], "at least 1"),
        ("POST", "/orders", {**GOOD, "country": "Germany"}, KEY, ["body", "country"], "pattern"),
        ("POST", "/orders", {**GOOD, "saga": "both"}, KEY, ["body", "saga"], "orchestration"),
        ("POST", "/orders", with_line(price="1.00"), KEY, ["body", "items", 0, "price"], "Extra"),
        ("GET", "/orders?status=LOST", None, {}, ["query", "status"], "CONFIRMED"),
        ("GET", "/orders?limit=0", None, {}, ["query", "limit"], "greater than or equal to 1"),
        ("GET", "/orders?limit=1001", None, {}, ["query", "limit"], "less than or equal to 1000"),
        ("GET", "/orders/not-a-uuid", None, {}, ["path", "order_id"], "UUID"),
    ],
    ids=[
        "no-key",
        "quantity",
        "float-price",
        "mixed-currencies",
        "negative-price",
        "no-items",
        "country",
        "saga",
        "unknown-field",
        "status",
        "limit-0",
        "limit-1001",
        "order-id",
    ],
)
async def test_bad_input_is_a_422_naming_the_field(
    api: ApiFleet,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    headers: dict[str, str],
    loc: list[Any],
    words: str,
) -> None:
    response = await api.http.request(method, path, json=body, headers=headers)
    assert response.status_code == 422, response.text
    problems = {tuple(problem["loc"]): problem["msg"] for problem in response.json()["detail"]}
    assert tuple(loc) in problems, problems
    assert words in problems[tuple(loc)], problems


async def test_a_refused_request_publishes_nothing(api: ApiFleet) -> None:
    exchange = commands_exchange(api.fleet.ns)
    async with api.fleet.tap(exchange, "order.place_order") as seen:
        assert (await place(api, mixed_currencies())).status_code == 422
        # The API publishes on one channel in order: had the refused one been sent, it would
        # arrive before this one.
        accepted = await place(api, GOOD)
        assert accepted.status_code == 202, accepted.text
        await wait_for(lambda: _some(seen))
    assert [message.correlation_id for message in seen] == [accepted.json()["order_id"]]


async def _some(seen: list[Any]) -> bool:
    return bool(seen)


async def test_an_order_the_view_does_not_show_is_404(api: ApiFleet) -> None:
    unknown = str(uuid.uuid4())
    response = await api.http.get(f"/orders/{unknown}")
    assert response.status_code == 404
    assert response.json() == {"detail": f"no order {unknown} in the view"}

    # A row made by a payment event alone has no status yet: readers never see it.
    statusless = str(uuid.uuid4())
    async with api.fleet.engine("order_view").begin() as conn:
        await conn.exec_driver_sql(
            "INSERT INTO order_summaries (order_id, payment_id, last_version) VALUES ($1, $2, 0)",
            (statusless, str(uuid.uuid4())),
        )
    response = await api.http.get(f"/orders/{statusless.upper()}")
    assert response.status_code == 404, response.text


# --- Health, OpenAPI, the command. --------------------------------------------------------


async def test_health_asks_the_broker_and_the_database(api: ApiFleet) -> None:
    response = await api.http.get("/health")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok", "broker": "ok", "database": "ok"}


def closed_port() -> int:
    """A port nothing listens on (free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("down", ["broker", "database"])
async def test_health_names_what_is_down_and_reads_survive_the_broker(
    api: ApiFleet, down: str
) -> None:
    if down == "broker":
        env: dict[str, Any] = {"amqp_url": f"amqp://guest:guest@127.0.0.1:{closed_port()}/"}
    else:
        env = {"db_urls": {"order_view": f"postgresql://nobody@127.0.0.1:{closed_port()}/none"}}
    process, base_url = await start_api(api.fleet, **env)
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
            response = await http.get("/health")
            assert response.status_code == 503, response.text
            health = response.json()
            assert health["status"] == "unavailable"
            if down == "broker":
                assert health["broker"].startswith("cannot reach RabbitMQ: "), health
                assert health["database"] == "ok"
                placing = await http.post("/orders", json=GOOD, headers={"Idempotency-Key": "x"})
                assert placing.status_code == 503, placing.text
                assert "RabbitMQ" in placing.json()["detail"]
                # The read model needs only its database; what waits in queues is unknown.
                listing = await http.get("/orders")
                assert listing.status_code == 200, listing.text
                assert listing.json()["lag"]["messages_waiting"] is None
            else:
                assert health["database"].startswith("cannot use the view's database: "), health
                assert health["broker"] == "ok"
                listing = await http.get("/orders")
                assert listing.status_code == 503, listing.text
                assert listing.json()["detail"].startswith("cannot use the view's database: ")
    finally:
        assert await process.terminate() == 0


async def test_openapi_describes_the_endpoints(api: ApiFleet) -> None:
    response = await api.http.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert {"/orders", "/orders/{order_id}", "/health"} <= set(document["paths"])
    post = document["paths"]["/orders"]["post"]
    [key] = [p for p in post["parameters"] if p["name"] == "Idempotency-Key"]
    assert key["in"] == "header" and key["required"] is True
    assert "PlaceOrderRequest" in document["components"]["schemas"]
    docs = await api.http.get("/docs")
    assert docs.status_code == 200 and "text/html" in docs.headers["content-type"]


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--port", "70000"], 2, "--port"),
        (["--port", "http"], 2, "--port"),
    ],
)
async def test_fleet_api_bad_usage_gets_one_line(
    api: ApiFleet, args: list[str], code: int, words: str
) -> None:
    exit_code, output = await api.fleet.cli("api", *args)
    assert exit_code == code, output
    assert len(output.strip().splitlines()) == 1, output
    assert output.startswith("fleet: ") and words in output, output


async def test_fleet_api_on_a_port_in_use_gets_one_line(api: ApiFleet) -> None:
    port = str(api.http.base_url.port)
    exit_code, output = await api.fleet.cli("api", "--port", port)
    assert exit_code == 1, output
    assert output.strip() == f"fleet: cannot listen on 127.0.0.1:{port}: Address already in use"
