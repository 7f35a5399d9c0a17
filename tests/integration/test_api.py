"""The management API on both stores: the seed page's shapes, and a clear answer (never a 500)
to every kind of bad input."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import orjson
import pytest
import structlog
from aiohttp.test_utils import TestClient, TestServer
from jsonschema import Draft202012Validator, FormatChecker
from pydantic import SecretStr

from service import ids
from service.api.models import (
    CreatedSubscription,
    EventTypes,
    SubscriptionHours,
    SubscriptionList,
    SubscriptionRow,
)
from service.api.models import (
    TestResult as ApiTestResult,
)
from service.api.openapi import document
from service.app import Roles, create_app
from service.appkeys import STORE
from service.clock import now_ms
from service.domain import AttemptRecord, DeliveryStatus, IncomingEvent, NewDelivery
from service.events import CATALOG, OPERATIONAL, Accepted, Skipped, parse_event
from service.settings import Settings, load_settings
from service.signing import standard_secret
from service.store import Lease
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.support import api as support
from tests.support.roundtrips import counting
from tools.receiver import start_receiver


@pytest.fixture
async def api(settings_for: Settings) -> AsyncIterator[support.Api]:
    # The API process of a split deployment: no consumer (its pipeline is tested elsewhere).
    async with support.api_over(settings_for, Roles(consumer=False)) as api:
        yield api


async def test_registration_answers_the_seed_shape_with_the_secret_once(api: support.Api) -> None:
    with structlog.testing.capture_logs() as logs:
        status, body, content_type = await api.call("POST", body=support.SEED_REQUEST)
    assert status == 201
    assert content_type == "application/json"
    assert set(body) == {
        "id",
        "url",
        "delivery",
        "events",
        "installedBy",
        "secret",
        "standardSecret",
        "active",
        "createdAt",
        "signing",
        "publicKey",
        "hmacHeaders",
    }
    CreatedSubscription.model_validate(body)
    assert body["id"].startswith("whk_")
    assert body["url"] == support.SEED_REQUEST["url"]
    assert body["events"] == support.SEED_REQUEST["events"]
    assert body["installedBy"] == "kyc-service@v0.1.0"
    assert body["secret"].startswith("qe_whsec_")
    assert body["active"] is True
    assert support.RFC3339_MS.match(body["createdAt"])
    secret = body["secret"]
    assert secret not in repr(logs)
    assert body["standardSecret"] == standard_secret(secret)
    assert body["standardSecret"] not in repr(logs)
    assert (body["signing"], body["publicKey"], body["hmacHeaders"]) == ("hmac", None, True)

    _, listed, _ = await api.call("GET")
    _, one, _ = await api.call("GET", f"/{body['id']}")
    _, patched, _ = await api.call("PATCH", f"/{body['id']}", {"installedBy": "kyc@2"})
    for shown in (listed, one, patched):
        assert secret not in orjson.dumps(shown).decode()
        assert body["standardSecret"] not in orjson.dumps(shown).decode()
        assert "secret" not in orjson.dumps(shown).decode().lower()


async def test_list_and_get_carry_delivery_summaries_from_the_deliveries_table(
    api: support.Api,
) -> None:
    created = await support.create(api)
    status, listed, _ = await api.call("GET")
    assert status == 200
    SubscriptionList.model_validate(listed)
    (row,) = listed["rows"]
    assert row["deliveryCount"] == 0
    assert row["lastDelivery"] is None
    assert listed["nextCursor"] is None
    assert {
        "id",
        "url",
        "events",
        "installedBy",
        "active",
        "createdAt",
        "deliveryCount",
        "lastDelivery",
    } <= set(row)

    events = [
        IncomingEvent(
            ids.new_id("evt"), "org_a", "verification.created", now_ms(), b"{}", None, None
        )
        for _ in range(3)
    ]
    deliveries = [
        NewDelivery(ids.new_id("whd"), e.id, created["id"], e.event, e.org_id) for e in events
    ]
    await api.store.record_events(events, deliveries, Lease("test", 60_000))
    at = now_ms()
    await api.store.record_attempts(
        [
            AttemptRecord(
                deliveries[-1].id,
                created["id"],
                1,
                at,
                42,
                200,
                "2xx",
                None,
                "ok",
                DeliveryStatus.SENT,
                None,
            )
        ],
        "test",
    )
    status, one, _ = await api.call("GET", f"/{created['id']}")
    assert status == 200
    SubscriptionRow.model_validate(one)
    assert one["deliveryCount"] == 3
    assert one["lastDelivery"]["status"] == "sent"
    assert one["lastDelivery"]["responseCode"] == 200
    assert support.RFC3339_MS.match(one["lastDelivery"]["at"])


async def test_the_hours_show_a_day_of_attempts_by_class_and_only_to_the_org(
    api: support.Api,
) -> None:
    """`GET …/{id}/hours`: 24 hours, oldest first, the current one holding the attempts just
    recorded (sent, failed by class, p95); another org's key gets a 404, a query a 422."""
    created = await support.create(api)
    events = [
        IncomingEvent(
            ids.new_id("evt"), "org_a", "verification.created", now_ms(), b"{}", None, None
        )
        for _ in range(2)
    ]
    deliveries = [
        NewDelivery(ids.new_id("whd"), e.id, created["id"], e.event, e.org_id) for e in events
    ]
    await api.store.record_events(events, deliveries, Lease("test", 60_000))
    at = now_ms()
    outcomes = [(200, "2xx", DeliveryStatus.SENT, 42), (503, "5xx", DeliveryStatus.FAILED, 80)]
    await api.store.record_attempts(
        [
            AttemptRecord(d.id, created["id"], 1, at, ms, code, result, None, None, status, None)
            for d, (code, result, status, ms) in zip(deliveries, outcomes, strict=True)
        ],
        "test",
    )
    status, body, _ = await api.call("GET", f"/{created['id']}/hours")
    assert status == 200
    SubscriptionHours.model_validate(body)
    hours = body["hours"]
    assert len(hours) == 24
    assert all(support.RFC3339_MS.match(h["start"]) for h in hours)
    assert hours[-1] | {"start": None, "p95LatencyMs": None} == {
        "start": None,
        "attempts": 2,
        "sent": 1,
        "failed": {"5xx": 1},
        "p95LatencyMs": None,
    }
    assert 50 <= hours[-1]["p95LatencyMs"] <= 100  # the 503's bucket, 75 to 100 ms
    assert [h["attempts"] for h in hours[:-1]] == [0] * 23
    status, problem, ct = await api.call("GET", f"/{created['id']}/hours", key=api.other_key)
    support.assert_problem(status, problem, ct, 404)
    status, problem, ct = await api.call("GET", f"/{created['id']}/hours?hours=48")
    support.assert_problem(status, problem, ct, 422)


