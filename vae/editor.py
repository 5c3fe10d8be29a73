"""The editing pipeline: a photo in, the same photo out with the face smiling less or more.

photo -> aligned 128x128 crop -> posterior mean z -> decode(z + a * step) - decode(z) -> added to the
photo (see `vae.transfer`). `prepare` does the expensive part once per photo (detection, alignment,
encoding); `edit` then only decodes, in one batch for any number of strengths, and returns an
`EditResult`. The Gradio app (`web`), `python -m vae edit` and the whole-photo evaluation all call it.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from .align import AlignedFace, FaceAligner, crop_to_frame, map_points
from .hub import ModelLoadError, resolve_model_source
from .image_file import ImageInput, load_image
from .model import SmileVAE
from .preprocess import crop_and_resize, to_image, to_pixels, to_tensor
from .refiner import MouthRefiner, refine_mouths
from .renderer import MouthRenderer, paint_mouths, put_mouths
from .settings import EditorSettings, SettingsError, TransferSettings
from .transfer import CropChange, apply_changes, crop_changes
from .vectors import VECTORS_FILE, AttributeVectors, shift_latent
from .view import FaceView

PHOTO_MAX_SIDE = 2048  # photos are kept (and edited, and downloadable) up to this side; larger ones are scaled down
MIN_PHOTO_SIDE = 32  # below this there is no face to find or edit


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

    @functools.cached_property
    def face_view(self) -> FaceView:
        """The face region that the strip, the GIF and the live view show."""
        return FaceView.around(self.crop_to_photo, (self.photo.shape[1], self.photo.shape[0]))

    @property
    def nbytes(self) -> int:
        """Memory this photo holds: the pixels, the aligned frame (the full-size photo when no face was
        aligned) and the crop."""
        frame = self.aligned.frame
        return self.photo.nbytes + frame.width * frame.height * 3 + self.crop.width * self.crop.height * 3


@dataclass
class DecodedStrengths:
    """A photo decoded at several strengths; turned into pictures with a transfer, on demand."""

    prepared: Prepared
    strengths: list[float]
    decoded: torch.Tensor  # (K, 3, 128, 128) the raw decodes, for "under the hood"
    transfer: TransferSettings
    attribute: str  # the vector the strengths move along
    refiner: MouthRefiner | None = None  # redraws the mouth when the transfer says refine_mouth
    renderer: MouthRenderer | None = None  # paints inside the lips where the transfer's render_mouth says so

    @functools.cached_property
    def changes(self) -> CropChange:
        """What each strength does to the photo, in crop space."""
        return crop_changes(self.decoded, self.prepared.recon, self.transfer)

    def index(self, strength: float) -> int:
        distance = np.abs(np.array(self.strengths) - strength)
        if distance.min() > 1e-6:
            raise KeyError(f"strength {strength} was not decoded; have {self.strengths}")
        return int(distance.argmin())

    def photos(self, strengths: Sequence[float]) -> np.ndarray:
        """Whole photos at full resolution, (len(strengths), H, W, 3) uint8."""
        return self._render(self.prepared.photo, self.prepared.crop_to_photo, strengths)

    def views(self, strengths: Sequence[float]) -> np.ndarray:
        """The face region of the edited photo (`Prepared.face_view`), (len(strengths), h, w, 3) uint8."""
        view = self.prepared.face_view
        crop_to_view = np.linalg.inv(view.to_photo) @ self.prepared.crop_to_photo
        return self._render(view.cut(self.prepared.photo), crop_to_view, strengths)

    def _render(self, image: np.ndarray, crop_to_image: np.ndarray, strengths: Sequence[float]) -> np.ndarray:
        """`image` edited at each strength: the transfer, then (if set) the mouth redrawn by the refiner or
        the inside of the lips painted by the renderer."""
        picked = [self.index(s) for s in strengths]
        edited = apply_changes(image, crop_to_image, self.changes.pick(picked))
        if self.transfer.refine_mouth and self.refiner is not None:
            edited = refine_mouths(
                edited, crop_to_image, self.decoded[picked], self.prepared.recon, list(strengths), self.refiner
            )
        amounts = [self.transfer.render_amount(s, self.attribute) for s in strengths]
        painted = [k for k, amount in enumerate(amounts) if amount > 0]
        landmarks = self.prepared.aligned.landmarks
        if painted and self.renderer is not None and landmarks is not None:
            indices = [picked[k] for k in painted]
            in_image = map_points(crop_to_image @ np.linalg.inv(self.prepared.crop_to_photo), landmarks)
            changes, painted_amounts = self.changes.pick(indices), [amounts[k] for k in painted]
            mouths = paint_mouths(edited[painted], in_image, crop_to_image, self.decoded[indices], self.renderer, changes)
            edited[painted] = put_mouths(edited[painted], mouths, painted_amounts)
        return edited

    def raw(self, strength: float) -> Image.Image:
        """The decoded 128x128 face itself (what the VAE draws), not the photo; 0 is the reconstruction."""
        return to_image(self.prepared.recon if strength == 0 else self.decoded[self.index(strength)])


@dataclass(frozen=True)
class EditInfo:
    faces_found: int
    notes: list[str]
    strength: float
    attribute: str
    size: tuple[int, int]  # the photo's (width, height) as edited

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "size": list(self.size)}


@dataclass(frozen=True)
class EditResult:
    """What one edit gives back: the person's whole photo with less and more smile, and what the model saw and drew."""

    less: np.ndarray  # (H, W, 3) uint8, the photo at -strength
    more: np.ndarray  # (H, W, 3) uint8, the photo at +strength
    frame_strengths: list[float]  # the signed strengths of `frames`
    frames: np.ndarray  # (K, h, w, 3) uint8, the face region at each of frame_strengths (K may be 0)
    frame_decodes: np.ndarray  # (K, 128, 128, 3) uint8, what the model itself draws at each of frame_strengths
    crop: Image.Image  # the model's 128x128 input
    reconstruction: Image.Image  # decode(z)
    decoded_less: Image.Image  # decode(z - strength * step)
    decoded_more: Image.Image  # decode(z + strength * step)
    info: EditInfo


