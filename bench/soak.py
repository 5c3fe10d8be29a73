"""Soak benchmark: `python -m bench.soak` prints one JSON object as its last line.

N clients, each at a loopback address of its own, use the real app (`python app.py`, offline) for M minutes as scripts and pages do, over
plain HTTP: upload a new photo and edit it, edit a photo already sent at another strength (the
server reuses its encoding), download a result some seconds after it was promised (results live 10
minutes whatever others do), and now and then upload a file that is not an image (removed at once).
It prints the requests served, the failures by kind, p50/p95 latency per kind of request, and the
server's memory and upload-folder size over time, so a deployer sees what a Space holds under load.

`--hostile` runs the clients twice on one server, calm and then beside a hostile visitor at its own
address that sends, without pause, the files of `bench.hostile_files` (a GIF whose comment takes Pillow
half a minute, 60 PNG text bombs, a TIFF strip table of 2.4 million entries, a flood of 200 small PNGs)
and /edit calls on 40-megapixel GIFs: the normal calls' latency with and without it, side by side.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx

from bench.app import distinct_photo, percentiles
from bench.appserver import AppServer, from_address, raw_call, upload_bytes
from bench.hostile_files import comment_gif, flat_gif, strip_table_tiff, text_bomb_png, tiny_pngs

ATTRIBUTE = "Smiling"
NUMBER = re.compile(r"\d+(\.\d+)?")
ACTIONS = {"new_photo": 3, "again": 4, "download": 4, "junk_upload": 1}  # weights of what a client does next
HOSTILE_ADDRESS = "127.0.0.66"  # the hostile visitor's own address: its shares are not the clients'


def folder_mb(folder: str) -> float:
    out = subprocess.run(["du", "-sm", folder], capture_output=True, text=True).stdout
    return float(out.split()[0]) if out else 0.0


class Soak:
    """What every client did, how long it took, and what failed, collected from all client threads."""

    def __init__(self, server: AppServer, folder: Path, seconds: float) -> None:
        self.server, self.folder, self.deadline = server, folder, time.monotonic() + seconds
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.failures: Counter[str] = Counter()
        self.served = 0
        self.photos: list[str] = []  # server paths of photos uploaded so far
        self.promised: list[tuple[float, str]] = []  # (when, server path) of results not yet downloaded
        self.lock = threading.Lock()
        self.next_photo = 0
        self.http = threading.local()  # each client thread's httpx client, bound to its own address

    def record(self, kind: str, started: float, failure: str | None) -> None:
        with self.lock:
            if failure is None:
                self.served += 1
                self.latency[kind].append((time.perf_counter() - started) * 1000)
            else:
                self.failures[f"{kind}: {NUMBER.sub('N', failure)[:90]}"] += 1  # one row per kind of failure

    def edit(self, kind: str, path: str, strength: float) -> None:
        started = time.perf_counter()
        try:
            answer, body = raw_call(self.server.url, "edit", [{"path": path}, strength, True, ATTRIBUTE], 300, self.http.client)
        except httpx.HTTPError as err:
            return self.record(kind, started, type(err).__name__)
        if answer != "complete":
            return self.record(kind, started, f"{answer} {body.get('status', '')} {body['error']}")
        self.record(kind, started, None)
        with self.lock:
            self.promised += [(time.monotonic(), item["path"]) for item in body[0][:2]]

    def new_photo(self, rng: random.Random) -> None:
        with self.lock:
            k, self.next_photo = self.next_photo, self.next_photo + 1
        started = time.perf_counter()
        try:
            path = self.upload(distinct_photo(k, self.folder))
        except (httpx.HTTPError, ValueError) as err:
            return self.record("upload", started, type(err).__name__)
        self.record("upload", started, None)
        with self.lock:
            self.photos.append(path)
        self.edit("edit_new_photo", path, rng.uniform(0, 4))

    def again(self, rng: random.Random) -> None:
        with self.lock:
            path = rng.choice(self.photos[-8:]) if self.photos else None
        if path is None:
            return self.new_photo(rng)
        self.edit("edit_again", path, round(rng.uniform(0, 4), 1))

    def download(self, rng: random.Random) -> None:
        with self.lock:
            if not self.promised:
                return
            promised_at, path = self.promised.pop(rng.randrange(len(self.promised)))
        started = time.perf_counter()
        try:
            answer = self.http.client.get(f"{self.server.url}gradio_api/file={path}", timeout=60)
        except httpx.HTTPError as err:
            return self.record("download", started, type(err).__name__)
        age = time.monotonic() - promised_at
        self.record("download", started, None if answer.status_code == 200 else f"HTTP {answer.status_code} at {age:.0f} s")

    def junk_upload(self, rng: random.Random) -> None:
        junk = self.folder / f"junk_{threading.get_ident()}.jpg"
        junk.write_bytes(rng.randbytes(2 * 2**20))
        started = time.perf_counter()
        try:
            path = self.upload(junk)
        except (httpx.HTTPError, ValueError) as err:
            return self.record("junk_upload", started, type(err).__name__)
        self.record("junk_upload", started, "kept on disk" if Path(path).exists() else None)

    def upload(self, path: Path) -> str:
        return upload_bytes(self.server.url, {path.name: path.read_bytes()}, self.http.client)[0]

    def client(self, seed: int) -> None:
        """One visitor, at an address of its own (127.0.0.10 + seed): its shares are its own, as on a Space."""
        rng = random.Random(seed)
        names, weights = zip(*ACTIONS.items(), strict=True)
        with from_address(f"127.0.0.{10 + seed}") as self.http.client:
            while time.monotonic() < self.deadline:
                getattr(self, rng.choices(names, weights)[0])(rng)
                time.sleep(rng.uniform(0, 1))  # a person or a script between two requests

    def hostile(self) -> None:
        """Costly files and 40-megapixel edits, one after another, from HOSTILE_ADDRESS (recorded as `hostile_*`)."""
        attacks = {  # made once: making 60 text bombs takes the client seconds
            "hostile_comment_gif": {"comment.gif": comment_gif(8)},
            "hostile_text_bombs": {f"text_{k}.png": text_bomb_png(seed=k) for k in range(60)},
            "hostile_strip_tiff": {"strips.tif": strip_table_tiff()},
            "hostile_flood": {f"flood_{k}.png": data for k, data in enumerate(tiny_pngs(200))},
        }
        with from_address(HOSTILE_ADDRESS) as client:
            k = 0
            while time.monotonic() < self.deadline:
                for kind, files in attacks.items():
                    started = time.perf_counter()
                    try:
                        upload_bytes(self.server.url, files, client)
                        self.record(kind, started, None)
                    except httpx.HTTPError as err:
                        self.record(kind, started, type(err).__name__)
                k += 1
                started = time.perf_counter()
                try:
                    (gif,) = upload_bytes(self.server.url, {"big.gif": flat_gif(shade=k)}, client)
                    answer, body = raw_call(self.server.url, "edit", [{"path": gif}, 2.0, False, ATTRIBUTE], 300, client)
                except httpx.HTTPError as err:
                    answer, body = "error", {"error": type(err).__name__}
                self.record("hostile_40mp_gif_edit", started, None if answer == "complete" else str(body.get("error")))

    def watch(self, every_s: float, samples: list[dict], started: float) -> None:
        while time.monotonic() < self.deadline:
            samples.append(
                {
                    "t_s": round(time.monotonic() - started),
                    "rss_mb": round(self.server.rss_mb()),
                    "uploads_mb": folder_mb(self.server.uploads),
                    "served": self.served,
                }
            )
            print(json.dumps(samples[-1]), flush=True)
            time.sleep(every_s)


def run(server: AppServer, folder: Path, clients: int, minutes: float, sample_every: float, hostile: bool) -> dict:
    """The clients (and the hostile visitor) for `minutes` on `server`: what was served, how fast, memory."""
    soak = Soak(server, folder, minutes * 60)
    samples: list[dict] = []
    started = time.monotonic()
    threads = [threading.Thread(target=soak.client, args=(seed,)) for seed in range(clients)]
    threads.append(threading.Thread(target=soak.watch, args=(sample_every, samples, started)))
    if hostile:
        threads.append(threading.Thread(target=soak.hostile))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {
        "clients": clients,
        "minutes": minutes,
        "hostile": hostile,
        "requests_served": soak.served,
        "failures": dict(soak.failures),
        "latency": {kind: percentiles(ms) for kind, ms in sorted(soak.latency.items())},  # kinds that ran
        "rss_mb_start": samples[0]["rss_mb"],
        "rss_mb_peak": max(s["rss_mb"] for s in samples),
        "rss_mb_end": round(server.rss_mb()),
        "uploads_mb_peak": max(s["uploads_mb"] for s in samples),
        "over_time": samples,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--minutes", type=float, default=3.0, help="per phase")
    p.add_argument("--sample-every", type=float, default=10.0, help="seconds between memory samples")
    p.add_argument("--hostile", action="store_true", help="a calm phase, then the same beside a hostile visitor")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, AppServer() as server:
        phases = [False, True] if args.hostile else [False]
        runs = [run(server, Path(tmp), args.clients, args.minutes, args.sample_every, hostile) for hostile in phases]
    result = runs[0] if len(runs) == 1 else {"calm": runs[0], "hostile": runs[1], "side_by_side": side_by_side(*runs)}
    print(json.dumps(result))
    return result


def side_by_side(calm: dict, hostile: dict) -> dict:
    """p50 / p95 ms of each normal kind of request, calm and beside the hostile visitor."""
    return {
        kind: {"calm": calm["latency"][kind], "hostile": hostile["latency"].get(kind)}
        for kind in calm["latency"]
        if not kind.startswith("hostile")
    }


if __name__ == "__main__":
    main()
