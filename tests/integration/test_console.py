"""The web console (``/console`` of ``fleet api``, a real process) on a namespace with dead
letters of two groups: its pages over HTTP, its refusals, and an operator's session in a
real browser (headless Chromium through chromedriver) that replays a group.

Set FLEET_CONSOLE_SCREENSHOTS=/tmp to keep screenshots of the overview and a group page
(console-overview.png, console-group.png)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from urllib.parse import quote

import aio_pika
import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement

from api.console import auth
from contracts import Envelope, OutgoingMessage, RejectOrder, encode_message
from tests.integration.conftest import namespace_settings, namespaced_fleet
from tests.integration.support import Fleet, FleetProcess, new_id, not_json, start_api, wait_for
from workers.operations import archive, dead_letters, ops_db, pausing
from workers.runtime import catalog, control

pytestmark = pytest.mark.integration

TOKEN_NAME, TOKEN_SECRET = "ops-alice", "correct-horse-battery"
UNDECODABLE = "InvalidBody at contracts.registry.Registry.decode"  # the group replayed
NEVER_PLACED = "PermanentError at workers.order.domain._placed_order"  # the group left
UNDECODABLE_COUNT, NEVER_PLACED_COUNT = 5, 3
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@dataclass
class Console:
    fleet: Fleet
    api: FleetProcess
    url: str  # the API's base URL
    inventory_queue: str  # where the undecodable commands failed
    order_queue: str  # where the rejections of orders never placed failed

    @property
    def inventory_dlq(self) -> str:
        return f"{self.inventory_queue}.dlq"

    @property
    def order_dlq(self) -> str:
        return f"{self.order_queue}.dlq"

    async def depth(self, queue: str) -> int:
        """Over AMQP, not through the console."""
        return await self.fleet.queue_depth(queue)


def rejection(queue: str) -> OutgoingMessage:
    """RejectOrder for an order never placed, with a W3C traceparent as a traced client's."""
    message = RejectOrder(order_id=new_id(), reason="never placed")
    envelope = Envelope.new(message.TYPE, message.VERSION, "tests", new_id())
    traceparent = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
    return OutgoingMessage.of(
        envelope,
        encode_message(message),
        exchange="",
        routing_key=queue,
        headers={"traceparent": traceparent},
    )


@pytest.fixture(scope="module")
async def console(server_urls: tuple[str, str]) -> AsyncIterator[Console]:
    """UNDECODABLE_COUNT undecodable reserve_stock commands and NEVER_PLACED_COUNT
    rejections of orders never placed, dead-lettered by real workers (stopped afterwards, so
    that what is replayed waits in its queue); then ``fleet api`` with a console token."""
    async with namespaced_fleet(namespace_settings(server_urls)) as fleet:
        inventory = f"{fleet.ns}.inventory.reserve_stock"
        order = f"{fleet.ns}.order.reject_order"
        async with fleet.publisher() as publisher:
            await publisher.publish_many(
                [not_json(inventory) for _ in range(UNDECODABLE_COUNT)]
                + [rejection(order) for _ in range(NEVER_PLACED_COUNT)]
            )
        async with (
            fleet.worker(catalog.load("inventory"), with_relay=False),
            fleet.worker(catalog.load("order"), with_relay=False),
        ):

            async def all_dead() -> bool:
                depths = await dead_letters.depths(
                    fleet.settings, [f"{inventory}.dlq", f"{order}.dlq"]
                )
                return depths == {
                    f"{inventory}.dlq": UNDECODABLE_COUNT,
                    f"{order}.dlq": NEVER_PLACED_COUNT,
                }

            await wait_for(all_dead, timeout=60)
        api, url = await start_api(fleet, console_token=f"{TOKEN_NAME}:{TOKEN_SECRET}")
        yield Console(fleet, api, url, inventory, order)
        assert await api.terminate() == 0, "\n".join(api.lines[-20:])


@pytest.fixture
async def http(console: Console) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=console.url, timeout=30) as client:
        yield client


async def logged_in(client: httpx.AsyncClient) -> str:
    """Log ``client`` in with the token; its session cookie's value."""
    response = await client.post("/console/login", data={"token": TOKEN_SECRET})
    assert response.status_code == 303, response.text
    session = client.cookies.get(auth.SESSION_COOKIE)
    assert session is not None
    return session


HISTORY_ROW = re.compile(
    r'<span class="badge info operator">([^<]*)</span></td>\s*'
    r'<td class="action"><strong>([^<]*)</strong></td>\s*'
    r'<td class="wrap">([^<]*)</td>'
)


