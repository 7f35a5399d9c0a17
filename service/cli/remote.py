"""The commands a developer runs against a deployed service through its public API alone (no
store, no settings): `listen` reads a polling subscription's feed and forwards each delivery to
a local receiver with the headers a push would carry; `trigger` sends a test event of any
catalog type (docs/receivers.md, "On your laptop: listen")."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from service.cli.errors import Refused

BASE = "/api/identity/webhooks"
LISTEN_MARK = "identity-webhooks listen: "
"""What `installedBy` says of the subscription `listen` made, by its name."""
WAIT = 30
API_TIMEOUT = WAIT + 15.0
FORWARD_TIMEOUT = 10.0


@dataclass
class Api:
    """The public API at `url` with `key`; every refusal becomes one clear line."""

    session: aiohttp.ClientSession
    url: str
    key: str

    async def call(
        self, method: str, path: str, body: Any = None, query: Mapping[str, str] | None = None
    ) -> Any:
        headers = {"Authorization": f"Bearer {self.key}"}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = orjson.dumps(body)
        try:
            async with self.session.request(
                method,
                self.url + path,
                data=data,
                headers=headers,
                params=query,
                timeout=aiohttp.ClientTimeout(total=API_TIMEOUT),
            ) as response:
                text = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            raise Refused(f"cannot reach the API at {self.url}: {reason}", 1) from None
        if status == 401:
            raise Refused(
                f"the API at {self.url} refused the key (401): check --api-key or WEBHOOKS_API_KEY",
                1,
            )
        try:
            answer = orjson.loads(text) if text else None
        except orjson.JSONDecodeError:
            raise Refused(
                f"{self.url} answered {status} with no JSON: is it the service?", 1
            ) from None
        if status >= 400:
            detail = answer.get("detail") if isinstance(answer, dict) else None
            raise Refused(f"{method} {path} answered {status}: {detail or text[:200]!r}", 1)
        return answer


def _check(args: argparse.Namespace) -> None:
    if not args.api_url:
        raise Refused("give --api-url or set WEBHOOKS_API_URL", 2)
    if not args.api_key:
        raise Refused("give --api-key or set WEBHOOKS_API_KEY", 2)
    args.api_url = args.api_url.rstrip("/")


async def find_listener(api: Api, name: str) -> dict[str, Any] | None:
    """The polling subscription `listen --name name` made, if it is still there."""
    query: dict[str, str] = {"limit": "100"}
    while True:
        page = await api.call("GET", BASE, query=query)
        for row in page["rows"]:
            if row.get("delivery") == "poll" and row.get("installedBy") == LISTEN_MARK + name:
                found: dict[str, Any] = row
                return found
        if page["nextCursor"] is None:
            return None
        query["cursor"] = page["nextCursor"]


async def _listener(api: Api, name: str, events: list[str] | None) -> dict[str, Any]:
    """Reuses the subscription of this name (its events changed when others are asked for), or
    makes it."""
    found = await find_listener(api, name)
    if found is None:
        catalog = await api.call("GET", BASE + "/event-types")
        every = [row["name"] for row in catalog["rows"] if row["name"] != "webhook.test"]
        made: dict[str, Any] = await api.call(
            "POST",
            BASE,
            {"delivery": "poll", "events": events or every, "installedBy": LISTEN_MARK + name},
        )
        return made
    if events is not None and sorted(events) != sorted(found["events"]):
        changed: dict[str, Any] = await api.call(
            "PATCH", f"{BASE}/{found['id']}", {"events": events}
        )
        return changed
    return found


def _read_cursor(path: Path | None) -> str | None:
    if path is None or not path.exists():
        return None
    return path.read_text().strip() or None


def _save_cursor(path: Path | None, cursor: str) -> None:
    """Written whole or not at all: a kill in between leaves the previous cursor."""
    if path is None:
        return
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(cursor + "\n")
    os.replace(temporary, path)


async def _forward(session: aiohttp.ClientSession, target: str, row: dict[str, Any]) -> str:
    """POSTs one delivery's body with its headers, exactly; the local answer, for the line."""
    try:
        async with session.post(
            target,
            data=row["body"].encode(),
            headers=row["headers"],
            timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT),
            allow_redirects=False,
        ) as response:
            await response.read()
            return str(response.status)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        reason = str(exc) or type(exc).__name__
        raise Refused(
            f"cannot forward to {target}: {reason} (the cursor stays before "
            f"{row['deliveryId']}: a restart sends it again)",
            1,
        ) from None


async def _listen(args: argparse.Namespace) -> int:
    events = None if not args.events else [e.strip() for e in args.events.split(",") if e.strip()]
    # No cookies carried, no proxies picked up: what is forwarded is what the feed holds.
    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False
    ) as session:
        api = Api(session, args.api_url, args.api_key)
        subscription = await _listener(api, args.name, events)
        subscription_id = subscription["id"]
        if "secret" in subscription:
            # Made just now: its secret is shown this once, as the API's answer shows it.
            print(
                f"signing secret (shown once): {subscription['secret']} "
                f"(Standard Webhooks: {subscription['standardSecret']})",
                flush=True,
            )
        print(
            f"listening: {subscription_id} ({', '.join(subscription['events'])}) → "
            f"{args.forward_to}; Ctrl-C stops, the subscription stays (remove it with: "
            f"curl -X DELETE -H 'Authorization: Bearer …' {args.api_url}{BASE}/{subscription_id})",
            flush=True,
        )
        cursor = _read_cursor(args.cursor_file)
        while True:
            query = {"wait": str(WAIT), "limit": "100"}
            if cursor is not None:
                query["after"] = cursor
            feed = await api.call("GET", f"{BASE}/{subscription_id}/events", query=query)
            for row in feed["rows"]:
                at = time.strftime("%H:%M:%S")
                if row["body"] is None:
                    reason = (row.get("payloadRemoved") or {}).get("reason", "removed")
                    answer = f"not forwarded: its payload is {reason}"
                else:
                    answer = "→ " + await _forward(session, args.forward_to, row)
                print(
                    f"{at}  {row['event']}  {row['deliveryId']}  {row['eventId']}  {answer}",
                    flush=True,
                )
            cursor = feed["nextCursor"]
            _save_cursor(args.cursor_file, cursor)


async def _trigger(args: argparse.Namespace) -> int:
    async with aiohttp.ClientSession() as session:
        api = Api(session, args.api_url, args.api_key)
        subscription_id = args.subscription
        if subscription_id is None:
            found = await find_listener(api, args.name)
            if found is None:
                raise Refused(
                    f"no subscription made by `listen --name {args.name}`: give --subscription", 1
                )
            subscription_id = found["id"]
        result = await api.call("POST", f"{BASE}/{subscription_id}/test", {"event": args.event})
        print(orjson.dumps(result).decode())
        return 0


def _run(args: argparse.Namespace, go: Any) -> int:
    try:
        _check(args)
        return int(asyncio.run(go(args)))
    except Refused as exc:
        print(f"identity-webhooks {args.command}: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 0


def listen(args: argparse.Namespace) -> int:
    return _run(args, _listen)


def trigger(args: argparse.Namespace) -> int:
    return _run(args, _trigger)
