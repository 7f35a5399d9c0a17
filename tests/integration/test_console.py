"""The web console in a real browser: Debian's Chromium, headless, driven by Playwright.

One walk through what an integration engineer does — sign in, create a subscription to a local
receiver, keep the secret shown once, send a test, read the delivery log, redeliver, replay,
rotate the secret, edit, delete — with a wrong key refused on the way in and a revoked key
sending the page back to sign-in. Every request the page makes is recorded, and one that leaves
the service's origin fails the test, as does any error the page logs (a CSP violation among them).

The service runs in-process on the SQLite store (the API itself is tested on both stores in
test_api.py). Screenshots of each page go to var/console/ (git-ignored).
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Locator,
    Page,
    Request,
    async_playwright,
    expect,
)
from pydantic import SecretStr

from service import ids
from service.app import Roles, create_app
from service.appkeys import STORE
from service.clock import iso, now_ms
from service.console import CONTENT_SECURITY_POLICY
from service.domain import DeliveryStatus, IncomingEvent, NewDelivery
from service.events import OPERATIONAL
from service.settings import load_settings
from service.signing import standard_secret
from service.store import Lease, Store
from tests.conftest import FAST_DELIVERY, TEST_ENCRYPTION_KEY
from tests.support.store import attempt as store_attempt
from tools.receiver import Behaviour, Receiver

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
# Nothing but the page under test: no update checks, no sync, no field trials, no safe browsing.
CHROMIUM_ARGS = [
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--disable-extensions",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-features=Translate,OptimizationHints,MediaRouter,InterestFeedContentSuggestions",
    "--metrics-recording-only",
    "--no-first-run",
    "--no-default-browser-check",
    "--no-pings",
    "--password-store=basic",
    "--use-mock-keychain",
]
SHOTS = Path(__file__).resolve().parents[2] / "var" / "console"
ORG = "org_console"
BASE = "/api/identity/webhooks"


class Console:
    """The running service, the page, and what the page asked for."""

    def __init__(self, client: TestClient[Any, Any], store: Store, key: str) -> None:
        self.client = client
        self.store = store
        self.key = key
        self.origin = str(client.make_url("")).rstrip("/")
        self.requests: list[str] = []
        self.page_errors: list[str] = []

    async def api(self, method: str, body: Any = None, path: str = "") -> Any:
        """A call of the management API beside the page, with the same key."""
        headers = {"Authorization": f"Bearer {self.key}"}
        async with self.client.request(method, BASE + path, json=body, headers=headers) as reply:
            assert reply.status < 300, await reply.text()
            return await reply.json()

    def on_request(self, request: Request) -> None:
        self.requests.append(request.url)

    def on_console(self, message: ConsoleMessage) -> None:
        # A 4xx the page asked for (the wrong key's 401) is logged by Chromium as an error
        # of the resource; anything else logged as an error is the page's fault.
        if message.type == "error" and "Failed to load resource" not in message.text:
            self.page_errors.append(message.text)

    def foreign(self) -> list[str]:
        own = urlsplit(self.origin)
        return [
            url
            for url in self.requests
            if (urlsplit(url).scheme, urlsplit(url).netloc) != (own.scheme, own.netloc)
        ]


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[Console]:
    settings = load_settings(
        database_url=f"sqlite:///{tmp_path}/webhooks.db",
        encryption_key=SecretStr(TEST_ENCRYPTION_KEY),
        allow_private_targets=True,
        **FAST_DELIVERY,
    )
    # The API process of a split deployment: the dispatcher sends /test and redeliveries.
    app = create_app(settings, Roles(consumer=False))
    client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        _, key = await app[STORE].create_api_key(ORG, "console test")
        yield Console(client, app[STORE], key)
    finally:
        await client.close()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: `make setup` installs Debian's chromium")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@asynccontextmanager
async def watched_page(browser: Browser, console: Console, **options: Any) -> AsyncIterator[Page]:
    """A page in a fresh browser context (`options` are the context's) whose requests, logged
    errors and uncaught exceptions `console` records."""
    context = await browser.new_context(
        viewport={"width": 1360, "height": 900}, service_workers="block", **options
    )
    page = await context.new_page()
    page.set_default_timeout(10_000)
    page.on("request", console.on_request)
    page.on("console", console.on_console)
    page.on("pageerror", lambda error: console.page_errors.append(str(error)))
    try:
        yield page
    finally:
        await context.close()


async def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=SHOTS / f"{name}.png", full_page=True)


def row_of(page: Page, url: str) -> Locator:
    return page.locator("#subs-table tbody tr").filter(has_text=url)


async def local_input_time(page: Page, seconds_ago: int) -> str:
    """A `datetime-local` value in the browser's own zone."""
    value: str = await page.evaluate(
        """(ago) => {
            const d = new Date(Date.now() - ago * 1000);
            const p = (n) => String(n).padStart(2, '0');
            return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T`
                + `${p(d.getHours())}:${p(d.getMinutes())}`;
        }""",
        seconds_ago,
    )
    return value


async def test_the_console_in_a_real_browser(
    console: Console, browser: Browser, receiver: Receiver
) -> None:
    async with watched_page(
        browser,
        console,
        timezone_id="Europe/Berlin",  # local time differs from UTC, and both are shown
        locale="en-GB",
    ) as page:
        await _walk(page, console, receiver)
    assert console.requests, "the page made no request at all"
    assert console.foreign() == [], "the page reached outside the service's origin"
    assert console.page_errors == []


async def _walk(page: Page, console: Console, receiver: Receiver) -> None:
    # -- the page itself: served without a key, with its security headers --------------------
    response = await page.goto(console.origin + "/console")
    assert response is not None
    assert response.status == 200
    headers = await response.all_headers()
    assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "default-src 'self'" in CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["cache-control"] == "no-cache"

    # -- a wrong key is refused with the API's own message -----------------------------------
    sign_in = page.get_by_role("heading", name="Sign in")
    await expect(sign_in).to_be_visible()
    key_field = page.get_by_label("API key")
    assert await key_field.get_attribute("type") == "password"
    await key_field.fill("wk_not-a-key-of-anyone-0000")
    await page.get_by_role("button", name="Sign in").click()
    refused = page.locator("#sign-in-error")
    await expect(refused).to_have_text("the API key is unknown or revoked")
    await shot(page, "sign-in-refused")

    # -- sign in with the keyboard alone -----------------------------------------------------
    await key_field.fill("")
    await key_field.focus()
    await page.keyboard.type(console.key)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name="Subscriptions")).to_be_visible()
    stored = await page.evaluate("() => Object.values(sessionStorage)")
    assert stored == [console.key]
    assert await page.evaluate("() => localStorage.length") == 0
    assert console.key not in await page.content()
    await expect(page.locator("#subs-empty")).to_be_visible()

    # Tab reaches the buttons, and the focused one is outlined.
    await page.keyboard.press("Tab")
    outline = await page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("none", "")

    # -- create: the secret shown once -------------------------------------------------------
    url = receiver.url("console")
    await page.get_by_role("button", name="New subscription").click()
    dialog = page.locator("#edit-dialog")
    await expect(dialog).to_be_visible()
    # An invalid URL answers with the API's 422 message, in the dialog.
    await page.get_by_label("Endpoint URL").fill("ftp://example.com/hook")
    await page.get_by_label("verification.created").check()
    await page.get_by_role("button", name="Create").click()
    await expect(page.locator("#edit-error")).to_contain_text("url:")
    assert await page.get_by_label("Endpoint URL").get_attribute("aria-invalid") == "true"

    await page.get_by_label("Endpoint URL").fill(url)
    await page.get_by_label("Installed by (optional)").fill("console-test@1")
    await page.get_by_label("Headers sent with every delivery").fill("X-Customer-Tenant: acme")
    await page.get_by_role("button", name="Create").click()
    secret_dialog = page.locator("#secret-dialog")
    await expect(secret_dialog).to_be_visible()
    await expect(secret_dialog).to_contain_text("shown once")
    secret = await page.locator("#secret-value").input_value()
    assert secret.startswith("qe_whsec_")
    # Its Standard Webhooks form beside it, for the receivers' libraries.
    standard = await page.locator("#secret-standard").input_value()
    assert standard == standard_secret(secret)
    await expect(page.get_by_role("button", name="Copy", exact=True)).to_have_count(2)
    await shot(page, "secret-once")
    await page.get_by_role("button", name="I have stored it").click()
    await expect(secret_dialog).to_be_hidden()
    await expect(page.locator("#secret-value")).to_have_value("")
    await expect(page.locator("#secret-standard")).to_have_value("")
    assert secret not in await page.content()
    assert standard not in await page.content()

    row = row_of(page, url)
    await expect(row).to_have_count(1)
    await expect(row).to_contain_text("active")
    await expect(row).to_contain_text("verification.created")
    await expect(row).to_contain_text("none yet")

    # -- Send test: the attempt's result in place --------------------------------------------
    await row.get_by_role("button", name="Send test").click()
    result = row.locator("[data-test-result]")
    await expect(result).to_contain_text("sent")
    await expect(result).to_contain_text("HTTP 200")
    await expect(result).to_contain_text(" ms")
    await expect(row.get_by_text("sent · 200")).to_have_class("badge status-sent")
    await expect(row).to_contain_text("100 %")
    (test_request,) = receiver.at("console")
    assert test_request.headers["X-Customer-Tenant"] == "acme"
    delivery_id = test_request.delivery
    await expect(row.locator("time").first).to_contain_text("UTC")

    # A second endpoint, failing (made through the API): its last delivery shows in red.
    receiver.set("down", Behaviour(status=503))
    down_url = receiver.url("down")
    down = await console.api("POST", {"url": down_url, "events": ["review.overridden"]})
    failed_test = await console.api("POST", path=f"/{down['id']}/test")
    assert failed_test["responseCode"] == 503
    await page.get_by_role("button", name="Refresh").click()
    down_row = row_of(page, down_url)
    await expect(down_row.get_by_text("503")).to_have_class(re.compile(r"status-(retrying|failed)"))
    await expect(down_row).to_contain_text("0 %")
    await shot(page, "subscriptions")

    # Readable at 375 px: one card per row, nothing wider than the screen.
    await page.set_viewport_size({"width": 375, "height": 812})
    await expect(row.get_by_role("button", name="Send test")).to_be_visible()
    width = await page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 375
    await shot(page, "subscriptions-375px")
    await page.set_viewport_size({"width": 1360, "height": 900})

    # -- the delivery log: filters, attempts, payload, Redeliver -----------------------------
    await row.get_by_role("button", name="Deliveries").click()
    await expect(page.get_by_role("heading", name="Delivery log")).to_be_visible()
    log_row = page.locator(f'#log-table tbody tr[data-id="{delivery_id}"]')
    await expect(log_row).to_have_count(1)
    await expect(log_row).to_contain_text("webhook.test")
    await expect(log_row.locator(".attempt-count")).to_have_text("1")

    await page.get_by_label("Status").select_option("failed")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.locator("#log-empty")).to_be_visible()
    await page.get_by_label("Status").select_option("sent")
    await page.get_by_label("Event", exact=True).select_option("webhook.test")
    await page.get_by_role("button", name="Filter").click()
    await expect(log_row).to_have_count(1)

    await log_row.get_by_role("button", name="Details").click()
    details = page.locator(f"#details-{delivery_id}")
    await expect(details.locator("table.attempts tbody tr")).to_have_count(1)
    await expect(details.locator("pre.payload")).to_contain_text('"event": "webhook.test"')
    await shot(page, "deliveries")

    await log_row.get_by_role("button", name="Redeliver").click()
    await expect(log_row).to_contain_text("Redelivered: attempt 2", timeout=20_000)
    await expect(log_row.locator(".attempt-count")).to_have_text("2")
    await expect(details.locator("table.attempts tbody tr")).to_have_count(2)
    assert [r.delivery for r in receiver.at("console")] == [delivery_id, delivery_id]
    await shot(page, "redelivered")

    # -- Replay since…: an event the subscription never had ----------------------------------
    subscription_id = (await page.locator("#log-sub").text_content() or "").rsplit("(", 1)[1][:-1]
    event_id = ids.new_id("evt")
    body = f'{{"id":"{event_id}","event":"verification.created"}}'.encode()
    await console.store.record_events(
        [IncomingEvent(event_id, ORG, "verification.created", now_ms(), body, None, None)],
        [],
        Lease("console-test", 60_000),
    )
    await page.get_by_label("Since", exact=True).fill(await local_input_time(page, 3600))
    await page.get_by_label("Only failed deliveries").uncheck()
    await page.get_by_role("button", name="Replay").click()
    await expect(page.locator("#replay-result")).to_have_text("Queued 1 delivery.")
    await receiver.wait_for(lambda: any(r.event_id == event_id for r in receiver.requests))
    await page.get_by_role("button", name="Clear").click()
    await expect(page.locator("#log-table tbody tr[data-id]")).to_have_count(2)
    await shot(page, "replayed")
    assert subscription_id.startswith("whk_")

    # -- rotate the secret: the new one shown once -------------------------------------------
    await page.get_by_role("link", name="← Subscriptions").click()
    await expect(row).to_have_count(1)
    await row.get_by_role("button", name="Rotate secret").click()
    await expect(page.locator("#rotate-dialog")).to_be_visible()
    await page.get_by_label("Overlap in seconds").fill("3600")
    await page.get_by_role("button", name="Rotate", exact=True).click()
    await expect(secret_dialog).to_be_visible()
    rotated = await page.locator("#secret-value").input_value()
    assert rotated.startswith("qe_whsec_")
    assert rotated != secret
    await expect(page.locator("#secret-note")).to_contain_text("previous secret is valid until")
    await shot(page, "rotated")
    await page.keyboard.press("Escape")  # a dialog closes from the keyboard too
    await expect(secret_dialog).to_be_hidden()
    await expect(page.locator("#secret-value")).to_have_value("")
    assert rotated not in await page.content()

    # -- Send test of any catalog event: its example, marked as a test -----------------------
    choice = row.get_by_label(f"Test event: {url}")
    await expect(choice).to_have_value("webhook.test")
    await choice.select_option("review.overridden")
    await row.get_by_role("button", name="Send test").click()
    result = row.locator("[data-test-result]")
    await expect(result).to_contain_text("Test review.overridden:")
    await expect(result).to_contain_text("HTTP 200")
    envelope = orjson.loads(receiver.at("console")[-1].body)
    assert (envelope["event"], envelope["test"], envelope["orgId"]) == (
        "review.overridden",
        True,
        ORG,
    )
    await expect(choice).to_have_value("review.overridden")  # kept when the row is redrawn

    # -- edit: events, rate limit, ordering, paused ------------------------------------------
    await row.get_by_role("button", name="Edit").click()
    assert await page.get_by_label("Endpoint URL").input_value() == url
    await page.get_by_label("customer.kyc_updated").check()
    await page.get_by_label("Rate limit, deliveries per second").fill("20")
    await page.get_by_label("Ordering").select_option("customer")
    await page.get_by_label("Active").uncheck()
    await page.get_by_role("button", name="Save").click()
    await expect(page.locator("#edit-dialog")).to_be_hidden()
    await expect(row.locator(".state-paused")).to_have_text("paused")
    await expect(row).to_contain_text("customer.kyc_updated")
    await expect(row).to_contain_text("at most 20/s")
    await expect(row).to_contain_text("ordered per customer")

    # -- delete, after a confirmation --------------------------------------------------------
    await row.get_by_role("button", name="Delete").click()
    confirm = page.locator("#confirm-dialog")
    await expect(confirm).to_contain_text(url)
    await shot(page, "delete-confirm")
    await confirm.get_by_role("button", name="Cancel").click()
    await expect(row).to_have_count(1)
    await row.get_by_role("button", name="Delete").click()
    await confirm.get_by_role("button", name="Delete").click()
    await expect(row).to_have_count(0)
    await expect(page.locator("#subs-table tbody tr")).to_have_count(1)

    # -- a key revoked while signed in sends the page back to sign-in, with the reason --------
    (key_record,) = [k for k in await console.store.list_api_keys() if k.org_id == ORG]
    await console.store.revoke_api_key(key_record.id)
    await page.get_by_role("button", name="Refresh").click()
    await expect(sign_in).to_be_visible()
    await expect(refused).to_have_text("the API key is unknown or revoked")
    assert await page.evaluate("() => sessionStorage.length") == 0
    await shot(page, "signed-out")