def history_rows(page: str) -> list[tuple[str, str, str]]:
    """The history page's rows, latest first: (operator, action, target). Not the page's
    text: its header names the signed-in token whoever did what."""
    return HISTORY_ROW.findall(page)


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None, "no CSRF token in the page"
    return found.group(1)


# --- Pages over HTTP. -------------------------------------------------------------------


async def test_every_page_answers_without_a_login(
    console: Console, http: httpx.AsyncClient
) -> None:
    letters = await dead_letters.browse(console.fleet.settings, console.order_dlq, 10)
    one = letters[0].message_id
    assert one is not None
    pages = [
        "/console",
        "/console/groups",
        "/console/groups?by=type",
        "/console/groups?by=queue",
        "/console/groups?by=service",
        f"/console/group?signature={quote(NEVER_PLACED)}",
        "/console/dlq",
        f"/console/dlq/{console.order_dlq}",
        f"/console/dlq/{console.order_dlq}/{one}",
        "/console/archived",
        "/console/pending",
        "/console/sagas",
        "/console/sagas?state=running&style=orchestration&stuck_for=1s",
        "/console/history",
        "/console/login",
        "/console/static/console.css",
        f"/console/confirm/replay?group={quote(NEVER_PLACED)}",
        f"/console/confirm/purge?queue={console.order_dlq}&message_id={one}",
        "/console/confirm/pause?target=inventory.reserve_stock",
    ]
    for page in pages:
        response = await http.get(page)
        assert response.status_code == 200, (page, response.text[:500])
    groups = (await http.get("/console/groups")).text
    assert NEVER_PLACED in groups and UNDECODABLE in groups
    message = (await http.get(f"/console/dlq/{console.order_dlq}/{one}")).text
    assert TRACE_ID in message  # from its traceparent header
    assert "was never placed" in message
    assert console.order_queue in message  # its original queue
    confirm = (await http.get(f"/console/confirm/replay?group={quote(NEVER_PLACED)}")).text
    assert f'id="plan-count">{NEVER_PLACED_COUNT}<' in confirm
    assert "not logged in" in confirm


async def test_bad_requests_are_pages_with_the_reason(
    console: Console, http: httpx.AsyncClient
) -> None:
    answers = {
        f"/console/dlq/{console.order_dlq}/{uuid.uuid4()}": 404,
        f"/console/dlq/{console.order_queue}": 400,  # not a DLQ
        "/console/groups?by=colour": 400,
        "/console/sagas?stuck_for=soon": 400,
        f"/console/sagas/{uuid.uuid4()}": 404,
        "/console/confirm/explode": 400,
        "/console/confirm/pause?target=nosuchservice": 400,
        f"/console/confirm/retry?order_id={uuid.uuid4()}": 409,  # no such saga
        "/console/confirm/compensate?order_id=not-an-id": 400,
    }
    for page, status in answers.items():
        response = await http.get(page)
        assert response.status_code == status, (page, response.text[:500])
        assert "<html" in response.text


async def test_actions_are_refused_without_the_token(
    console: Console, http: httpx.AsyncClient
) -> None:
    replay = {"group": NEVER_PLACED}
    response = await http.post("/console/actions/replay", data=replay)
    assert response.status_code == 403
    assert auth.LOG_IN in response.text
    # A wrong token is refused at the login, and sets no cookie.
    response = await http.post("/console/login", data={"token": "guess"})
    assert response.status_code == 403 and "wrong token" in response.text
    assert auth.SESSION_COOKIE not in http.cookies
    # A session cookie made with another secret is no login.
    forged = auth.ConsoleToken(TOKEN_NAME, "another-secret").session(time.time())
    async with httpx.AsyncClient(
        base_url=console.url, cookies={auth.SESSION_COOKIE: forged}, timeout=30
    ) as forger:
        response = await forger.post("/console/actions/replay", data=replay)
    assert response.status_code == 403 and auth.LOG_IN in response.text
    assert await console.depth(console.order_dlq) == NEVER_PLACED_COUNT


async def test_a_console_without_a_token_refuses_every_action(console: Console) -> None:
    api, url = await start_api(console.fleet)  # FLEET_CONSOLE_TOKEN unset
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            assert (await client.get("/console")).status_code == 200
            page = (await client.get(f"/console/confirm/replay?group={quote(NEVER_PLACED)}")).text
            assert "no token configured" in page
            response = await client.post("/console/login", data={"token": TOKEN_SECRET})
            assert response.status_code == 403 and auth.NOT_CONFIGURED in response.text
            response = await client.post("/console/actions/replay", data={"group": NEVER_PLACED})
            assert response.status_code == 403 and auth.NOT_CONFIGURED in response.text
    finally:
        assert await api.terminate() == 0
    assert await console.depth(console.order_dlq) == NEVER_PLACED_COUNT


