"""`identity-webhooks verify`: a webhook signature checked as a receiver would check it. It needs
no settings, no store and no service."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from service.errors import SignatureError
from service.signing import verify_signature


def verify(args: argparse.Namespace) -> int:
    path: Path = args.body_file
    try:
        body = sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
    except OSError as exc:
        print(f"cannot read the body: {exc}", file=sys.stderr)
        return 2
    try:
        verify_signature(args.secret, args.header, body, tolerance=args.tolerance)
    except SignatureError as exc:
        print(exc, file=sys.stderr)
        return 1
    print("ok")
    return 0
