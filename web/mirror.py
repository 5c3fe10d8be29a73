"""The Mirror view: the visitor's webcam comes back with the smile moved by the slider, live.

Transport: plain HTTP, one JPEG each way per frame. The page (web/ui/mirror.js) asks the camera for
640x480 and, while a stream runs, sends each new camera frame as a JPEG body to POST /mirror/frame as
soon as the last edited one has come back (one frame at the server: nothing waits, so the delay stays
one round trip); the server edits it (`vae.mirror.Mirror`, one per stream) and answers with the edited
JPEG, which the page shows in `#mirror_out` from a blob URL. Gradio's own streaming, used before,
carried the same frames as base64 data URIs through its queue and event stream: 8.2 fps and 345 ms
from capture to screen against 16 fps and 75-84 ms here (docs/mirror.md). It needs nothing a
Space lacks (no WebRTC relay) and no package.

Limits: POST /mirror/start opens a stream (a random token) for MIRROR_SECONDS, at most MIRROR_STREAMS
at once per server and MIRROR_PER_ADDRESS per client address (else 429 with a message and Retry-After:
when the soonest stream ends), so one visitor cannot hold every place; a stream that sent no frame for
IDLE_SECONDS, or was stopped, has ended and frees its place; a stream has at most IN_FLIGHT frames at the
server (409 otherwise; the page's pipelined variant uses 2), edited in order, at most MAX_FPS per second;
the token and the strength are checked before the body is read; a frame is a baseline JPEG of at most
MAX_FRAME_PIXELS, MAX_ASPECT and web/server/limits.py's FRAME_BODY_BYTES. Every answer but a frame is JSON
`{"detail": message}`, a failure on the server included (500, logged). SMILE_MIRROR_SECONDS,
SMILE_MIRROR_STREAMS and SMILE_MIRROR_PER_ADDRESS set the first three.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import gradio as gr
import numpy as np
from PIL import Image
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from vae.editor import SmileEditor
from vae.metadata import MetadataError, check_metadata
from vae.mirror import Mirror, MirrorModel

from .server.blocks import SERVER_FAILED
from .server.fair_queue import client_address, trusted_proxies

log = logging.getLogger(__name__)

MIRROR_SECONDS = int(os.environ.get("SMILE_MIRROR_SECONDS", "60"))  # per stream; press Start again for more
MIRROR_STREAMS = int(os.environ.get("SMILE_MIRROR_STREAMS", "2"))  # at once per server: 2 cores hold 2 at >= 8 fps
MIRROR_PER_ADDRESS = int(os.environ.get("SMILE_MIRROR_PER_ADDRESS", "1"))  # at once per client address
IDLE_SECONDS = 3.0  # a stream that sent no frame for this long has ended: its place is free
MAX_FPS = 30.0  # a stream's frames are edited at most this often (a webcam gives 30): the rest wait their turn
IN_FLIGHT = 2  # frames of one stream at the server at once: the next is on its way while one is edited
MAX_FRAME_PIXELS = 1280 * 720  # the page sends 640x480; larger frames only cost the server more
MAX_ASPECT = 4.0  # a frame's long side over its short side: a thin strip leaves the face detector nothing to scan
JPEG_QUALITY = 85
UI = Path(__file__).resolve().parent / "ui"

BUSY = (
    "The mirror is busy: {n} people are using it right now and this server edits at most {n} streams at once. "
    "Try again in {wait} s."
)
YOURS = "You already have {n} mirror stream(s) open (from this address): stop it, or wait {wait} s, then press Start."
ENDED = "This mirror stream has ended (it ran {seconds} s, or sent no frame for a while): press Start again."
TOO_MANY = "At most {n} frames of a stream at a time: send the next frame when one has come back."
NOT_JPEG = "A mirror frame must be a JPEG image."
NOT_BASELINE = "A mirror frame must be a baseline JPEG (a browser's canvas makes one), not a progressive one."
NOT_YOURS = "This mirror stream was opened from another address: press Start to open your own."
FOREIGN_PAGE = "The mirror answers only its own page: open the app itself to use it."
TOO_SLOW = "The frame arrived too slowly (a frame's body may take up to {seconds:g} s, within the stream's time)."
NOT_EDITABLE = "This frame could not be edited (it has been logged): the next one may be."


class MirrorRefused(Exception):
    """A request the mirror answers with `status` and a message for the person."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


