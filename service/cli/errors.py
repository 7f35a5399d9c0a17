"""What a command refuses, said in one line with its exit code: 2 for bad input, 1 for what is
not found or not possible now. The errors of `service.errors` are said here in the command
line's words (its options, not the API's fields)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from service.errors import DeliveryNotFound, InvalidInput, PayloadRemoved, SubscriptionNotFound

M = TypeVar("M", bound=BaseModel)


class Refused(Exception):
    """What the command cannot do, said in one line, and its exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


_OPTIONS = {
    "since": "--since",
    "until": "--until",
    "events": "--event",
    "event": "--event",
    "status": "--status",
    "limit": "--limit",
    "cursor": "--cursor",
    "eventId": "--event-id",
    "verificationId": "--verification-id",
    "onlyFailed": "--all",
    "overlapSeconds": "--overlap",
    "customerId": "CUSTOMER_ID",
    "filter": "--set",
}


def invalid(errors: Sequence[tuple[str, str]]) -> Refused:
    """The API's (field, message) errors, with the fields named as this command's options."""

    def option(field: str) -> str:
        # The field's first name, then its place within (events[1], filter.data.score.$lt).
        name = field.split("[", 1)[0].split(".", 1)[0]
        return _OPTIONS.get(name, name) + field[len(name) :]

    return Refused("; ".join(f"{option(field)}: {message}" for field, message in errors), 2)


REFUSALS = (Refused, InvalidInput, SubscriptionNotFound, DeliveryNotFound, PayloadRemoved)
"""What a command may raise to refuse: said in one line, never a traceback."""


def refusal(exc: Exception) -> Refused:
    """One of REFUSALS as the command says it."""
    if isinstance(exc, Refused):
        return exc
    if isinstance(exc, InvalidInput):
        return invalid(exc.errors)
    return Refused(str(exc), 1)


def validated(model: type[M], data: dict[str, Any]) -> M:
    """The options as the API's request `model`, or InvalidInput in the API's words."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # Here, not at the top: every command imports this module, few validate a model.
        from service.api.models import field_messages  # noqa: PLC0415

        raise InvalidInput(field_messages(exc)) from None
