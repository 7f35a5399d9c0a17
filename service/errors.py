"""The service's small exception classes that carry data.

Each class holds what its handler needs as attributes; `str()` is for people. Normal replies are
returned, never raised, so only real failures live here.
"""

from __future__ import annotations

import errno


class SignatureError(Exception):
    """A webhook signature did not verify.

    `reason` is a short fixed code (`malformed_header`, `malformed_key`,
    `timestamp_outside_tolerance`, `no_matching_signature`); `detail` says more, for people.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class TargetRejected(Exception):
    """A webhook URL is not acceptable as a delivery target.

    Raised at registration and PATCH (the API answers 422 with `reason` as the field message) and
    before a delivery to a literal-IP URL. `reason` is a sentence fragment for people, e.g.
    "must use https" or "loopback address 127.0.0.1".
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TargetRefused(OSError):
    """The SSRF guard refused to connect: the host resolved to a forbidden address.

    An `OSError` on purpose: aiohttp wraps it in `ClientConnectorError` (or its DNS subclass), so
    the dispatcher classifies it with the other connection failures and retries on the schedule.
    The errno is EACCES, what the kernel reports when policy forbids a connection.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(errno.EACCES, reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class StoreInUse(Exception):
    """An embedded (SQLite) store already has its one `serve` process.

    `path` is the database file, `holder` what the holder wrote in the lock file (its pid and
    host), for the message that tells an operator which process to look at.
    """

    def __init__(self, path: str, holder: str) -> None:
        super().__init__(
            f"{path} is already served by another identity-webhooks serve ({holder}); "
            "an embedded store has one owner: stop that one, or use PostgreSQL for several "
            "replicas (the admin commands work beside it)"
        )
        self.path = path
        self.holder = holder


# -- what an operation (service.operations) refuses; each front end says it in its own words --


class SubscriptionNotFound(Exception):
    """No subscription `subscription_id` (in `org_id`, when the caller named one)."""

    def __init__(self, subscription_id: str, org_id: str | None = None) -> None:
        where = "" if org_id is None else f" in {org_id}"
        super().__init__(f"no subscription {subscription_id}{where}")
        self.subscription_id = subscription_id
        self.org_id = org_id


class DeliveryNotFound(Exception):
    """No delivery `delivery_id` of the subscription `subscription_id`."""

    def __init__(self, subscription_id: str, delivery_id: str) -> None:
        super().__init__(f"no delivery {delivery_id} of {subscription_id}")
        self.subscription_id = subscription_id
        self.delivery_id = delivery_id


class PayloadRemoved(Exception):
    """A delivery cannot be sent again: its event's payload is no longer kept (erased at the
    customer's request, or past the payload retention). `detail` says which, for people."""

    def __init__(self, what: str, detail: str) -> None:
        super().__init__(f"{what} cannot be sent again: {detail}")
        self.what = what
        self.detail = detail


class CannotSend(Exception):
    """A subscription's deliveries cannot go out now. `slug` says why in a word
    (`subscription-inactive`, `secret-undecryptable`), `reason` in a sentence for people."""

    def __init__(self, slug: str, reason: str) -> None:
        super().__init__(reason)
        self.slug = slug
        self.reason = reason


class InvalidInput(Exception):
    """An operation's input is wrong: `errors` are (field, message) pairs, all of them at once,
    with the fields named as the management API names them."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors))
        self.errors = errors
