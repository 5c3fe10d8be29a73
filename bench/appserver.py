"""The real app, `python app.py`, in a subprocess: what the HTTP and browser tests and the app benchmarks talk to.

`upload` and `raw_call` speak its HTTP API as any client may: any JSON, no gradio_client in between.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
# Debian's chromium, headless and offline (never `playwright install`); the fake camera adds FAKE_CAMERA_ARGS
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
FAKE_CAMERA_ARGS = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]


def app_environment(uploads: str) -> tuple[dict[str, str], str]:
    """This process's environment for `python app.py` on a free local port, offline, its uploads in `uploads`; and its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        "GRADIO_TEMP_DIR": uploads,
    }
    env.pop("GRADIO_SERVER_NAME", None)
    return env, f"http://127.0.0.1:{port}/"


class AppServer:
    """`python app.py` on a free port, offline, with its own upload folder, its output in `log`; stopped on exit.

    The benchmark and the test suite both start the app this way.
    """

    def __init__(self, log: Path | None = None) -> None:
        self.log = log

    def __enter__(self) -> AppServer:
        self.uploads = tempfile.mkdtemp(prefix="smile-uploads-")
        self.log = self.log or Path(self.uploads) / "app.log"  # removed with the folder
        env, self.url = app_environment(self.uploads)
        started = time.time()
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        while True:
            try:
                urllib.request.urlopen(self.url, timeout=2)
                break
            except OSError:
                if self.proc.poll() is not None or time.time() - started > 180:
                    self.__exit__()
                    raise RuntimeError("the app did not start: " + self.log.read_text()[-2000:]) from None
                time.sleep(0.3)
        self.start_s = time.time() - started
        return self

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))) / 1024

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        shutil.rmtree(self.uploads, ignore_errors=True)


def call_events(
    url: str, endpoint: str, data: list, timeout: float = 120, client: httpx.Client | None = None
) -> Iterator[tuple[str, dict | list]]:
    """POST /gradio_api/call/<endpoint> with any JSON (NaN included), then each event of its stream as it comes:
    (kind, data) for "generating", "complete", "error" ..., or one ("refused", {"status", "error"})."""
    http = client or httpx
    posted = http.post(
        f"{url}gradio_api/call/{endpoint}",
        content=json.dumps({"data": data}),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    if posted.status_code != 200:  # refused before it was queued (413, 429, 503): the status and the message
        yield "refused", {"status": posted.status_code, "error": posted.text}
        return
    event_id = posted.json()["event_id"]
    kind = None
    with http.stream("GET", f"{url}gradio_api/call/{endpoint}/{event_id}", timeout=timeout) as stream:
        for line in stream.iter_lines():
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                yield kind, json.loads(line[5:])


def raw_call(
    url: str, endpoint: str, data: list, timeout: float = 120, client: httpx.Client | None = None
) -> tuple[str, dict | list]:
    """`call_events` up to its result: ("complete", outputs), ("error", {"error": message}) or ("refused", {"status", "error"})."""
    for kind, payload in call_events(url, endpoint, data, timeout, client):
        if kind in ("complete", "error", "refused"):
            return kind, payload
    raise AssertionError("the event stream ended without a result")


def upload(url: str, path: Path) -> str:
    """Upload through Gradio's own upload route, as a browser does; returns the server-side path."""
    return upload_bytes(url, {path.name: path.read_bytes()})[0]


def upload_bytes(url: str, files: dict[str, bytes], client: httpx.Client | None = None) -> list[str]:
    """Upload `files` (name: content) in one request; their server-side paths, in order."""
    answer = (client or httpx).post(f"{url}gradio_api/upload", files=[("files", item) for item in files.items()], timeout=120)
    answer.raise_for_status()
    return answer.json()


def from_address(address: str) -> httpx.Client:
    """A client whose connections come from `address` (any 127.x.y.z reaches a server on 127.0.0.1)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=120)


def join(url: str, fn_index: int, data: list, session: str, client: httpx.Client | None = None) -> httpx.Response:
    """POST /gradio_api/queue/join as the page does: the job is queued (200) or refused before it is (413, 429)."""
    body = {"data": data, "fn_index": fn_index, "session_hash": session, "event_data": None, "trigger_id": None}
    return (client or httpx).post(f"{url}gradio_api/queue/join", json=body, timeout=30)


def endpoint_index(url: str, api_name: str) -> int:
    return next(d["id"] for d in httpx.get(f"{url}config").json()["dependencies"] if d.get("api_name") == api_name)


def completed(url: str, session: str, *event_ids: str) -> list[dict]:
    """The session's `process_completed` messages for `event_ids`, read from the queue's event stream."""
    found: dict[str, dict] = {}
    with httpx.stream("GET", f"{url}gradio_api/queue/data", params={"session_hash": session}, timeout=300) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed" and message.get("event_id") in event_ids:
                    found[message["event_id"]] = message
                    if len(found) == len(event_ids):
                        return [found[event_id] for event_id in event_ids]
    raise AssertionError("the event stream ended without the results")