# -- erasing a customer's data ----------------------------------------------------------------

ERASED_CUSTOMER = "cus/ø 1"  # a "/" and more than ASCII: percent-encoded by the page
KEPT_CUSTOMER = "cus_keep"


async def about(
    store: Store, subscription_id: str, customer: str, occurred_at: int, *, sent: bool
) -> str:
    """A delivery to the subscription of an event about `customer`: sent, or left open (held
    under a lease the running dispatcher does not take); its id."""
    event_id = ids.new_id("evt")
    envelope = {
        "id": event_id,
        "event": "verification.created",
        "occurredAt": iso(occurred_at),
        "orgId": ORG,
        "data": {"customerId": customer, "score": 87},
    }
    event = IncomingEvent(
        event_id,
        ORG,
        "verification.created",
        occurred_at,
        orjson.dumps(envelope),
        None,
        None,
        customer_id=customer,
    )
    delivery = NewDelivery(ids.new_id(ids.DELIVERY), event_id, subscription_id, event.event, ORG)
    await store.record_events([event], [delivery], Lease("console-test", 600_000))
    if sent:
        attempt = store_attempt(delivery, 1, DeliveryStatus.SENT, 200, now_ms())
        await store.record_attempts([attempt], "console-test")
    return delivery.id


async def test_erasing_a_customer_in_the_console(
    console: Console, browser: Browser, receiver: Receiver
) -> None:
    """The dry run's counts confirmed before anything is erased, the receipt after; then the
    delivery log without the erased payloads, and the 410s of redeliver and replay in words."""
    subscription = await console.api(
        "POST", {"url": receiver.url("erase"), "events": ["verification.created"]}
    )
    sid = subscription["id"]
    two_hours_ago = now_ms() - 2 * 3_600_000
    still_open = await about(console.store, sid, ERASED_CUSTOMER, two_hours_ago, sent=False)
    erased_sent = await about(console.store, sid, ERASED_CUSTOMER, two_hours_ago + 1, sent=True)
    kept = await about(console.store, sid, KEPT_CUSTOMER, now_ms() - 60_000, sent=True)

    context = await browser.new_context(
        viewport={"width": 1360, "height": 900},
        timezone_id="Europe/Berlin",
        locale="en-GB",
        service_workers="block",
    )
    page = await context.new_page()
    page.set_default_timeout(10_000)
    page.on("request", console.on_request)
    page.on("console", console.on_console)
    page.on("pageerror", lambda error: console.page_errors.append(str(error)))
    try:
        await _erase(page, console, receiver, sid, (still_open, erased_sent, kept))
    finally:
        await context.close()
    assert console.foreign() == []
    assert console.page_errors == []


