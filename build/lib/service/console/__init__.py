"""The web console at `/console`: three static files of this package (index.html, app.js,
app.css) served as they are, with a strict Content-Security-Policy.

The page holds no server-side state and needs no API key to load: it asks for one, keeps it in
the browser's session storage, and calls the management API with it like any other client. So
nothing here sits behind the API's auth middleware, and nothing here reads the store.

The policy allows scripts, styles, images and fetches from this origin alone, no inline script or
style, no plugins, no framing, no form submission (the forms are handled by the script; should it
fail, a form must not put an API key into a URL), and Trusted Types with no policy, so the
browser itself refuses `innerHTML` and its kin: what the page shows is set as text.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

__all__ = ["CONTENT_SECURITY_POLICY", "console_routes"]

PATH = "/console"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "font-src 'none'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    )
)

_SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}

# The files are not fingerprinted, so the browser keeps them but asks again each time
# (`no-cache` with an ETag): a new release is picked up at once and an unchanged file costs a 304.
_CACHE_CONTROL = "no-cache"

_FILES = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "app.css": "text/css",
}


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    content_type: str
    etag: str

    def respond(self, request: web.Request) -> web.Response:
        headers = {**_SECURITY_HEADERS, "Cache-Control": _CACHE_CONTROL, "ETag": self.etag}
        if self.etag in _etags(request.headers.get("If-None-Match", "")):
            return web.Response(status=304, headers=headers)
        return web.Response(
            body=self.body, content_type=self.content_type, charset="utf-8", headers=headers
        )


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}


def _load(name: str, content_type: str) -> _Asset:
    body = resources.files(__package__).joinpath(name).read_bytes()
    return _Asset(body, content_type, f'"{hashlib.sha256(body).hexdigest()[:32]}"')


def console_routes() -> list[web.RouteDef]:
    """GET (and HEAD) `/console` for the page and `/console/<file>` for its script and styles,
    read from the package once."""
    assets = {name: _load(name, content_type) for name, content_type in _FILES.items()}

    async def page(request: web.Request) -> web.Response:
        return assets["index.html"].respond(request)

    async def asset(request: web.Request) -> web.Response:
        found = assets.get(request.match_info["name"])
        if found is None or found is assets["index.html"]:
            raise web.HTTPNotFound
        return found.respond(request)

    async def with_slash(_: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently(PATH)

    return [
        web.get(PATH, page),
        web.get(PATH + "/", with_slash),
        web.get(PATH + "/{name}", asset),
    ]
