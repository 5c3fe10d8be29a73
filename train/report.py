"""Files in a model folder that more than one step writes: evaluation.json (train.evaluate, the
whole-photo evaluation ...) and editor.json (the app's settings; evaluation sets only the defaults).

Each step owns its own top-level keys and merges them in, so no step drops what another one wrote.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

EVALUATION_FILE = "evaluation.json"


def merge_json(path: str | Path, updates: dict, retire: tuple[str, ...] = ()) -> dict:
    """Merge `updates` into the JSON object at `path` (created if absent), drop the caller's own `retire`d keys,
    and write it back atomically; returns the merged object."""
    path = Path(path)
    report = json.loads(path.read_text()) if path.exists() else {}
    report = {k: v for k, v in report.items() if k not in retire} | updates
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, path)
    return report
