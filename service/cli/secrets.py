"""`identity-webhooks rotate-secret`: the operation of `service.operations.secrets`, for
operators. Running services sign with both secrets within their index refresh."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from service.api.models import RotateSecret
from service.cli.errors import Refused, invalid, validated
from service.cli.run import cli_actor, subscription_of, with_store
from service.clock import iso
from service.errors import SubscriptionNotFound
from service.operations import secrets
from service.settings import Settings, parse_duration
from service.signing import public_key_text
from service.store import Store


@with_store
async def rotate_secret(args: argparse.Namespace, _: Settings, store: Store) -> int:
    request: dict[str, Any] = {}
    if args.overlap is not None:
        try:
            seconds = parse_duration(args.overlap)
        except ValueError as exc:
            raise invalid([("overlapSeconds", str(exc))]) from None
        if not seconds.is_integer():
            raise invalid([("overlapSeconds", "must be whole seconds")])
        request["overlapSeconds"] = int(seconds)
    body = validated(RotateSecret, request)
    subscription = await subscription_of(store, args)
    try:
        rotated = await secrets.rotate_secret(
            store, subscription.org_id, subscription.id, body.overlapSeconds, actor=cli_actor()
        )
    except SubscriptionNotFound:
        raise Refused(f"no subscription {subscription.id}", 1) from None
    print(
        f"rotated the signing secret of {rotated.subscription.id} ({rotated.subscription.org_id}); "
        f"the previous one signs too until {iso(rotated.previous_until)}; the new one is shown "
        "once, below (its Standard Webhooks form: whsec_ and the base64 of the secret)",
        file=sys.stderr,
    )
    if rotated.subscription.public_key is not None:
        key = public_key_text(rotated.subscription.public_key)
        print(f"its new Ed25519 public key, published: {key}", file=sys.stderr)
    print(rotated.secret)
    return 0
