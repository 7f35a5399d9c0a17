"""The service's small exception classes that carry data (STYLE lesson 9).

Each class holds what its handler needs as attributes; `str()` is for people. Normal replies are
returned, never raised, so only real failures live here.
"""

from __future__ import annotations

import errno


class SignatureError(Exception):
    """A webhook signature did not verify.

    `reason` is a short fixed code (`malformed_header`, `timestamp_outside_tolerance`,
    `no_matching_signature`); `detail` says more, for people.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class TargetRejected(Exception):
    """A webhook URL is not acceptable as a delivery target (SPEC sections 2 and 3).

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
