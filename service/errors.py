"""The service's small exception classes that carry data (STYLE lesson 9).

Each class holds what its handler needs as attributes; `str()` is for people. Normal replies are
returned, never raised, so only real failures live here.
"""

from __future__ import annotations


class SignatureError(Exception):
    """A webhook signature did not verify.

    `reason` is a short fixed code (`malformed_header`, `timestamp_outside_tolerance`,
    `no_matching_signature`); `detail` says more, for people.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
