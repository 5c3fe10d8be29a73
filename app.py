"""SMILE web app: upload a face, slide the smile. `python app.py`, then open http://127.0.0.1:7860.

UI wiring only; the work happens in `vae.editor.SmileEditor`. Model: `assets/` by default, or the
local folder / Hub repo id in SMILE_MODEL. Named API endpoints (see README): /edit, /prepare, /render.
"""
from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

import gradio as gr
from PIL import Image

from vae.editor import ModelLoadError, Prepared, SmileEditor
from vae.export import save_gif
from vae.preprocess import ImageError

ROOT = Path(__file__).resolve().parent
WORK_DIR = Path(tempfile.mkdtemp(prefix="smile-"))  # examples and strip GIFs of this run
atexit.register(shutil.rmtree, WORK_DIR, ignore_errors=True)


def upload_path(payload: dict | str | None) -> str | None:
    """The server-side path of an uploaded image.

    Our events run with `preprocess=False`, so gr.Image does not decode the upload itself: our own
    loader does, and a bad file reaches the person as our message instead of a generic error.
    """
    if isinstance(payload, dict):
        return payload.get("path")
    return payload


def load_editor() -> SmileEditor:
    source = os.environ.get("SMILE_MODEL") or str(ROOT / "assets")
    try:
        return SmileEditor.from_pretrained(source)
    except ModelLoadError as err:
        sys.exit(f"SMILE cannot start: {err}\nSet SMILE_MODEL to a model folder or Hub repo id (see README).")


EDITOR = load_editor()
SETTINGS = EDITOR.settings


class PreparedCache:
    """Recently encoded photos keyed by content, so /edit with a new strength only decodes."""

    def __init__(self, size: int = 32) -> None:
        self.size, self.items, self.lock = size, OrderedDict(), threading.Lock()

    def get(self, path: str, align: bool) -> Prepared:
        key = (hashlib.sha256(Path(path).read_bytes()).hexdigest(), align)
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        prepared = EDITOR.prepare(path, align=align)
        with self.lock:
            self.items[key] = prepared
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return prepared


CACHE = PreparedCache()


def prepare_or_error(payload: dict | str | None, align: bool) -> Prepared:
    path = upload_path(payload)
    if not path:
        raise gr.Error("Upload a photo of a face first.")
    try:
        prepared = CACHE.get(path, align)
    except ImageError as err:
        raise gr.Error(str(err)) from err
    for note in prepared.notes:
        gr.Warning(note)
    return prepared


def render(prepared: Prepared | None, strength: float, attribute: str):
    """Slider moves and attribute changes: decode two latents (less, more) and paste into the photo."""
    if prepared is None:
        return None, None, None
    result = EDITOR.render(prepared, strength, attribute, strip=False)
    return result.less, result.more, result.in_photo


def render_strip(prepared: Prepared | None, strength: float, attribute: str):
    """The 7-step strip and its GIF, chained after the fast outputs so the slider feels instant."""
    if prepared is None:
        return None, None
    result = EDITOR.render(prepared, strength, attribute, in_photo=False)
    gif = save_gif(result.strip, WORK_DIR / f"strip-{id(prepared):x}.gif")  # one file per photo, rewritten per move
    return [(img, f"{s:+.1f}") for img, s in zip(result.strip, result.strengths)], str(gif)


def prepare(payload: dict | None, align: bool, strength: float, attribute: str):
    """New photo or align toggle: detect, align and encode once, then render."""
    if not upload_path(payload):
        return None, None, None, None, None, None
    prepared = prepare_or_error(payload, align)
    return prepared, prepared.crop, prepared.recon, *render(prepared, strength, attribute)


def edit_api(image: dict, strength: float, align: bool = True, attribute: str = SETTINGS["default_attribute"]):
    """One call from a script: less and more smile, reconstruction, model input, pasted photo, info."""
    prepared = prepare_or_error(image, align)
    if attribute not in EDITOR.attributes:
        raise gr.Error(f"Unknown attribute {attribute!r}.")
    result = EDITOR.render(prepared, strength, attribute, strip=False)
    info = {"faces_found": prepared.aligned.faces_found, "notes": prepared.notes, "strength": strength,
            "attribute": attribute, "photos_encoded": EDITOR.prepare_count}
    return result.less, result.more, result.recon, prepared.crop, result.in_photo, info


