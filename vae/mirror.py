"""The smile mirror: a live video's frames edited one by one, on the photos' editing path, fast enough for a CPU.

Per frame (H, W, 3) uint8 and a signed strength, `Mirror.edit` returns the same frame with the smile moved:
MTCNN's landmarks -> CelebA's frame (`vae.align`) -> the model's 128x128 crop -> z -> decode(z + a * step)
- decode(z) -> the editor's transfer (`vae.transfer`), on the editor's strength scale. What makes it fast:

- **Detection is rare.** MTCNN (the slow part, ~10x a decode) runs on a downscaled copy of the frame only
  when there is no face yet, when tracking is lost, and every `detect_every` frames while the face moves.
- **A face that only moves keeps its edit.** The grey patch (64x64) of the frame the latent was encoded
  from is kept as an anchor. Each moving frame, phase correlation against it gives a shift, and a
  Lucas-Kanade fit on the face alone (`vae.motion`) the similarity: shift to a few hundredths of a pixel,
  growth, tilt. Fitted from the anchor itself, errors do not add up. When what it leaves in every face
  tile's mean level is within `slide_levels`, the face moved, came closer or leaned without changing
  (aligning it again would give the same crop): the latent, the change and the painted mouth are kept and
  put where the face now is, and the landmarks move with it. A face that turns away or changes its
  expression, at once or little by little, stops matching the anchor: it is followed from the last frame
  (the same fit, where it agrees with phase correlation's shift) and aligned and encoded again.
- **A still face is left alone.** When no 8x8 block of the patch changed by more than `still_levels` since
  the last frame, the last landmarks, latent and change are reused and only put on the new frame: the edit
  cannot jitter where the face does not move (the flicker measure of `python -m bench.mirror`), and the
  frame costs one resampling of the change instead of an encode and two decodes.
- **Precision by measurement**: `MirrorModel` times fp32 and (where the CPU has it natively) bf16 copies of the encoder and the decoder
  on this CPU and keeps the faster of each (bf16 only pays on CPUs with native bf16).

With no face the frame comes back unchanged (the very array's copy) with a note; pixels outside the face
region are never touched (the transfer's guarantee); strength 0 gives the frame back; a new strength
decodes at once for the current latent. One `Mirror` per video stream (it holds the stream's tracking
state); `MirrorModel` is shared by all streams of a server.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from .align import FRAME_POINTS, FRAME_SIZE, align_to_frame, covered_box, crop_to_frame, map_points, similarity_transform
from .editor import SmileEditor
from .motion import MARGIN, PATCH, Template, block_change, fit_similarity, grey_patch, inner, phase_correlation
from .preprocess import crop_and_resize, to_tensor
from .refiner import refine_mouths
from .renderer import MouthRenderer, PaintedMouths, paint_mouths, put_mouths
from .runtime import cpu_summary, inference_precisions
from .transfer import CropChange, apply_changes, crop_changes
from .vectors import shift_latent

log = logging.getLogger(__name__)

DETECT_EVERY = 30  # frames between detections while the face moves (2 s at 15 fps); tracking covers the rest
DETECT_SIDE = 320  # MTCNN sees the frame downscaled to this longer side (a webcam face is large)
NO_FACE_RETRY = 8  # with no face, look again every this many frames (the others pass through at once)
STILL_LEVELS = 3.0  # an 8x8 block of the patch changing less than this (mean |diff|, 8-bit levels) is still
SLIDE_LEVELS = 6.0  # no face tile's mean level, after the fitted similarity, changed more than this: the face only moved
MAX_SCALE = 0.15  # a face grown or shrunk past this share since it was encoded is aligned and encoded again
MAX_STEP_SCALE = 0.05  # between two frames a face grows or shrinks less than this; a fit that says more is not used
MAX_STEP_DISAGREEMENT = 2.0  # patch px the fitted move may differ from phase correlation's at the patch's centre
MIN_PEAK = 0.08  # phase-correlation peak below this: the face is lost, detect again
MAX_SHIFT = 0.25  # a move past this share of the patch: between two frames, detect again; from the anchor, encode again
SMOOTH = 0.5  # a new detection close to the tracked landmarks is blended in with this weight
SMOOTH_RADIUS = 0.06  # "close": within this share of the eye distance
NO_FACE_NOTE = "No face found: the frame is shown as it is."


def _timed(fn, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1000


class MirrorModel:
    """The editor's encoder and decoder, each in the precision measured fastest here (fp32, or bf16 where
    the CPU computes it natively: `vae.runtime`; elsewhere nothing is timed and no bf16 copy is made).

    The timing (seconds on a CPU with bf16, most of them building its kernels) runs in a thread of its own,
    so a server starts at once: frames run in fp32 until `ready` is set. bf16 runs on a bf16 copy of the
    weights (autocast would cast 40 M weights on every call). The choice and its timings are in `precision`
    and `timings_ms`, and logged once. Thread-safe: inference only.
    """

    def __init__(self, editor: SmileEditor, precision: str = "auto", repeats: int = 5) -> None:
        if precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be auto, fp32 or bf16, not {precision!r}")
        self.editor = editor
        self.fp32 = editor.model
        self.bf16: torch.nn.Module | None = None
        self.timings_ms: dict[str, float] = {}
        self.ready = threading.Event()  # set once `precision` is final
        candidates = inference_precisions() if precision == "auto" else (precision,)
        if len(candidates) == 1:
            self.bf16 = copy.deepcopy(editor.model).to(torch.bfloat16) if candidates[0] == "bf16" else None
            self.precision = {"encoder": candidates[0], "decoder": candidates[0]}
            self._decided()
        else:
            self.precision = {"encoder": "fp32", "decoder": "fp32"}
            # not a daemon: torch must not be torn down mid-timing at exit (C++ aborts the process)
            threading.Thread(target=self._choose, args=(repeats, candidates), name="mirror-precision").start()

    def _choose(self, repeats: int, candidates: tuple[str, ...]) -> None:
        self.bf16 = copy.deepcopy(self.fp32).to(torch.bfloat16)
        self.precision = self._measure(repeats, candidates)
        self._decided()

    def _decided(self) -> None:
        timed = {name: round(ms, 1) for name, ms in self.timings_ms.items()} or "nothing"
        log.info("mirror model: %s (timed, ms: %s; CPU: %s)", self.precision, timed, cpu_summary())
        self.ready.set()

    def _measure(self, repeats: int, candidates: tuple[str, ...]) -> dict[str, str]:
        x = torch.rand(1, 3, 128, 128).contiguous(memory_format=torch.channels_last)
        z = torch.randn(2, self.fp32.latent_dim)
        with torch.inference_mode():
            for dtype in candidates:
                self.timings_ms[f"encode_{dtype}"] = _timed(lambda: self._encode(x, dtype), repeats)
                self.timings_ms[f"decode2_{dtype}"] = _timed(lambda: self._decode(z, dtype), repeats)
        faster = {
            part: min(candidates, key=lambda d: self.timings_ms[f"{key}_{d}"])
            for part, key in (("encoder", "encode"), ("decoder", "decode2"))
        }
        if "bf16" not in faster.values():
            self.bf16 = None  # not needed: give the memory back
        return faster

    def _encode(self, x: torch.Tensor, dtype: str) -> torch.Tensor:
        model = self.bf16 if dtype == "bf16" else self.fp32
        return model.encode(x.to(next(model.parameters()).dtype))[0]  # the posterior mean

    def _decode(self, z: torch.Tensor, dtype: str) -> torch.Tensor:
        model = self.bf16 if dtype == "bf16" else self.fp32
        return model.decode(z.to(next(model.parameters()).dtype))

    def encode(self, crop: np.ndarray) -> torch.Tensor:
        """(1, latent_dim) posterior mean of a 128x128x3 uint8 crop."""
        x = to_tensor(crop)[None].contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return self._encode(x, self.precision["encoder"])

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self._decode(z, self.precision["decoder"])


@dataclass
class MirrorFrame:
    """One edited frame and what it cost."""

    image: np.ndarray  # (H, W, 3) uint8
    note: str | None = None  # for the person: no face
    face: bool = False
    detected: bool = False  # MTCNN ran on this frame
    encoded: bool = False  # the crop was encoded (else the last latent was reused)
    decoded: bool = False  # the model decoded on this frame (else a kept change was put on it)


@dataclass(frozen=True)
class _Anchor:
    """Where the face was when its latent was encoded: a slide is measured from here, not from the last frame."""

    landmarks: np.ndarray  # (5, 2) frame px
    template: Template  # the grey patch of the encoded frame
    crop_to_frame: np.ndarray


@dataclass
class _Painting:
    """The renderer's mouth for one strength of one encoded face, and where it was last put."""

    strength: float
    anchor: _Anchor | None  # the encoded face it was painted for
    crop_to_frame: np.ndarray  # where that face was when it was painted
    mouths: PaintedMouths | None  # as painted there
    shown_at: np.ndarray  # the last frame's crop_to_frame
    shown: PaintedMouths | None  # `mouths` moved onto the last frame


