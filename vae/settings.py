"""The editor's settings, typed and frozen, read from and written to a model folder's `editor.json`.

One place checks them, however they are built (loaded, written by an evaluation, made in a test):
a value out of range raises `SettingsError` naming the field. Which attribute vectors exist is the
model's business, so `SmileEditor` checks `default_attribute` against its vectors.

`editor.json` is written by the evaluation steps (`evaluation.faces` sets the default vector,
`evaluation.photos` the whole-photo strength and the transfer variant), never by hand.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from .files import atomic_write_text

SETTINGS_FILE = "editor.json"
RENDER_MOUTH = ("off", "more", "both")  # never; for smiling more (the opening it draws); for less as well (closed lips)
RENDER_RAMP = 1.0  # |alpha| over which the painted mouth fades in: no jump as the slider leaves 0
MOUTH_ATTRIBUTES = ("Smiling", "Mouth_Slightly_Open")  # vectors (by name prefix) whose edits move the mouth


class SettingsError(ValueError):
    """editor.json (or settings built in code) hold a value the editor cannot use."""


def _number(name: str, value: object, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SettingsError(f"{name} must be a finite number, not {value!r}.")
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low:g} and {high:g}, not {value!r}.")


@dataclass(frozen=True)
class TransferSettings:
    """How the decoded change is put on the photo (`vae.transfer`); the variants that lost are in docs/evaluation.md."""

    flatten_sigma: float = 16.0  # px of the 128-px crop: wider than a mouth, narrower than the face; 0 = plain difference
    mouth_gain: float = 0.0  # extra weight over the mouth and cheeks (raised: more flips, the person lost sooner)
    lower_face: bool = True  # the edit fades in below the eyes, leaving eyes and brows the photo's
    refine_mouth: bool = False  # redraw the mouth sharp with the model folder's refiner (`vae.refiner`)
    follow_flow: bool = False  # move the photo's own pixels along the decoder's flow; add only what it cannot explain
    render_mouth: str = "off"  # paint inside the lips with the model folder's renderer (`vae.renderer`): off | more | both
    residual_gain: float = 1.0  # share of the decoded change the flow does not explain that is added (0: moved pixels only)
    shade_limit: float = 0.0  # 8-bit levels the added change may darken the face outside the lips (0: no limit)

    def __post_init__(self) -> None:
        _number("transfer.flatten_sigma", self.flatten_sigma, 0, 64)
        _number("transfer.mouth_gain", self.mouth_gain, 0, 4)
        _number("transfer.residual_gain", self.residual_gain, 0, 1)
        _number("transfer.shade_limit", self.shade_limit, 0, 255)
        for name in ("lower_face", "refine_mouth", "follow_flow"):
            if not isinstance(getattr(self, name), bool):
                raise SettingsError(f"transfer.{name} must be true or false, not {getattr(self, name)!r}.")
        if self.render_mouth not in RENDER_MOUTH:
            raise SettingsError(f"transfer.render_mouth must be one of {', '.join(RENDER_MOUTH)}, not {self.render_mouth!r}.")

    def render_amount(self, strength: float, attribute: str) -> float:
        """How much of the renderer's mouth an edit of `attribute` at this signed strength shows, 0 to 1: none for
        the sides it is off for and for vectors that do not move the mouth (eyeglasses keep the photo's lips),
        fading in over RENDER_RAMP."""
        side = strength > 0 and self.render_mouth != "off" or strength < 0 and self.render_mouth == "both"
        moves_mouth = attribute.startswith(MOUTH_ATTRIBUTES)
        return min(1.0, abs(strength) / RENDER_RAMP) if side and moves_mouth else 0.0


@dataclass(frozen=True)
class EditorSettings:
    """What the app, the command line and the evaluation edit with, unless told otherwise."""

    default_attribute: str = "Smiling"
    default_strength: float = 2.0  # whole-photo alpha, in standard deviations of z . v_hat
    max_strength: float = 4.0  # the slider's end
    strip_steps: int = 7  # frames in the less -> more strip and GIF
    transfer: TransferSettings = field(default_factory=TransferSettings)

    def __post_init__(self) -> None:
        if not isinstance(self.default_attribute, str) or not self.default_attribute:
            raise SettingsError(f"default_attribute must be a vector name, not {self.default_attribute!r}.")
        _number("max_strength", self.max_strength, 0.5, 16)
        _number("default_strength", self.default_strength, 0, self.max_strength)
        if isinstance(self.strip_steps, bool) or not isinstance(self.strip_steps, int) or not 2 <= self.strip_steps <= 33:
            raise SettingsError(f"strip_steps must be a whole number from 2 to 33, not {self.strip_steps!r}.")
        if not isinstance(self.transfer, TransferSettings):
            raise SettingsError("transfer must be TransferSettings.")

    def replace(self, **changes) -> EditorSettings:
        """A copy with some fields changed, checked again."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: object) -> EditorSettings:
        if not isinstance(values, dict):
            raise SettingsError("the settings must be a JSON object.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SettingsError(f"unknown setting(s): {', '.join(unknown)}.")
        transfer = values.get("transfer", {})
        fields = [f.name for f in dataclasses.fields(TransferSettings)]
        if not isinstance(transfer, dict) or set(transfer) - set(fields):
            raise SettingsError(f"transfer must be an object with {', '.join(fields)}, not {transfer!r}.")
        try:
            return cls(**{**values, "transfer": TransferSettings(**transfer)})
        except TypeError as err:
            raise SettingsError(str(err)) from err

    @classmethod
    def load(cls, folder: str | os.PathLike) -> EditorSettings:
        """`folder/editor.json`, or the defaults where there is none; SettingsError names the file."""
        path = Path(folder) / SETTINGS_FILE
        if not path.exists():
            return cls()
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise SettingsError(f"{path} is not valid JSON: {err}") from err
        except SettingsError as err:
            raise SettingsError(f"{path}: {err}") from err

    def save(self, folder: str | os.PathLike) -> Path:
        return atomic_write_text(Path(folder) / SETTINGS_FILE, json.dumps(self.to_dict(), indent=2) + "\n")
