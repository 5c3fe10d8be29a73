"""SMILE: a VAE whose latent space holds a smile direction, and the tools to edit faces with it."""

from .model import SmileVAE
from .preprocess import IMAGE_SIZE, ImageError, load_image, preprocess, to_image

__all__ = ["SmileVAE", "IMAGE_SIZE", "ImageError", "load_image", "preprocess", "to_image"]