@dataclass
class _Stream:
    mirror: Mirror
    address: str
    opened: float
    last_frame: float
    closed: bool = False  # stopped: refuses new frames, and goes when its last frame is done
    next_due: float = 0.0
    in_flight: int = 0
    turn: asyncio.Lock = field(default_factory=asyncio.Lock)  # FIFO: the stream's frames are edited in order


class MirrorStreams:
    """The server's mirror streams: one `Mirror` per open stream, at most `max_streams` at once."""

    def __init__(
        self,
        editor: SmileEditor,
        max_streams: int = MIRROR_STREAMS,
        per_address: int = MIRROR_PER_ADDRESS,
        seconds: float = MIRROR_SECONDS,
        idle_seconds: float = IDLE_SECONDS,
        model: MirrorModel | None = None,
    ) -> None:
        self.editor = editor
        self.model = model or MirrorModel(editor)  # times fp32 / bf16 (where native) once, in the background
        self.max_streams = max(1, int(max_streams))
        self.per_address = max(1, int(per_address))
        self.seconds = seconds
        self.idle_seconds = idle_seconds
        self.limiter = anyio.CapacityLimiter(self.max_streams)  # threads editing frames at once
        self._streams: dict[str, _Stream] = {}
        self._lock = threading.Lock()

    def active(self) -> int:
        with self._lock:
            self._forget_ended(time.monotonic())
            return len(self._streams)

    def _forget_ended(self, now: float) -> None:
        """Free the places of streams past their time (whatever a frame in flight is doing: its body is cut off
        at the same moment, see `body_deadline`), and of stopped or idle ones with no frame at the server."""
        for token, s in list(self._streams.items()):
            idle = s.closed or now - s.last_frame > self.idle_seconds
            if now - s.opened > self.seconds or (idle and not s.in_flight):
                del self._streams[token]

    def _refuse_busy(self, message: str, streams: list[_Stream], now: float) -> MirrorRefused:
        """429 with Retry-After: the seconds until the soonest of `streams` has run its time (it may end sooner)."""
        soonest = min(max(s.opened + self.seconds - now, 0.0) for s in streams)
        wait = max(1, math.ceil(min(soonest, 3600)))
        return MirrorRefused(429, message.format(n=len(streams), wait=wait), retry_after=wait)

    def open(self, address: str = "unknown") -> str:
        """A new stream's token; MirrorRefused(429) when `max_streams` are open, or `per_address` from `address`."""
        now = time.monotonic()
        with self._lock:
            self._forget_ended(now)
            yours = [s for s in self._streams.values() if s.address == address]
            if len(yours) >= self.per_address:
                raise self._refuse_busy(YOURS, yours, now)
            if len(self._streams) >= self.max_streams:
                raise self._refuse_busy(BUSY, list(self._streams.values()), now)
            token = secrets.token_urlsafe(18)
            self._streams[token] = _Stream(Mirror(self.editor, self.model), address, now, now)
            return token

    def close(self, token: str, address: str = "unknown") -> None:
        """Stop `address`'s stream: it takes no more frames and its place is free once the frame being edited is done."""
        with self._lock:
            stream = self._streams.get(token)
            if stream is not None and stream.address == address:
                stream.closed = True
                self._forget_ended(time.monotonic())

    def claim(self, token: str, address: str = "unknown") -> _Stream:
        """The open stream of `token`, opened from `address`, with one more frame in flight; MirrorRefused if
        ended, full or another address's."""
        now = time.monotonic()
        with self._lock:
            self._forget_ended(now)
            stream = self._streams.get(token)
            if stream is None or stream.closed or now - stream.opened > self.seconds:
                raise MirrorRefused(410, ENDED.format(seconds=f"{self.seconds:g}"))
            if stream.address != address:
                raise MirrorRefused(403, NOT_YOURS)
            if stream.in_flight >= IN_FLIGHT:
                raise MirrorRefused(409, TOO_MANY.format(n=IN_FLIGHT))
            stream.in_flight, stream.last_frame = stream.in_flight + 1, now
            return stream

    def body_deadline(self, stream: _Stream) -> float:
        """Seconds a frame's body may still take to arrive: at most IDLE_SECONDS, and never past the stream's time."""
        return max(0.0, min(self.idle_seconds, stream.opened + self.seconds - time.monotonic()))

    def release(self, stream: _Stream) -> None:
        with self._lock:
            stream.in_flight, stream.last_frame = stream.in_flight - 1, time.monotonic()
            self._forget_ended(stream.last_frame)

    def strength(self, text: str | None) -> float:
        """The X-Mirror-Strength header as a strength on the editor's signed scale; MirrorRefused(400) if not."""
        value: float | str | None = text
        try:
            value = float(text) if text is not None else None
        except ValueError:
            pass  # check_strength quotes it back
        try:
            return self.editor.check_strength(value, signed=True)
        except ValueError as err:
            raise MirrorRefused(400, str(err)) from err

    def edit(self, stream: _Stream, body: bytes, strength: float) -> tuple[bytes, str | None]:
        """One JPEG frame in, the same frame with the smile moved by `strength` out (as JPEG), and a note."""
        frame = decode_frame(body)
        try:
            result = stream.mirror.edit(frame, strength)
        except ValueError as err:  # a frame inside our rules that the pipeline cannot take: ours to fix, logged
            log.warning("mirror frame %dx%d not editable: %s", frame.shape[1], frame.shape[0], err)
            raise MirrorRefused(400, NOT_EDITABLE) from err
        buffer = io.BytesIO()
        Image.fromarray(result.image).save(buffer, "JPEG", quality=JPEG_QUALITY)
        return buffer.getvalue(), result.note


