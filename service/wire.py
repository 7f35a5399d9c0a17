"""What a delivery looks like on the wire, for a push (`delivery.attempt`) and a polling
subscription's feed alike (`GET …/{id}/events`): the body that is signed and sent, and the
headers it carries. One home, so a reader of a feed verifies with the code it would use for a
push (docs/decisions/0014-polling-and-listen.md)."""

from __future__ import annotations

from collections.abc import Iterable

from service.domain import DeliveryJob, Subscription
from service.events import project
from service.signing import Scheme, signature_headers


def delivery_body(job: DeliveryJob, subscription: Subscription) -> bytes:
    """What is signed and POSTed: the event's envelope, with its `data` cut down to the
    subscription's `data_fields` as they are now (so a retry, a redelivery or a replay
    follows a changed list); the stored bytes themselves, untouched, without a list."""
    if subscription.data_fields is None:
        return job.body
    return project(job.body, subscription.data_fields)


def delivery_headers(
    schemes: Iterable[Scheme],
    job: DeliveryJob,
    subscription: Subscription,
    body: bytes,
    now: float,
) -> dict[str, str]:
    """Every header but the User-Agent: the subscription's static headers, then ours (the API
    refuses static headers by our names). `body` signed at `now` (epoch seconds) in `schemes`
    with every live secret (and an Ed25519 subscription's every live key): the current one,
    and the one a rotation replaced while its overlap lasts (one signature each)."""
    at_ms = int(now * 1000)
    secrets = subscription.signing_secrets(at_ms)
    if not secrets:  # the dispatcher, /test and the feed never sign for such a one
        raise ValueError(f"subscription {subscription.id}: {Subscription.UNDECRYPTABLE}")
    headers = {
        **dict(subscription.headers),
        "Content-Type": "application/json",
        "X-Identity-Event": job.event,
        "X-Identity-Delivery": job.id,
        **signature_headers(
            schemes,
            secrets,
            body,
            int(now),
            job.id,
            private_keys=subscription.signing_keys(at_ms),
            hmac_headers=subscription.hmac_headers,
        ),
    }
    if job.sibling_service:
        headers["X-Sibling-Service"] = job.sibling_service
    return headers
