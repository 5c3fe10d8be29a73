"""The names Python and the page's JavaScript share, checked on both sides: a DOM id, a key of the live
frames' JSON, a mirror header or a key of the mirror's start answer changed on one side alone fails here."""

import json
import re

import numpy as np
from conftest import ROOT

from web.live import frames_json

UI = ROOT / "web" / "ui"
PYTHON = "\n".join(path.read_text() for path in (ROOT / "web").glob("*.py"))


def script(name: str) -> str:
    return (UI / name).read_text()


def test_every_id_the_scripts_look_for_is_given_by_python_or_the_html():
    wanted = {m for path in UI.glob("*.js") for m in re.findall(r"#([A-Za-z_][\w-]*)", path.read_text())}
    given = set(re.findall(r'elem_id="([\w-]+)"', PYTHON)) | {
        m for path in UI.glob("*.html") for m in re.findall(r'id="([\w-]+)"', path.read_text())
    }
    assert wanted, "the scripts look for no id: the pattern is stale"
    assert wanted <= given, sorted(wanted - given)


def test_the_live_frames_json_has_the_keys_live_js_reads():
    sent = json.loads(frames_json([-1.0, 0.0, 1.0], np.zeros((3, 4, 4, 3), np.uint8)))
    read = set(re.findall(r"\bdata\.(\w+)", script("live.js")))
    assert read == set(sent), (read, set(sent))
    assert all(uri.startswith("data:image/jpeg;base64,") for uri in sent["frames"])  # what toBlobUrl splits


def test_the_mirror_headers_and_start_answer_match_between_page_and_server():
    page, server = script("mirror.js"), (ROOT / "web" / "mirror.py").read_text()
    for header in set(re.findall(r'"(X-Mirror-[A-Za-z]+)"', page)):
        assert header.lower() in server.lower(), header
    start_keys = set(re.findall(r"\bopened\.(\w+)", page))
    answer = re.search(r'JSONResponse\(\{"token": token.*?\}\)', server).group(0)
    assert start_keys and all(f'"{key}"' in answer for key in start_keys), (start_keys, answer)