def decode_frame(body: bytes) -> np.ndarray:
    """The pixels of a JPEG frame (H, W, 3) uint8, its metadata's cost, size and kind checked before it is decoded."""
    try:
        check_metadata(body)  # an EXIF block of overlapping tags costs Pillow's open hundreds of MB
    except MetadataError as err:
        raise MirrorRefused(400, str(err)) from err
    try:
        image = Image.open(io.BytesIO(body), formats=["JPEG"])
    except Image.DecompressionBombError as err:  # a header that declares an enormous picture
        raise MirrorRefused(400, f"A mirror frame may have at most {MAX_FRAME_PIXELS:,} pixels.") from err
    except Exception as err:  # Pillow raises several kinds for a body that is not a JPEG
        raise MirrorRefused(400, NOT_JPEG) from err
    width, height = image.size
    if width * height > MAX_FRAME_PIXELS or min(width, height) < 32 or max(width, height) > MAX_ASPECT * min(width, height):
        raise MirrorRefused(
            400,
            f"A mirror frame must be 32x32 to {MAX_FRAME_PIXELS:,} pixels, at most {MAX_ASPECT:g} times as wide as "
            f"high or as high as wide, not {width}x{height}.",
        )
    if image.info.get("progressive") or image.info.get("progression"):  # many scans: decoding may cost seconds
        raise MirrorRefused(400, NOT_BASELINE)
    try:
        return np.asarray(image.convert("RGB"))
    except Exception as err:  # truncated or corrupt data
        raise MirrorRefused(400, NOT_JPEG) from err


def _refusal(err: MirrorRefused) -> JSONResponse:
    headers = {"Retry-After": str(err.retry_after)} if err.retry_after else None
    return JSONResponse({"detail": str(err)}, err.status, headers=headers)


