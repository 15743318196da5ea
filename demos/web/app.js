// The demo page: loads the models, analyses a chosen photo, a ?image= URL or webcam frames, draws every task and
// exposes the last result as window.faceanalysisResult (JSON-safe; tests read it).
import * as ort from "./node_modules/onnxruntime-web/dist/ort.wasm.min.mjs";
import { FaceAnalyzerWeb } from "./faceanalysis.js";
import { drawResult } from "./draw.js";

const params = new URLSearchParams(location.search);
const MODEL = params.get("model") || "../../faceanalysis/assets/faceanalysis_s128.fp32.onnx";
const URLS = { model: MODEL, sidecar: params.get("sidecar") || MODEL + ".json", yunet: params.get("yunet") || "models/yunet.onnx",
               detector: "models/detector.json" };
// threads need a cross-origin isolated page (serve.py sends the headers); a plain static server gets one thread
ort.env.wasm.numThreads = Number(params.get("threads")) || (self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1);

const $ = (id) => document.getElementById(id);
const canvas = $("view"), ctx = canvas.getContext("2d");
const work = document.createElement("canvas"), wctx = work.getContext("2d", { willReadFrequently: true });
// small photos are shown magnified (drawing stays in image pixels)
const zoomFor = (w, h) => Math.min(3, Math.max(1, 640 / Math.max(w, h)));
const status = (t) => { $("status").textContent = t; };
window.faceanalysisState = "loading";

function toJSON(res, extra) {
  return {
    width: res.width, height: res.height, timings: res.timings, threads: ort.env.wasm.numThreads, ...extra,
    faces: res.faces.map((f) => ({ ...f, parsing: f.parsing && { ...f.parsing, mask: Array.from(f.parsing.mask) } })),
  };
}

function summary(res) {
  const t = res.timings;
  const lines = [`${res.faces.length} face(s) in ${res.width}x${res.height}: ${t.total.toFixed(1)} ms ` +
    `(detect ${t.detect.toFixed(1)}, align ${t.align.toFixed(1)}, model ${t.model.toFixed(1)}, map back ${t.postprocess.toFixed(1)}; ` +
    `${ort.env.wasm.numThreads} thread(s))`];
  res.faces.forEach((f, i) => {
    const b = f.bbox.map((v) => v.toFixed(0)).join(",");
    const top = Object.entries(f.attributes || {}).sort((a, b) => b[1] - a[1]).slice(0, 3).map(([n, p]) => `${n}:${p.toFixed(2)}`);
    lines.push(`[${i}] box=(${b}) score=${f.score.toFixed(2)} age=${f.age?.toFixed(0)} gender=${f.gender_label}(${f.gender?.toFixed(2)}) ` +
      `expression=${f.expression}(${f.expression_probs?.[f.expression].toFixed(2)}) ` +
      `pose(y/p/r)=(${[f.pose.yaw, f.pose.pitch, f.pose.roll].map((v) => v.toFixed(0)).join(",")}) attrs=${top.join(",")} ` +
      `landmarks=68 parsing=${new Set(f.parsing.mask).size}cls embedding=${f.embedding.length}d [${f.embedding.slice(0, 3).map((v) => v.toFixed(3)).join(", ")}, …]`);
  });
  return lines.join("\n");
}

function pixels(source, w, h) {  // the RGBA pixels the models see (unscaled)
  work.width = w; work.height = h;
  wctx.drawImage(source, 0, 0);
  return wctx.getImageData(0, 0, w, h);
}

function show(bitmap, faces) {
  const z = zoomFor(bitmap.width, bitmap.height);
  if (canvas.width !== Math.round(bitmap.width * z) || canvas.height !== Math.round(bitmap.height * z)) {
    canvas.width = Math.round(bitmap.width * z); canvas.height = Math.round(bitmap.height * z);
  }
  drawResult(ctx, bitmap, faces, z);
}

let fa;
async function analyzeBitmap(bitmap, runs = 1) {
  const img = pixels(bitmap, bitmap.width, bitmap.height);
  let res;
  const totals = [];
  for (let r = 0; r < runs; r++) { res = await fa.analyze(img); totals.push(res.timings); }
  show(bitmap, res.faces);
  $("summary").textContent = summary(res);
  return { res, totals };
}

async function openImage(blob) {
  // the photo as stored: EXIF orientation applied (as faceanalysis.decode), no colour-profile conversion
  return createImageBitmap(blob, { imageOrientation: "from-image", colorSpaceConversion: "none" });
}

async function analyzeUrl(url, runs = 1) {
  const bitmap = await openImage(await (await fetch(url)).blob());
  const { res, totals } = await analyzeBitmap(bitmap, runs);
  window.faceanalysisResult = toJSON(res, { source: url, runs: totals });
  return window.faceanalysisResult;
}

let stream = null;
async function webcamLoop(video) {
  while (stream) {
    const bitmap = await createImageBitmap(video);
    const img = pixels(bitmap, bitmap.width, bitmap.height);
    const res = await fa.analyze(img);
    show(bitmap, res.faces);
    $("summary").textContent = summary(res);
    window.faceanalysisResult = toJSON(res, { source: "webcam" });
    await new Promise((r) => requestAnimationFrame(r));
  }
}

async function toggleWebcam() {
  if (stream) { stream.getTracks().forEach((t) => t.stop()); stream = null; $("webcam").textContent = "Start webcam"; return; }
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  } catch (err) { status(`webcam: ${err.message}`); return; }
  const video = document.createElement("video");
  video.srcObject = stream; video.muted = true; video.playsInline = true;
  await video.play();
  $("webcam").textContent = "Stop webcam";
  webcamLoop(video).catch((err) => status(`error: ${err.message}`));
}

async function main() {
  const t0 = performance.now();
  fa = await FaceAnalyzerWeb.create(ort, URLS);
  window.faceanalysis = { analyzer: fa, analyzeUrl, ort };
  status(`models loaded in ${(performance.now() - t0).toFixed(0)} ms (${URLS.model.split("/").pop()}, YuNet)`);
  window.faceanalysisState = "ready";
  $("file").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    if (!file) return;
    const { res } = await analyzeBitmap(await openImage(file));
    window.faceanalysisResult = toJSON(res, { source: file.name });
  });
  $("webcam").addEventListener("click", toggleWebcam);
  if (params.get("image")) {
    await analyzeUrl(params.get("image"), Number(params.get("runs")) || 1);
    window.faceanalysisState = "done";
  }
}

main().catch((err) => { status(`error: ${err.message}`); window.faceanalysisState = `error: ${err.message}`; console.error(err); });
