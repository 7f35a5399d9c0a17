"""A polling subscription's reader as a receiver would write one, run as its own process so that a
test can SIGKILL it: `python -m tests.support.feedreader URL KEY SUBSCRIPTION CURSOR_FILE OUT`.

It reads the feed with the long poll from the cursor kept in CURSOR_FILE, appends a line per
row to OUT (`deliveryId eventId orgId customerId`), then saves the cursor whole (a temporary
file renamed over it): a kill between the two makes the next run read those rows again, with
the same delivery ids. It runs until it is killed."""

from __future__ import annotations

import os
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import orjson

LIMIT = 50
WAIT = 5


def read_page(url: str, key: str, subscription: str, cursor: str | None) -> dict[str, object]:
    query = {"limit": str(LIMIT), "wait": str(WAIT)}
    if cursor is not None:
        query["after"] = cursor
    request = urllib.request.Request(
        f"{url}/api/identity/webhooks/{subscription}/events?{urllib.parse.urlencode(query)}",
        headers={"Authorization": f"Bearer {key}"},
    )
    with urllib.request.urlopen(request, timeout=WAIT + 10) as response:
        page: dict[str, object] = orjson.loads(response.read())
        return page


def main(url: str, key: str, subscription: str, cursor_file: str, out: str) -> None:
    kept = Path(cursor_file)
    cursor = kept.read_text().strip() if kept.exists() else None
    with Path(out).open("a") as lines:
        while True:
            page = read_page(url, key, subscription, cursor)
            rows = page["rows"]
            assert isinstance(rows, list)
            for row in rows:
                envelope = orjson.loads(row["body"])
                customer = envelope["data"]["customerId"]
                lines.write(
                    f"{row['deliveryId']} {row['eventId']} {envelope['orgId']} {customer}\n"
                )
            lines.flush()
            cursor = str(page["nextCursor"])
            temporary = kept.with_name(kept.name + ".tmp")
            temporary.write_text(cursor)
            os.replace(temporary, kept)


if __name__ == "__main__":
    main(*sys.argv[1:6])
