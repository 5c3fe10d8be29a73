"""Every change this app makes to Gradio's or uvicorn's own behaviour, in one place.

- `share_queue` wraps the push of Gradio's queue (`demo._queue.push`): a job over its session's or
  address's share (jobs, megapixels) is answered 429 before it is queued, and an endpoint number that
  does not exist 404 (Gradio's lookup answered a bare 500). Called by `SmileBlocks.queue`.
- `use_deadline_protocol` makes uvicorn serve HTTP with `limits.DeadlineH11Protocol` (header and body
  deadlines) in place of its h11 protocol, for the server Gradio's `launch()` builds with uvicorn's
  defaults. Called by `SmileBlocks.launch`.
- Not patches, but hooks Gradio offers and `SmileBlocks` (blocks.py) uses: `process_api` (our messages
  only, arguments checked first, freed memory given back after each call), `queue` and `launch`
  (ASGI middleware through `app_kwargs`: body bounds, upload checks; extra routes: the mirror's).
"""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr
import uvicorn.config
from fastapi import HTTPException

from .fair_queue import (
    ADDRESS_MEGAPIXELS,
    PER_ADDRESS,
    PER_SESSION,
    SESSION_MEGAPIXELS,
    client_address,
    trusted_proxies,
)
from .limits import DeadlineH11Protocol


def share_queue(
    demo: gr.Blocks,
    work: Callable[[list], int] = lambda data: 1,
    per_session: int = PER_SESSION,
    per_address: int = PER_ADDRESS,
    session_megapixels: int = SESSION_MEGAPIXELS,
    address_megapixels: int = ADDRESS_MEGAPIXELS,
) -> None:
    """Bound each session's and each address's jobs, and their work (`work` of a job's data, in megapixels),
    in `demo`'s queue (call after `demo.queue()`)."""
    queue = demo._queue
    push, proxies = queue.push, trusted_proxies()

    def jobs():
        for event_queue in queue.event_queue_per_concurrency_id.values():
            yield from event_queue.queue
        for job in queue.active_jobs:
            yield from job or ()

    def weight(data: object) -> int:
        return max(1, work(data.data)) if data is not None and isinstance(data.data, list) else 1

    async def fair_push(body, request, username):
        if body.fn_index is not None and body.fn_index not in demo.fns:  # Gradio's own lookup answers a bare 500
            raise HTTPException(status_code=404, detail=f"There is no endpoint number {body.fn_index}: see /config.")
        address = client_address(request, proxies)
        session = body.session_hash
        jobs_held = {"this page": 0, "your address": 0}
        work_held = dict(jobs_held)
        for event in jobs():
            mine = {"this page": session is not None and event.session_hash == session}
            mine["your address"] = client_address(event.request, proxies) == address
            for who in mine:
                jobs_held[who] += mine[who]
                work_held[who] += weight(event.data) if mine[who] else 0
        job_limit = {"this page": per_session, "your address": per_address}
        work_limit = {"this page": session_megapixels, "your address": address_megapixels}
        for who in jobs_held:
            if jobs_held[who] >= job_limit[who]:
                raise HTTPException(
                    status_code=429,
                    detail=f"Too many requests at once from {who} ({job_limit[who]} may wait or run): wait for one to finish.",
                )
            if work_held[who] and work_held[who] + weight(body) > work_limit[who]:
                raise HTTPException(
                    status_code=429,
                    detail=f"Too much work at once from {who} (photos of {work_limit[who]} megapixels in all may wait "
                    "or run): wait for one to finish.",
                )
        return await push(body, request, username)

    queue.push = fair_push


def use_deadline_protocol() -> None:
    """Make uvicorn (which Gradio's launch() configures with its defaults) serve HTTP with DeadlineH11Protocol."""
    for name in ("auto", "h11"):
        uvicorn.config.HTTP_PROTOCOLS[name] = f"{DeadlineH11Protocol.__module__}:DeadlineH11Protocol"
