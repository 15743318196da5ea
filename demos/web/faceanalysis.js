// faceanalysis in the browser: YuNet detection, 5-point similarity alignment and the multi-task model on
// onnxruntime-web, with every output mapped back to image pixels the way the Python API does
// (faceanalysis/detect.py, align.py, preprocess.py and tasks/*.to_face). Images are {width, height, data}
// with RGBA bytes (ImageData). Coordinates are 0-based pixel centres, as in OpenCV.

// ---- small affine helpers (2x3 matrices as [[a, b, c], [d, e, f]]) ----------------------------------------------
export function compose(outer, inner) {
  const [a, b] = [outer, inner];
  return [
    [a[0][0] * b[0][0] + a[0][1] * b[1][0], a[0][0] * b[0][1] + a[0][1] * b[1][1], a[0][0] * b[0][2] + a[0][1] * b[1][2] + a[0][2]],
    [a[1][0] * b[0][0] + a[1][1] * b[1][0], a[1][0] * b[0][1] + a[1][1] * b[1][1], a[1][0] * b[0][2] + a[1][1] * b[1][2] + a[1][2]],
  ];
}

export function invert(m) {
  const det = m[0][0] * m[1][1] - m[0][1] * m[1][0];
  const ia = m[1][1] / det, ib = -m[0][1] / det, id = -m[1][0] / det, ie = m[0][0] / det;
  return [[ia, ib, -(ia * m[0][2] + ib * m[1][2])], [id, ie, -(id * m[0][2] + ie * m[1][2])]];
}

export function apply(m, p) {
  return [m[0][0] * p[0] + m[0][1] * p[1] + m[0][2], m[1][0] * p[0] + m[1][1] * p[1] + m[1][2]];
}

const scaleOf = (m) => Math.hypot(m[0][0], m[1][0]);
const rotationCcwDeg = (m) => -Math.atan2(m[1][0], m[0][0]) * 180 / Math.PI;
// Python's round() / OpenCV's cvRound: half to even
const roundEven = (v) => { const r = Math.round(v); return (Math.abs(v % 1) === 0.5 && r % 2 !== 0) ? r - 1 : r; };

/** Least-squares similarity (rotation, uniform scale, shift) sending src to dst (align.similarity_matrix). */
export function similarityMatrix(src, dst) {
  const n = src.length;
  let msx = 0, msy = 0, mdx = 0, mdy = 0;
  for (let i = 0; i < n; i++) { msx += src[i][0]; msy += src[i][1]; mdx += dst[i][0]; mdy += dst[i][1]; }
  msx /= n; msy /= n; mdx /= n; mdy /= n;
  let ss = 0, a = 0, b = 0;
  for (let i = 0; i < n; i++) {
    const sx = src[i][0] - msx, sy = src[i][1] - msy, dx = dst[i][0] - mdx, dy = dst[i][1] - mdy;
    ss += sx * sx + sy * sy;
    a += sx * dx + sy * dy;   // scale * cos
    b += sx * dy - sy * dx;   // scale * sin
  }
  a /= Math.max(ss, 1e-12); b /= Math.max(ss, 1e-12);
  return [[a, -b, mdx - (a * msx - b * msy)], [b, a, mdy - (b * msx + a * msy)]];
}