# --- An operator in a browser. ----------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    for program in (CHROMIUM, CHROMEDRIVER):
        if not os.path.exists(program):
            pytest.fail(f"{program} is missing: apt-get install chromium chromium-driver")
    profile = tempfile.mkdtemp(prefix="fleet-console-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1400,1000",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=ChromeService(CHROMEDRIVER), options=options)
    # A click that submits a form returns before the next page is there: finding an
    # element of that page waits for it (at most this long).
    driver.implicitly_wait(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver: WebDriver, name: str) -> None:
    """The whole page, when FLEET_CONSOLE_SCREENSHOTS names a folder."""
    folder = os.environ.get("FLEET_CONSOLE_SCREENSHOTS")
    if not folder:
        return
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, max(1000, int(height)))
    driver.save_screenshot(os.path.join(folder, name))
    driver.set_window_size(1400, 1000)


class Operator:
    """What a person does in the browser, each step in a thread: the API's output keeps
    being read meanwhile."""

    def __init__(self, driver: WebDriver, base_url: str) -> None:
        self.driver = driver
        self.base_url = base_url

    async def open(self, path: str) -> None:
        await asyncio.to_thread(self.driver.get, self.base_url + path)

    def _find(self, css: str) -> WebElement:
        try:
            return self.driver.find_element(By.CSS_SELECTOR, css)
        except NoSuchElementException:
            body = self.driver.find_element(By.TAG_NAME, "body").text
            raise AssertionError(f"no {css} in {self.driver.current_url}:\n{body}") from None

    async def click(self, css: str) -> None:
        element = await asyncio.to_thread(self._find, css)
        await asyncio.to_thread(element.click)

    async def text(self, css: str) -> str:
        element = await asyncio.to_thread(self._find, css)
        return str(await asyncio.to_thread(lambda: element.text))

    async def page(self) -> str:
        return str(await asyncio.to_thread(lambda: self.driver.page_source))

    async def group_counts(self) -> dict[str, int]:
        """The groups page's rows: signature -> count."""
        await self.open("/console/groups")

        def rows() -> dict[str, int]:
            found = {}
            for row in self.driver.find_elements(By.CSS_SELECTOR, "tr.group"):
                key = row.get_attribute("data-key")
                found[str(key)] = int(row.find_element(By.CSS_SELECTOR, ".count").text)
            return found

        return await asyncio.to_thread(rows)

    async def screenshot(self, name: str) -> None:
        await asyncio.to_thread(screenshot, self.driver, name)


