"""Where a model comes from: a local folder, or a Hugging Face Hub repo id (downloaded or from the cache)."""

from __future__ import annotations

import os
from pathlib import Path


class ModelLoadError(RuntimeError):
    """The model folder or Hub repo is missing, incomplete or unreadable."""


def looks_local(source: str) -> bool:
    """A path a person typed (./x, ../x, /x, ~/x, a\\b, or a/b/c), not a Hub id (owner/name)."""
    return source.startswith((".", "/", "~")) or os.sep in source.replace("/", "", 1) or "\\" in source


def resolve_model_source(source: str | os.PathLike) -> Path:
    """A local folder as is; otherwise a Hub repo id, fetched (or read from cache) with snapshot_download."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if isinstance(source, os.PathLike) or looks_local(str(source)):
        raise ModelLoadError(f"Could not load model {str(source)!r}: no such folder.")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(source)))
    except Exception as err:  # offline, unknown repo, no network: all mean "no model"
        raise ModelLoadError(f"Could not load model {source!r}: not a local folder, and the Hub said: {err}") from err