def example_files() -> list[str]:
    """Only shippable faces: the public-domain astronaut from scikit-image and faces from the prior."""
    from skimage.data import astronaut

    paths = [WORK_DIR / "astronaut.png"]
    Image.fromarray(astronaut()).save(paths[0])
    for i, face in enumerate(EDITOR.sample(2, seed=3)):
        paths.append(WORK_DIR / f"prior_face_{i}.png")
        face.resize((256, 256), Image.Resampling.BICUBIC).save(paths[-1])
    return [str(p) for p in paths]


def build_demo() -> gr.Blocks:
    names = EDITOR.attributes
    with gr.Blocks(title="SMILE: slide the smile", delete_cache=(3600, 3600)) as demo:
        gr.Markdown(
            "# SMILE\nUpload a face, then move the slider: a variational autoencoder trained on CelebA moves the "
            "face along its learned *smile direction*. Strength is in standard deviations of the test faces "
            "along that direction; the photo is encoded once, the slider only decodes."
        )
        state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                photo = gr.Image(type="filepath", image_mode=None, label="Face photo", sources=["upload", "webcam", "clipboard"], elem_id="photo")
                align = gr.Checkbox(value=True, label="Align face", info="Detect the face and frame it like CelebA")
                strength = gr.Slider(0, SETTINGS["max_strength"], value=SETTINGS["default_strength"], step=0.1,
                                     label="Strength", elem_id="strength")
                attribute = gr.Dropdown(names, value=SETTINGS["default_attribute"], label="Attribute")
                gr.Examples(example_files(), inputs=photo, label="Examples (public domain / sampled from the model)")
            with gr.Column(scale=2):
                with gr.Row():
                    crop = gr.Image(label="Model input (128x128)", format="png", elem_id="crop", buttons=["download"])
                    recon = gr.Image(label="Reconstruction", format="png", elem_id="recon")
                with gr.Row():
                    less = gr.Image(label="Less", format="png", elem_id="less", buttons=["download"])
                    more = gr.Image(label="More", format="png", elem_id="more", buttons=["download"])
                in_photo = gr.Image(label="In the photo (more)", format="jpeg", elem_id="in_photo", buttons=["download"])
                strip = gr.Gallery(label="From less to more", columns=7, height=190, format="png", elem_id="strip")
                gif = gr.File(label="Strip as animated GIF", elem_id="gif")
        edited, strip_outputs = [less, more, in_photo], [strip, gif]
        controls = [state, strength, attribute]
        photo.change(prepare, [photo, align, strength, attribute], [state, crop, recon, *edited], api_name="prepare",
                     preprocess=False).then(render_strip, controls, strip_outputs, api_visibility="private")
        align.change(prepare, [photo, align, strength, attribute], [state, crop, recon, *edited], api_visibility="private",
                     preprocess=False).then(render_strip, controls, strip_outputs, api_visibility="private")
        strength.release(render, controls, edited, api_name="render", trigger_mode="always_last").then(
            render_strip, controls, strip_outputs, api_visibility="private")
        attribute.change(render, controls, edited, api_visibility="private", trigger_mode="always_last").then(
            render_strip, controls, strip_outputs, api_visibility="private")
        with gr.Column(visible=False):  # outputs of the scripting endpoint /edit; the page does not show them
            api_outputs = [gr.Image(format="png", label=n) for n in ("less", "more", "recon", "crop")]
            api_outputs.append(gr.Image(format="jpeg", label="in_photo"))
            api_outputs.append(gr.JSON(label="info"))
            api_trigger = gr.Button()
        api_trigger.click(edit_api, [photo, strength, align, attribute], api_outputs, api_name="edit", preprocess=False)
        gr.Markdown("Model card, API and training: see the project README. Faces are 128x128 and blurry by design.")
    return demo


demo = build_demo()
demo.queue(default_concurrency_limit=2, max_size=64)

if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a stopped server (Spaces, tests) still cleans WORK_DIR
    demo.launch(allowed_paths=[str(WORK_DIR)])
