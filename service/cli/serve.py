"""`identity-webhooks serve`: the API, the consumer and the dispatcher, or some of them."""

from __future__ import annotations

import argparse
import asyncio

from service.app import Roles
from service.app import serve as run_service
from service.cli.run import with_settings
from service.settings import Settings


@with_settings
def serve(args: argparse.Namespace, settings: Settings) -> int:
    roles = Roles(api=not args.no_api, consumer=not args.no_consumer)
    return asyncio.run(run_service(settings, roles))
