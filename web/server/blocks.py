"""gr.Blocks for a public Space: only messages we wrote reach a visitor, and every request is bounded.

Gradio answers an exception it did not expect with a bare `{"error": null}` (refused paths, missing
arguments, a strength of "2" on /render all did), or, with show_error, with whatever the exception
says, server paths included. `SmileBlocks.process_api` refuses a call with too few arguments, values
nested deeper than any payload, and a file payload naming a URL (Gradio would download it, with no size
bound) or holding a NUL byte before Gradio sees them, lets
our own messages (gr.Error) through, answers a file path Gradio refuses and a payload of the wrong type
with messages of ours, and logs anything else and answers it with a generic message; after each call
the freed memory goes back to the system (web/server/memory.py). `launch` adds the request bounds of web/server/limits.py,
web/server/uploads.py and web/server/fair_queue.py, and keeps at most SESSIONS_KEPT sessions' state.
"""

from __future__ import annotations

import logging
import os

import gradio as gr
from gradio.exceptions import InvalidPathError
from pydantic import ValidationError
from starlette.middleware import Middleware

from .guards import MAX_UPLOAD_BYTES, OUTSIDE_UPLOADS, names_a_foreign_path, too_deep, upload_path
from .limits import limit_bodies
from .memory import MemoryReleaser
from .patches import share_queue, use_deadline_protocol
from .uploads import UploadStore, track_uploads

log = logging.getLogger(__name__)
# Gradio keeps a copy of every component's config per session, ~0.4 MB each (a script's every call is a new
# session): its default of 10,000 sessions could hold 4 GB. The oldest sessions go first.
SESSIONS_KEPT = 1000
WRONG_KIND = (
    "A value sent to this endpoint is not of the kind it takes: a photo is an uploaded file's payload, "
    'like {"path": ..., "meta": {"_type": "gradio.FileData"}} from /gradio_api/upload.'
)
SERVER_FAILED = "Something went wrong on the server while handling this request (it has been logged): try again."


class SmileBlocks(gr.Blocks):
    """A gr.Blocks whose errors are ours and whose requests are bounded; `uploads` tracks the upload folder.

    `http_routes` (Starlette routes, e.g. the mirror's) are served beside Gradio's, under the same bounds.
    """

    def __init__(self, *args, uploads: UploadStore, **kwargs) -> None:
        # Gradio's telemetry is on unless GRADIO_ANALYTICS_ENABLED says otherwise: off here unless it says "true".
        kwargs.setdefault("analytics_enabled", os.environ.get("GRADIO_ANALYTICS_ENABLED", "").lower() == "true")
        super().__init__(*args, **kwargs)
        self.uploads = uploads
        self.http_routes: list = []
        self.memory = MemoryReleaser()

    async def process_api(self, block_fn, inputs, *args, **kwargs):
        fn = self.fns[block_fn] if isinstance(block_fn, int) else block_fn
        try:
            if len(inputs) < len(fn.inputs):
                raise gr.Error(f"This endpoint takes {len(fn.inputs)} inputs and got {len(inputs)}.")
            if too_deep(inputs):  # before any recursive look at them
                raise gr.Error(WRONG_KIND)
            if names_a_foreign_path(inputs):
                raise gr.Error(OUTSIDE_UPLOADS)
            return await super().process_api(block_fn, inputs, *args, **kwargs)
        except gr.Error:
            raise
        except InvalidPathError as err:
            raise gr.Error(OUTSIDE_UPLOADS) from err
        except ValidationError as err:  # Gradio checks a component's payload type even with preprocess=False
            raise gr.Error(WRONG_KIND) from err
        except Exception as err:
            log.exception("unexpected error in %s", fn.api_name or fn.name)
            raise gr.Error(SERVER_FAILED) from err
        finally:
            self.memory.after_call()  # an edit's large arrays leave no heap behind

    def queue(self, *args, **kwargs):
        super().queue(*args, **kwargs)
        share_queue(self, work=self.megapixels)
        return self

    def megapixels(self, inputs: list) -> int:
        """A job's work: the megapixels of the uploads it names, from their headers (0 for anything else)."""
        paths = [upload_path(value) for value in inputs]
        return sum(round((self.uploads.pixels(path) or 0) / 1e6) for path in paths if isinstance(path, str))

    def launch(self, **kwargs):
        """gr.Blocks.launch, with request bodies, slow clients, uploads and each visitor's queue share bounded."""
        use_deadline_protocol()
        app_kwargs = dict(kwargs.pop("app_kwargs", None) or {})
        app_kwargs["middleware"] = [
            *app_kwargs.get("middleware", []),
            Middleware(limit_bodies),
            Middleware(track_uploads(self.uploads)),
        ]
        app_kwargs["routes"] = [*app_kwargs.get("routes", []), *self.http_routes]
        kwargs.setdefault("max_file_size", MAX_UPLOAD_BYTES)
        kwargs.setdefault("state_session_capacity", SESSIONS_KEPT)
        return super().launch(app_kwargs=app_kwargs, **kwargs)
