"""The Mirror view: the visitor's webcam comes back with the smile moved by the slider, live (Gradio streaming).

The browser's webcam (`gr.Image(sources=["webcam"], streaming=True)`) sends a JPEG every `STREAM_EVERY`
seconds while a frame is not in flight; the server edits the newest one (`vae.mirror.Mirror`, one per
visitor) and sends it back into `#mirror_out`. `#mirror_start` is one click: it presses the webcam's own
record button. Limits: each stream stops after `MIRROR_SECONDS` (Gradio's `time_limit`), and at most
`MIRROR_STREAMS` streams run at once on a server; a visitor over that bound is told so (gr.Error) at once.
Both can be set with the environment variables SMILE_MIRROR_SECONDS and SMILE_MIRROR_STREAMS.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

import gradio as gr
import numpy as np

from vae.editor import SmileEditor
from vae.mirror import Mirror, MirrorModel

STREAM_EVERY = float(
    os.environ.get("SMILE_MIRROR_STREAM_EVERY", "0.066")
)  # a frame offered every 66 ms: faster only piles up (bench.mirror)
MIRROR_SECONDS = int(os.environ.get("SMILE_MIRROR_SECONDS", "60"))  # per stream; press Start again for more
MIRROR_STREAMS = int(os.environ.get("SMILE_MIRROR_STREAMS", "2"))  # at once per server: 2 cores hold 2 at >= 8 fps
CAMERA = {"video": {"width": {"ideal": 640}, "height": {"ideal": 480}}}  # Gradio asks for 1920x1440 otherwise
IDLE_SECONDS = 3.0  # a stream that sent no frame for this long has ended: its place is free

START_JS = """async () => {
  const root = document.querySelector('#mirror_in');
  const pause = (ms) => new Promise((done) => setTimeout(done, ms));
  for (let i = 0; i < 150; i++) {
    const record = root && root.querySelector('button.capture-button');
    if (record) {
      if (!/stop|wait/i.test(record.textContent)) record.click();
      return [];
    }
    const access = root && [...root.querySelectorAll('button')].find((b) => /webcam|access|camera/i.test(b.textContent + b.ariaLabel));
    if (access) access.click();
    await pause(100);
  }
  return [];
}"""


@dataclass
class _Stream:
    mirror: Mirror
    last_frame: float
    warned: bool = False


class MirrorStreams:
    """The server's mirror streams: one `Mirror` per visitor (session), at most `max_streams` at once."""

    def __init__(
        self,
        editor: SmileEditor,
        max_streams: int = MIRROR_STREAMS,
        idle_seconds: float = IDLE_SECONDS,
        model: MirrorModel | None = None,
    ) -> None:
        self.editor = editor
        self.model = model or MirrorModel(editor)  # times fp32 / bf16 here, once
        self.max_streams = max(1, int(max_streams))
        self.idle_seconds = idle_seconds
        self._streams: dict[str, _Stream] = {}
        self._lock = threading.Lock()

    def active(self) -> int:
        with self._lock:
            self._forget_idle(time.monotonic())
            return len(self._streams)

    def _forget_idle(self, now: float) -> None:
        for key in [k for k, s in self._streams.items() if now - s.last_frame > self.idle_seconds]:
            del self._streams[key]

    def _stream(self, key: str) -> _Stream:
        now = time.monotonic()
        with self._lock:
            self._forget_idle(now)
            stream = self._streams.get(key)
            if stream is None:
                if len(self._streams) >= self.max_streams:
                    raise gr.Error(
                        f"The mirror is busy: {self.max_streams} people are using it right now and this server "
                        f"edits at most {self.max_streams} streams at once. Try again in a minute."
                    )
                stream = self._streams[key] = _Stream(Mirror(self.editor, self.model), now)
            stream.last_frame = now
            return stream

    def frame(self, image: np.ndarray | None, strength: float, request: gr.Request | None = None) -> np.ndarray | None:
        """One webcam frame in, the same frame with the smile moved by `strength` out."""
        if image is None:
            return None
        key = getattr(request, "session_hash", None) or "local"
        stream = self._stream(key)
        try:
            result = stream.mirror.edit(image, strength)
        except ValueError as err:
            raise gr.Error(str(err)) from err
        if result.note and not stream.warned:
            gr.Warning(result.note)
        stream.warned = result.note is not None  # said once per spell without a face
        return result.image


def mirror_view(editor: SmileEditor, streams: MirrorStreams | None = None) -> MirrorStreams:
    """The Mirror section of the page (call inside gr.Blocks): webcam in, edited stream out, its own slider."""
    streams = streams or MirrorStreams(editor)
    top, default = editor.settings.max_strength, editor.settings.default_strength
    with gr.Accordion("Mirror: your webcam, smiling live", open=True, elem_id="mirror"):
        gr.Markdown(
            f"Your camera's picture comes back with the smile moved by the slider, live, edited on this server "
            f"(nothing is stored). Each stream runs {MIRROR_SECONDS} s; press Start again for more."
        )
        with gr.Row():
            camera = gr.Image(
                sources=["webcam"],
                streaming=True,
                type="numpy",
                label="Your camera",
                elem_id="mirror_in",
                webcam_options=gr.WebcamOptions(mirror=True, constraints=CAMERA),
            )
            shown = gr.Image(label="The mirror", format="jpeg", interactive=False, elem_id="mirror_out", buttons=[])
        with gr.Row():
            start = gr.Button("Start the mirror", variant="primary", elem_id="mirror_start", scale=0)
            strength = gr.Slider(
                -top, top, value=default, step=0.1, label="Mirror smile: less ← 0 → more", elem_id="mirror_strength"
            )
    start.click(None, js=START_JS)
    camera.stream(
        streams.frame,
        [camera, strength],
        shown,
        stream_every=STREAM_EVERY,
        time_limit=MIRROR_SECONDS,
        concurrency_id="mirror",
        concurrency_limit=streams.max_streams + 2,
        show_progress="hidden",
        api_visibility="private",
    )
    return streams