// ---- image operations ----------------------------------------------------------------------------------------------
/** OpenCV INTER_AREA downscale of an RGBA image (exact pixel-coverage weights, cv::resize's area tables). */
export function resizeArea(img, dw, dh, scaleX = img.width / dw, scaleY = img.height / dh) {
  const tab = (ssize, dsize, scale) => {  // per destination index: source indices and weights (flat)
    const start = new Int32Array(dsize + 1), idx = [], wt = [];
    for (let dx = 0; dx < dsize; dx++) {
      const fsx1 = dx * scale, fsx2 = fsx1 + scale;
      const cell = Math.min(scale, ssize - fsx1);
      let sx1 = Math.ceil(fsx1), sx2 = Math.floor(fsx2);
      sx2 = Math.min(sx2, ssize - 1); sx1 = Math.min(sx1, sx2);
      if (sx1 - fsx1 > 1e-3) { idx.push(sx1 - 1); wt.push((sx1 - fsx1) / cell); }
      for (let sx = sx1; sx < sx2; sx++) { idx.push(sx); wt.push(1 / cell); }
      if (fsx2 - sx2 > 1e-3) { idx.push(sx2); wt.push(Math.min(Math.min(fsx2 - sx2, 1), cell) / cell); }
      start[dx + 1] = idx.length;
    }
    return [start, Int32Array.from(idx), Float64Array.from(wt)];
  };
  const [xs, xi, xw] = tab(img.width, dw, scaleX), [ys, yi, yw] = tab(img.height, dh, scaleY);
  const src = img.data, sw = img.width;
  const rows = new Float64Array(img.height * dw * 3);  // horizontal pass
  for (let y = 0; y < img.height; y++) {
    const row = y * sw;
    for (let x = 0; x < dw; x++) {
      let r = 0, g = 0, bl = 0;
      for (let k = xs[x]; k < xs[x + 1]; k++) {
        const o = (row + xi[k]) * 4, w = xw[k];
        r += src[o] * w; g += src[o + 1] * w; bl += src[o + 2] * w;
      }
      const o = (y * dw + x) * 3; rows[o] = r; rows[o + 1] = g; rows[o + 2] = bl;
    }
  }
  const out = new Uint8ClampedArray(dw * dh * 4);
  for (let y = 0; y < dh; y++) {
    for (let x = 0; x < dw; x++) {
      let r = 0, g = 0, bl = 0;
      for (let k = ys[y]; k < ys[y + 1]; k++) {
        const o = (yi[k] * dw + x) * 3, w = yw[k];
        r += rows[o] * w; g += rows[o + 1] * w; bl += rows[o + 2] * w;
      }
      const o = (y * dw + x) * 4; out[o] = roundEven(r); out[o + 1] = roundEven(g); out[o + 2] = roundEven(bl); out[o + 3] = 255;
    }
  }
  return { width: dw, height: dh, data: out };
}

/** cv2.warpAffine(img, m, (size, size), INTER_LINEAR, BORDER_CONSTANT=border) -> RGB uint8 (size*size*3). */
export function warpAffine(img, m, size, border = [0, 0, 0]) {
  const inv = invert(m), w = img.width, h = img.height, src = img.data;
  const out = new Uint8Array(size * size * 3);
  const px = (x, y, c) => (x < 0 || y < 0 || x >= w || y >= h) ? border[c] : src[(y * w + x) * 4 + c];
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const sx = inv[0][0] * x + inv[0][1] * y + inv[0][2], sy = inv[1][0] * x + inv[1][1] * y + inv[1][2];
      const x0 = Math.floor(sx), y0 = Math.floor(sy), fx = sx - x0, fy = sy - y0;
      for (let c = 0; c < 3; c++) {
        const v = (px(x0, y0, c) * (1 - fx) + px(x0 + 1, y0, c) * fx) * (1 - fy)
                + (px(x0, y0 + 1, c) * (1 - fx) + px(x0 + 1, y0 + 1, c) * fx) * fy;
        out[(y * size + x) * 3 + c] = Math.min(255, Math.max(0, Math.round(v)));
      }
    }
  }
  return out;
}

/** The aligned crop (align.warp_image): area pre-shrink when the face is scaled below 0.5, then bilinear. */
export function warpImage(img, m, pre) {
  const s = pre.input_size;
  if (scaleOf(m) < 0.5) {
    const f = scaleOf(m) * 1.5;
    const small = resizeArea(img, roundEven(img.width * f), roundEven(img.height * f), 1 / f, 1 / f);
    const fx = small.width / img.width, fy = small.height / img.height;
    // resize maps pixel centres by x' = (x + 0.5) * f - 0.5
    const preM = [[fx, 0, 0.5 * fx - 0.5], [0, fy, 0.5 * fy - 0.5]];
    return warpAffine(small, compose(m, invert(preM)), s, pre.border_value);
  }
  return warpAffine(img, m, s, pre.border_value);
}

