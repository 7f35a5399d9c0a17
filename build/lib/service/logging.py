"""structlog set-up: one JSON object a line in production, colourless console lines for people.

Log lines never carry a secret, an API key or a payload body: callers bind identifiers (event id,
delivery id, subscription id, topic/partition/offset), never content.
"""

from __future__ import annotations

import logging
import sys

import structlog

from service.settings import LogFormat, LogLevel


def configure_logging(fmt: LogFormat, level: LogLevel) -> None:
    """Route structlog and the standard library's logging (aiokafka, aiohttp) to stderr."""
    numeric = logging.getLevelName(level.value.upper())
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.typing.Processor
    if fmt is LogFormat.JSON:
        renderer = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # aiokafka logs every failed connection attempt at ERROR while a broker starts or moves;
    # the consumer loop reports what matters itself.
    logging.getLogger("aiokafka").setLevel(max(numeric, logging.WARNING))
    logging.getLogger("aiohttp.access").setLevel(max(numeric, logging.WARNING))
    logging.getLogger("alembic").setLevel(max(numeric, logging.WARNING))
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, RedactMalformedRequests) for f in server.filters):
        server.addFilter(RedactMalformedRequests())


class RedactMalformedRequests(logging.Filter):
    """aiohttp logs a request it cannot parse with the offending bytes quoted, and those can be
    the `Authorization` header (`Bearer qe_key_…` followed by a control character). Such a
    record keeps only the error's class and status."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Imported here: only aiohttp's server logs through this filter, and the command line's
        # short commands need not load aiohttp (a fifth of a second) to configure logging.
        from aiohttp.http_exceptions import HttpProcessingError  # noqa: PLC0415

        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            record.msg = f"http.malformed_request: {type(error).__name__} ({error.code})"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True
