// The live slider: every frame of the photo is already in the page (decoded once on the server, in one
// batch, after a first look at a few strengths), so moving the slider only swaps an <img> source. No
// request goes to the server while sliding.
let frames = [];     // object URLs of the frames, in strength order
let strengths = [];
let keep = [];       // decoded Image objects, held so the browser keeps them ready
let generation = 0;  // a newer value supersedes a load still decoding

const box = () => element.querySelector(".live");
const frameImg = () => element.querySelector("img.live-frame");
const slider = () => document.querySelector("#strength input[type=range]");

function show(value) {
  const img = frameImg();
  if (!img || !frames.length || !Number.isFinite(value)) return;
  let best = 0;
  for (let i = 1; i < strengths.length; i++) {
    if (Math.abs(strengths[i] - value) < Math.abs(strengths[best] - value)) best = i;
  }
  if (img.dataset.index !== String(best)) {
    img.src = frames[best];
    img.dataset.index = String(best);
    img.dataset.strength = String(strengths[best]);
  }
}

function follow(tries = 0) {
  const range = slider();
  if (!range) { if (tries < 100) setTimeout(() => follow(tries + 1), 100); return; }
  if (element.dataset.following) return;  // once per view: several views follow the same slider
  element.dataset.following = "1";
  range.addEventListener("input", () => show(parseFloat(range.value)));
  const number = document.querySelector("#strength input[type=number]");
  if (number) ["input", "change"].forEach((type) => number.addEventListener(type, () => show(parseFloat(number.value))));
}

function toBlobUrl(dataUri) {
  const [head, body] = dataUri.split(",");
  const bytes = Uint8Array.from(atob(body), (c) => c.charCodeAt(0));
  return URL.createObjectURL(new Blob([bytes], { type: head.slice(5).split(";")[0] }));
}

async function load() {
  const root = box();
  if (!root) return;
  const mine = ++generation;
  root.dataset.ready = "0";
  let data = {};
  try { data = JSON.parse(props.value || "{}"); } catch (err) { data = {}; }
  const img = frameImg();
  const empty = element.querySelector(".live-empty");
  if (!data.frames || !data.frames.length) {
    frames.forEach((url) => URL.revokeObjectURL(url));
    frames = []; strengths = []; keep = [];
    img.removeAttribute("src");
    delete img.dataset.index;
    img.hidden = true; empty.hidden = false;
    return;
  }
  // The frames shown now stay until the new ones are decoded: a first look at a few strengths is
  // followed by every frame, and the swap must not flash an empty view.
  const urls = data.frames.map(toBlobUrl);
  const images = urls.map((url) => { const im = new Image(); im.src = url; return im; });
  await Promise.all(images.map((im) => im.decode().catch(() => undefined)));
  if (mine !== generation) { urls.forEach((url) => URL.revokeObjectURL(url)); return; }
  const old = frames;
  frames = urls; strengths = data.strengths; keep = images;
  delete img.dataset.index;
  img.hidden = false; empty.hidden = true;
  const range = slider();
  show(range ? parseFloat(range.value) : 0);
  old.forEach((url) => URL.revokeObjectURL(url));
  root.dataset.ready = data.complete === false ? "partial" : "1";  // "1": every strength is in the page
}

follow();
watch("value", load);
load();