function padImage(img, top, right, bottom, left) {
  const w = img.width + left + right, h = img.height + top + bottom;
  const out = new Uint8ClampedArray(w * h * 4);
  for (let y = 0; y < img.height; y++) {
    out.set(img.data.subarray(y * img.width * 4, (y + 1) * img.width * 4), ((y + top) * w + left) * 4);
  }
  return { width: w, height: h, data: out };
}

// ---- YuNet ---------------------------------------------------------------------------------------------------------
// defaults; FaceAnalyzerWeb.create replaces them with models/detector.json, written by build.py from faceanalysis.detect
export const DETECTOR = {
  scoreThreshold: 0.6, nmsThreshold: 0.3, topK: 5000, minFace: 8, padRetry: 0.25, smallFace: 40,
  detFacePx: 24, autoMinSide: 640, autoMaxSide: 2048, searchSide: 640,
};

/** Longer side used for detection (YuNetDetector.detection_side). */
export function detectionSide(h, w, maxSide = null) {
  const long = Math.max(h, w);
  if (maxSide) return Math.min(long, maxSide);
  const want = Math.ceil(long * DETECTOR.detFacePx / DETECTOR.smallFace);
  return Math.min(long, Math.max(DETECTOR.autoMinSide, Math.min(want, DETECTOR.autoMaxSide)));
}

function rectOverlap(a, b) {  // cv::dnn::NMSBoxes on Rect2i
  const x0 = Math.max(a[0], b[0]), y0 = Math.max(a[1], b[1]);
  const x1 = Math.min(a[0] + a[2], b[0] + b[2]), y1 = Math.min(a[1] + a[3], b[1] + b[3]);
  const inter = (x1 > x0 && y1 > y0) ? (x1 - x0) * (y1 - y0) : 0;
  const union = a[2] * a[3] + b[2] * b[3] - inter;
  return union > 0 ? inter / union : 0;
}

/** Rows (x, y, w, h, 5 x (x, y), score) of cv::FaceDetectorYN::detect on one RGBA image. */
export async function runYunet(ort, session, img) {
  const padW = Math.floor((img.width - 1) / 32 + 1) * 32, padH = Math.floor((img.height - 1) / 32 + 1) * 32;
  const plane = padW * padH, x = new Float32Array(3 * plane);  // BGR planes, 0..255, zero padding right / bottom
  for (let y = 0; y < img.height; y++) {
    for (let c = 0; c < img.width; c++) {
      const o = (y * img.width + c) * 4, d = y * padW + c;
      x[d] = img.data[o + 2]; x[plane + d] = img.data[o + 1]; x[2 * plane + d] = img.data[o];
    }
  }
  const out = await session.run({ [session.inputNames[0]]: new ort.Tensor("float32", x, [1, 3, padH, padW]) });
  const faces = [];
  for (const st of [8, 16, 32]) {
    const cols = padW / st, rows = padH / st;
    const cls = out[`cls_${st}`].data, obj = out[`obj_${st}`].data, bb = out[`bbox_${st}`].data, kp = out[`kps_${st}`].data;
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        const i = r * cols + c;
        const score = Math.sqrt(Math.min(Math.max(cls[i], 0), 1) * Math.min(Math.max(obj[i], 0), 1));
        if (score < DETECTOR.scoreThreshold) continue;
        const cx = (c + bb[i * 4]) * st, cy = (r + bb[i * 4 + 1]) * st;
        const w = Math.exp(bb[i * 4 + 2]) * st, h = Math.exp(bb[i * 4 + 3]) * st;
        const row = [cx - w / 2, cy - h / 2, w, h];
        for (let n = 0; n < 5; n++) row.push((kp[i * 10 + 2 * n] + c) * st, (kp[i * 10 + 2 * n + 1] + r) * st);
        row.push(score);
        faces.push(row);
      }
    }
  }
  if (faces.length <= 1) return faces;
  // NMS as cv::dnn::NMSBoxes (integer rects, score > threshold, stable order by score)
  const order = faces.map((f, i) => i).filter((i) => faces[i][14] > DETECTOR.scoreThreshold)
    .sort((a, b) => faces[b][14] - faces[a][14] || a - b);
  const rects = faces.map((f) => f.slice(0, 4).map((v) => Math.trunc(v)));
  const keep = [];
  for (const i of order) {
    if (keep.every((k) => rectOverlap(rects[i], rects[k]) <= DETECTOR.nmsThreshold)) keep.push(i);
    if (keep.length >= DETECTOR.topK) break;
  }
  return keep.map((i) => faces[i]);
}