async def test_paging_with_cursor(api: support.Api) -> None:
    made = [(await support.create(api, url=f"https://h.example.com/{i}"))["id"] for i in range(5)]
    seen: list[str] = []
    path = "?limit=2"
    while True:
        status, page, _ = await api.call("GET", path)
        assert status == 200
        seen += [row["id"] for row in page["rows"]]
        if page["nextCursor"] is None:
            break
        path = f"?limit=2&cursor={page['nextCursor']}"
    assert seen == made


async def test_search_finds_by_url_part_or_id_and_pages_within_the_search(
    api: support.Api,
) -> None:
    urls = [
        "https://Bank-A.example.com/hooks",
        "https://bank-a.example.com/kyc",
        "https://lender.example.com/bank-a",
        "https://other.example.com/x_y",
        "https://other.example.com/xzy",
    ]
    made = [(await support.create(api, url=url))["id"] for url in urls]

    async def search(text: str, limit: int = 100) -> list[str]:
        found: list[str] = []
        path = f"?limit={limit}&search={quote(text)}"
        while True:
            status, page, _ = await api.call("GET", path)
            assert status == 200, page
            found += [row["id"] for row in page["rows"]]
            if page["nextCursor"] is None:
                return found
            path = f"?limit={limit}&search={quote(text)}&cursor={page['nextCursor']}"

    # A part of the URL, its case ignored, paged within the search.
    assert await search("BANK-A") == made[:3]
    assert await search("bank-a", limit=1) == made[:3]
    # LIKE's wildcards are literal: "_" matches itself only, "%" nothing here.
    assert await search("x_y") == [made[3]]
    assert await search("%") == []
    # The id itself.
    assert await search(made[4]) == [made[4]]
    # Another org's subscriptions are not searched.
    status, page, _ = await api.call("GET", "?search=bank", key=api.other_key)
    assert (status, page["rows"]) == (200, [])
    for bad in ("", "a" * 201, "tab\there"):
        status, body, ct = await api.call("GET", f"?search={quote(bad)}")
        support.assert_problem(status, body, ct, 422)
        assert support.problem_fields(body) == {"search"}


