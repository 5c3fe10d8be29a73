"""SMILE web app: upload a face, slide the smile. `python app.py`, then open http://127.0.0.1:7860.

UI wiring only: the editing is `vae.editor.SmileEditor`, the live slider is `ui/live.html|css|js`, and
what a public server must check is `vae.serving`. Model: `assets/` by default, or the local folder /
Hub repo id in SMILE_MODEL. Named API endpoints (see README): /edit, /prepare, /render.
"""
from __future__ import annotations

import atexit
import base64
import functools
import io
import json
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import gradio as gr
from gradio.data_classes import FileData
from gradio.utils import get_upload_folder
from PIL import Image

from vae.editor import ModelLoadError, Prepared, SmileEditor
from vae.export import strip_image
from vae.serving import MAX_UPLOAD_BYTES, PreparedCache, ResultFiles, read_upload

ROOT = Path(__file__).resolve().parent
LIVE = ROOT / "ui"
WORK_DIR = Path(tempfile.mkdtemp(prefix="smile-"))  # examples and results of this run
atexit.register(shutil.rmtree, WORK_DIR, ignore_errors=True)


def load_editor() -> SmileEditor:
    source = os.environ.get("SMILE_MODEL") or str(ROOT / "assets")
    try:
        editor = SmileEditor.from_pretrained(source)
    except ModelLoadError as err:
        sys.exit(f"SMILE cannot start: {err}\nSet SMILE_MODEL to a model folder or Hub repo id (see README).")
    editor.aligner.warm_up()
    return editor


EDITOR = load_editor()
SETTINGS = EDITOR.settings
RESULTS = ResultFiles(WORK_DIR / "results", keep=64)  # Gradio copies each result into its cache at once
CACHE = PreparedCache(lambda data, align: EDITOR.prepare(data, align=align))


def clear_error(fn):
    """Turn the editor's ValueErrors (bad image, strength, attribute) into the message the person sees."""
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ValueError as err:  # ImageError is a ValueError
            raise gr.Error(str(err)) from err
    return wrapped


def checked_align(align: object) -> bool:
    if not isinstance(align, bool):
        raise ValueError(f"align must be true or false, not {align!r}.")
    return align


def prepared_upload(payload: object, align: object) -> tuple[str, Prepared, bool]:
    """(key, prepared, cached) for the uploaded file: only Gradio's upload folder is read; aligned and encoded once per content."""
    path = payload.get("path") if isinstance(payload, dict) else getattr(payload, "path", None)
    key, prepared, cached = CACHE.get(read_upload(path, get_upload_folder()), checked_align(align))
    for note in prepared.notes:
        gr.Warning(note)
    return key, prepared, cached


def session_photo(key: str | None) -> Prepared:
    """This session's photo: its state holds only a key into the server-wide, bounded cache."""
    prepared = CACHE.find(key)
    if prepared is None:
        raise ValueError("Upload a photo of a face first." if key is None else
                         "This photo is no longer in the server's memory: upload it again.")
    return prepared


def live_value(edits) -> str:
    """The live slider's frames as JSON: strengths and JPEG data URIs, all decoded in one batch."""
    frames = []
    for view in edits.views():
        buffer = io.BytesIO()
        Image.fromarray(view).save(buffer, "JPEG", quality=90)
        frames.append("data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"))
    return json.dumps({"strengths": edits.strengths, "frames": frames})


@clear_error
def prepare(payload: dict | None, align: bool, attribute: str):
    """Upload, align toggle or attribute change (one event, so a session's requests never overtake each
    other): align and encode once per photo, then decode every frame and the less / more photos."""
    if not payload:
        return None, "", None, None, None, None, None, None
    attribute = EDITOR.check_attribute(attribute)
    key, prepared, _ = prepared_upload(payload, align)
    strength = SETTINGS["default_strength"]
    edits = EDITOR.live(prepared, attribute, strength)
    less, more = edits.photos([-strength, strength])
    return (key, live_value(edits), RESULTS.image(less, "less"), RESULTS.image(more, "more"), RESULTS.image(prepared.crop, "crop"),
            RESULTS.image(edits.raw(0.0), "reconstruction"), RESULTS.image(edits.raw(-strength), "decoded_less"),
            RESULTS.image(edits.raw(strength), "decoded_more"))


@clear_error
def strip(key: str | None, attribute: str):
    """The strip and its GIF from whole-photo frames, chained after the page's first outputs."""
    if key is None:
        return None, None
    strengths = EDITOR.strip_strengths(SETTINGS["default_strength"])
    frames = [Image.fromarray(v) for v in EDITOR.edits(session_photo(key), strengths, attribute).views()]
    return RESULTS.image(strip_image(frames), "strip"), RESULTS.gif(frames, "strip")


@clear_error
def render(key: str | None, strength: float, attribute: str):
    """This session's photo at one signed strength, whole and at full resolution (the download button)."""
    strength = EDITOR.check_strength(strength, signed=True)
    photo = EDITOR.edits(session_photo(key), [strength], attribute).photos([strength])[0]
    return RESULTS.image(photo, f"smile_{strength:+.1f}")


