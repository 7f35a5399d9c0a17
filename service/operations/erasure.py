"""Erasure: what the service keeps about one customer of an org (the payloads of the events
about them, by `data.customerId`, and the response excerpts of their deliveries) removed at the
customer's request, their open deliveries cancelled; the events' metadata stays, so the delivery
log still shows that something was sent, when, and to whom.

A dry run only counts. Neither the customer id nor a payload is ever logged: the log says the
org, the counts and the receipt's time, which is also the time of the store's audit row."""

from __future__ import annotations

import unicodedata
from typing import TYPE_CHECKING

import structlog

from service.clock import iso
from service.domain import ErasureReceipt
from service.errors import InvalidInput

if TYPE_CHECKING:
    from service.store import PersonalData

MAX_CUSTOMER_ID = 200
"""Characters a customer id may have: as many as the store's older revisions kept in clear."""

FIELD = "customerId"

log = structlog.get_logger(__name__)


def customer_id_errors(customer_id: str) -> list[tuple[str, str]]:
    """What is wrong with a customer id as given (none: it may be erased): it is not empty, at
    most MAX_CUSTOMER_ID characters, and text without control characters (C0, DEL, C1) or lone
    surrogates, which no event's `data.customerId` can hold either way."""
    if not customer_id:
        return [(FIELD, "must not be empty")]
    errors = []
    if len(customer_id) > MAX_CUSTOMER_ID:
        errors.append((FIELD, f"must be at most {MAX_CUSTOMER_ID} characters"))
    categories = {unicodedata.category(c) for c in customer_id}
    if "Cc" in categories:
        errors.append((FIELD, "must not hold control characters"))
    if "Cs" in categories:
        errors.append((FIELD, "must be valid Unicode text"))
    return errors


async def erase_customer(
    store: PersonalData, org_id: str, customer_id: str, *, dry_run: bool = False
) -> ErasureReceipt:
    """Removes the payloads and response excerpts of every event about the customer in the org,
    keeping their metadata, and cancels their open deliveries; with `dry_run` only counts them.
    Another org's events about a customer of the same id are not touched. A repeat finds the
    same events and deliveries and cancels nothing more. InvalidInput when the id is not one
    (`customer_id_errors`)."""
    if errors := customer_id_errors(customer_id):
        raise InvalidInput(errors)
    receipt = await store.erase_customer(org_id, customer_id, dry_run=dry_run)
    log.info(
        "customer.erasure_dry_run" if dry_run else "customer.erased",
        org_id=org_id,
        events=receipt.events,
        deliveries=receipt.deliveries,
        cancelled=receipt.cancelled,
        at=iso(receipt.erased_at),
    )
    return receipt