async def _erase(
    page: Page, console: Console, receiver: Receiver, sid: str, deliveries: tuple[str, ...]
) -> None:
    still_open, erased_sent, kept = deliveries

    async def detail(delivery_id: str) -> Any:
        return await console.api("GET", path=f"/{sid}/deliveries/{delivery_id}")

    await page.goto(console.origin + "/console")
    await page.get_by_label("API key").fill(console.key)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name="Subscriptions")).to_be_visible()

    dialog = page.locator("#erase-dialog")
    customer = page.get_by_label("Customer id")
    check = page.get_by_role("button", name="Show what would be erased")
    confirmation = page.locator("#erase-confirm")

    # What cannot be an id is refused in the API's words; an id without events erases nothing.
    await page.get_by_role("button", name="Erase a customer's data").click()
    await expect(dialog).to_be_visible()
    await customer.fill("c" * 201)
    await check.click()
    await expect(page.locator("#erase-error")).to_have_text(
        "customerId: must be at most 200 characters"
    )
    assert await customer.get_attribute("aria-invalid") == "true"
    await customer.fill("nobody")
    await customer.press("Enter")
    await expect(page.locator("#erase-note")).to_have_text(
        "No stored event about customer “nobody” in this organisation: there is nothing to erase."
    )
    await expect(page.locator("#erase-error")).to_be_hidden()

    # A dry run, then Cancel: nothing is erased.
    await customer.fill(KEPT_CUSTOMER)
    await check.click()
    await expect(confirmation).to_have_text(
        "Erase the stored payloads of customer “cus_keep”: 1 event, 1 delivery; 0 open "
        "deliveries will be cancelled. This cannot be undone."
    )
    await expect(page.locator("#erase-cancel")).to_be_focused()
    await dialog.get_by_role("button", name="Cancel").click()
    await expect(dialog).to_be_hidden()
    assert (await detail(kept))["payload"]["data"]["customerId"] == KEPT_CUSTOMER

    # The customer to erase: the counts named, Back and again, then Erase and the receipt.
    await page.get_by_role("button", name="Erase a customer's data").click()
    await expect(customer).to_have_value("")
    await customer.fill(ERASED_CUSTOMER)
    await check.click()
    expected = (
        "Erase the stored payloads of customer “cus/ø 1”: 2 events, 2 deliveries; 1 open "
        "delivery will be cancelled. This cannot be undone."
    )
    await expect(confirmation).to_have_text(expected)
    await expect(customer).to_be_hidden()  # what is confirmed cannot be changed in between
    await page.keyboard.press("Enter")  # on Cancel, the focused button: nothing erased
    await expect(dialog).to_be_hidden()
    await page.get_by_role("button", name="Erase a customer's data").click()
    await customer.fill(ERASED_CUSTOMER)
    await check.click()
    await dialog.get_by_role("button", name="Back").click()
    await expect(customer).to_have_value(ERASED_CUSTOMER)
    await check.click()
    await expect(confirmation).to_have_text(expected)
    assert (await detail(still_open))["status"] == "pending"
    assert (await detail(erased_sent))["payload"] is not None
    await shot(page, "erase-confirm")
    await dialog.get_by_role("button", name="Erase", exact=True).click()
    receipt = page.locator("#erase-receipt")
    await expect(receipt).to_contain_text(
        "Erased the stored payloads of customer “cus/ø 1”: 2 events, 2 deliveries; 1 open "
        "delivery cancelled."
    )
    await expect(receipt.locator("time")).to_contain_text("UTC")
    await expect(confirmation).to_be_hidden()
    await expect(customer).to_be_hidden()
    await shot(page, "erase-receipt")
    await dialog.get_by_role("button", name="Close").click()
    await expect(dialog).to_be_hidden()
    open_detail = await detail(still_open)
    assert (open_detail["status"], open_detail["payload"]) == ("cancelled", None)
    assert (await detail(erased_sent))["payloadRemoved"]["reason"] == "erased"

    # The log: the cancelled delivery with its reason, the erased payload's why and when.
    await (
        page.locator(f'#subs-table tr[data-id="{sid}"]')
        .get_by_role("button", name="Deliveries")
        .click()
    )
    await expect(page.get_by_role("heading", name="Delivery log")).to_be_visible()
    cancelled_row = page.locator(f'#log-table tbody tr[data-id="{still_open}"]')
    await expect(cancelled_row.locator(".badge")).to_have_text("cancelled")
    await expect(cancelled_row.locator(".cancelled-reason")).to_have_text(
        "its payload was removed (erased at the customer's request)"
    )
    erased_row = page.locator(f'#log-table tbody tr[data-id="{erased_sent}"]')
    await erased_row.get_by_role("button", name="Details").click()
    erased_details = page.locator(f"#details-{erased_sent}")
    removed = erased_details.locator(".payload-removed")
    await expect(removed).to_contain_text(
        "No payload: its payload was erased at the customer's request."
    )
    await expect(removed.locator("time")).to_contain_text("UTC")
    await expect(erased_details.locator("pre.payload")).to_have_count(0)
    kept_row = page.locator(f'#log-table tbody tr[data-id="{kept}"]')
    await kept_row.get_by_role("button", name="Details").click()
    await expect(page.locator(f"#details-{kept} pre.payload")).to_contain_text(KEPT_CUSTOMER)
    await shot(page, "payload-removed")

    # Redeliver and replay answer 410: their problem's detail is shown.
    await erased_row.get_by_role("button", name="Redeliver").click()
    await expect(erased_row.locator(".result")).to_have_text(
        f"Not redelivered: delivery {erased_sent} cannot be sent again: its payload was "
        "erased at the customer's request"
    )
    await page.get_by_label("Since", exact=True).fill(await local_input_time(page, 3 * 3600))
    await page.get_by_label("Until (optional)").fill(await local_input_time(page, 3600))
    await page.get_by_label("Only failed deliveries").uncheck()
    await page.get_by_role("button", name="Replay").click()
    await expect(page.locator("#replay-error")).to_contain_text(
        "nothing to replay: the 1 events in the window cannot be sent again"
    )
    await page.get_by_label("Until (optional)").fill("")
    await page.get_by_role("button", name="Replay").click()
    await expect(page.locator("#replay-result")).to_have_text(
        "Queued 1 delivery. 1 event was left out: their payloads are no longer kept."
    )
    await expect(page.locator("#replay-error")).to_be_hidden()
    kept_event = (await detail(kept))["eventId"]
    await receiver.wait_for(lambda: any(r.event_id == kept_event for r in receiver.requests))
    assert {r.event_id for r in receiver.requests} == {kept_event}