async def test_patch_changes_fields_and_delete_removes(api: support.Api) -> None:
    created = await support.create(api)
    status, row, _ = await api.call(
        "PATCH",
        f"/{created['id']}",
        {"events": ["review.overridden"], "active": False, "url": "https://new.example.com/h"},
    )
    assert status == 200
    assert row["events"] == ["review.overridden"]
    assert row["active"] is False
    assert row["url"] == "https://new.example.com/h"
    status, body, _ = await api.call("DELETE", f"/{created['id']}")
    assert status == 204
    assert body is None
    status, _, _ = await api.call("GET", f"/{created['id']}")
    assert status == 404
    status, _, _ = await api.call("DELETE", f"/{created['id']}")
    assert status == 404


@pytest.mark.parametrize(
    ("raw", "content_type", "expected"),
    [
        (b"{not json", "application/json", 400),
        (b"", "application/json", 400),
        (b'"a string"', "application/json", 422),
        (b"[1, 2]", "application/json", 422),
        (b"url=https://x", "application/x-www-form-urlencoded", 415),
        (b"{}", "text/plain", 415),
        (b'{"url": "' + b"a" * 70_000 + b'"}', "application/json", 413),
    ],
)
async def test_malformed_bodies(
    api: support.Api, raw: bytes, content_type: str, expected: int
) -> None:
    status, body, ct = await api.call("POST", raw=raw, headers={"Content-Type": content_type})
    support.assert_problem(status, body, ct, expected)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"colour": "blue"}, "colour"),
        ({"events": []}, "events"),
        ({"events": ["verification.deleted"]}, "events[0]"),
        ({"events": ["verification.created", "verification.created"]}, "events"),
        ({"events": "verification.created"}, "events"),
        ({"events": None}, "events"),
        ({"url": None}, "url"),
        ({"url": "/relative/path"}, "url"),
        ({"url": "ftp://files.example.com/x"}, "url"),
        ({"url": "http://plain.example.com/x"}, "url"),
        ({"url": "https://user:pass@hooks.example.com/x"}, "url"),
        ({"url": "https://hooks.example.com/" + "a" * 2100}, "url"),
        ({"url": 42}, "url"),
        ({"url": "https://127.0.0.1/x"}, "url"),
        ({"url": "https://10.1.2.3/x"}, "url"),
        ({"url": "https://192.168.0.10/x"}, "url"),
        ({"url": "https://169.254.169.254/latest/meta-data"}, "url"),
        ({"url": "https://2130706433/x"}, "url"),
        ({"url": "https://0x7f000001/x"}, "url"),
        ({"url": "https://0177.0.0.1/x"}, "url"),
        ({"url": "https://[::1]/x"}, "url"),
        ({"url": "https://[::ffff:127.0.0.1]/x"}, "url"),
        ({"url": "https://[::ffff:a9fe:a9fe]/x"}, "url"),
        ({"url": "https://localhost/x"}, "url"),
        ({"installedBy": 7}, "installedBy"),
        ({"installedBy": "kyc\u0000service"}, "installedBy"),
        ({"url": "https://hooks.example.com/a\u0000b"}, "url"),
    ],
)
async def test_invalid_fields_name_the_field(
    api: support.Api, change: dict[str, Any], field: str
) -> None:
    status, body, ct = await api.call("POST", body={**support.SEED_REQUEST, **change})
    support.assert_problem(status, body, ct, 422)
    assert field in support.problem_fields(body), body


