"""ASGI middlewares that edit whole response bodies: one mechanism, several uses; and the two helpers of
middlewares that read a request's body before the app does (:func:`read_body`, :func:`replay`)."""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cim.api.config import STATIC_URL


async def read_body(receive: Receive, max_bytes: int | None = None) -> bytes | None:
    """A request's whole body; None once it is over ``max_bytes`` (what was read is dropped)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if max_bytes is not None and size > max_bytes:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the app the body a middleware has read, then whatever comes next
    (a disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


class BodyRewriter:
    """Buffers the responses a subclass chooses and hands their body to :meth:`rewrite`.

    Subclasses say which requests (``applies``) and which responses (``buffers``: by content type and
    status) they edit; everything else streams through untouched. Content-Length is set anew.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def applies(self, scope: Scope) -> bool:
        return True

    def buffers(self, content_type: bytes, status: int) -> bool:
        raise NotImplementedError

    def rewrite(self, scope: Scope, body: bytes) -> bytes:
        raise NotImplementedError

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.applies(scope):
            await self.app(scope, receive, send)
            return
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                content_type = dict(message.get("headers", [])).get(b"content-type", b"")
                start["buffer"] = self.buffers(content_type, message["status"])
                if start["buffer"]:
                    start["message"] = message
                else:
                    await send(message)
                return
            if not start["buffer"]:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = self.rewrite(scope, b"".join(chunks))
            head = start["message"]
            head["headers"] = [(k, v) for k, v in head.get("headers", []) if k.lower() != b"content-length"]
            head["headers"].append((b"content-length", str(len(body)).encode()))
            await send(head)
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, capture)


# pygeoapi's templates → our bundled copies (cim/web/static/vendor)
_VENDOR = f"{STATIC_URL}/vendor"
CDN_REWRITES: list[tuple[bytes, bytes]] = [
    (b"https://unpkg.com/leaflet@1.3.1/dist/", f"{_VENDOR}/leaflet/".encode()),
    (b"https://cdnjs.cloudflare.com/ajax/libs/leaflet/1.3.1/", f"{_VENDOR}/leaflet/".encode()),
    (b"https://unpkg.com/leaflet.markercluster/dist/", f"{_VENDOR}/leaflet.markercluster/".encode()),
    (b"https://unpkg.com/bootstrap@5.1.3/dist/css/", f"{_VENDOR}/bootstrap/".encode()),
    (b"https://unpkg.com/swagger-ui-dist/", f"{_VENDOR}/swagger-ui/".encode()),
    (b"https://unpkg.com/leaflet-draw@1.0.4/dist/", f"{_VENDOR}/leaflet-draw/".encode()),
    # only used for collections with an OGC API - Maps link, which we do not serve; not on npm
    (b'<script src="https://unpkg.com/leaflet-imageoverlay-ogcapi@0.1.0/Leaflet.ImageOverlay.OGCAPI.js"></script>', b""),
    (b'<script src="https://cdnjs.cloudflare.com/ajax/libs/html5shiv/3.7.3/html5shiv.js"></script>', b""),
]


class OfflineAssets(BodyRewriter):
    """Rewrites CDN links in HTML responses to the bundled assets."""

    def buffers(self, content_type: bytes, status: int) -> bool:
        return content_type.startswith(b"text/html")

    def rewrite(self, scope: Scope, body: bytes) -> bytes:
        for old, new in CDN_REWRITES:
            body = body.replace(old, new)
        return body