async def test_the_console_is_served_without_a_key_and_revalidated(console: Console) -> None:
    """The page and its files need no API key (the API under them does), carry the security
    headers, and answer 304 to a browser that has them already."""
    client = console.client
    for path, content_type in (
        ("/console", "text/html"),
        ("/console/app.js", "text/javascript"),
        ("/console/app.css", "text/css"),
    ):
        async with client.get(path) as response:
            assert response.status == 200, path
            assert response.content_type == content_type
            assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            etag = response.headers["ETag"]
        async with client.get(path, headers={"If-None-Match": etag}) as response:
            assert response.status == 304
            assert await response.read() == b""
    async with client.get("/console/", allow_redirects=False) as response:
        assert response.status == 301
        assert response.headers["Location"] == "/console"
    for missing in ("/console/index.html", "/console/nope.js"):
        async with client.get(missing) as response:
            assert response.status == 404
            assert response.content_type == "application/problem+json"
    async with client.get("/api/identity/webhooks") as response:
        assert response.status == 401


AUTH = "Bearer s3cr3t-console-ONE"
NEW_AUTH = "Bearer s3cr3t-console-TWO"
API_KEY = "k3y-console-123"


async def test_headers_write_only_and_data_fields_in_the_console(
    console: Console, browser: Browser, receiver: Receiver
) -> None:
    """Static headers shown as the API shows them (a sensitive one by name, its value marked
    hidden), added, replaced and removed from the edit dialog without resending the hidden
    ones; the data fields set, changed and cleared; what is delivered follows."""
    async with watched_page(browser, console) as page:
        await _headers_and_fields(page, console, receiver)
    assert console.foreign() == [], "the page reached outside the service's origin"
    assert console.page_errors == []


