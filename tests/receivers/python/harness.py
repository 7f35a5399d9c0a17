"""The harness of the Python example of docs/receivers.md (extracted from the page into
`snippet.py` beside this file): one verdict per delivery on stdin (kind, key, webhook-id,
webhook-timestamp, webhook-signature, base64 body; tab-separated)."""

import base64
import sys

from snippet import genuine  # type: ignore[import-not-found]


def main() -> None:
    for line in sys.stdin:
        _, key, delivery_id, timestamp, signature, body = line.rstrip("\n").split("\t")
        headers = {
            "webhook-id": delivery_id,
            "webhook-timestamp": timestamp,
            "webhook-signature": signature,
        }
        print("true" if genuine(key, headers, base64.b64decode(body)) else "false")


if __name__ == "__main__":
    main()
