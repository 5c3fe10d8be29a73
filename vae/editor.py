"""The editing pipeline: photo -> aligned 128x128 crop -> posterior mean -> z +- alpha * step -> faces.

`prepare` does the expensive part once per photo (detection, alignment, encoding); `render` only
decodes, so a slider can call it on every move. Used by the Gradio app and by `python -m vae edit`.
"""
from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .align import AlignedFace, FaceAligner, paste_back
from .model import SmileVAE
from .preprocess import ImageInput, crop_and_resize, load_image, to_image, to_tensor
from .vectors import AttributeVectors, VECTORS_FILE, edit

SETTINGS_FILE = "editor.json"
DEFAULT_SETTINGS = {"default_attribute": "Smiling", "default_strength": 2.0, "max_strength": 4.0, "strip_steps": 7}
PHOTO_MAX_SIDE = 1024  # the in-photo result is shown at most this large; keeps pasting fast
DECODED_FACES_KEPT = 256  # ~12 MB of 128x128 faces: a slider move's ends are reused by the strip after it


class ModelLoadError(RuntimeError):
    """The model folder or Hub repo is missing, incomplete or unreadable."""


@dataclass
class Prepared:
    """One uploaded photo, encoded once: everything a slider move needs."""

    photo: Image.Image
    aligned: AlignedFace
    crop: Image.Image
    latent: torch.Tensor  # (1, latent_dim) posterior mean
    recon: Image.Image  # decode(latent): the alpha = 0 face, decoded once
    notes: list[str] = field(default_factory=list)  # messages for the person (no face, several faces)


@dataclass
class EditResult:
    less: Image.Image
    recon: Image.Image
    more: Image.Image
    strengths: list[float]
    strip: list[Image.Image]
    in_photo: Image.Image | None


def resolve_model_source(source: str | os.PathLike) -> Path:
    """A local folder as is; otherwise a Hub repo id, fetched (or read from cache) with snapshot_download."""
    path = Path(source)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(source)))
    except Exception as err:  # offline, unknown repo, no network: all mean "no model"
        raise ModelLoadError(f"Could not load model {source!r}: not a local folder, and the Hub said: {err}") from err


class SmileEditor:
    """A trained SmileVAE, its attribute vectors and a face aligner."""

    def __init__(self, model: SmileVAE, vectors: AttributeVectors, settings: dict | None = None,
                 aligner: FaceAligner | None = None) -> None:
        self.model = model.eval().to(memory_format=torch.channels_last)
        self.vectors = vectors
        self.settings = {**DEFAULT_SETTINGS, **(settings or {})}
        self.aligner = aligner or FaceAligner()
        self.prepare_count = 0  # how many photos were aligned + encoded (the app shows that sliders don't re-encode)
        self._faces: OrderedDict[tuple, Image.Image] = OrderedDict()  # (latent, attribute, alpha) -> decoded face
        self._faces_lock = threading.Lock()

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
        settings_path = folder / SETTINGS_FILE
        settings = json.loads(settings_path.read_text()) if settings_path.exists() else {}
        return cls(model, vectors, settings)

    @property
    def attributes(self) -> list[str]:
        return list(self.vectors.names)

    def prepare(self, image: ImageInput, align: bool = True) -> Prepared:
        """Load, align (largest face) and encode a photo. Raises vae.ImageError for unusable input."""
        photo = load_image(image)
        if max(photo.size) > PHOTO_MAX_SIDE:
            scale = PHOTO_MAX_SIDE / max(photo.size)
            photo = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.Resampling.LANCZOS)
        notes: list[str] = []
        if align:
            aligned = self.aligner.align(photo)
            if not aligned.found:
                notes.append("No face found: using the plain centre crop, so the edit may look odd.")
            elif aligned.faces_found > 1:
                notes.append(f"{aligned.faces_found} faces found: editing the largest one.")
        else:
            aligned = AlignedFace(photo, np.eye(3), faces_found=0)
        pixels = crop_and_resize(aligned.frame)
        with torch.inference_mode():
            x = to_tensor(pixels)[None].contiguous(memory_format=torch.channels_last)
            latent = self.model.encode(x)[0]
        self.prepare_count += 1
        return Prepared(photo, aligned, Image.fromarray(pixels), latent, self.decode(latent)[0], notes)

    def decode(self, latents: torch.Tensor) -> list[Image.Image]:
        with torch.inference_mode():
            return [to_image(img) for img in self.model.decode(latents)]

    def render(self, prepared: Prepared, strength: float, attribute: str | None = None, strip: bool = True,
               in_photo: bool = True) -> EditResult:
        """Less (z - a*step), recon (z) and more (z + a*step); optionally the strip and the pasted photo.

        Only the non-zero strengths are decoded (2 latents without the strip): the reconstruction
        was decoded once in `prepare`.
        """
        if strip:
            strengths = np.linspace(-strength, strength, self.settings["strip_steps"]).tolist()  # ends are exactly +-strength
        else:
            strengths = [-strength, 0.0, strength]
        faces = self.edited_faces(prepared, attribute or self.settings["default_attribute"], strengths)
        pasted = None
        if in_photo and prepared.aligned.found:
            pasted = paste_back(prepared.photo, faces[-1], prepared.aligned)
        return EditResult(faces[0], prepared.recon, faces[-1], strengths, faces if strip else [], pasted)

    def edited_faces(self, prepared: Prepared, attribute: str, strengths: list[float]) -> list[Image.Image]:
        """decode(z + a * step) for each strength, decoding only faces not decoded recently.

        A slider release decodes less and more; the strip that follows needs the same two ends, so
        they are kept (with a bound) instead of being decoded twice.
        """
        photo_key = (prepared.latent.numpy().tobytes(), attribute)
        with self._faces_lock:
            faces = {a: self._faces.get((photo_key, a)) for a in strengths if a != 0}
        missing = sorted(a for a, face in faces.items() if face is None)
        if missing:
            step = self.vectors.step(attribute)
            faces.update(zip(missing, self.decode(edit(prepared.latent, step, torch.tensor(missing)[:, None]))))
            with self._faces_lock:
                self._faces.update(((photo_key, a), faces[a]) for a in missing)
                while len(self._faces) > DECODED_FACES_KEPT:
                    self._faces.popitem(last=False)
        return [prepared.recon if a == 0 else faces[a] for a in strengths]

    def sample(self, count: int, seed: int = 0) -> list[Image.Image]:
        """Faces decoded from the prior N(0, I): shippable examples that are no one's photo."""
        z = torch.randn(count, self.model.latent_dim, generator=torch.Generator().manual_seed(seed))
        return self.decode(z)
