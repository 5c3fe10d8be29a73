"""The SMILE web app: upload a face, slide the smile. Built by `create_app(editor, work_dir)`.

Functions first (`SmileApp`: one method per event, each a plain function of the request's values,
testable in-process), then the Blocks wiring (`create_app`). Nothing runs at import; `app.py` at the
repository root loads the model and launches. Named API endpoints (docs/api.md): /edit, /prepare, /render.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import gradio as gr
from gradio.data_classes import FileData
from gradio.utils import get_upload_folder
from PIL import Image

from vae.editor import MIN_PHOTO_SIDE, PHOTO_MAX_SIDE, EditResult, Prepared, SmileEditor
from vae.strip import strip_image

from .live import LIVE_STEP, frames_json, live_strengths
from .mirror import mirror_routes, mirror_view
from .photos import PreparedCache, RecentKeys
from .server.blocks import SmileBlocks
from .server.fair_queue import client_address, trusted_proxies
from .server.guards import UploadGone, checked_align, read_upload, upload_path
from .server.results import ResultFiles
from .server.sandbox import Sandbox
from .server.uploads import UploadStore

UI = Path(__file__).resolve().parent / "ui"
EXAMPLE_PHOTO = Path(__file__).resolve().parents[1] / "assets" / "examples" / "astronaut.jpg"
PHOTO_CACHE_BYTES = 512 * 2**20  # every prepared photo's pixels, frame and crop (docs/benchmarks.md: the memory bound)
KEYS_KEPT = 4096  # sessions whose upload still owes its strip; upload paths whose photo key is known


def owner(request: gr.Request | None) -> str:
    """The client address whose share of the results a request's files count against ("" in-process)."""
    return client_address(request, trusted_proxies()) if request is not None else ""


