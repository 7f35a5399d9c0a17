"""`identity-webhooks verify`: a webhook signature checked as a receiver would check it, in any
of the three schemes. It needs no settings, no store and no service."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from service.errors import SignatureError
from service.signing import (
    ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    secret_from_standard,
    verify_signature,
    verify_standard,
)


def verify(args: argparse.Namespace) -> int:
    path: Path = args.body_file
    try:
        body = sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
    except OSError as exc:
        print(f"cannot read the body: {exc}", file=sys.stderr)
        return 2
    header: str = args.header.strip()
    standard = (
        args.id is not None
        or args.timestamp is not None
        or args.public_key is not None
        or header.startswith(("v1,", "v1a,"))
    )
    try:
        if standard:
            if args.id is None or args.timestamp is None:
                print("a webhook-signature needs --id and --timestamp", file=sys.stderr)
                return 2
            headers = {ID_HEADER: args.id, TIMESTAMP_HEADER: args.timestamp}
            headers[SIGNATURE_HEADER] = header
            key = args.public_key or args.secret
            verify_standard(key, headers, body, tolerance=args.tolerance)
        else:
            secret = secret_from_standard(args.secret)
            verify_signature(secret, header, body, tolerance=args.tolerance)
    except SignatureError as exc:
        print(exc, file=sys.stderr)
        return 1
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    print("ok")
    return 0