async def _no_values_in(page: Page) -> None:
    """No sensitive value anywhere in the page: its markup nor any field's current value."""
    html = await page.content()
    fields = await page.evaluate(
        "() => [...document.querySelectorAll('input, textarea')].map((el) => el.value).join(' ')"
    )
    for value in (AUTH, NEW_AUTH, API_KEY, "s3cr3t", "k3y-console"):
        assert value not in html, value
        assert value not in fields, value


async def _headers_and_fields(page: Page, console: Console, receiver: Receiver) -> None:
    await page.goto(console.origin + "/console")
    await page.get_by_label("API key").fill(console.key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Subscriptions")).to_be_visible()

    # -- create with an ordinary and two sensitive headers, and a list of data fields --------
    url = receiver.url("console-headers")
    await page.get_by_role("button", name="New subscription").click()
    await expect(page.locator("#edit-header-current")).to_be_hidden()  # nothing set yet
    await page.get_by_label("Endpoint URL").fill(url)
    await page.get_by_label("verification.created").check()
    await page.get_by_label("Headers sent with every delivery").fill(
        f"X-Tenant: acme\nAuthorization: {AUTH}\nX-Api-Key: {API_KEY}"
    )
    await page.get_by_label("Data fields sent").fill("status, source")
    await page.get_by_role("button", name="Create").click()
    await page.get_by_role("button", name="I have stored it").click()
    row = row_of(page, url)
    await expect(row).to_have_count(1)
    headers = row.get_by_role("list", name=f"Headers sent to {url}")
    await expect(headers.locator("li")).to_have_text(
        [
            "X-Tenant: acme",
            "Authorization value hidden (write-only)",
            "X-Api-Key value hidden (write-only)",
        ]
    )
    await expect(row.locator(".data-fields")).to_have_text("data fields: status, source")
    await _no_values_in(page)
    await shot(page, "headers-hidden")

    await row.get_by_role("button", name="Send test").click()
    await expect(row.locator("[data-test-result]")).to_contain_text("HTTP 200")
    (sent,) = receiver.at("console-headers")
    assert sent.headers["Authorization"] == AUTH
    assert sent.headers["X-Api-Key"] == API_KEY
    assert sent.headers["X-Tenant"] == "acme"
    assert orjson.loads(sent.body)["data"] == {"source": "test"}

    # -- edit: remove one, replace a hidden value, change the data fields --------------------
    await row.get_by_role("button", name="Edit").click()
    current = page.locator("#edit-header-list li")
    await expect(current).to_have_count(3)
    await expect(current.nth(1)).to_contain_text("value hidden (write-only)")
    assert await page.get_by_label("Headers sent with every delivery").input_value() == ""
    assert await page.get_by_label("Data fields sent").input_value() == "status, source"
    await page.get_by_label("Remove X-Api-Key").check()
    await page.get_by_label("Headers sent with every delivery").fill(f"authorization: {NEW_AUTH}")
    await page.get_by_label("Data fields sent").fill("status")
    await shot(page, "headers-edit")
    await page.get_by_role("button", name="Save").click()
    await expect(page.locator("#edit-dialog")).to_be_hidden()
    await expect(headers.locator("li")).to_have_text(
        ["X-Tenant: acme", "authorization value hidden (write-only)"]
    )
    await expect(row.locator(".data-fields")).to_have_text("data fields: status")
    await _no_values_in(page)

    await row.get_by_role("button", name="Send test").click()
    await expect(row.locator("[data-test-result]")).to_contain_text("HTTP 200")
    sent = receiver.at("console-headers")[-1]
    assert sent.headers["Authorization"] == NEW_AUTH
    assert "X-Api-Key" not in sent.headers
    assert orjson.loads(sent.body)["data"] == {}

    # -- saving without touching the headers keeps them, the hidden one too -----------------
    await row.get_by_role("button", name="Edit").click()
    await page.get_by_label("Data fields sent").fill("")
    await page.get_by_role("button", name="Save").click()
    await expect(page.locator("#edit-dialog")).to_be_hidden()
    await expect(row.locator(".data-fields")).to_have_count(0)
    await expect(headers.locator("li")).to_have_count(2)
    shown = await console.api("GET", path=f"/{await _id_of(page, url)}")
    assert (shown["headers"], shown["sensitiveHeaders"], shown["dataFields"]) == (
        {"X-Tenant": "acme"},
        ["authorization"],
        None,
    )
    await row.get_by_role("button", name="Send test").click()
    await expect(row.locator("[data-test-result]")).to_contain_text("HTTP 200")
    sent = receiver.at("console-headers")[-1]
    assert sent.headers["Authorization"] == NEW_AUTH
    assert orjson.loads(sent.body)["data"] == {"source": "test"}

    # -- remove the last hidden one ----------------------------------------------------------
    await row.get_by_role("button", name="Edit").click()
    await page.get_by_label("Remove authorization").check()
    await page.get_by_role("button", name="Save").click()
    await expect(headers.locator("li")).to_have_text(["X-Tenant: acme"])

    # -- a polling subscription's row: no URL, and its test put in its feed ------------------
    polled = await console.api("POST", {"delivery": "poll", "events": ["customer.kyc_updated"]})
    await page.get_by_role("button", name="Refresh").click()
    feed_row = row_of(page, polled["id"])
    await expect(feed_row).to_contain_text("polling: read from its feed")
    choice = feed_row.get_by_label(f"Test event: feed {polled['id']}")
    await choice.select_option("customer.kyc_updated")
    await feed_row.get_by_role("button", name="Send test").click()
    await expect(feed_row.locator("[data-test-result]")).to_contain_text(
        "Test customer.kyc_updated: available · in its feed"
    )
    feed = await console.api("GET", path=f"/{polled['id']}/events")
    assert [row["event"] for row in feed["rows"]] == ["customer.kyc_updated"]


async def _id_of(page: Page, url: str) -> str:
    """The id the subscriptions table shows for the subscription to `url`."""
    text = await row_of(page, url).locator(".mono.wrap", has_text="whk_").first.text_content()
    assert text is not None
    return text


async def test_finding_subscriptions_by_url_or_id_in_the_console(
    console: Console, browser: Browser, receiver: Receiver
) -> None:
    """The list narrowed by a part of the URL or an id, and back to all of it."""
    made = [
        await console.api("POST", {"url": receiver.url(path), "events": ["verification.created"]})
        for path in ("bank-a/hooks", "bank-a/kyc", "lender/x")
    ]
    async with watched_page(browser, console) as page:
        await page.goto(console.origin + "/console")
        await page.get_by_label("API key").fill(console.key)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.locator("#subs-table tbody tr")).to_have_count(3)
        search = page.get_by_role("searchbox", name="Find by URL or id")

        await search.fill("BANK-A")
        await page.get_by_role("button", name="Find").click()
        await expect(page.locator("#subs-table tbody tr")).to_have_count(2)
        await expect(row_of(page, "lender/x")).to_have_count(0)

        await search.fill(made[2]["id"])
        await search.press("Enter")
        await expect(page.locator("#subs-table tbody tr")).to_have_count(1)
        await expect(row_of(page, "lender/x")).to_have_count(1)

        await search.fill("nothing-like-it")
        await search.press("Enter")
        await expect(page.locator("#subs-none-found")).to_be_visible()
        await expect(page.locator("#subs-empty")).to_be_hidden()

        await search.fill("")
        await search.press("Enter")
        await expect(page.locator("#subs-table tbody tr")).to_have_count(3)
    assert console.foreign() == [], "the page reached outside the service's origin"
    assert console.page_errors == []