def clear_error(fn):
    """Turn the editor's ValueErrors (bad image, strength, attribute) into the message the person sees; a
    generator stays one, so that Gradio still streams what it yields."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def streamed(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except ValueError as err:  # ImageError is a ValueError
                raise gr.Error(str(err)) from err

        return streamed

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ValueError as err:
            raise gr.Error(str(err)) from err

    return wrapped


class PageUpdate(NamedTuple):
    """What /prepare answers, in this order: the Blocks wiring names its outputs by these fields, so the two
    cannot drift apart, and an API client reads them in the order docs/api.md lists."""

    key: str | None  # the photo's key into the server-wide cache (the page's state)
    live_frames: str  # JSON of the face region at the live strengths (web/live.py)
    less: str | None  # result files: the whole photo at -strength and +strength
    more: str | None
    crop: str | None  # "under the hood": the model's 128x128 input, its reconstruction and its two decodes
    reconstruction: str | None
    decoded_less: str | None
    decoded_more: str | None
    decoded_frames: str  # JSON of the model's own faces at the live strengths


NO_PHOTO = PageUpdate(None, "", None, None, None, None, None, None, "")


class SmileApp:
    """The app's handlers over one editor: uploads are read only from `upload_root()`, results written to `work_dir`."""

    def __init__(
        self, editor: SmileEditor, work_dir: str | os.PathLike, upload_root: Callable[[], str] = get_upload_folder
    ) -> None:
        self.editor = editor
        self.work_dir = Path(work_dir)
        self.results = ResultFiles(self.work_dir / "results")
        self.photos = PreparedCache(lambda data, align: editor.prepare(data, align=align), max_bytes=PHOTO_CACHE_BYTES)
        self.upload_root = upload_root
        self.sandbox = Sandbox()  # test-decodes every upload in child processes, bounded in time and memory
        self.uploads = UploadStore(
            functools.partial(self.sandbox.inspect, max_side=PHOTO_MAX_SIDE, min_side=MIN_PHOTO_SIDE), root=upload_root
        )
        self.strips_due = RecentKeys(KEYS_KEPT)  # session -> the photo key its strip is for
        self.read_keys = RecentKeys(KEYS_KEPT)  # upload path -> the key of the photo read from it
        self.frames = live_strengths(editor.settings.max_strength)

    def _upload(self, payload: object, align: object, address: str) -> tuple[str, Prepared, bool]:
        """(key, prepared, cached) for the uploaded file: aligned and encoded once per content. A file whose check
        has not answered yet (still waiting its turn, or an example Gradio cached itself) is checked first, here."""
        path = upload_path(payload)
        refused = self.uploads.why_refused(path) if isinstance(path, str) else None
        if refused:
            raise ValueError(refused)
        align = checked_align(align)
        try:
            data = read_upload(path, self.upload_root())
        except UploadGone:  # an attribute change long after the upload: its photo may still be in memory
            key = self.photos.realigned(self.read_keys.get(path), align)
            prepared = self.photos.find(key)
            if prepared is None:
                raise
            return key, prepared, True
        if self.uploads.pixels(path) is None:  # never decoded in this process before the sandbox has said yes
            self.uploads.add([path], address)
            refused = self.uploads.why_refused(path)
            if refused or self.uploads.pixels(path) is None:
                raise ValueError(refused or "The upload could not be checked: upload the photo again.")
        key, prepared, cached = self.photos.get(data, align)
        self.read_keys.set(path, key)
        for note in prepared.notes:
            gr.Warning(note)
        return key, prepared, cached

    def _session_photo(self, key: str | None) -> Prepared:
        """This session's photo: its state holds only a key into the server-wide, bounded cache."""
        prepared = self.photos.find(key)
        if prepared is None:
            raise ValueError(
                "Upload a photo of a face first."
                if key is None
                else "This photo is no longer in the server's memory: upload it again."
            )
        return prepared

    def _pictures(self, result: EditResult, address: str) -> list[str]:
        """The whole photo with less and more smile, then the four 128x128 faces of "under the hood" (crop,
        reconstruction, decoded less, decoded more), written side by side."""
        named = [(result.less, "less"), (result.more, "more"), (result.crop, "crop"), (result.reconstruction, "reconstruction")]
        return self.results.images(
            [*named, (result.decoded_less, "decoded_less"), (result.decoded_more, "decoded_more")], address
        )

    @clear_error
    def prepare(self, payload: dict | None, align: bool, attribute: str, request: gr.Request = None) -> Iterator[PageUpdate]:
        """Upload, align toggle or attribute change (one event, so a session's requests never overtake each
        other): align and encode once per photo, then yield twice. First a first look: the live view at -+
        the default strength and 0 only (a few decodes, no files), so the edited face shows while the rest is
        made (the last photo's pictures are cleared, so a failure after it leaves nothing stale beside it);
        then every live frame and the less / more photos. Both are PageUpdates."""
        if not payload:
            yield NO_PHOTO
            return
        attribute = self.editor.check_attribute(attribute)
        key, prepared, _ = self._upload(payload, align, owner(request))
        default = self.editor.settings.default_strength
        few = [-default, 0.0, default]
        views = self.editor.decode_strengths(prepared, few, attribute).views(few)
        yield NO_PHOTO._replace(key=key, live_frames=frames_json(few, views, complete=False))
        result = self.editor.edit(prepared, attribute=attribute, frames=self.frames)
        pictures = self._pictures(result, owner(request))
        self.strips_due.set(request.session_hash if request else None, key)
        yield PageUpdate(
            key,
            frames_json(result.frame_strengths, result.frames),
            *pictures,
            frames_json(result.frame_strengths, result.frame_decodes),
        )

    @clear_error
    def strip(self, key: str | None, attribute: str, request: gr.Request = None):
        """The strip and its GIF from the face region, chained after the page's first outputs: once per
        upload (it costs a decode and a face-region render per frame, and its endpoint is reachable, if private)."""
        if key is None:
            return None, None
        session = request.session_hash if request else None
        if not self.strips_due.take(session, key):
            if self.strips_due.get(session) is not None:
                return gr.skip(), gr.skip()  # a newer photo came first: its own strip follows it
            raise ValueError("The strip is made once, after each upload.")
        strengths = self.editor.strip_strengths(self.editor.settings.default_strength)
        edits = self.editor.decode_strengths(self._session_photo(key), strengths, attribute)  # the face region only
        frames = [Image.fromarray(view) for view in edits.views(strengths)]
        address = owner(request)
        return self.results.image(strip_image(frames), "strip", address), self.results.gif(frames, "strip", address)

    @clear_error
    def render(self, key: str | None, strength: float, attribute: str, request: gr.Request = None):
        """This session's photo at one signed strength, whole and at full resolution (the download button)."""
        strength = self.editor.check_strength(strength, signed=True)
        (photo,) = self.editor.decode_strengths(self._session_photo(key), [strength], attribute).photos([strength])
        return self.results.image(photo, f"smile_{round(strength, 1) + 0.0:+.1f}", owner(request))  # never -0.0

    @clear_error
    def edit(
        self,
        image: FileData,
        strength: float,
        align: bool = True,
        attribute: str | None = None,
        request: gr.Request = None,
    ) -> tuple[FileData, FileData, FileData, FileData, FileData, FileData, dict]:
        """One call from a script: the whole photo with less and more smile, plus the model's reconstruction,
        its crop and the raw decoded faces (less, more), and an info dict."""
        strength = self.editor.check_strength(strength)
        attribute = self.editor.check_attribute(attribute)
        _, prepared, cached = self._upload(image, align, owner(request))
        result = self.editor.edit(prepared, strength, attribute)
        less, more, crop, recon, decoded_less, decoded_more = self._pictures(result, owner(request))
        files = [less, more, recon, crop, decoded_less, decoded_more]
        return (*[FileData(path=f) for f in files], {**result.info.to_dict(), "reused_encoding": cached})

    def example_files(self) -> list[str]:
        """Only shippable faces: the public-domain astronaut photo (NASA) and faces sampled from the model."""
        paths = [str(EXAMPLE_PHOTO)]
        for i, face in enumerate(self.editor.sample(2, seed=3)):
            paths.append(str(self.work_dir / f"prior_face_{i}.png"))
            face.resize((256, 256), Image.Resampling.BICUBIC).save(paths[-1])
        return paths