function rowsToDets(rows, toImage) {  // detect._rows_to_dets (upright frame)
  const cont = [[...toImage[0]], [...toImage[1]]];
  cont[0][2] = toImage[0][2] + 0.5 - (toImage[0][0] + toImage[0][1]) * 0.5;
  cont[1][2] = toImage[1][2] + 0.5 - (toImage[1][0] + toImage[1][1]) * 0.5;
  return rows.map((f) => {
    const [x, y, bw, bh] = f;
    const cs = [[x, y], [x + bw, y], [x, y + bh], [x + bw, y + bh]].map((p) => apply(cont, p));
    const xs = cs.map((p) => p[0]), ys = cs.map((p) => p[1]);
    const kps = [0, 1, 2, 3, 4].map((n) => apply(toImage, [f[4 + 2 * n], f[5 + 2 * n]]));
    return { bbox: [Math.min(...xs), Math.min(...ys), Math.max(...xs), Math.max(...ys)], score: f[14], kps5: kps };
  }).filter((d) => d.bbox.every(Number.isFinite) && d.kps5.flat().every(Number.isFinite));
}

function iou(a, b) {
  const x0 = Math.max(a[0], b[0]), y0 = Math.max(a[1], b[1]), x1 = Math.min(a[2], b[2]), y1 = Math.min(a[3], b[3]);
  const inter = Math.max(0, x1 - x0) * Math.max(0, y1 - y0);
  const union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
  return union > 0 ? inter / union : 0;
}

function covered(a, b) {
  const inter = Math.max(0, Math.min(a[2], b[2]) - Math.max(a[0], b[0])) * Math.max(0, Math.min(a[3], b[3]) - Math.max(a[1], b[1]));
  const area = (a[2] - a[0]) * (a[3] - a[1]);
  return area > 0 ? inter / area : 0;
}

/** Upright faces in an RGBA image (YuNetDetector.detect with rotations="off": adaptive size, coarse pass,
 * pad retry; the orientation vote for faces turned 90 / 180 degrees is not ported). */
export async function detectFaces(ort, session, img, maxSide = null) {
  const side = detectionSide(img.height, img.width, maxSide);
  const scaled = (limit) => {
    const scale = Math.min(1, limit / Math.max(img.width, img.height));
    const small = scale === 1 ? img
      : resizeArea(img, Math.max(1, roundEven(img.width * scale)), Math.max(1, roundEven(img.height * scale)));
    const sx = small.width / img.width, sy = small.height / img.height;
    return [small, [[1 / sx, 0, 0.5 / sx - 0.5], [0, 1 / sy, 0.5 / sy - 0.5]]];
  };
  let [small, m] = scaled(side);
  let dets = rowsToDets(await runYunet(ort, session, small), m);
  if (side > DETECTOR.searchSide) {  // faces too large for YuNet's anchors at the fine size
    const [s2, m2] = scaled(DETECTOR.searchSide);
    const coarse = rowsToDets(await runYunet(ort, session, s2), m2).map((d) => ({ ...d, coarse: true }));
    const keep = [];
    for (const d of [...dets, ...coarse].sort((a, b) => b.score - a.score)) {
      if (keep.every((k) => iou(d.bbox, k.bbox) < DETECTOR.nmsThreshold
          && (!!d.coarse === !!k.coarse || covered(d.bbox, k.bbox) < 0.7))) keep.push(d);
    }
    dets = keep.map(({ coarse: _, ...d }) => d);
  }
  if (!dets.length && DETECTOR.padRetry > 0) {  // faces filling the frame
    [small, m] = scaled(Math.min(side, DETECTOR.searchSide));
    const off = roundEven(DETECTOR.padRetry * Math.max(small.width, small.height));
    const rows = await runYunet(ort, session, padImage(small, off, off, off, off));
    dets = rowsToDets(rows, compose(m, [[1, 0, -off], [0, 1, -off]]));
  }
  return dets.filter((d) => Math.min(d.bbox[2] - d.bbox[0], d.bbox[3] - d.bbox[1]) >= DETECTOR.minFace
    && d.score >= DETECTOR.scoreThreshold).sort((a, b) => b.score - a.score);
}

