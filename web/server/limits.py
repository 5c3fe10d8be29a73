"""Bounds on what one HTTP request may cost: its body's size and how long a client may take to send it.

`limit_bodies` is ASGI middleware: a request whose body is larger than its route needs is answered 413
with a message before the app parses it (a 60 MB JSON body of a million arguments used to cost 660 MB).
`DeadlineH11Protocol` is uvicorn's h11 protocol with deadlines: a connection that takes more than
HEADERS_DEADLINE_S to send a request's headers, or BODY_DEADLINE_S for its body, is closed, so slow
clients cannot hold the server's connections open (eight half-sent requests were held for 75 s).
"""

from __future__ import annotations

import json
import re
import time

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .guards import MAX_UPLOAD_BYTES

JSON_BODY_BYTES = 64 * 2**10  # a call's arguments: a path, a number, a flag, an attribute name
FRAME_BODY_BYTES = 2 * 2**20  # one mirror frame, a JPEG (640x480 is ~50 KB, the largest allowed, 1280x720, ~200 KB)
UPLOAD_BODY_BYTES = MAX_UPLOAD_BYTES + 2**20  # one file and its multipart framing
HEADERS_DEADLINE_S = 20.0
BODY_DEADLINE_S = 120.0  # a 25 MB upload at 2 Mbit/s
WATCH_EVERY_S = 2.0


UPLOAD_ROUTE = re.compile(r"/gradio_api/upload/?$")
FRAME_ROUTE = re.compile(r"/mirror/frame/?$")


def body_limit(path: str) -> tuple[int, str]:
    """The largest body the route at `path` needs, and the message for one over it."""
    if UPLOAD_ROUTE.search(path):
        return UPLOAD_BODY_BYTES, f"The upload is too large: a photo may be up to {MAX_UPLOAD_BYTES // 2**20} MB."
    if FRAME_ROUTE.search(path):
        return FRAME_BODY_BYTES, f"The frame is too large: a webcam frame may be up to {FRAME_BODY_BYTES // 2**20} MB."
    return JSON_BODY_BYTES, f"The request is too large: a call's arguments may be up to {JSON_BODY_BYTES // 1024} KB."


async def _refuse(send, message: str) -> None:
    await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps({"detail": message}).encode()})


def limit_bodies(app):
    """ASGI middleware: 413 for a body over `body_limit`, by its Content-Length or, when it has none, read first.

    A body sent without a length (chunked) is read up to its limit before the app sees it: FastAPI would
    answer an error raised while it reads the body with a bare 400.
    """

    async def limited(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        limit, message = body_limit(scope["path"])
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and b"transfer-encoding" not in headers:  # with both, h11 follows the chunks
            if not declared.isdigit() or int(declared) > limit:
                return await _refuse(send, message)
            return await app(scope, receive, send)  # h11 never delivers more than the declared length
        body, more = bytearray(), True
        while more:
            part = await receive()
            if part["type"] != "http.request":
                return  # the client went away
            body += part.get("body", b"")
            more = part.get("more_body", False)
            if len(body) > limit:
                return await _refuse(send, message)
        body = bytes(body)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await app(scope, replay, send)

    return limited


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol; closes a connection stuck sending a request's headers or body past its deadline."""

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._state, self._since = None, time.monotonic()
        self._watch = self.loop.call_later(WATCH_EVERY_S, self._check_deadline)

    def _check_deadline(self) -> None:
        if self.transport.is_closing() or self.transport.get_protocol() is not self:  # closed, or upgraded
            return
        state, now = self.conn.their_state, time.monotonic()
        if state is not self._state:
            self._state, self._since = state, now
        deadline = {h11.IDLE: HEADERS_DEADLINE_S, h11.SEND_BODY: BODY_DEADLINE_S}.get(state)
        if deadline is not None and now - self._since > deadline:
            self.transport.close()  # waiting for headers (or idle) too long, or a body too slow
            return
        self._watch = self.loop.call_later(WATCH_EVERY_S, self._check_deadline)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._state, self._since = None, time.monotonic()  # the next request's deadline starts now

    def connection_lost(self, exc) -> None:
        self._watch.cancel()
        super().connection_lost(exc)
