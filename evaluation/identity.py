"""Is the edited photo still the same person? Asked of a face-recognition model SMILE has no part in.

dlib's face-recognition ResNet (128-d descriptors; Davis King, 99.38% on LFW) with its own published
threshold: two faces are the same person when their descriptors are closer than 0.6. The weights ship
inside the PyPI package `face_recognition_models` (installed with the training extras, used only in
evaluation, never by the app). The face is located once, on the original photo, and the same box is
used for the edit, so detection jitter cannot count as a change of identity.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

SAME_PERSON_THRESHOLD = 0.6  # dlib's own threshold for its face-recognition model


def _model_file(name: str) -> str:
    """A file of `face_recognition_models`, found without importing it (its __init__ needs pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            "The identity measure needs `face_recognition_models` and `dlib-bin`: pip install -r requirements-train.txt"
        )
    return str(Path(spec.submodule_search_locations[0]) / "models" / name)


class IdentityModel:
    """Face descriptors and the same-person decision of dlib's ResNet."""

    measure = "dlib face-recognition ResNet (dlib_face_recognition_resnet_model_v1), descriptor distance"
    threshold = SAME_PERSON_THRESHOLD

    def __init__(self) -> None:
        import dlib

        self._detect = dlib.get_frontal_face_detector()
        self._landmarks = dlib.shape_predictor(_model_file("shape_predictor_5_face_landmarks.dat"))
        self._describe = dlib.face_recognition_model_v1(_model_file("dlib_face_recognition_resnet_model_v1.dat"))

    def locate(self, photo: np.ndarray):
        """The largest face dlib finds in an (H, W, 3) uint8 photo, or None."""
        faces = self._detect(photo, 1)  # upsample once: small faces too
        return max(faces, key=lambda r: r.area()) if len(faces) else None

    def descriptor(self, photo: np.ndarray, face) -> np.ndarray:
        return np.array(self._describe.compute_face_descriptor(photo, self._landmarks(photo, face)))

    @staticmethod
    def distance(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(a - b))
