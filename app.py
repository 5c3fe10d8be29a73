"""SMILE web app: upload a face, slide the smile. `python app.py`, then open http://127.0.0.1:7860.

Loads the model (`assets/` by default, or the local folder / Hub repo id in SMILE_MODEL), builds the
page with `web.create_app` and launches it; Spaces run this file as it is. GRADIO_SERVER_NAME and
GRADIO_SERVER_PORT decide where it listens.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path

from vae.runtime import cpu_summary, openmp_wait, wait_briefly_for_work

wait_briefly_for_work()  # before torch loads: its OpenMP reads how to wait once
from vae.editor import SmileEditor  # noqa: E402
from vae.hub import ModelLoadError  # noqa: E402
from web.app import create_app  # noqa: E402

ROOT = Path(__file__).resolve().parent


def load_editor() -> SmileEditor:
    source = os.environ.get("SMILE_MODEL") or str(ROOT / "assets")
    try:
        editor = SmileEditor.from_pretrained(source)
    except ModelLoadError as err:
        sys.exit(f"SMILE cannot start: {err}\nSet SMILE_MODEL to a model folder or Hub repo id (see README).")
    return editor


def main() -> None:
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s")
    # the project's own start-up choices (CPU, OpenMP, the mirror's precision), not Gradio's requests
    for name in ("app", "vae", "web"):
        logging.getLogger(name).setLevel(logging.INFO)
    logging.getLogger("app").info("CPU: %s; OpenMP: %s", cpu_summary(), openmp_wait())
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):  # Spaces and tests stop the server with SIGTERM
        # only a flag: an exception raised by a handler can land inside an import and leave Python's import
        # lock held, and the warm-up thread (importing MTCNN meanwhile) then waited for it forever at exit
        signal.signal(signum, lambda *_: stop.set())
    editor = load_editor()
    work_dir = Path(tempfile.mkdtemp(prefix="smile-"))  # examples and results of this run
    try:
        demo = create_app(editor, work_dir)
        demo.launch(allowed_paths=[str(work_dir)], prevent_thread_lock=True)  # SmileBlocks bounds every request
        # MTCNN's import and first run, while the first visitor picks a photo; started only now, as its imports
        # would hold the GIL against building the page (up 0.3-0.4 s sooner, the detector ready about as soon)
        if not stop.is_set():
            threading.Thread(target=editor.aligner.warm_up, name="warm-up").start()  # joined at exit
        while not stop.wait(1.0):
            pass
        demo.close()
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