class SmileEditor:
    """A trained SmileVAE, its attribute vectors, the settings it edits with and a face aligner."""

    def __init__(
        self,
        model: SmileVAE,
        vectors: AttributeVectors,
        settings: EditorSettings | None = None,
        aligner: FaceAligner | None = None,
        refiner: MouthRefiner | None = None,
        renderer: MouthRenderer | None = None,
    ) -> None:
        self.model = model.eval().to(memory_format=torch.channels_last)
        self.vectors = vectors
        self.settings = settings or EditorSettings(default_attribute=vectors.names[0])
        if self.settings.default_attribute not in vectors.names:
            raise SettingsError(f"default_attribute {self.settings.default_attribute!r} is not one of the model's vectors.")
        if self.settings.transfer.refine_mouth and refiner is None:
            raise SettingsError("transfer.refine_mouth is set, but the model folder has no mouth refiner (refiner.safetensors).")
        if self.settings.transfer.render_mouth != "off" and renderer is None:
            raise SettingsError(
                f"transfer.render_mouth is {self.settings.transfer.render_mouth!r}, but the model folder has no mouth renderer "
                "(renderer.safetensors)."
            )
        self.aligner = aligner or FaceAligner()
        self.refiner = refiner.eval() if refiner is not None else None
        # channels-last: 4.8 instead of 8.2 ms a patch
        self.renderer = renderer.eval().to(memory_format=torch.channels_last) if renderer is not None else None

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike) -> SmileEditor:
        """A model folder (config.json, model.safetensors, attribute_vectors.npz, editor.json) or a Hub repo id."""
        folder = resolve_model_source(source)
        missing = [n for n in ("config.json", "model.safetensors", VECTORS_FILE) if not (folder / n).exists()]
        if missing:
            raise ModelLoadError(f"Model folder {folder} is incomplete: missing {', '.join(missing)}.")
        try:
            model = SmileVAE.load(folder)
            vectors = AttributeVectors.load(folder)
            refiner = MouthRefiner.load(folder)
            renderer = MouthRenderer.load(folder)
        except Exception as err:
            raise ModelLoadError(f"Model folder {folder} could not be read: {err}") from err
        try:
            return cls(model, vectors, EditorSettings.load(folder), refiner=refiner, renderer=renderer)
        except SettingsError as err:
            raise ModelLoadError(f"{folder}: {err}") from err

    def with_settings(self, settings: EditorSettings) -> SmileEditor:
        """The same model, vectors and aligner with other settings (the evaluation's variants)."""
        return SmileEditor(self.model, self.vectors, settings, self.aligner, self.refiner, self.renderer)

    @property
    def attributes(self) -> list[str]:
        return list(self.vectors.names)

    def strip_strengths(self, strength: float) -> list[float]:
        return np.linspace(-strength, strength, self.settings.strip_steps).tolist()  # ends exactly +-strength

    def check_attribute(self, attribute: str | None) -> str:
        attribute = self.settings.default_attribute if attribute is None else attribute
        if attribute not in self.vectors.names:
            shown = _short(repr(attribute)) if isinstance(attribute, str) else type(attribute).__name__
            raise ValueError(f"Unknown attribute {shown}; choose one of: {', '.join(self.vectors.names)}.")
        return attribute

    def check_strength(self, strength: float, signed: bool = False) -> float:
        """A finite number within the slider's range, else ValueError with the range in the message."""
        top = float(self.settings.max_strength)
        low = -top if signed else 0.0
        number = _finite_number(strength)
        if number is None:
            shown = "nothing" if strength is None else _short(repr(strength))
            raise ValueError(f"Strength must be a finite number between {low:g} and {top:g}, not {shown}.")
        if not low <= number <= top:
            raise ValueError(f"Strength {number:.10g} is out of range: use {low:g} to {top:g}.")  # 4.0000001, not 4
        return number

    def prepare(self, image: ImageInput, align: bool = True) -> Prepared:
        """Load, align (largest face) and encode a photo. Raises vae.ImageError for unusable input."""
        # decoded at the working size from the start (peak memory follows it), too-small refused from the header
        photo = load_image(image, max_side=PHOTO_MAX_SIDE, min_side=MIN_PHOTO_SIDE)
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

    def decode_strengths(self, prepared: Prepared, strengths: Sequence[float], attribute: str | None = None) -> DecodedStrengths:
        """decode(z + a * step) for every strength in one batch; pictures come from the result."""
        attribute = self.check_attribute(attribute)
        step = self.vectors.step(attribute)
        alphas = torch.tensor(list(strengths), dtype=torch.float32)[:, None]
        moved = alphas[:, 0] != 0  # alpha = 0 gives the photo itself: decode(z), already made, and no residual at all
        with torch.inference_mode():
            decoded = torch.empty((len(alphas), *prepared.recon.shape))
            decoded[~moved] = prepared.recon
            if moved.any():
                decoded[moved] = self.model.decode(shift_latent(prepared.latent, step, alphas[moved]))
        return DecodedStrengths(
            prepared, list(strengths), decoded, self.settings.transfer, attribute, self.refiner, self.renderer
        )

    def edit(
        self,
        photo: Prepared | ImageInput,
        strength: float | None = None,
        attribute: str | None = None,
        *,
        align: bool = True,
        frames: Sequence[float] = (),
    ) -> EditResult:
        """The photo at -strength and +strength (default: the model's), plus the face region at each of
        `frames` (signed strengths), all decoded in one batch. `photo` may be prepared already."""
        strength = self.check_strength(self.settings.default_strength if strength is None else strength)
        attribute = self.check_attribute(attribute)
        prepared = photo if isinstance(photo, Prepared) else self.prepare(photo, align=align)
        frames = [float(s) for s in frames]
        edits = self.decode_strengths(prepared, sorted(set(frames) | {-strength, strength}), attribute)
        less, more = edits.photos([-strength, strength])
        views = edits.views(frames) if frames else np.zeros((0, 1, 1, 3), np.uint8)
        decodes = np.stack([np.asarray(edits.raw(s)) for s in frames]) if frames else np.zeros((0, 1, 1, 3), np.uint8)
        info = EditInfo(
            prepared.aligned.faces_found,
            list(prepared.notes),
            strength,
            attribute,
            (prepared.photo.shape[1], prepared.photo.shape[0]),
        )
        return EditResult(
            less, more, frames, views, decodes, prepared.crop, edits.raw(0.0), edits.raw(-strength), edits.raw(strength), info
        )

    def sample(self, count: int, seed: int = 0) -> list[Image.Image]:
        """Faces decoded from the prior N(0, I): shippable examples that are no one's photo."""
        z = torch.randn(count, self.model.latent_dim, generator=torch.Generator().manual_seed(seed))
        with torch.inference_mode():
            return [Image.fromarray(p) for p in to_pixels(self.model.decode(z))]


def _finite_number(value: object) -> float | None:
    """`value` as a finite float when it is a real number, Python's or numpy's (not a bool, a string or
    10**400), else None."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if np.isfinite(number) else None


def _short(text: str, limit: int = 40) -> str:
    """At most `limit` characters of a value sent to us, for a message that quotes it back."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