// ---- model outputs -> image frame (tasks/*.to_face) ---------------------------------------------------------------
/** The largest side of a parsing mask labelled pixel by pixel; larger faces get a coarser grid upscaled by nearest
 * neighbour (tasks/parsing.py MAX_MASK_SIDE). */
export const MAX_MASK_SIDE = 512;

/** Class ids on a w x h grid whose pixel p reads the padded logit maps at m @ p: each class's logits bilinearly
 * (cv2.warpAffine, constant border: background 1e4, other classes -1e4), then the argmax (parsing._argmax_warp). */
function argmaxWarp(padded, nCls, P, m, w, h) {
  const mask = new Uint8Array(w * h), PP = P * P;
  const at = (c, yy, xx) => (xx < 0 || yy < 0 || xx >= P || yy >= P) ? (c === 0 ? 1e4 : -1e4) : padded[c * PP + yy * P + xx];
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const u = m[0][0] * x + m[0][1] * y + m[0][2], v = m[1][0] * x + m[1][1] * y + m[1][2];
      const u0 = Math.floor(u), v0 = Math.floor(v), fu = u - u0, fv = v - v0;
      const w00 = (1 - fu) * (1 - fv), w01 = fu * (1 - fv), w10 = (1 - fu) * fv, w11 = fu * fv;
      let best = -Infinity, bestId = 0;
      if (u0 >= 0 && v0 >= 0 && u0 + 1 < P && v0 + 1 < P) {
        const i = v0 * P + u0;
        for (let c = 0, b = i; c < nCls; c++, b += PP) {
          const val = padded[b] * w00 + padded[b + 1] * w01 + padded[b + P] * w10 + padded[b + P + 1] * w11;
          if (val > best) { best = val; bestId = c; }
        }
      } else {
        for (let c = 0; c < nCls; c++) {
          const val = at(c, v0, u0) * w00 + at(c, v0, u0 + 1) * w01 + at(c, v0 + 1, u0) * w10 + at(c, v0 + 1, u0 + 1) * w11;
          if (val > best) { best = val; bestId = c; }
        }
      }
      mask[y * w + x] = bestId;
    }
  }
  return mask;
}

/** The subject's (left, right) class pairs: eyes, brows, ears (tasks/parsing.py SIDED_PAIRS). */
const SIDED_PAIRS = [[4, 5], [6, 7], [8, 9]];

/** A copy of the half x half logit maps (half = the map side) in which each sided pair takes the larger of its two logits on its own side
 * of the crop's midline (the template's eye midpoint) and -1e4 on the other (tasks/parsing.py assign_sides). field: the maps cover
 * that many crop sides, centred on the crop (parsing_wide). */
export function assignSides(logits, half, pre, field = 1) {
  const out = Float32Array.from(logits), s = pre.input_size;
  const mid = (pre.template[0][0] + pre.template[1][0]) / 2 * s, ring = (field - 1) / 2 * s;
  for (const [l, r] of SIDED_PAIRS) {
    for (let y = 0; y < half; y++) {
      for (let x = 0; x < half; x++) {
        const il = (l * half + y) * half + x, ir = (r * half + y) * half + x, both = Math.max(out[il], out[ir]);
        const subjectLeft = (x + 0.5) * s * field / half - ring >= mid;  // crop right = subject's left
        out[il] = subjectLeft ? both : -1e4;
        out[ir] = subjectLeft ? -1e4 : both;
      }
    }
  }
  return out;
}

/** Class ids over the image region the crop covers, or the wider square of field x its side when the logits are
 * parsing_wide (tasks/parsing.py ParsingTask.to_face). */