async def test_an_operator_replays_a_group_in_the_browser(
    console: Console, browser: WebDriver
) -> None:
    operator = Operator(browser, console.url)
    await operator.open("/console")
    assert await operator.text("#card-groups .n") == "2"
    dead = UNDECODABLE_COUNT + NEVER_PLACED_COUNT
    assert await operator.text("#card-dead-letters .n") == str(dead)
    await operator.screenshot("console-overview.png")
    assert await operator.group_counts() == {
        UNDECODABLE: UNDECODABLE_COUNT,
        NEVER_PLACED: NEVER_PLACED_COUNT,
    }

    # Without the token: the confirmation says so, and the confirmed action is refused.
    await operator.click(f'tr.group[data-key="{UNDECODABLE}"] a.group-link')
    assert await operator.text("#group-count") == str(UNDECODABLE_COUNT)
    await operator.screenshot("console-group.png")
    await operator.click("#replay-group")
    assert await operator.text("#plan-count") == str(UNDECODABLE_COUNT)
    assert "not logged in" in await operator.text("#not-logged-in")
    await operator.click("#confirm")
    assert auth.LOG_IN in await operator.text("#refusal")
    assert await console.depth(console.inventory_dlq) == UNDECODABLE_COUNT
    assert (await operator.group_counts())[UNDECODABLE] == UNDECODABLE_COUNT

    # Logged in: the same replay goes through its confirmation.
    await operator.click("#login-link")
    token_field = await asyncio.to_thread(browser.find_element, By.ID, "token")
    await asyncio.to_thread(token_field.send_keys, f"{TOKEN_NAME}:{TOKEN_SECRET}")
    await operator.click("#login")
    assert TOKEN_NAME in await operator.text("#signed-in")
    await operator.open(f"/console/group?signature={quote(UNDECODABLE)}")
    await operator.click("#replay-group")
    assert await operator.text("#plan-count") == str(UNDECODABLE_COUNT)
    assert "not logged in" not in await operator.page()
    await operator.click("#confirm")
    assert await operator.text("#outcome") == (
        f"Replayed {UNDECODABLE_COUNT} dead letter(s) of group {UNDECODABLE}"
    )

    # The group is gone, the other left as it was; over AMQP too: the letters went back to
    # their queue (no worker runs to take them).
    assert await operator.group_counts() == {NEVER_PLACED: NEVER_PLACED_COUNT}
    await operator.open("/console")
    assert await operator.text("#card-dead-letters .n") == str(NEVER_PLACED_COUNT)
    assert await console.depth(console.inventory_dlq) == 0
    assert await console.depth(console.inventory_queue) == UNDECODABLE_COUNT
    await operator.open("/console/pending")
    assert await operator.text("#pending-count") == str(UNDECODABLE_COUNT)

    # The history names the token's name as the operator.
    await operator.open("/console/history?action=dlq.replay")
    first = await operator.text("#history tbody tr")
    assert "dlq.replay" in first and TOKEN_NAME in first and f"group {UNDECODABLE}" in first

    # A form forged elsewhere: the browser's own cookie, but no CSRF token (or a made-up
    # one) is refused, and nothing changes.
    cookie = await asyncio.to_thread(browser.get_cookie, auth.SESSION_COOKIE)
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert TOKEN_SECRET not in cookie["value"]
    async with httpx.AsyncClient(
        base_url=console.url, cookies={auth.SESSION_COOKIE: cookie["value"]}, timeout=30
    ) as forger:
        for csrf in (None, "nonce.0123456789abcdef"):
            data = {"group": NEVER_PLACED, **({"csrf": csrf} if csrf else {})}
            response = await forger.post("/console/actions/replay", data=data)
            assert response.status_code == 403
            assert auth.BAD_CSRF in response.text
    assert await console.depth(console.order_dlq) == NEVER_PLACED_COUNT


# --- More actions over HTTP, logged in. -------------------------------------------------


async def test_an_invalid_edit_names_the_field_and_changes_nothing_a_valid_one_replays(
    console: Console, http: httpx.AsyncClient
) -> None:
    await logged_in(http)
    letters = await dead_letters.browse(console.fleet.settings, console.order_dlq, 10)
    message_id = letters[0].message_id
    assert message_id is not None
    fields = {"queue": console.order_dlq, "message_id": message_id}
    bad = '{"order_id": "not-a-uuid", "reason": "fixed by hand"}'
    response = await http.post("/console/confirm/edit", data={**fields, "data": bad})
    assert response.status_code == 400
    assert "order_id" in response.text and "not-a-uuid" in response.text  # the edit is kept
    # Past the confirmation too (a form sent as if confirmed): refused the same.
    page = (await http.get(f"/console/dlq/{console.order_dlq}/{message_id}")).text
    response = await http.post(
        "/console/actions/edit", data={**fields, "data": bad, "csrf": csrf_of(page)}
    )
    assert response.status_code == 400 and "order_id" in response.text
    assert await console.depth(console.order_dlq) == NEVER_PLACED_COUNT
    assert await console.depth(console.order_queue) == 0

    # A valid edit: confirmed, a copy with a new id goes to the queue, the original leaves.
    good = letters[0].body.decode().replace("never placed", "fixed by hand")
    confirm = await http.post("/console/confirm/edit", data={**fields, "data": good})
    assert confirm.status_code == 200 and "fixed by hand" in confirm.text
    done = await http.post(
        "/console/actions/edit", data={**fields, "data": good, "csrf": csrf_of(confirm.text)}
    )
    assert done.status_code == 200 and f"Replayed an edited copy of {message_id}" in done.text
    assert await console.depth(console.order_dlq) == NEVER_PLACED_COUNT - 1
    assert await console.depth(console.order_queue) == 1
    left = await dead_letters.browse(console.fleet.settings, console.order_dlq, 10)
    assert message_id not in {letter.message_id for letter in left}


