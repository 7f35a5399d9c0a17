"""The management API about one customer of the caller's org rather than a subscription: the
erasure of what the service keeps about them (`service.operations.erasure`), scoped to the org
of the caller's API key like every other route.

The customer id is a path segment: a client percent-encodes it (a `/` as %2F, other characters
as UTF-8), and aiohttp hands it over decoded. An id that is "." or ".." cannot travel in a URL
path (clients resolve such segments away); the command line erases those."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from aiohttp import web

from service.api.auth import ORG
from service.api.models import CustomerErasure
from service.api.problems import invalid
from service.appkeys import STORE
from service.errors import InvalidInput
from service.operations import erasure

if TYPE_CHECKING:
    from service.store import PersonalData

CUSTOMERS = "/api/identity/customers"
DRY_RUN = "dryRun"
_BOOLEANS = {"true": True, "false": False}


class CustomerApi:
    """Handlers over the store's personal-data role."""

    def routes(self) -> list[web.RouteDef]:
        return [web.post(CUSTOMERS + "/{customerId}/erase", self.erase)]

    async def erase(self, request: web.Request) -> web.Response:
        """Erases the customer's stored payloads in the caller's org (with `?dryRun=true` only
        counts them) and answers the receipt. Everything wrong is said at once, before the
        store is touched: a destructive call goes ahead only when exactly what it says is
        clear. So a body is refused rather than ignored (a `{"dryRun": true}` sent there must
        not erase)."""
        query = request.query
        errors = [(name, "unknown query parameter") for name in query if name != DRY_RUN]
        dry_run = False
        if DRY_RUN in query:
            given = query.getall(DRY_RUN)
            if len(given) > 1:
                errors.append((DRY_RUN, "is given more than once"))
            elif given[0] not in _BOOLEANS:
                errors.append((DRY_RUN, "must be true or false"))
            else:
                dry_run = _BOOLEANS[given[0]]
        if request.body_exists:
            errors.append(("(body)", f"this call takes no body; a dry run is ?{DRY_RUN}=true"))
        customer_id = request.match_info["customerId"]
        errors += erasure.customer_id_errors(customer_id)
        if errors:
            return invalid(errors)
        store: PersonalData = request.config_dict[STORE]
        try:
            receipt = await erasure.erase_customer(
                store, request[ORG], customer_id, dry_run=dry_run
            )
        except InvalidInput as exc:
            return invalid(exc.errors)
        body = CustomerErasure.of(receipt, dry_run=dry_run).model_dump(mode="json")
        return web.Response(body=orjson.dumps(body), content_type="application/json")