async def test_url_missing(api: support.Api) -> None:
    status, body, ct = await api.call("POST", body={"events": ["verification.created"]})
    support.assert_problem(status, body, ct, 422)
    assert support.problem_fields(body) == {"url"}


async def test_patch_cannot_empty_events_or_take_bad_urls(api: support.Api) -> None:
    created = await support.create(api)
    for change, field in (
        ({"events": []}, "events"),
        ({"url": "https://[::1]/"}, "url"),
        ({"active": "yes"}, "active"),
        ({"id": "whk_x"}, "id"),
    ):
        status, body, ct = await api.call("PATCH", f"/{created['id']}", change)
        support.assert_problem(status, body, ct, 422)
        assert field in support.problem_fields(body)
    _, row, _ = await api.call("GET", f"/{created['id']}")
    assert row["events"] == support.SEED_REQUEST["events"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer qe_key_thisKeyWasNeverIssuedToAnyone"},
        {"Authorization": "Bearer " + "x" * 5000},
    ],
)
async def test_requests_without_a_valid_key_are_401(
    api: support.Api, headers: dict[str, str]
) -> None:
    async with api.client.get(support.BASE, headers=headers, skip_auto_headers=()) as response:
        body = await response.json(content_type=None)
        support.assert_problem(response.status, body, response.content_type, 401)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_revoked_key_is_401(api: support.Api) -> None:
    record, key = await api.store.create_api_key("org_a", "soon revoked")
    status, _, _ = await api.call("GET", key=key)
    assert status == 200
    await api.store.revoke_api_key(record.id)
    status, body, ct = await api.call("GET", key=key)
    support.assert_problem(status, body, ct, 401)


async def test_a_create_and_a_patch_in_few_round_trips(fresh_postgres_url: str) -> None:
    """What a change costs the API's answer on PostgreSQL, in round trips: the key, the
    change's transaction (BEGIN, the change with its revision and stamp as one statement, its
    audit entry with the subscribers' lookup as another, COMMIT), and a PATCH's summary read
    beside its transaction, in a task of its own. The index follows in its own task, not
    before the answer."""
    settings = load_settings(
        database_url=fresh_postgres_url, encryption_key=SecretStr(TEST_ENCRYPTION_KEY)
    )
    async with support.api_over(settings, Roles(consumer=False)) as api:
        with counting(api.store) as trips:
            status, created, _ = await api.call("POST", body=support.SEED_REQUEST)
        assert status == 201
        answer = trips.of_task("FROM api_keys")
        assert answer.round_trips == 6, answer.statements
        with counting(api.store) as trips:
            status, _, _ = await api.call("PATCH", f"/{created['id']}", {"installedBy": "ops"})
        assert status == 200
        assert trips.of_task("FROM api_keys").round_trips == 1
        change = trips.of_task("UPDATE subscriptions SET")
        assert change.round_trips == 4, change.statements
        summary = trips.of_task("SELECT 'stats' AS part")
        assert summary.round_trips == 1, summary.statements
        assert not any("change_seq >" in sql for sql in change.statements + summary.statements)


