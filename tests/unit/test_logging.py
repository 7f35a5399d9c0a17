"""What aiohttp's server logs of a request it cannot parse never carries the request's bytes
(they can be an `Authorization` header)."""

from __future__ import annotations

import logging
import sys

from aiohttp.http_exceptions import BadHttpMessage

from service.logging import RedactMalformedRequests


def test_a_malformed_request_is_logged_without_its_bytes() -> None:
    try:
        raise BadHttpMessage("Bearer qe_key_s3cr3t\x01 is not a header")
    except BadHttpMessage:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "aiohttp.server", logging.ERROR, __file__, 1, "Error handling request %s", ("x",), exc_info
    )
    assert RedactMalformedRequests().filter(record) is True
    assert record.getMessage() == "http.malformed_request: BadHttpMessage (400)"
    assert record.exc_info is None
    assert "qe_key_" not in record.getMessage()


def test_other_records_pass_unchanged() -> None:
    record = logging.LogRecord(
        "aiohttp.server", logging.INFO, __file__, 1, "hello %s", ("x",), None
    )
    assert RedactMalformedRequests().filter(record) is True
    assert record.getMessage() == "hello x"