@clear_error
def edit(image: FileData, strength: float, align: bool = True, attribute: str = SETTINGS["default_attribute"]) -> tuple[
        FileData, FileData, FileData, FileData, FileData, FileData, dict]:
    """One call from a script: the whole photo with less and more smile, plus the model's crop, its
    reconstruction and the raw decoded faces (less, more), and an info dict."""
    strength = EDITOR.check_strength(strength)
    attribute = EDITOR.check_attribute(attribute)
    _, prepared, cached = prepared_upload(image, align)
    edits = EDITOR.edits(prepared, [-strength, strength], attribute)
    less, more = edits.photos([-strength, strength])
    files = [RESULTS.image(less, "less"), RESULTS.image(more, "more"), RESULTS.image(edits.raw(0.0), "reconstruction"),
             RESULTS.image(prepared.crop, "crop"), RESULTS.image(edits.raw(-strength), "decoded_less"),
             RESULTS.image(edits.raw(strength), "decoded_more")]
    info = {"faces_found": prepared.aligned.faces_found, "notes": prepared.notes, "strength": strength,
            "attribute": attribute, "reused_encoding": cached, "size": list(prepared.photo.shape[1::-1])}
    return (*[FileData(path=f) for f in files], info)


def example_files() -> list[str]:
    """Only shippable faces: the public-domain astronaut photo (NASA) and faces sampled from the model."""
    paths = [str(ROOT / "assets" / "examples" / "astronaut.jpg")]
    for i, face in enumerate(EDITOR.sample(2, seed=3)):
        paths.append(str(WORK_DIR / f"prior_face_{i}.png"))
        face.resize((256, 256), Image.Resampling.BICUBIC).save(paths[-1])
    return paths


def build_demo() -> gr.Blocks:
    top, default = SETTINGS["max_strength"], SETTINGS["default_strength"]
    with gr.Blocks(title="SMILE: slide the smile", delete_cache=(600, 1800)) as demo:  # results live 30 min
        gr.Markdown(
            "# SMILE\nUpload a face photo and slide: your own photo smiles less or more. A variational autoencoder "
            "trained on CelebA finds the smile direction; only the change it makes is added to your photo, so the "
            "person, the detail and everything outside the face stay yours."
        )
        state = gr.State(None)  # the photo's key into CACHE: a short string per session
        with gr.Row():
            with gr.Column(scale=1):
                photo = gr.Image(type="filepath", image_mode=None, label="Your photo", sources=["upload", "webcam", "clipboard"],
                                 elem_id="photo")
                align = gr.Checkbox(value=True, label="Align face", info="Find the face and frame it like CelebA")
                attribute = gr.Dropdown(EDITOR.attributes, value=SETTINGS["default_attribute"], label="Attribute")
                gr.Examples(example_files(), inputs=photo, label="Examples (public domain / sampled from the model)")
            with gr.Column(scale=2):
                live = gr.HTML("", html_template=(LIVE / "live.html").read_text(), css_template=(LIVE / "live.css").read_text(),
                               js_on_load=(LIVE / "live.js").read_text(), label="Live frames", elem_id="live")
                strength = gr.Slider(-top, top, value=default, step=EDITOR.live_strengths[1] - EDITOR.live_strengths[0],
                                     label="Smile: less ← 0 → more", info="Follows your thumb: every frame is already in the page",
                                     elem_id="strength")
                download = gr.DownloadButton("Download at this strength (full resolution)", elem_id="download")
                with gr.Row():
                    less = gr.Image(label=f"Less smile (−{default:g})", format="png", elem_id="less", buttons=["download"])
                    more = gr.Image(label=f"More smile (+{default:g})", format="png", elem_id="more", buttons=["download"])
                strip_view = gr.Image(label="From less to more", format="png", elem_id="strip", buttons=["download"])
                gif = gr.File(label="As an animated GIF", elem_id="gif")
                with gr.Accordion("Under the hood: what the VAE sees and draws", open=False):
                    gr.Markdown("The model works on a 128x128 aligned crop. Its own faces are blurry by design; the page "
                                "adds only their *difference* to your photo.")
                    with gr.Row():
                        crop = gr.Image(label="Model input (128x128)", format="png", elem_id="crop")
                        recon = gr.Image(label="Reconstruction", format="png", elem_id="recon")
                        raw_less = gr.Image(label="Decoded, less", format="png", elem_id="raw_less")
                        raw_more = gr.Image(label="Decoded, more", format="png", elem_id="raw_more")
        shown = [live, less, more, crop, recon, raw_less, raw_more]
        gr.on([photo.change, align.change, attribute.change], prepare, [photo, align, attribute], [state, *shown],
              preprocess=False, api_name="prepare", trigger_mode="always_last").then(
            strip, [state, attribute], [strip_view, gif], api_visibility="private")
        download.click(render, [state, strength, attribute], download, api_name="render")
        gr.api(edit, api_name="edit")
        gr.Markdown("Model card, API and training: see the project README. Code MIT; weights for non-commercial research "
                    "only (CelebA's terms).")
    return demo


demo = build_demo()
demo.queue(default_concurrency_limit=2, max_size=64)

if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a stopped server (Spaces, tests) still cleans WORK_DIR
    demo.launch(allowed_paths=[str(WORK_DIR)], max_file_size=MAX_UPLOAD_BYTES)
