"""`identity-webhooks erase`: the operation of `service.operations.erasure`, for operators. The
receipt is printed without the customer id, so that a job's captured output does not keep it;
`--json` prints the management API's receipt, which holds it."""

from __future__ import annotations

import argparse

from service.api.models import CustomerErasure
from service.cli.output import print_json
from service.cli.run import with_store
from service.clock import iso
from service.operations import erasure
from service.settings import Settings
from service.store import Store


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


@with_store
async def erase(args: argparse.Namespace, _: Settings, store: Store) -> int:
    org, dry_run = args.org, args.dry_run
    receipt = await erasure.erase_customer(store, org, args.customer_id, dry_run=dry_run)
    if args.json:
        print_json(CustomerErasure.of(receipt, dry_run=dry_run).model_dump(mode="json"))
        return 0
    if not receipt.events:
        print(f"no retained event about this customer in {org}: nothing to erase")
        return 0
    events = _count(receipt.events, "event", "events")
    deliveries = _count(receipt.deliveries, "delivery", "deliveries")
    cancelled = _count(receipt.cancelled, "open delivery", "open deliveries")
    if dry_run:
        print(
            f"dry run, nothing erased: in {org} the payloads of {events} about this customer "
            f"and the response excerpts of their {deliveries} would be removed; {cancelled} "
            "would be cancelled"
        )
    else:
        print(
            f"erased in {org} at {iso(receipt.erased_at)}: the payloads of {events} about this "
            f"customer and the response excerpts of their {deliveries}; {cancelled} cancelled"
        )
    return 0