async def test_another_orgs_subscription_is_404(api: support.Api) -> None:
    created = await support.create(api)
    path = f"/{created['id']}"
    for method, body in (("GET", None), ("PATCH", {"active": False}), ("DELETE", None)):
        status, problem, ct = await api.call(method, path, body, key=api.other_key)
        support.assert_problem(status, problem, ct, 404)
    status, listed, _ = await api.call("GET", key=api.other_key)
    assert listed["rows"] == []
    _, row, _ = await api.call("GET", path)
    assert row["active"] is True


@pytest.mark.parametrize("path", ["/whk_01JD2Y8Q0S6M2X0YV1X4J5T7ZK", "/nope", "/%27%3B--"])
async def test_unknown_ids_are_404(api: support.Api, path: str) -> None:
    for method, body in (("GET", None), ("PATCH", {"active": False}), ("DELETE", None)):
        status, problem, ct = await api.call(method, path, body)
        support.assert_problem(status, problem, ct, 404)


async def test_bad_query_parameters_are_422(api: support.Api) -> None:
    nul_cursor = base64.urlsafe_b64encode(b"whk_\x00").decode()
    for query, field in (
        (f"?cursor={nul_cursor}", "cursor"),
        ("?limit=0", "limit"),
        ("?limit=x", "limit"),
        ("?cursor=%%%", "cursor"),
        ("?colour=red", "colour"),
    ):
        status, body, ct = await api.call("GET", query)
        support.assert_problem(status, body, ct, 422)
        assert field in support.problem_fields(body)


async def test_unknown_route_and_method_are_problems(api: support.Api) -> None:
    async with api.client.get("/api/identity/nothing-here", headers=api.auth()) as response:
        assert response.status == 404
        assert response.content_type == "application/problem+json"
    async with api.client.put(support.BASE, headers=api.auth()) as response:
        assert response.status == 405
        assert response.content_type == "application/problem+json"


async def test_openapi_document_matches_the_routes_and_models(api: support.Api) -> None:
    async with api.client.get("/openapi.json") as response:
        assert response.status == 200
        served = await response.json()
    assert served == orjson.loads(orjson.dumps(document()))
    assert served["openapi"].startswith("3.1")
    app_routes = {
        (route.method.lower(), route.resource.canonical)
        for route in api.client.app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith("/api/identity/")
        and route.method not in ("HEAD", "*")  # "*": the 405 of a path's other methods
    }
    documented = {
        (method, path)
        for path, item in served["paths"].items()
        for method in item
        if method != "parameters"
    }
    assert documented == app_routes
    created = served["components"]["schemas"]["CreatedSubscription"]
    assert set(created["required"]) == set(CreatedSubscription.model_fields)


async def test_the_test_call_delivers_and_shows_in_the_summary(settings_for: Settings) -> None:
    """`POST /{id}/test` goes through the dispatcher to a real receiver and waits for it."""
    async for receiver in start_receiver():
        app = create_app(settings_for, Roles(consumer=False))
        client: TestClient[Any, Any] = TestClient(TestServer(app))
        await client.start_server()
        try:
            _, key = await app[STORE].create_api_key("org_t", None)
            api = support.Api(client, app[STORE], key, key)
            created = await support.create(api, url=receiver.url("ok"))
            status, result, _ = await api.call("POST", f"/{created['id']}/test")
            assert status == 200
            ApiTestResult.model_validate(result)
            assert result["status"] == "sent"
            assert result["responseCode"] == 200
            assert result["error"] is None
            (request,) = receiver.at("ok")
            assert request.headers["X-Identity-Delivery"] == result["deliveryId"]
            assert request.headers["X-Identity-Event"] == "webhook.test"
            _, row, _ = await api.call("GET", f"/{created['id']}")
            assert row["deliveryCount"] == 1
            assert row["lastDelivery"]["status"] == "sent"
            status, _, _ = await api.call("POST", f"/{created['id']}/test", key=api.key + "x")
            assert status == 401

            async with client.get("/metrics") as response:
                text = await response.text()
            assert 'webhooks_attempts_total{result="2xx"} 1.0' in text
            assert "webhooks_attempt_duration_seconds_bucket" in text
            assert 'webhooks_deliveries_total{event="webhook.test",outcome="sent"} 1.0' in text
        finally:
            await client.close()


