"""The predict routes as plain ASGI, in front of the Starlette app.

A predict request for a small model spends most of the server's time in the web stack, not in
the model: per request, Starlette's middleware, router and Request/Response objects cost about
60 us of CPU on top of uvicorn's, a third of what the rest of a request needs once the JSON
body is parsed with orjson. ``PredictRoutes`` takes ``POST /v1/models/...`` and
``POST /predictions/NAME[/VERSION]`` straight from uvicorn to their handlers with a minimal
request object (the attributes the handlers use: method, url.path, headers, path_params,
stream()) and hands every other request, and any predict path that does not match, to Starlette
unchanged, so 404/405 answers and every other route stay Starlette's.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Awaitable, Callable, Dict, Optional, Tuple

from starlette.requests import ClientDisconnect

TF_PREFIX = "/v1/models/"
TS_PREFIX = "/predictions/"
# the route templates (app.py registers the same ones with Starlette; metrics label requests by them)
TF_ROUTE = TF_PREFIX + "{rest:path}"
TS_ROUTE = TS_PREFIX + "{name}"
TS_VERSION_ROUTE = TS_PREFIX + "{name}/{version}"


class RawRequest:
    """What the predict handlers read from a Starlette Request, straight from the ASGI scope."""

    __slots__ = ("method", "url", "headers", "path_params", "_receive")

    def __init__(self, scope, receive, path_params: Dict[str, str]):
        self.method = scope["method"]
        self.url = SimpleNamespace(path=scope["path"])
        headers: Dict[str, str] = {}
        for k, v in scope["headers"]:  # ASGI gives lower-case names; the first of repeated ones wins
            headers.setdefault(k.decode("latin-1"), v.decode("latin-1"))
        self.headers = headers
        self.path_params = path_params
        self._receive = receive

    async def read_whole(self, limit: int, too_large) -> bytes:
        """The whole body straight from the ASGI messages (what codecs.read_body does through
        stream(), without an async generator per request); ``too_large()`` is raised as soon as it
        passes ``limit`` bytes."""
        chunks, size = [], 0
        while True:
            message = await self._receive()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                size += len(body)
                if size > limit:
                    raise too_large()
                if not message.get("more_body", False):
                    if not chunks:
                        return body
                    chunks.append(body)
                    return b"".join(chunks)
                chunks.append(body)
            elif message["type"] == "http.disconnect":
                raise ClientDisconnect()

    async def stream(self):
        while True:
            message = await self._receive()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                if body:
                    yield body
                if not message.get("more_body", False):
                    return
            elif message["type"] == "http.disconnect":
                raise ClientDisconnect()


def predict_route(path: str) -> Optional[Tuple[str, Dict[str, str]]]:
    """(route template, path parameters) of the Starlette route a predict path would match, or
    None where none would (Starlette then answers it)."""
    if path.startswith(TF_PREFIX):
        return TF_ROUTE, {"rest": path[len(TF_PREFIX):]}
    if path.startswith(TS_PREFIX):
        parts = path[len(TS_PREFIX):].split("/")
        if len(parts) == 1 and parts[0]:
            return TS_ROUTE, {"name": parts[0]}
        if len(parts) == 2 and parts[0] and parts[1]:
            return TS_VERSION_ROUTE, {"name": parts[0], "version": parts[1]}
    return None


class PredictRoutes:
    """ASGI app: POST predict requests -> ``handle(route template, request)`` (which returns a
    Starlette Response); everything else -> ``app``."""

    def __init__(self, app, handle: Callable[[str, RawRequest], Awaitable[object]]):
        self.app, self.handle = app, handle
        self.state = app.state

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST":
            matched = predict_route(scope["path"])
            if matched is not None:
                route, params = matched
                response = await self.handle(route, RawRequest(scope, receive, params))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
