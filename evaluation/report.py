"""Files in a model folder that more than one step writes: evaluation.json (evaluation.faces, the
whole-photo evaluation ...) and editor.json (the app's settings; evaluation sets only the defaults).

Each step owns its own top-level keys and merges them in, so no step drops what another one wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

from vae.files import atomic_write_text

EVALUATION_FILE = "evaluation.json"


def merge_json(path: str | Path, updates: dict, retire: tuple[str, ...] = ()) -> dict:
    """Merge `updates` into the JSON object at `path` (created if absent), drop the caller's own `retire`d keys,
    and write it back atomically; returns the merged object."""
    path = Path(path)
    report = json.loads(path.read_text()) if path.exists() else {}
    report = {k: v for k, v in report.items() if k not in retire} | updates
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")
    return report