async def test_an_undecryptable_secret_is_shown_not_a_500(
    api: support.Api, settings_for: Settings
) -> None:
    broken = await support.sealed_elsewhere(api, settings_for)
    healthy = (await support.create(api))["id"]
    status, listed, _ = await api.call("GET")
    assert status == 200
    problems = {row["id"]: row["problem"] for row in listed["rows"]}
    assert problems[healthy] is None
    assert "cannot be decrypted" in problems[broken]
    status, one, _ = await api.call("GET", f"/{broken}")
    assert (status, one["problem"]) == (200, problems[broken])
    status, patched, _ = await api.call("PATCH", f"/{broken}", {"installedBy": "ops"})
    assert (status, patched["installedBy"]) == (200, "ops")
    status, body, content_type = await api.call("POST", f"/{broken}/test")
    assert (status, content_type) == (409, "application/problem+json")
    assert "WEBHOOKS_ENCRYPTION_KEY" in body["detail"]
    status, _, _ = await api.call("DELETE", f"/{broken}")
    assert status == 204


@pytest.mark.parametrize("digits", [4, 20, 4301, 8000])
async def test_a_huge_limit_is_a_422_not_a_500(api: support.Api, digits: int) -> None:
    # Python refuses int() of more than 4,300 digits; the handler must never get that far.
    status, body, ct = await api.call("GET", "?limit=" + "9" * digits)
    support.assert_problem(status, body, ct, 422)
    assert support.problem_fields(body) == {"limit"}


async def test_an_unexpected_error_still_answers_a_problem_and_logs_no_message(
    settings_for: Settings,
) -> None:
    app = create_app(settings_for, Roles(consumer=False))

    async def broken(_: Any) -> Any:
        raise RuntimeError("qe_whsec_must-not-be-logged")

    app.router.add_get(support.BASE + "-broken", broken)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    try:
        _, key = await app[STORE].create_api_key("org_a", None)
        with structlog.testing.capture_logs() as logs:
            async with client.get(
                support.BASE + "-broken", headers={"Authorization": f"Bearer {key}"}
            ) as response:
                body = await response.json(content_type=None)
                support.assert_problem(response.status, body, response.content_type, 500)
        assert "must-not-be-logged" not in body["detail"]
        (logged,) = [line for line in logs if line["event"] == "api.unexpected_error"]
        assert logged["error"] == "RuntimeError"
        assert "must-not-be-logged" not in repr(logs)
    finally:
        await client.close()


async def test_the_event_catalog_holds_a_schema_and_an_example_for_every_event(
    api: support.Api,
) -> None:
    status, body, content_type = await api.call("GET", "/event-types")
    assert (status, content_type) == (200, "application/json")
    EventTypes.model_validate(body)
    rows = {row["name"]: row for row in body["rows"]}
    assert list(rows) == [*CATALOG, *OPERATIONAL, "webhook.test"]
    for name, row in rows.items():
        assert row["description"]
        validator = Draft202012Validator(row["schema"], format_checker=FormatChecker())
        # The example is what would be delivered: the schema takes it, and so does ingest.
        validator.validate(row["example"])
        assert row["example"]["event"] == name
        if name in CATALOG:
            assert isinstance(parse_event(orjson.dumps(row["example"]), 256 * 1024), Accepted)
        else:  # only this service makes them: never taken from Kafka
            assert isinstance(parse_event(orjson.dumps(row["example"]), 256 * 1024), Skipped)
        # And the schema refuses what ingest refuses: a missing data field, another event.
        broken = {**row["example"], "data": {}}
        assert list(validator.iter_errors(broken))
        assert list(validator.iter_errors({**row["example"], "event": "other.event"}))
    status, _, _ = await api.call("GET", "/event-types", key="qe_key_not_a_key_at_all")
    assert status == 401
