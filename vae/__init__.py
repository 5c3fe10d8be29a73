"""SMILE: a VAE whose latent space holds a smile direction, and the tools to edit faces with it.

The names below are imported on first use, so that `vae.image_file` and `vae.metadata` (numpy and Pillow
only) can be loaded without torch, e.g. by the process that test-decodes uploads.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "SmileVAE": "model",
    "IMAGE_SIZE": "preprocess",
    "preprocess": "preprocess",
    "to_image": "preprocess",
    "ImageError": "image_file",
    "load_image": "image_file",
}
__all__ = list(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'vae' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
