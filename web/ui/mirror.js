// The mirror's page side (web/mirror.py has the server's): each new camera frame goes to POST
// mirror/frame as a JPEG when the last one has come back (one frame at the server, unless
// ?mirror_in_flight=2 asks for the pipelined variant, which bench.mirror measured slower), so no frame
// waits in a queue; the edited JPEG is shown in #mirror_out from a blob URL. The frame sent is mirrored,
// as the camera preview is, so the person sees a mirror.
const video = element.querySelector("#mirror_in video");
const shown = element.querySelector("#mirror_out img");
const empty = element.querySelector(".mirror-empty");
const button = element.querySelector("#mirror_start");
const note = element.querySelector(".mirror-note");
const canvas = document.createElement("canvas");
const context = canvas.getContext("2d");
const base = new URL(".", window.location.href);  // the app's root, where /mirror/* is served
const strength = () => {
  const range = document.querySelector("#mirror_strength input[type=range]");
  return range ? range.value : "0";
};

let running = false, run = 0, token = null, camera = null, shownUrl = null;
let cameraFrames = 0, sentFrame = -1, wake = null;
let depth = 1, inFlight = 0, sent = 0, newestShown = 0;
const asked = parseInt(new URLSearchParams(window.location.search).get("mirror_in_flight") || "", 10);

function say(text) { note.textContent = text || ""; note.hidden = !text; }

async function refusal(response) {
  try { return (await response.json()).detail; } catch (err) { return `The server answered ${response.status}.`; }
}

function post(path, init = {}) {
  return fetch(new URL(path, base), { method: "POST", cache: "no-store", ...init });
}

function nudge() { if (wake) { const done = wake; wake = null; done(); } }

function onCameraFrame() {
  cameraFrames++;
  nudge();
  if (camera) video.requestVideoFrameCallback(onCameraFrame);
}

async function send(number) {
  const width = video.videoWidth, height = video.videoHeight;
  if (canvas.width !== width || canvas.height !== height) { canvas.width = width; canvas.height = height; }
  context.setTransform(-1, 0, 0, 1, width, 0);
  context.drawImage(video, 0, 0, width, height);
  const jpeg = await new Promise((done) => canvas.toBlob(done, "image/jpeg", 0.85));
  const response = await post("mirror/frame", {
    body: jpeg,
    headers: { "Content-Type": "image/jpeg", "X-Mirror-Token": token, "X-Mirror-Strength": strength() },
    signal: AbortSignal.timeout(15000),
  });
  if (!response.ok) throw new Error(await refusal(response));
  const edited = await response.blob();
  if (!running || number < newestShown) return;  // stopped, or a later frame is already shown
  newestShown = number;
  const url = URL.createObjectURL(edited);
  shown.src = url;
  shown.hidden = false;
  empty.hidden = true;
  if (shownUrl) URL.revokeObjectURL(shownUrl);
  shownUrl = url;
  say(response.headers.get("X-Mirror-Note"));
}

// Each new camera frame is sent while fewer than `depth` frames are at the server; none is sent twice.
async function stream() {
  while (running) {
    if (cameraFrames === sentFrame || inFlight >= depth) { await new Promise((done) => { wake = done; }); continue; }
    sentFrame = cameraFrames;
    inFlight++;
    const mine = run;  // a frame of an earlier run that fails after a restart must not stop this one
    send(++sent)
      .catch((err) => {
        if (running && mine === run) stop(err.name === "TimeoutError" ? "The server took too long: press Start again." : err.message);
      })
      .finally(() => { inFlight--; nudge(); });
  }
}

async function start() {
  running = true;
  run++;
  button.textContent = "Stop the mirror";
  say("Opening your camera…");
  try {
    camera = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 } }, audio: false });
    video.srcObject = camera;
    await video.play();
  } catch (err) {
    return stop(`The camera could not be opened (${err.message}): allow this page to use it, then press Start.`);
  }
  video.requestVideoFrameCallback(onCameraFrame);
  const response = await post("mirror/start").catch(() => null);
  if (!running) return closeStream((await response?.json().catch(() => null))?.token);  // stopped meanwhile
  if (!response || !response.ok) return stop(response ? await refusal(response) : "The server cannot be reached.");
  const opened = await response.json();
  token = opened.token;
  depth = asked > 0 ? Math.min(asked, opened.in_flight || 1) : 1;  // 1: fastest and soonest here (bench.mirror)
  say("");
  stream();
}

function closeStream(which) {  // frees the stream's place at once, even with a frame still at the server
  if (which) post("mirror/stop", { keepalive: true, headers: { "X-Mirror-Token": which } }).catch(() => undefined);
}

function stop(message = "") {
  running = false;
  if (wake) { wake(); wake = null; }
  closeStream(token);
  token = null;
  if (camera) camera.getTracks().forEach((track) => track.stop());
  camera = null;
  video.srcObject = null;
  button.textContent = "Start the mirror";
  say(message);
}

button.addEventListener("click", () => (running ? stop() : start()));
window.addEventListener("pagehide", () => { if (running) stop(); });