def mirror_routes(streams: MirrorStreams) -> list[Route]:
    """POST /mirror/start, /mirror/frame and /mirror/stop over `streams` (added to the app by SmileBlocks)."""

    proxies = trusted_proxies()

    def foreign(request: Request) -> bool:
        """Whether the request comes from a page of another site (a browser sends its Origin with every POST)."""
        origin = request.headers.get("origin")
        if origin is None:
            return False  # not a browser page: a script, which no other site can drive
        hosts = {request.headers.get("host")} | ({request.headers.get("x-forwarded-host")} if proxies else set())
        return urlsplit(origin).netloc not in hosts - {None}

    async def start(request: Request) -> Response:
        if foreign(request):
            return JSONResponse({"detail": FOREIGN_PAGE}, 403)
        try:
            token = streams.open(client_address(request, proxies))
        except MirrorRefused as err:
            return _refusal(err)
        return JSONResponse({"token": token, "seconds": streams.seconds, "max_fps": MAX_FPS, "in_flight": IN_FLIGHT})

    async def frame(request: Request) -> Response:
        started = time.perf_counter()
        if foreign(request):
            return JSONResponse({"detail": FOREIGN_PAGE}, 403)
        try:  # before the body is read: a client without an open stream makes the server hold nothing
            strength = streams.strength(request.headers.get("x-mirror-strength"))
            stream = streams.claim(request.headers.get("x-mirror-token", ""), client_address(request, proxies))
        except MirrorRefused as err:
            return _refusal(err)
        try:
            deadline = streams.body_deadline(stream)
            try:  # web/server/limits.py has bounded its size; its time ends with the stream's
                body = await asyncio.wait_for(request.body(), deadline)
            except TimeoutError:
                message = TOO_SLOW.format(seconds=streams.idle_seconds)
                return JSONResponse({"detail": message}, 408, headers={"Connection": "close"})  # the rest is not read
            async with stream.turn:
                wait = stream.next_due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                stream.next_due = time.monotonic() + 1 / MAX_FPS
                jpeg, note = await anyio.to_thread.run_sync(streams.edit, stream, body, strength, limiter=streams.limiter)
        except MirrorRefused as err:
            return _refusal(err)
        except Exception:  # a bug of ours: logged, and the person told in words, not a traceback
            log.exception("mirror frame failed")
            return JSONResponse({"detail": SERVER_FAILED}, 500)
        finally:
            streams.release(stream)
        headers = {"Cache-Control": "no-store", "Server-Timing": f"edit;dur={(time.perf_counter() - started) * 1000:.1f}"}
        if note:
            headers["X-Mirror-Note"] = note
        return Response(jpeg, media_type="image/jpeg", headers=headers)

    async def stop(request: Request) -> Response:
        if foreign(request):
            return JSONResponse({"detail": FOREIGN_PAGE}, 403)
        streams.close(request.headers.get("x-mirror-token", ""), client_address(request, proxies))
        return Response(status_code=204)

    return [
        Route("/mirror/start", start, methods=["POST"]),
        Route("/mirror/frame", frame, methods=["POST"]),
        Route("/mirror/stop", stop, methods=["POST"]),
    ]


def mirror_view(editor: SmileEditor, streams: MirrorStreams | None = None) -> MirrorStreams:
    """The Mirror section of the page (call inside gr.Blocks): camera, edited stream, Start, its own slider.

    The caller serves `mirror_routes(streams)` beside the page.
    """
    streams = streams or MirrorStreams(editor)
    top, default = editor.settings.max_strength, editor.settings.default_strength
    seconds = f"{streams.seconds:g}" if math.isfinite(streams.seconds) else "unlimited"
    with gr.Accordion("Mirror: your webcam, smiling live", open=True, elem_id="mirror"):
        gr.Markdown(
            f"Your camera's picture comes back with the smile moved by the slider, live, edited on this server "
            f"(nothing is stored). Each stream runs {seconds} s; press Start again for more."
        )
        gr.HTML(
            "",
            html_template=(UI / "mirror.html").read_text(),
            css_template=(UI / "mirror.css").read_text(),
            js_on_load=(UI / "mirror.js").read_text(),
            elem_id="mirror_view",
            padding=False,
        )
        gr.Slider(
            -top, top, value=default, step=0.1, label="Mirror smile: less ← 0 → more", elem_id="mirror_strength", interactive=True
        )
    return streams