async def test_archive_and_restore_a_letter_through_their_confirmations(
    console: Console, http: httpx.AsyncClient
) -> None:
    await logged_in(http)
    letters = await dead_letters.browse(console.fleet.settings, console.order_dlq, 10)
    message_id = letters[-1].message_id
    assert message_id is not None
    depth = len(letters)
    fields = {"queue": console.order_dlq, "message_id": message_id}
    confirm = await http.get("/console/confirm/archive", params=fields)
    assert confirm.status_code == 200 and 'id="plan-count">1<' in confirm.text
    done = await http.post(
        "/console/actions/archive", data={**fields, "csrf": csrf_of(confirm.text)}
    )
    assert done.status_code == 200 and "Archived 1 dead letter(s)" in done.text
    assert await console.depth(console.order_dlq) == depth - 1
    archived = (await http.get("/console/archived")).text
    assert message_id in archived

    confirm = await http.get("/console/confirm/restore", params={"message_id": message_id})
    assert confirm.status_code == 200 and 'id="plan-count">1<' in confirm.text
    done = await http.post(
        "/console/actions/restore",
        data={"message_id": message_id, "csrf": csrf_of(confirm.text)},
    )
    assert done.status_code == 200 and "Restored 1 archived letter(s)" in done.text
    assert await console.depth(console.order_dlq) == depth
    history = history_rows((await http.get("/console/history?action=dlq")).text)
    assert history[:2] == [
        (TOKEN_NAME, "dlq.restore", f"{archive.ARCHIVE}, message {message_id}"),
        (TOKEN_NAME, "dlq.archive", f"{console.order_dlq}, message {message_id}"),
    ]


async def test_pause_and_resume_a_handler_from_the_overview(
    console: Console, http: httpx.AsyncClient
) -> None:
    await logged_in(http)
    handler = "inventory.reserve_stock"
    for action, paused, button in (("pause", (handler,), "resume"), ("resume", (), "pause")):
        confirm = await http.get(f"/console/confirm/{action}", params={"target": handler})
        assert confirm.status_code == 200 and 'id="plan-count">1<' in confirm.text
        done = await http.post(
            f"/console/actions/{action}", data={"target": handler, "csrf": csrf_of(confirm.text)}
        )
        assert done.status_code == 200, done.text
        assert await pausing.paused(console.fleet.settings) == paused
        overview = (await http.get("/console")).text
        assert f"/console/confirm/{button}?target={handler}" in overview
        assert ('<span class="badge warn">paused</span>' in overview) == bool(paused)
    history = history_rows((await http.get("/console/history", params={"target": handler})).text)
    assert history[:2] == [(TOKEN_NAME, "resume", handler), (TOKEN_NAME, "pause", handler)]


async def test_a_purge_is_recorded_under_the_token_name(
    console: Console, http: httpx.AsyncClient
) -> None:
    await logged_in(http)
    letters = await dead_letters.browse(console.fleet.settings, console.order_dlq, 10)
    message_id = letters[0].message_id
    assert message_id is not None
    fields = {"queue": console.order_dlq, "message_id": message_id}
    confirm = await http.get("/console/confirm/purge", params=fields)
    assert confirm.status_code == 200 and 'id="plan-count">1<' in confirm.text
    done = await http.post("/console/actions/purge", data={**fields, "csrf": csrf_of(confirm.text)})
    assert done.status_code == 200 and "Purged 1 dead letter(s)" in done.text
    assert await console.depth(console.order_dlq) == len(letters) - 1
    # Under the token's name, not the API server's $USER.
    history = history_rows((await http.get("/console/history?action=dlq.purge")).text)
    assert history == [(TOKEN_NAME, "dlq.purge", console.order_dlq)]
    purges = await ops_db.history(console.fleet.settings, action="dlq.purge")
    assert [(line.operator, line.message_ids) for line in purges] == [(TOKEN_NAME, [message_id])]


async def test_a_tripped_breaker_shows_on_the_overview(
    console: Console, http: httpx.AsyncClient
) -> None:
    """The inventory worker's breaker tripped (its trip marker, as a tripped worker puts
    it): every inventory handler shows paused (auto: ...), and it needs action."""
    settings = console.fleet.settings
    outage = {"dependency": "database", "since": "2026-12-04T12:00:00+00:00", "worker": "w:1"}
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        await control.set_tripped(channel, settings.namespace, "inventory", outage)
        overview = (await http.get("/console")).text
        why = "database unreachable since 2026-12-04T12:00:00+00:00"
        for handler in catalog.load("inventory").handlers:
            queue = handler.queue(settings.namespace)
            row = overview.split(f'data-queue="{queue}"', 1)[1].split("</tr>", 1)[0]
            assert f'<span class="badge bad tripped">paused (auto: {why})</span>' in row, row
            assert f"{queue}: paused (auto: {why})" in overview
        other = catalog.load("payment").handlers[0].queue(settings.namespace)
        assert "tripped" not in overview.split(f'data-queue="{other}"', 1)[1].split("</tr>")[0]
        await control.set_tripped(channel, settings.namespace, "inventory", None)
        assert "badge bad tripped" not in (await http.get("/console")).text
    finally:
        await connection.close()