async def test_the_filter_editor_tries_a_filter_before_saving(
    console: Console, browser: Browser, receiver: Receiver
) -> None:
    """A filter typed in the edit dialog is tried on the catalog's examples (a verdict each,
    the refusing clause named), an invalid one is refused before any request, and the saved
    filter is shown on the row and read back by the API."""
    async with watched_page(browser, console) as page:
        await page.goto(console.origin + "/console")
        await page.get_by_label("API key").fill(console.key)
        await page.get_by_role("button", name="Sign in").click()
        url = receiver.url("console-filter")
        await page.get_by_role("button", name="New subscription").click()
        await page.get_by_label("Endpoint URL").fill(url)
        await page.get_by_label("verification.created").check()
        await page.get_by_label("customer.kyc_updated").check()
        editor = page.get_by_label("Content filter, JSON")
        await editor.fill('{"data": {"method": "ktp_capture"')
        await page.get_by_role("button", name="Create").click()
        await expect(page.locator("#edit-error")).to_contain_text("not valid JSON")
        await editor.fill('{"data": {"method": "ktp_capture"}}')
        await page.get_by_role("button", name="Try the filter").click()
        await expect(page.locator("#filter-results li")).to_have_text(
            [
                "example verification.created — delivered",
                "example customer.kyc_updated — refused by data.method: the field is absent",
            ]
        )
        await page.get_by_role("button", name="Create").click()
        await page.get_by_role("button", name="I have stored it").click()
        row = row_of(page, url)
        await expect(row.locator(".content-filter")).to_have_text(
            'filter: {"data":{"method":"ktp_capture"}}'
        )
    page_rows = await console.store.list_subscriptions(ORG, 10, None)
    (saved,) = [s for s in page_rows.rows if s.url == url]
    assert saved.filter == '{"data":{"method":"ktp_capture"}}'
    assert console.foreign() == []
    assert console.page_errors == []