@dataclass
class _Track:
    landmarks: np.ndarray  # (5, 2) in frame pixels
    box: tuple[int, int, int, int]  # the tracker's patch, in frame pixels (a square that grows with the face)
    patch: np.ndarray  # (PATCH, PATCH) float grey of `box` in the last frame
    crop_to_frame: np.ndarray | None = None  # 3x3 model crop -> video frame, for the latent below
    latent: torch.Tensor | None = None
    crop: np.ndarray | None = None
    changes: dict[float, CropChange] = field(default_factory=dict)  # strength -> the transfer's change
    decodes: dict[float, torch.Tensor] = field(default_factory=dict)  # strength -> (2, 3, 128, 128): decode(z), the edit
    painted: _Painting | None = None  # the renderer's last mouth
    anchor: _Anchor | None = None  # the face as the latent was encoded from it
    since_detect: int = 0


class Mirror:
    """One video stream's editor: `edit(frame, strength)` per frame; holds the stream's tracking state.

    `track=False` detects and encodes every frame (the baseline the benchmark compares with).
    Counters: `frames`, `detections`, `encodes`, `decodes`, `slides` (moves that kept the edit).
    """

    def __init__(
        self,
        editor: SmileEditor,
        model: MirrorModel | None = None,
        attribute: str | None = None,
        *,
        track: bool = True,
        detect_every: int = DETECT_EVERY,
        detect_side: int = DETECT_SIDE,
        still_levels: float = STILL_LEVELS,
        slide_levels: float = SLIDE_LEVELS,
    ) -> None:
        self.editor = editor
        self.model = model or MirrorModel(editor)
        self.attribute = editor.check_attribute(attribute)
        self.step = editor.vectors.step(self.attribute)
        self.track_faces = track
        self.detect_every = max(1, int(detect_every))
        self.detect_side = detect_side
        self.still_levels = still_levels
        self.slide_levels = slide_levels  # 0: every move is aligned and encoded again
        self.frames = self.detections = self.encodes = self.decodes = self.slides = 0
        self._track: _Track | None = None
        self._no_face_for = 0
        self._lock = threading.Lock()  # one stream's frames are edited one at a time

    @property
    def crop_to_frame(self) -> np.ndarray | None:
        """3x3 from the model's crop to the last frame's pixels (None without a face): where the edit went."""
        track = self._track
        return None if track is None else track.crop_to_frame

    def reset(self) -> None:
        with self._lock:
            self._track = None
            self._no_face_for = 0

    def edit(self, frame: np.ndarray, strength: float) -> MirrorFrame:
        """`frame` (H, W, 3) uint8 with the smile moved by `strength` (signed, the editor's scale)."""
        strength = self.editor.check_strength(strength, signed=True)
        frame = np.ascontiguousarray(frame, dtype=np.uint8)
        if frame.ndim != 3 or frame.shape[2] != 3 or min(frame.shape[:2]) < 32:
            raise ValueError(f"A video frame must be H x W x 3 with sides of at least 32 px, not {frame.shape}.")
        with self._lock:
            self.frames += 1
            return self._edit(frame, strength)

    # -- per frame ---------------------------------------------------------------------------------------------

    def _edit(self, frame: np.ndarray, strength: float) -> MirrorFrame:
        track, detected = self._follow(frame)
        if track is None:
            return MirrorFrame(frame.copy(), NO_FACE_NOTE, detected=detected)
        encoded = self._encode(frame, track)
        if strength == 0:
            return MirrorFrame(frame.copy(), face=True, detected=detected, encoded=encoded)
        decoded = strength not in track.changes
        if decoded:
            track.changes = {strength: self._change(track, strength)}  # one strength kept: a new one decodes
        image = apply_changes(frame, track.crop_to_frame, track.changes[strength])[0]
        refiner = self.editor.refiner
        if self.editor.settings.transfer.refine_mouth and refiner is not None:  # the same mouth as the photo view draws
            recon, edited = track.decodes[strength]
            image = refine_mouths(image[None], track.crop_to_frame, edited[None], recon, [strength], refiner)[0]
        renderer, amount = self.editor.renderer, self.editor.settings.transfer.render_amount(strength, self.attribute)
        if amount > 0 and renderer is not None:  # as the photo view paints it
            image = put_mouths(image[None], self._painted(image, track, strength, renderer), [amount])[0]
        return MirrorFrame(image, face=True, detected=detected, encoded=encoded, decoded=decoded)

    @staticmethod
    def _painted(image: np.ndarray, track: _Track, strength: float, renderer: MouthRenderer) -> PaintedMouths | None:
        """The renderer's mouth for this frame: painted again only for a new strength or a new anchor (a face aligned
        again, even where its crop came out the same). A still face keeps its last painting as it is, a face that
        only moved gets it moved with it (as its change is)."""
        painting = track.painted
        if painting is None or painting.strength != strength or painting.anchor is not track.anchor or painting.mouths is None:
            edited, change = track.decodes[strength][1:], track.changes[strength]
            mouths = paint_mouths(image[None], track.landmarks, track.crop_to_frame, edited, renderer, change)
            track.painted = _Painting(strength, track.anchor, track.crop_to_frame, mouths, track.crop_to_frame, mouths)
        elif not np.array_equal(painting.shown_at, track.crop_to_frame):
            painting.shown = painting.mouths.moved(track.crop_to_frame @ np.linalg.inv(painting.crop_to_frame))
            painting.shown_at = track.crop_to_frame
        return track.painted.shown

    def _follow(self, frame: np.ndarray) -> tuple[_Track | None, bool]:
        """The face's track on this frame, and whether MTCNN ran for it."""
        track = self._track
        if track is None:
            if self._no_face_for % NO_FACE_RETRY:  # no face lately: look again only now and then
                self._no_face_for += 1
                return None, False
            return self._detect(frame, None), True
        track.since_detect += 1
        if not self.track_faces:
            return self._detect(frame, None), True
        patch = grey_patch(frame, track.box)
        if block_change(patch, track.patch) < self.still_levels:
            return track, False  # still: keep landmarks, latent and change
        dx, dy, peak = phase_correlation(track.patch, patch)
        if peak < MIN_PEAK or max(abs(dx), abs(dy)) > MAX_SHIFT * PATCH or track.since_detect >= self.detect_every:
            return self._detect(frame, track), True
        moved = self._slide(frame, track.anchor)
        if moved is None:  # moved and changed: follow it from the last frame, then align and encode again
            track.landmarks = map_points(self._step(frame, track, dx, dy), track.landmarks)
            track.crop_to_frame = None
        else:  # the same face as encoded, elsewhere, nearer or turned: its latent and change go with it
            track.landmarks = map_points(moved, track.anchor.landmarks)
            track.crop_to_frame = moved @ track.anchor.crop_to_frame
            self.slides += 1
        track.box = self._patch_box(track.landmarks, frame.shape)
        track.patch = grey_patch(frame, track.box)
        return track, False

    @staticmethod
    def _step(frame: np.ndarray, track: _Track, dx: float, dy: float) -> np.ndarray:
        """3x3 (frame px) of the face's move from the last frame: the fitted similarity where it settles close to
        phase correlation's shift (`dx`, `dy` patch px) and within a frame's growth; else that shift alone."""
        scale = (track.box[2] - track.box[0]) / PATCH
        shift = np.array([[1, 0, dx * scale], [0, 1, dy * scale], [0, 0, 1.0]])
        grown = grey_patch(frame, track.box, MARGIN)
        fit = fit_similarity(Template.of(track.patch, track.box, track.landmarks), grown, frame.shape[1::-1], (dx, dy))
        if fit is None or abs(fit.scale - 1) > MAX_STEP_SCALE:
            return shift
        centre = np.array([(track.box[0] + track.box[2]) / 2, (track.box[1] + track.box[3]) / 2, 1.0])
        return fit.to_frame if np.abs((fit.to_frame - shift) @ centre).max() <= MAX_STEP_DISAGREEMENT * scale else shift

    def _slide(self, frame: np.ndarray, anchor: _Anchor | None) -> np.ndarray | None:
        """3x3 similarity (frame px) that takes the encoded face to this frame's, when that is all that changed; else None."""
        if anchor is None or self.slide_levels <= 0:
            return None
        template = anchor.template
        grown = grey_patch(frame, template.box, MARGIN)  # one grey copy for both the shift and the fit
        dx, dy, peak = phase_correlation(template.patch, inner(grown))
        if peak < MIN_PEAK or max(abs(dx), abs(dy)) > MAX_SHIFT * PATCH:
            return None
        fit = fit_similarity(template, grown, frame.shape[1::-1], (dx, dy))
        if fit is None or fit.change >= self.slide_levels or abs(fit.scale - 1) > MAX_SCALE:
            return None
        return fit.to_frame

    def _detect(self, frame: np.ndarray, previous: _Track | None) -> _Track | None:
        self.detections += 1
        height, width = frame.shape[:2]
        scale = min(1.0, self.detect_side / max(height, width))
        image = Image.fromarray(frame)
        if scale < 1.0:
            image = image.resize((round(width * scale), round(height * scale)), Image.Resampling.BILINEAR)
        # the whole pyramid at once: a webcam face in this small copy is mostly below the size from which the
        # coarse search's answer is kept, so trying it first would add its time to most detections
        faces = self.editor.aligner.landmarks(image, coarse_first=False)
        if not faces:
            self._track = None
            self._no_face_for = 1
            return None
        self._no_face_for = 0
        landmarks = faces[0] / scale
        if previous is not None:
            eyes = float(np.linalg.norm(previous.landmarks[1] - previous.landmarks[0]))
            if float(np.linalg.norm(landmarks - previous.landmarks, axis=1).mean()) < SMOOTH_RADIUS * eyes:
                landmarks = previous.landmarks + SMOOTH * (landmarks - previous.landmarks)  # detector jitter, smoothed
        box = self._patch_box(landmarks, frame.shape)
        self._track = _Track(landmarks, box, grey_patch(frame, box))
        return self._track

    @staticmethod
    def _patch_box(landmarks: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
        """A square around the face (2.2 eye-to-mouth heights and 2 eye distances, a multiple of 8 px), inside the frame."""
        height, width = shape[:2]
        eyes = (landmarks[0] + landmarks[1]) / 2
        mouth = (landmarks[3] + landmarks[4]) / 2
        side = int(
            np.clip(
                round(2.2 * float(np.linalg.norm(mouth - eyes)) + 2 * float(np.linalg.norm(landmarks[1] - landmarks[0]))),
                PATCH // 2,
                min(height, width),
            )
        )
        side -= side % 8
        centre = (eyes + mouth) / 2
        x0 = int(np.clip(round(centre[0] - side / 2), 0, width - side))
        y0 = int(np.clip(round(centre[1] - side / 2), 0, height - side))
        return x0, y0, x0 + side, y0 + side

    def _encode(self, frame: np.ndarray, track: _Track) -> bool:
        """Align this frame's face to CelebA's frame and encode its crop, unless nothing moved since the last."""
        if track.crop_to_frame is not None:
            return False
        # Only the part of the video frame that CelebA's frame samples from is warped (same pixels, less work).
        x0, y0, x1, y1 = self._frame_footprint(track.landmarks, frame.shape)
        aligned = align_to_frame(Image.fromarray(frame[y0:y1, x0:x1]), track.landmarks - [x0, y0])
        crop = crop_and_resize(aligned.frame)
        track.crop_to_frame = (
            np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1.0]]) @ aligned.frame_to_photo @ crop_to_frame(aligned.frame.size)
        )
        track.anchor = _Anchor(track.landmarks.copy(), Template.of(track.patch, track.box, track.landmarks), track.crop_to_frame)
        if track.crop is not None and track.latent is not None and np.abs(crop.astype(np.int16) - track.crop).mean() < 0.5:
            return False  # the crop is the same face: keep the latent and its change
        track.crop, track.latent, track.changes = crop.astype(np.int16), self.model.encode(crop), {}
        self.encodes += 1
        return True

    @staticmethod
    def _frame_footprint(landmarks: np.ndarray, shape: tuple[int, ...], margin: int = 3) -> tuple[int, int, int, int]:
        """The video pixels CelebA's 178x218 frame of this face samples (bicubic: +margin), clipped."""
        mouth = (landmarks[3] + landmarks[4]) / 2
        frame_to_video = np.linalg.inv(similarity_transform(np.stack([landmarks[0], landmarks[1], mouth]), FRAME_POINTS))
        height, width = shape[:2]
        x0, y0, x1, y1 = covered_box(frame_to_video, FRAME_SIZE, (width, height), margin)
        if x1 - x0 < 4 or y1 - y0 < 4:
            return 0, 0, width, height
        return x0, y0, x1, y1

    def _change(self, track: _Track, strength: float) -> CropChange:
        """The transfer's change for this latent at `strength`: decode(z + a * step) and decode(z) in one batch."""
        z = torch.cat([track.latent, shift_latent(track.latent, self.step, strength)])
        decoded = self.model.decode(z).float()  # bf16 where that measured faster
        self.decodes += 1
        track.decodes = {strength: decoded}
        return crop_changes(decoded[1:], decoded[0], self.editor.settings.transfer)