export function parsingToImage(logits, nCls, half, matrix, pre, imgW, imgH, field = 1) {
  logits = assignSides(logits, half, pre, field);
  const s = pre.input_size, inv = invert(matrix), ring = (field - 1) / 2 * s;
  const corners = [[-ring, -ring], [s + ring, -ring], [-ring, s + ring], [s + ring, s + ring]]
    .map((p) => apply(inv, [p[0] - 0.5, p[1] - 0.5]));
  let x0 = Math.floor(Math.min(...corners.map((p) => p[0]))), y0 = Math.floor(Math.min(...corners.map((p) => p[1])));
  let x1 = Math.ceil(Math.max(...corners.map((p) => p[0]))) + 1, y1 = Math.ceil(Math.max(...corners.map((p) => p[1]))) + 1;
  x0 = Math.max(x0, 0); y0 = Math.max(y0, 0); x1 = Math.min(x1, imgW); y1 = Math.min(y1, imgH);
  if (x1 <= x0 || y1 <= y0) return { box: [0, 0, 0, 0], width: 0, height: 0, mask: new Uint8Array(0), field, side: s };
  // the maps are k = half / s of the crop resolution (1/2, or 1 with parsing_stride 1; pixel centres aligned),
  // with one replicated pixel of padding
  const P = half + 2, padded = new Float32Array(nCls * P * P), k = half / (s * field);
  for (let c = 0; c < nCls; c++) {
    for (let yy = 0; yy < P; yy++) {
      const sy = Math.min(Math.max(yy - 1, 0), half - 1);
      for (let xx = 0; xx < P; xx++) {
        padded[(c * P + yy) * P + xx] = logits[(c * half + sy) * half + Math.min(Math.max(xx - 1, 0), half - 1)];
      }
    }
  }
  const o = k * (ring + 0.5) + 0.5;
  const shifted = compose([[k, 0, o], [0, k, o]], compose(matrix, [[1, 0, x0], [0, 1, y0]]));
  const w = x1 - x0, h = y1 - y0, f = Math.min(1, MAX_MASK_SIDE / Math.max(w, h));
  let mask;
  if (f < 1) {  // big faces: label a coarser grid, then upscale (nearest, as cv2.resize INTER_NEAREST)
    const gw = Math.max(1, roundEven(w * f)), gh = Math.max(1, roundEven(h * f)), sx = w / gw, sy = h / gh;
    const small = argmaxWarp(padded, nCls, P, compose(shifted, [[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5]]), gw, gh);
    mask = new Uint8Array(w * h);
    const fx = gw / w, fy = gh / h;
    for (let y = 0; y < h; y++) {
      const yy = Math.min(Math.floor(y * fy), gh - 1);
      for (let x = 0; x < w; x++) mask[y * w + x] = small[yy * gw + Math.min(Math.floor(x * fx), gw - 1)];
    }
  } else {
    mask = argmaxWarp(padded, nCls, P, shifted, w, h);
  }
  return { box: [x0, y0, x1, y1], width: w, height: h, mask, field, side: s };
}

// ---- the analyzer --------------------------------------------------------------------------------------------------
export class FaceAnalyzerWeb {
  /** ort: the onnxruntime-web module; urls: {model, sidecar, yunet, detector (settings JSON, optional)}. */
  static async create(ort, urls, options = {}) {
    const side = await (await fetch(urls.sidecar)).json();
    if (urls.detector) {
      const r = await fetch(urls.detector);
      if (r.ok) Object.assign(DETECTOR, await r.json());
    }
    const opts = { executionProviders: ["wasm"], graphOptimizationLevel: "all", ...options };
    const [model, yunet] = await Promise.all([
      ort.InferenceSession.create(urls.model, opts), ort.InferenceSession.create(urls.yunet, opts)]);
    return new FaceAnalyzerWeb(ort, side, model, yunet);
  }

