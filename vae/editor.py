"""The editing pipeline: a photo in, the same photo out with the face smiling less or more.

photo -> aligned 128x128 crop -> posterior mean z -> decode(z + a * step) - decode(z) -> added to the
photo (see `vae.transfer`). `prepare` does the expensive part once per photo (detection, alignment,
encoding); everything after it only decodes, in one batch for any number of strengths. Used by the
Gradio app, by `python -m vae edit` and by the whole-photo evaluation.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .align import AlignedFace, FaceAligner, crop_to_frame
from .model import SmileVAE
from .preprocess import ImageInput, ImageError, crop_and_resize, load_image, to_image, to_pixels, to_tensor
from .transfer import apply_residuals, edit_residuals, face_box
from .vectors import VECTORS_FILE, AttributeVectors, edit

SETTINGS_FILE = "editor.json"
DEFAULT_SETTINGS = {"default_attribute": "Smiling", "default_strength": 2.0, "max_strength": 4.0, "strip_steps": 7}
PHOTO_MAX_SIDE = 2048  # photos are kept (and edited, and downloadable) up to this side; larger ones are scaled down
MIN_PHOTO_SIDE = 32  # below this there is no face to find or edit
VIEW_MAX_SIDE = 512  # the live view: the face region of the photo at its own resolution, up to this side
VIEW_MARGIN = 1.6  # the live view shows this many times the model's crop around the face
LIVE_STEP = 0.5  # the live slider's frames are this far apart in strength


class ModelLoadError(RuntimeError):
    """The model folder or Hub repo is missing, incomplete or unreadable."""


@dataclass
class Prepared:
    """One uploaded photo, encoded once: everything a strength change needs."""

    photo: np.ndarray  # (H, W, 3) uint8, upright RGB, at most PHOTO_MAX_SIDE
    aligned: AlignedFace
    crop: Image.Image  # the model's 128x128 input
    latent: torch.Tensor  # (1, latent_dim) posterior mean
    recon: torch.Tensor  # (3, 128, 128) decode(latent), the alpha = 0 face
    notes: list[str] = field(default_factory=list)  # messages for the person (no face, several faces)

    @property
    def crop_to_photo(self) -> np.ndarray:
        """3x3 from the model's crop pixels to photo pixels."""
        return self.aligned.frame_to_photo @ crop_to_frame(self.aligned.frame.size)

    @property
    def view_box(self) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of the photo that the live view shows: the face and some margin."""
        height, width = self.photo.shape[:2]
        x0, y0, x1, y1 = face_box(self.crop_to_photo, (10**9, 10**9))
        cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, VIEW_MARGIN * max(x1 - x0, y1 - y0) / 2
        return max(0, round(cx - half)), max(0, round(cy - half)), min(width, round(cx + half)), min(height, round(cy + half))

    @property
    def view_size(self) -> tuple[int, int]:
        """(width, height) of the live view: the view box, scaled down to at most VIEW_MAX_SIDE."""
        left, top, right, bottom = self.view_box
        scale = max(1.0, max(right - left, bottom - top) / VIEW_MAX_SIDE)
        return max(1, round((right - left) / scale)), max(1, round((bottom - top) / scale))

    @property
    def view_to_photo(self) -> np.ndarray:
        """3x3 from live-view pixels to photo pixels, pixel centres matched as the resize maps them."""
        left, top, right, bottom = self.view_box
        width, height = self.view_size
        sx, sy = (right - left) / width, (bottom - top) / height
        return np.array([[sx, 0, left + 0.5 * sx - 0.5], [0, sy, top + 0.5 * sy - 0.5], [0, 0, 1.0]])

    def view(self) -> np.ndarray:
        """The live view of the unedited photo, (h, w, 3) uint8."""
        left, top, right, bottom = self.view_box
        region = Image.fromarray(self.photo[top:bottom, left:right])
        size = self.view_size
        return np.asarray(region if size == region.size else region.resize(size, Image.Resampling.LANCZOS))


@dataclass
class Edits:
    """A photo edited at several strengths: the residuals in crop space, turned into pictures on demand."""

    prepared: Prepared
    strengths: list[float]
    residuals: torch.Tensor  # (K, 3, 128, 128)
    decoded: torch.Tensor  # (K, 3, 128, 128) the raw decodes, for "under the hood"

    def index(self, strength: float) -> int:
        distance = np.abs(np.array(self.strengths) - strength)
        if distance.min() > 1e-6:
            raise KeyError(f"strength {strength} was not decoded; have {self.strengths}")
        return int(distance.argmin())

    def photos(self, strengths: list[float]) -> np.ndarray:
        """Whole photos at full resolution, (len(strengths), H, W, 3) uint8."""
        picked = self.residuals[[self.index(s) for s in strengths]]
        return apply_residuals(self.prepared.photo, self.prepared.crop_to_photo, picked)

    def views(self, strengths: list[float] | None = None) -> np.ndarray:
        """Live views (face region of the edited photo, at most VIEW_MAX_SIDE), (K, h, w, 3) uint8."""
        rows = range(len(self.strengths)) if strengths is None else [self.index(s) for s in strengths]
        base = self.prepared.view()
        crop_to_view = np.linalg.inv(self.prepared.view_to_photo) @ self.prepared.crop_to_photo
        return apply_residuals(base, crop_to_view, self.residuals[list(rows)])

    def raw(self, strength: float) -> Image.Image:
        """The decoded 128x128 face itself (what the VAE draws), not the photo; 0 is the reconstruction."""
        return to_image(self.prepared.recon if strength == 0 else self.decoded[self.index(strength)])


def resolve_model_source(source: str | os.PathLike) -> Path:
    """A local folder as is; otherwise a Hub repo id, fetched (or read from cache) with snapshot_download."""
    path = Path(source)
    if path.is_dir():
        return path
    text = str(source)  # a Hub id is "name" or "namespace/name": anything else that looks like a path is a local one
    if text.startswith((".", "~")) or path.is_absolute() or text.count("/") > 1 or os.sep in text.replace("/", ""):
        raise ModelLoadError(f"Could not load model {text!r}: no such folder.")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(source)))
    except Exception as err:  # offline, unknown repo, no network: all mean "no model"
        raise ModelLoadError(f"Could not load model {source!r}: not a local folder, and the Hub said: {err}") from err


def read_settings(path: Path, attributes: list[str]) -> dict:
    """editor.json merged over the defaults, checked: a bad file stops loading with a message naming it."""
    if not path.exists():
        settings = dict(DEFAULT_SETTINGS)
    else:
        try:
            settings = {**DEFAULT_SETTINGS, **json.loads(path.read_text())}
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as err:
            raise ModelLoadError(f"{path} is not a valid JSON object: {err}") from err
    if settings["default_attribute"] not in attributes:
        raise ModelLoadError(f"{path}: default_attribute {settings['default_attribute']!r} is not one of the model's vectors.")
    numbers = [settings[k] for k in ("default_strength", "max_strength", "strip_steps")]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in numbers):
        raise ModelLoadError(f"{path}: default_strength, max_strength and strip_steps must be finite numbers.")
    if not (0 <= settings["default_strength"] <= settings["max_strength"] and 2 <= settings["strip_steps"] <= 33):
        raise ModelLoadError(f"{path}: need 0 <= default_strength <= max_strength and 2 <= strip_steps <= 33.")
    return settings


class SmileEditor:
    """A trained SmileVAE, its attribute vectors and a face aligner."""

    def __init__(self, model: SmileVAE, vectors: AttributeVectors, settings: dict | None = None,
                 aligner: FaceAligner | None = None) -> None:
        self.model = model.eval().to(memory_format=torch.channels_last)
        self.vectors = vectors
        self.settings = {**DEFAULT_SETTINGS, **(settings or {})}
        self.aligner = aligner or FaceAligner()

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike) -> "SmileEditor":
        folder = resolve_model_source(source)
        missing = [n for n in ("config.json", "model.safetensors", VECTORS_FILE) if not (folder / n).exists()]
        if missing:
            raise ModelLoadError(f"Model folder {folder} is incomplete: missing {', '.join(missing)}.")
        try:
            model = SmileVAE.load(folder)
            vectors = AttributeVectors.load(folder)
        except Exception as err:
            raise ModelLoadError(f"Model folder {folder} could not be read: {err}") from err
        return cls(model, vectors, read_settings(folder / SETTINGS_FILE, vectors.names))

    @property
    def attributes(self) -> list[str]:
        return list(self.vectors.names)

    @property
    def live_strengths(self) -> list[float]:
        """The live slider's frames: -max ... +max in LIVE_STEP steps (0 is the photo itself)."""
        steps = round(self.settings["max_strength"] / LIVE_STEP)
        return [round(i * LIVE_STEP, 6) for i in range(-steps, steps + 1)]

    def strip_strengths(self, strength: float) -> list[float]:
        return np.linspace(-strength, strength, self.settings["strip_steps"]).tolist()  # ends exactly +-strength

    def check_attribute(self, attribute: str | None) -> str:
        attribute = self.settings["default_attribute"] if attribute is None else attribute
        if attribute not in self.vectors.names:
            raise ValueError(f"Unknown attribute {attribute!r}; choose one of: {', '.join(self.vectors.names)}.")
        return attribute

    def check_strength(self, strength: float, signed: bool = False) -> float:
        """A finite number within the slider's range, else ValueError with the range in the message."""
        top = float(self.settings["max_strength"])
        low = -top if signed else 0.0
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not np.isfinite(strength):
            raise ValueError(f"Strength must be a finite number between {low:g} and {top:g}, not {strength!r}.")
        if not low <= strength <= top:
            raise ValueError(f"Strength {strength:g} is out of range: use {low:g} to {top:g}.")
        return float(strength)

    def prepare(self, image: ImageInput, align: bool = True) -> Prepared:
        """Load, align (largest face) and encode a photo. Raises vae.ImageError for unusable input."""
        photo = load_image(image)
        if min(photo.size) < MIN_PHOTO_SIDE:
            raise ImageError(f"The image is too small ({photo.width}x{photo.height}): at least {MIN_PHOTO_SIDE} px on each side.")
        if max(photo.size) > PHOTO_MAX_SIDE:
            scale = PHOTO_MAX_SIDE / max(photo.size)
            photo = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.Resampling.LANCZOS)
        pixels = np.asarray(photo, dtype=np.uint8)
        notes: list[str] = []
        if align:
            aligned = self.aligner.align(photo)
            if not aligned.found:
                notes.append("No face found: using the plain centre crop, so the edit may look odd.")
            elif aligned.faces_found > 1:
                notes.append(f"{aligned.faces_found} faces found: editing the largest one.")
        else:
            aligned = AlignedFace(photo, np.eye(3), faces_found=0)
        crop = crop_and_resize(aligned.frame)
        with torch.inference_mode():
            x = to_tensor(crop)[None].contiguous(memory_format=torch.channels_last)
            latent = self.model.encode(x)[0]
            recon = self.model.decode(latent)[0]
        return Prepared(pixels, aligned, Image.fromarray(crop), latent, recon, notes)

    def edits(self, prepared: Prepared, strengths: list[float], attribute: str | None = None) -> Edits:
        """decode(z + a * step) for every strength in one batch, and what each adds to the photo."""
        attribute = self.check_attribute(attribute)
        step = self.vectors.step(attribute)
        alphas = torch.tensor(strengths, dtype=torch.float32)[:, None]
        with torch.inference_mode():
            decoded = self.model.decode(edit(prepared.latent, step, alphas))
            decoded[alphas[:, 0] == 0] = prepared.recon  # alpha = 0 gives the photo itself: no residual at all
            return Edits(prepared, list(strengths), edit_residuals(decoded, prepared.recon), decoded)

    def live(self, prepared: Prepared, attribute: str | None = None, strength: float | None = None) -> Edits:
        """The live slider's frames, plus +-strength for the less / more photos, decoded in one batch."""
        strength = self.settings["default_strength"] if strength is None else strength
        return self.edits(prepared, sorted(set(self.live_strengths) | {-strength, strength}), attribute)

    def sample(self, count: int, seed: int = 0) -> list[Image.Image]:
        """Faces decoded from the prior N(0, I): shippable examples that are no one's photo."""
        z = torch.randn(count, self.model.latent_dim, generator=torch.Generator().manual_seed(seed))
        with torch.inference_mode():
            return [Image.fromarray(p) for p in to_pixels(self.model.decode(z))]