GATEWAY_TOKEN = "tok-7c1e-never-on-the-page"
HOUR = 3_600_000


async def _attempts(
    store: Store, subscription_id: str, outcomes: list[tuple[int, int | None, str]]
) -> None:
    """One finished delivery to the subscription per (started at, status code, result class):
    what the hourly counters hold for the chart. None of them is left open for the running
    dispatcher to retry."""
    events = [
        IncomingEvent(ids.new_id("evt"), ORG, "verification.created", at, b"{}", None, None)
        for at, _, _ in outcomes
    ]
    deliveries = [
        NewDelivery(ids.new_id(ids.DELIVERY), e.id, subscription_id, e.event, ORG) for e in events
    ]
    await store.record_events(events, deliveries, Lease("console-test", 600_000))
    sent = DeliveryStatus.SENT
    await store.record_attempts(
        [
            replace(
                store_attempt(d, 1, sent if result == "2xx" else DeliveryStatus.FAILED, code, at),
                result=result,
                duration_ms=40 if result == "2xx" else 8_000,
            )
            for d, (at, code, result) in zip(deliveries, outcomes, strict=True)
        ],
        "console-test",
    )


async def test_the_audit_trail_operational_events_and_the_day_chart_in_the_console(
    console: Console, browser: Browser, receiver: Receiver
) -> None:
    """A PATCH made through the API is in the audit view with the key's name and the old and
    new URL, never the header's value; the view pages with the API's cursor and narrows by
    subscription and time. A subscription's page draws its 24 hours with one bar part per
    (hour, outcome) seeded and one p95 point per hour with attempts, and lists the service's
    verdicts on it; the event-type choice sets the operational events apart."""
    watcher = await console.api(
        "POST", {"url": receiver.url("watch"), "events": ["verification.created", *OPERATIONAL]}
    )
    target = await console.api(
        "POST", {"url": receiver.url("target"), "events": ["verification.created"]}
    )
    moved = receiver.url("moved")
    await console.api(
        "PATCH", {"url": moved, "headers": {"X-Gateway-Token": GATEWAY_TOKEN}}, f"/{target['id']}"
    )
    for n in range(22):  # past one page of the audit view (25)
        await console.api("PATCH", {"installedBy": f"deploy@{n}"}, f"/{watcher['id']}")
    now = now_ms()
    await _attempts(
        console.store,
        target["id"],
        [
            (now - 3 * HOUR, 200, "2xx"),
            (now - 3 * HOUR + 1, 200, "2xx"),
            (now - HOUR, 200, "2xx"),
            (now - HOUR + 1, 503, "5xx"),
            (now, None, "timeout"),
        ],
    )
    # The 5xx and the timeout an hour apart: `failing` (audited) when the timeout is recorded.
    assert await console.store.deactivate_subscription(target["id"], "410 Gone")

    async with watched_page(browser, console, timezone_id="Europe/Berlin") as page:
        await page.goto(console.origin + "/console")
        await page.get_by_label("API key").fill(console.key)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.locator("#subs-table tbody tr")).to_have_count(2)
        await expect(row_of(page, "watch").locator(".operational-type")).to_have_count(
            len(OPERATIONAL)
        )

        # -- the event types: the operational ones apart, with what they never do ---------------
        await row_of(page, "watch").get_by_role("button", name="Edit").click()
        group = page.locator("#edit-operational-events")
        await expect(group).to_be_visible()
        await expect(group.locator("input:checked")).to_have_count(len(OPERATIONAL))
        await expect(group).to_contain_text("never receives one about itself")
        domain = page.locator("#edit-events > .check input")
        assert all(
            not name.startswith("webhook.")
            for name in await domain.evaluate_all("(boxes) => boxes.map((box) => box.value)")
        )
        await page.locator("#edit-dialog").get_by_role("button", name="Cancel").click()

        # -- a subscription's page: the 24-hour chart and the service's verdicts ---------------
        await page.goto(f"{console.origin}/console#/subscriptions/{target['id']}/deliveries")
        chart = page.locator("#hours-chart svg")
        await expect(chart).to_be_visible()
        # Hours -3 (sent), -1 (sent, 5xx), now (timeout): four parts, three p95 points.
        await expect(chart.locator("rect.seg")).to_have_count(4)
        kinds = await chart.locator("rect.seg").evaluate_all(
            "(bars) => bars.map((bar) => bar.dataset.kind)"
        )
        assert kinds == ["sent", "sent", "5xx", "timeout"]
        assert (
            len(
                set(
                    await chart.locator("rect.seg").evaluate_all(
                        "(bars) => bars.map((bar) => bar.dataset.hour)"
                    )
                )
            )
            == 3
        )
        await expect(chart.locator("circle.p95-point")).to_have_count(3)
        # The line joins hours -1 and now only: hour -2 had no attempt, so it is a gap, not a slope.
        lines = await chart.locator("polyline.p95-line").evaluate_all(
            "(lines) => lines.map((line) => line.getAttribute('points').split(' ').length)"
        )
        assert lines == [2]
        await expect(page.locator("#hours-legend")).to_contain_text("failed: timeout")
        verdicts = page.locator("#ops-list li")
        await expect(verdicts).to_have_count(2)
        shown = await verdicts.evaluate_all("(items) => items.map((i) => i.dataset.action)")
        assert sorted(shown) == ["subscription.disabled", "subscription.failing"]
        await expect(
            page.locator('#ops-list li[data-action="subscription.disabled"]')
        ).to_contain_text("410 Gone")
        await expect(
            page.locator('#ops-list li[data-action="subscription.failing"]')
        ).to_contain_text("2 failed attempts in a row")
        await expect(
            page.locator('#ops-list li[data-action="subscription.failing"]')
        ).to_contain_text(re.compile(r"since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"))
        await expect(page.locator("#ops-takes")).to_contain_text("takes no operational event")
        await shot(page, "subscription-day")

        # -- the audit trail: the PATCH with the key's name, paged, narrowed --------------------
        await page.locator("#ops-audit-link").click()
        await expect(page.get_by_role("heading", name="Audit trail")).to_be_visible()
        rows = page.locator("#audit-table tbody tr")
        await expect(rows).to_have_count(4)  # created, updated, failing, disabled
        await page.locator("#audit-subscription").select_option("")
        await page.locator("#audit-filters").get_by_role("button", name="Filter").click()
        await expect(rows).to_have_count(25)
        await expect(page.locator("#audit-more")).to_be_visible()
        await page.locator("#audit-more").click()
        # The key's creation, two creations, 23 PATCHes, failing, disabled.
        await expect(rows).to_have_count(28)
        await expect(page.locator("#audit-more")).to_be_hidden()
        patched = rows.filter(has_text=target["id"]).filter(has_text="subscription.updated")
        await expect(patched).to_have_count(1)
        await expect(patched).to_contain_text("API key “console test”")
        await expect(patched).to_contain_text(f"url: {target['url']} → {moved}")
        await expect(patched).to_contain_text("X-Gateway-Token")
        assert GATEWAY_TOKEN not in await page.content()
        await shot(page, "audit")

        await page.locator("#audit-since").fill(await local_input_time(page, -3600))
        await page.locator("#audit-filters").get_by_role("button", name="Filter").click()
        await expect(page.locator("#audit-empty")).to_be_visible()
        await page.locator("#audit-since").fill(await local_input_time(page, 3600))
        await page.locator("#audit-subscription").select_option(target["id"])
        await page.locator("#audit-filters").get_by_role("button", name="Filter").click()
        await expect(rows).to_have_count(4)
    assert console.foreign() == []
    assert console.page_errors == []