  constructor(ort, sidecar, model, yunet) {
    this.ort = ort; this.sidecar = sidecar; this.model = model; this.yunet = yunet;
    const inp = sidecar.input, pre = (sidecar.config && sidecar.config.preprocess) || {};
    // everything about the crop comes from the artifact's sidecar, nothing is re-typed here
    this.pre = {
      input_size: inp.input_size, mean: inp.mean, std: inp.std, template: inp.alignment_template,
      border_value: pre.border_value || [0, 0, 0],
    };
    this.classNames = sidecar.class_names;
    this.templatePx = this.pre.template.map(([x, y]) => [x * this.pre.input_size - 0.5, y * this.pre.input_size - 0.5]);
  }

  /** All faces of an RGBA image, mapped back to its pixels; timings in ms. */
  async analyze(img, { maxSide = null } = {}) {
    const t0 = performance.now();
    const dets = await detectFaces(this.ort, this.yunet, img, maxSide);
    const t1 = performance.now();
    const s = this.pre.input_size, n = dets.length, plane = s * s;
    const mats = dets.map((d) => similarityMatrix(d.kps5, this.templatePx));
    const x = new Float32Array(n * 3 * plane);
    const f = Math.fround, mean = this.pre.mean.map(f), std = this.pre.std.map(f);
    const crops = [];
    mats.forEach((m, i) => {
      const crop = warpImage(img, m, this.pre);
      crops.push(crop);
      for (let p = 0; p < plane; p++) {
        for (let c = 0; c < 3; c++) x[(i * 3 + c) * plane + p] = f(f(f(crop[p * 3 + c] / 255) - mean[c]) / std[c]);
      }
    });
    const t2 = performance.now();
    let out = {};
    if (n) out = await this.model.run({ [this.model.inputNames[0]]: new this.ort.Tensor("float32", x, [n, 3, s, s]) });
    const t3 = performance.now();
    const faces = dets.map((d, i) => this.toFace(d, mats[i], out, i, n, img));
    const t4 = performance.now();
    return { faces, crops, width: img.width, height: img.height,
             timings: { detect: t1 - t0, align: t2 - t1, model: t3 - t2, postprocess: t4 - t3, total: t4 - t0 } };
  }

  toFace(det, m, out, i, n, img) {
    const get = (name) => {
      const t = out[name]; if (!t) return null;
      const per = t.data.length / n; return t.data.subarray(i * per, (i + 1) * per);
    };
    const face = { bbox: det.bbox, score: det.score, keypoints5: det.kps5, crop_matrix: m };
    const inv = invert(m);
    const lm = get("landmarks");
    if (lm) {
      face.landmarks_crop = Array.from({ length: lm.length / 2 }, (_, k) => [lm[2 * k], lm[2 * k + 1]]);
      face.landmarks = face.landmarks_crop.map((p) => apply(inv, p));
    }
    const pose = get("pose");
    if (pose) {
      let roll = pose[2] - rotationCcwDeg(m);
      roll = ((((roll + 180) % 360) + 360) % 360) - 180;
      face.pose = { yaw: pose[0], pitch: pose[1], roll };
    }
    const attrs = get("attributes");
    if (attrs) face.attributes = Object.fromEntries(this.classNames.attributes.map((a, k) => [a, attrs[k]]));
    const age = get("age"), gender = get("gender");
    if (age) face.age = age[0];
    if (gender) { face.gender = gender[0]; face.gender_label = gender[0] >= 0.5 ? "male" : "female"; }
    const expr = get("expression");
    if (expr) {
      const names = this.classNames.expression;
      let best = 0; for (let k = 1; k < expr.length; k++) if (expr[k] > expr[best]) best = k;
      face.expression = names[best];
      face.expression_probs = Object.fromEntries(names.map((c, k) => [c, expr[k]]));
    }
    const emb = get("embedding");
    if (emb) face.embedding = Array.from(emb);
    const par = get("parsing"), wide = get("parsing_wide");
    if (par) {
      const nCls = this.classNames.parsing.length, half = Math.round(Math.sqrt(par.length / nCls));
      const side = wide ? Math.round(Math.sqrt(wide.length / nCls)) : half;  // the wider field when the model gives it
      face.parsing = parsingToImage(wide || par, nCls, side, m, this.pre, img.width, img.height, side / half);
      face.parsing.class_names = this.classNames.parsing;
    }
    return face;
  }
}
