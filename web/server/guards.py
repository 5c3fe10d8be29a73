"""Read only what the client uploaded, and check every value a request carries.

A payload whose path is a URL, or holds a NUL byte, is refused before Gradio sees it (`names_a_foreign_path`): the server
downloads nothing a visitor names. `read_upload` accepts a path only inside the server's upload folder, only a regular file, and only
up to MAX_UPLOAD_BYTES, all checked on the open file before a byte is read: a request that names
/etc/shadow, a named pipe or /dev/zero gets the same clear refusal and costs nothing.
"""

from __future__ import annotations

import os
import stat

from gradio_client.utils import is_http_url_like

from vae.image_file import ImageError

MAX_UPLOAD_BYTES = 25 * 1024 * 1024  # a 40-megapixel JPEG is ~15 MB
OUTSIDE_UPLOADS = "Only files uploaded to this app can be edited: upload the photo again."


def upload_path(payload: object) -> object:
    """The `path` of a Gradio file payload (a dict over HTTP, a FileData in-process); None for anything else."""
    return payload.get("path") if isinstance(payload, dict) else getattr(payload, "path", None)


class UploadGone(ImageError):
    """The path was an upload, but its file has been removed (Gradio's cache lifetime, the upload bound)."""


MAX_NESTING = 8  # a file payload is a dict in a list: deeper values are no payload of ours


def too_deep(inputs: object, limit: int = MAX_NESTING) -> bool:
    """Whether lists and dicts nest deeper than `limit` in a request's inputs (walked without recursion)."""
    stack = [(inputs, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (list, tuple, dict)):
            if depth >= limit:
                return True
            stack.extend((item, depth + 1) for item in (value.values() if isinstance(value, dict) else value))
    return False


def names_a_foreign_path(inputs: object) -> bool:
    """Whether a request's inputs hold a file payload whose path is a URL (Gradio would download it, unbounded)
    or holds a NUL byte (no file has one; Gradio's path checks raise on it)."""
    if isinstance(inputs, dict):
        return _foreign(inputs.get("path")) or any(names_a_foreign_path(value) for value in inputs.values())
    if isinstance(inputs, (list, tuple)):
        return any(names_a_foreign_path(value) for value in inputs)
    return _foreign(getattr(inputs, "path", None))


def _foreign(path: object) -> bool:
    return isinstance(path, str) and ("\0" in path or is_http_url_like(path))


def read_upload(path: object, upload_root: str | os.PathLike, max_bytes: int = MAX_UPLOAD_BYTES) -> bytes:
    """The bytes of a file that the client uploaded into `upload_root`; ImageError for anything else."""
    if not isinstance(path, str) or not path:
        raise ImageError("Upload a photo of a face first.")
    if "\0" in path:
        raise ImageError(OUTSIDE_UPLOADS)
    root = os.path.realpath(upload_root)
    real = os.path.realpath(path)
    if os.path.commonpath([real, root]) != root or real == root or os.path.islink(path):
        raise ImageError(OUTSIDE_UPLOADS)
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as err:
        raise UploadGone("The uploaded file is no longer available: upload the photo again.") from err
    try:
        info = os.fstat(fd)
        if (info.st_dev, info.st_ino) != (os.stat(real).st_dev, os.stat(real).st_ino):  # swapped after the check
            raise ImageError(OUTSIDE_UPLOADS)
        if not stat.S_ISREG(info.st_mode):
            raise ImageError("The upload is not a regular file.")
        if info.st_size > max_bytes:
            raise ImageError(f"The file is too large ({info.st_size / 2**20:.1f} MB); the limit is {max_bytes // 2**20} MB.")
        with os.fdopen(os.dup(fd), "rb") as file:
            data = file.read(max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise ImageError(f"The file is too large; the limit is {max_bytes // 2**20} MB.")
    return data


def checked_align(align: object) -> bool:
    if not isinstance(align, bool):
        raise ValueError(f"align must be true or false, not {str(align)[:20]!r}.")
    return align