def live_view(label: str, elem_id: str) -> gr.HTML:
    """A view that follows the #strength slider in the page from frames sent once (web/ui/live.*)."""
    return gr.HTML(
        "",
        html_template=(UI / "live.html").read_text(),
        css_template=(UI / "live.css").read_text(),
        js_on_load=(UI / "live.js").read_text(),
        label=label,
        elem_id=elem_id,
    )


def create_app(editor: SmileEditor, work_dir: str | os.PathLike) -> gr.Blocks:
    """The page and its API over `editor`; `work_dir` holds this run's examples and results."""
    app = SmileApp(editor, work_dir)
    settings = editor.settings
    top, default = settings.max_strength, settings.default_strength
    with SmileBlocks(title="SMILE: slide the smile", delete_cache=(600, 1800), uploads=app.uploads) as demo:
        gr.Markdown(
            "# SMILE\nUpload a face photo and slide: your own photo smiles less or more. A variational autoencoder "
            "trained on CelebA finds the smile direction; only the change it makes is put on your photo (its own pixels moved, the rest added), so the "
            "person, the detail and everything outside the face stay yours."
        )
        state = gr.State(None)  # the photo's key into the server-wide cache: a short string per session
        with gr.Row():
            with gr.Column(scale=1):
                photo = gr.Image(
                    type="filepath",
                    image_mode=None,
                    label="Your photo",
                    sources=["upload", "webcam", "clipboard"],
                    elem_id="photo",
                )
                align = gr.Checkbox(value=True, label="Align face", info="Find the face and frame it like CelebA")
                attribute = gr.Dropdown(editor.attributes, value=settings.default_attribute, label="Attribute")
                gr.Examples(app.example_files(), inputs=photo, label="Examples (public domain / sampled from the model)")
            with gr.Column(scale=2):
                live = live_view("Live frames", "live")
                strength = gr.Slider(
                    -top,
                    top,
                    value=default,
                    step=LIVE_STEP,
                    label="Smile: less ← 0 → more",
                    info="Follows your thumb: every frame is already in the page",
                    elem_id="strength",
                )
                download = gr.DownloadButton("Download at this strength (full resolution)", elem_id="download")
                with gr.Row():
                    less = gr.Image(label=f"Less smile (−{default:g})", format="png", elem_id="less", buttons=["download"])
                    more = gr.Image(label=f"More smile (+{default:g})", format="png", elem_id="more", buttons=["download"])
                strip_view = gr.Image(label="From less to more", format="png", elem_id="strip", buttons=["download"])
                gif = gr.File(label="As an animated GIF", elem_id="gif")
                with gr.Accordion("Under the hood: what the VAE sees and draws", open=False):
                    gr.Markdown(
                        "The model works on a 128x128 aligned crop. Its own faces are blurry by design; the page "
                        "puts only their *change* on your photo: its own pixels moved where the face moves, the rest added, "
                        "and the inside of the lips drawn by a small renderer trained on real mouths."
                    )
                    with gr.Row():
                        crop = gr.Image(label="Model input (128x128)", format="png", elem_id="crop")
                        recon = gr.Image(label="Reconstruction", format="png", elem_id="recon")
                        raw_less = gr.Image(label="Decoded, less", format="png", elem_id="raw_less")
                        raw_more = gr.Image(label="Decoded, more", format="png", elem_id="raw_more")
                    raw_live = live_view("Decoded at the slider's strength", "raw_live")
        outputs = PageUpdate(
            key=state,
            live_frames=live,
            less=less,
            more=more,
            crop=crop,
            reconstruction=recon,
            decoded_less=raw_less,
            decoded_more=raw_more,
            decoded_frames=raw_live,
        )
        gr.on(
            [photo.change, align.change, attribute.change],
            app.prepare,
            [photo, align, attribute],
            list(outputs),
            preprocess=False,
            api_name="prepare",
            trigger_mode="always_last",
        ).then(app.strip, [state, attribute], [strip_view, gif], api_visibility="private")
        # preprocess=False: the strength reaches check_strength as sent, so "2", null or 1e400 get its message
        download.click(app.render, [state, strength, attribute], download, api_name="render", preprocess=False)
        gr.api(app.edit, api_name="edit")
        demo.http_routes += mirror_routes(mirror_view(editor))  # the webcam, smiling live (web/mirror.py)
        gr.Markdown(
            "Model card, API and training: see the project README and docs/. Code MIT; weights for non-commercial research "
            "only (CelebA's terms)."
        )
    demo.queue(default_concurrency_limit=2, max_size=64, api_open=False)  # /run/ would skip the queue and its shares
    return demo
