"""Mirror benchmark: `python -m bench.mirror` prints one JSON object as its last line.

In process (no browser), on the stamped astronaut clip of `bench/fakecam.py` (swaying, then still with
sensor-like noise), 640x480: per-frame time p50/p95 of `vae.mirror.Mirror` in each precision this CPU runs
natively (fp32, and bf16 where native), the tracking
scheme against detecting and encoding every frame, detections per frame, and flicker: on the still part,
the edited region's mean frame-to-frame change over the input's in the same pixels (1.0 = no flicker added).

In Chromium with the fake camera playing that clip against the real app (`python app.py`): frames shown per
second in #mirror_out with one viewer and with two, capture -> shown latency p50/p95 (the frame number
stamped at the clip's left edge, read back from the camera's <video> when it is presented and from the
shown <img> when it is decoded), and the same flicker ratio on the shown stream against a strength-0 run;
then the page's default (one frame at the server at a time) against the pipelined variant (two in flight),
and one viewer of clips whose face moves in every frame: it slides by whole pixels; by quarter pixels, as
a camera sees a slow move; it also grows and shrinks; and, as a webcam sees a person in a room, only the
head moves (by quarter pixels, growing and shrinking) over a still, busy scene. In process, the same clips,
and tracking with every move encoded again (no slides: the path before a moved face kept its edit). The
CPU's flags and the precision chosen come first in the output.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from vae.runtime import cpu_summary, inference_precisions, openmp_wait, wait_briefly_for_work

wait_briefly_for_work()  # the in-process figures as the app's own, before torch loads
from bench.appserver import CHROMIUM_ARGS as BROWSER_ARGS  # noqa: E402
from bench.appserver import FAKE_CAMERA_ARGS, AppServer  # noqa: E402
from bench.fakecam import astronaut_frames, write_y4m  # noqa: E402
from vae.editor import SmileEditor  # noqa: E402
from vae.mirror import Mirror, MirrorModel  # noqa: E402
from vae.transfer import face_region  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STRENGTH = 3.0
ZOOM = 0.03  # the zooming clip's face grows and shrinks by up to 3% while it sways: a shift alone does not explain it
CHROMIUM_ARGS = BROWSER_ARGS + FAKE_CAMERA_ARGS
# The lower face in the shown (mirrored) frame of the clip's still astronaut: where the edit writes.
REGION = (290, 110, 400, 200)  # x0, y0, x1, y1

COLLECT_JS = """([stillFrom, region]) => {
  const W = window.__mirror = {captured: {}, shown: [], flicker: [], cameraFlicker: []};
  const read = (ctx, x0) => {
    const d = ctx.getImageData(x0, 0, 16, 16 * 14).data, means = [];
    for (let i = 0; i < 14; i++) {
      let s = 0, n = 0;
      for (let y = i * 16 + 4; y < i * 16 + 12; y++) for (let x = 4; x < 12; x++) { const k = (y * 16 + x) * 4; s += d[k] + d[k + 1] + d[k + 2]; n += 3; }
      means.push(s / n);
    }
    if (!(means[0] > 160 && means[1] < 90)) return null;
    return means.slice(2).reduce((v, m) => v * 2 + (m > 128 ? 1 : 0), 0);
  };
  const grab = (ctx, x0, y0, x1, y1) => ctx.getImageData(x0, y0, x1 - x0, y1 - y0).data;
  const change = (a, b) => { let s = 0; for (let k = 0; k < a.length; k += 4) s += Math.abs(a[k] - b[k]) + Math.abs(a[k + 1] - b[k + 1]) + Math.abs(a[k + 2] - b[k + 2]); return s / (a.length * 3 / 4); };
  const canvas = () => { const c = document.createElement('canvas'); c.width = 640; c.height = 480; return c.getContext('2d', {willReadFrequently: true}); };
  const vx = canvas(), ox = canvas();
  const video = document.querySelector('#mirror_in video');
  let prevCam = null;
  const onVideo = () => {
    vx.drawImage(video, 0, 0, 640, 480);
    const n = read(vx, 0);
    if (n !== null) {
      W.captured[n] = performance.now();
      if (n >= stillFrom) {
        const px = grab(vx, 640 - region[2], region[1], 640 - region[0], region[3]);  // the camera is not mirrored
        if (prevCam && prevCam.n === n - 1) W.cameraFlicker.push(change(prevCam.px, px));
        prevCam = {n, px};
      } else prevCam = null;
    }
    video.requestVideoFrameCallback(onVideo);
  };
  video.requestVideoFrameCallback(onVideo);
  let last = null, prev = null;
  const poll = async () => {
    const img = document.querySelector('#mirror_out img');
    if (img && img.src && img.src !== last) {
      last = img.src;
      try { await img.decode(); } catch (e) {}
      const t = performance.now();
      ox.drawImage(img, 0, 0, 640, 480);
      const n = read(ox, 624);
      const c = n === null ? undefined : W.captured[n];
      W.shown.push({t, n, latency: c === undefined || c > t ? null : t - c});
      if (n !== null && n >= stillFrom) {
        const px = grab(ox, region[0], region[1], region[2], region[3]);
        if (prev && prev.n !== n) W.flicker.push(change(prev.px, px));  // the same capture twice is no change
        prev = {n, px};
      } else prev = null;
    }
    requestAnimationFrame(poll);
  };
  requestAnimationFrame(poll);
}"""


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"p50_ms": None, "p95_ms": None, "n": 0}
    return {
        "p50_ms": round(float(np.percentile(values, 50)), 1),
        "p95_ms": round(float(np.percentile(values, 95)), 1),
        "n": len(values),
    }


def in_process(editor: SmileEditor, moving: int, still: int) -> dict:
    """Per-frame time and flicker of the tracking scheme in each precision this CPU runs natively (fp32, and
    bf16 where it is native: emulated it is 10-100x slower) and the chosen one, of detecting every frame, and
    (when the shipped transfer paints the mouth) of tracking with the renderer off."""
    frames = list(astronaut_frames(moving + still, still_from=moving))
    models = {name: MirrorModel(editor, name) for name in inference_precisions()} | {"auto": MirrorModel(editor, "auto")}
    models["auto"].ready.wait()
    out = {
        "precision_auto": models["auto"].precision,
        "precision_timings_ms": {k: round(v, 1) for k, v in models["auto"].timings_ms.items()},
    }
    schemes = [("tracking", name, frames, True, editor, {}) for name in inference_precisions()]
    every = frames[moving - min(moving, 20) : moving + min(still, 20)]  # detecting every frame is slow: 40 frames
    chosen = out["precision_auto"]["decoder"]
    schemes.append(("detect_every_frame", chosen, every, False, editor, {}))
    schemes.append(("tracking_no_slides", chosen, frames, True, editor, {"slide_levels": 0.0}))  # every move encoded again
    subpixel = list(astronaut_frames(moving + still, still_from=moving, subpixel=True))
    schemes.append(("tracking_subpixel", chosen, subpixel, True, editor, {}))
    schemes.append(("tracking_subpixel_no_slides", chosen, subpixel, True, editor, {"slide_levels": 0.0}))
    zooming = list(astronaut_frames(moving + still, still_from=moving, zoom=ZOOM))
    schemes.append(("tracking_zooming", chosen, zooming, True, editor, {}))
    scene = list(astronaut_frames(moving + still, still_from=moving, zoom=ZOOM, subpixel=True, over_scene=True))
    schemes.append(("tracking_over_scene", chosen, scene, True, editor, {}))
    if editor.settings.transfer.render_mouth != "off":  # what painting the mouth costs a frame
        unpainted = dataclasses.replace(editor.settings.transfer, render_mouth="off")
        schemes.append(
            ("tracking_renderer_off", chosen, frames, True, editor.with_settings(editor.settings.replace(transfer=unpainted)), {})
        )
    for scheme, precision, clip, track, variant, options in schemes:
        mirror = Mirror(variant, models[precision], track=track, **options)
        mirror.edit(clip[0], STRENGTH)  # the first detection is not a steady frame
        times, outputs = [], []
        for frame in clip[1:]:
            start = time.perf_counter()
            outputs.append(mirror.edit(frame, STRENGTH).image)
            times.append((time.perf_counter() - start) * 1000)
        region = face_region(mirror.crop_to_frame, (frame.shape[1], frame.shape[0]))
        still_at = len(clip) - 1 - min(still, 20 if not track else still)
        edited = [np.abs(outputs[k].astype(int) - outputs[k - 1])[region].mean() for k in range(still_at + 1, len(outputs))]
        plain = [np.abs(clip[k + 1].astype(int) - clip[k])[region].mean() for k in range(still_at + 1, len(outputs))]
        moving_times = times[:still_at]
        out[f"{scheme}_{precision}"] = {
            "frame": percentiles(times),
            "moving_frame": percentiles(moving_times),
            "still_frame": percentiles(times[still_at:]),
            "fps_equivalent": round(1000 / float(np.mean(times)), 1),
            "frames": mirror.frames,
            "detections": mirror.detections,
            "encodes": mirror.encodes,
            "decodes": mirror.decodes,
            "slides": mirror.slides,
            "flicker_ratio_still": round(float(np.mean(edited) / np.mean(plain)), 3),
        }
    return out


def browser(url: str, clip: Path, still_from: int, seconds: float, viewers: int, strength: float, in_flight: int = 0) -> dict:
    """`viewers` pages streaming at once; `in_flight` > 0 asks the page for that many frames at the server."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS + [f"--use-file-for-fake-video-capture={clip}"]
        )
        pages = []
        for _ in range(viewers):
            page = browser.new_page(viewport={"width": 1400, "height": 2400})
            page.goto(f"{url}?mirror_in_flight={in_flight}" if in_flight else url)
            page.locator("#mirror_strength input[type=range]").fill(str(strength))
            pages.append(page)
        for page in pages:
            page.locator("#mirror_start").click()
        for page in pages:
            page.wait_for_function(
                "() => { const img = document.querySelector('#mirror_out img'); return img && img.src; }", timeout=60_000
            )
        time.sleep(1.0)  # past the first detection
        for page in pages:
            page.evaluate(COLLECT_JS, [still_from + 5, list(REGION)])
        time.sleep(seconds)
        results = [page.evaluate("() => window.__mirror") for page in pages]
        browser.close()
    per_viewer = []
    for r in results:
        shown = r["shown"]
        span = (shown[-1]["t"] - shown[0]["t"]) / 1000 if len(shown) > 1 else float("nan")
        distinct = len({s["n"] for s in shown if s["n"] is not None})
        per_viewer.append(
            {
                "fps_shown": round((len(shown) - 1) / span, 1) if len(shown) > 1 else 0.0,
                "fps_distinct_captures": round(distinct / span, 1) if len(shown) > 1 else 0.0,
                "capture_to_shown": percentiles([s["latency"] for s in shown if s["latency"] is not None]),
                "unstamped": sum(s["n"] is None for s in shown),
                "flicker_shown": round(float(np.mean(r["flicker"])), 2) if r["flicker"] else None,
                "flicker_camera": round(float(np.mean(r["cameraFlicker"])), 2) if r["cameraFlicker"] else None,
            }
        )
    return {
        "viewers": viewers,
        "strength": strength,
        "in_flight": in_flight or "default (1)",
        "seconds": seconds,
        "per_viewer": per_viewer,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(
        prog="python -m bench.mirror", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seconds", type=float, default=8.0, help="measured seconds per browser run")
    p.add_argument("--no-browser", action="store_true")
    p.add_argument("--no-two", action="store_true", help="skip the two-viewer run")
    args = p.parse_args(argv)
    result = {"cpu": cpu_summary(), "openmp_wait": openmp_wait(), "cores": os.cpu_count(), "strength": STRENGTH}
    editor = SmileEditor.from_pretrained(ROOT / "assets")
    editor.aligner.warm_up()
    result["in_process"] = in_process(editor, moving=60, still=60)
    if not args.no_browser and shutil.which("chromium"):
        with tempfile.TemporaryDirectory() as tmp:
            still_from = 150
            clip = write_y4m(Path(tmp) / "astronaut.y4m", astronaut_frames(300, still_from=still_from))  # 10 s at 30 fps
            os.environ.setdefault("SMILE_MIRROR_PER_ADDRESS", "2")  # both viewers' pages come from 127.0.0.1
            with AppServer() as server:
                result["app_start_s"] = round(server.start_s, 1)
                one = browser(server.url, clip, still_from, args.seconds, 1, STRENGTH)
                plain = browser(server.url, clip, still_from, min(args.seconds, 6.0), 1, 0.0)
                viewer, unedited = one["per_viewer"][0], plain["per_viewer"][0]
                result["browser_one_viewer"] = one
                result["browser_unedited_strength_0"] = plain
                if viewer["flicker_shown"] and unedited["flicker_shown"]:
                    result["browser_flicker_ratio"] = round(viewer["flicker_shown"] / unedited["flicker_shown"], 3)
                moving = write_y4m(Path(tmp) / "moving.y4m", astronaut_frames(300))  # the face moves in every frame
                result["browser_one_viewer_always_moving"] = browser(server.url, moving, 300, args.seconds, 1, STRENGTH)
                sliding = write_y4m(Path(tmp) / "sliding.y4m", astronaut_frames(300, subpixel=True))  # by quarter pixels
                result["browser_one_viewer_always_moving_subpixel"] = browser(server.url, sliding, 300, args.seconds, 1, STRENGTH)
                zooming = write_y4m(Path(tmp) / "zooming.y4m", astronaut_frames(300, zoom=ZOOM))  # and changes in every frame
                result["browser_one_viewer_always_zooming"] = browser(server.url, zooming, 300, args.seconds, 1, STRENGTH)
                scene = write_y4m(Path(tmp) / "scene.y4m", astronaut_frames(300, zoom=ZOOM, subpixel=True, over_scene=True))
                result["browser_one_viewer_always_moving_over_scene"] = browser(server.url, scene, 300, args.seconds, 1, STRENGTH)
                result["browser_one_viewer_two_in_flight"] = browser(server.url, clip, still_from, args.seconds, 1, STRENGTH, 2)
                if not args.no_two:
                    time.sleep(3.5)  # the last streams' places are free again (IDLE_SECONDS)
                    result["browser_two_viewers"] = browser(server.url, clip, still_from, args.seconds, 2, STRENGTH)
                    time.sleep(3.5)
                    result["browser_two_viewers_two_in_flight"] = browser(
                        server.url, clip, still_from, args.seconds, 2, STRENGTH, 2
                    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
