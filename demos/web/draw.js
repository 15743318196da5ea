// Drawing of every task on a 2D canvas (the browser twin of faceanalysis/draw.py, simplified).

// parsing colours: faceanalysis/tasks/parsing.py PALETTE (class 0, background, is left alone)
const PALETTE = [[0, 0, 0], [255, 204, 153], [255, 128, 0], [128, 128, 128], [0, 128, 255], [0, 200, 255], [128, 64, 0],
  [180, 90, 20], [255, 0, 128], [255, 80, 160], [200, 0, 0], [255, 60, 60], [255, 100, 100], [90, 50, 20],
  [0, 160, 0], [255, 255, 0], [255, 0, 255], [255, 230, 200], [0, 0, 200]];
// iBUG 68 contours (faceanalysis/tasks/landmarks.py CONTOURS)
const range = (a, b) => Array.from({ length: b - a }, (_, i) => a + i);
const CONTOURS = [range(0, 17), range(17, 22), range(22, 27), range(27, 31), range(31, 36), [...range(36, 42), 36],
  [...range(42, 48), 42], [...range(48, 60), 48], [...range(60, 68), 60]];
const PARSING_ALPHA = 0.45;
const FEATHER = 0.12;  // tasks/parsing.py FEATHER

function drawParsing(ctx, face) {
  const p = face.parsing;
  if (!p || !p.width) return;
  // translucent class colours in image pixels, drawn through the context's transform (background left alone)
  const layer = document.createElement("canvas");
  layer.width = p.width; layer.height = p.height;
  const lctx = layer.getContext("2d"), data = lctx.createImageData(p.width, p.height), d = data.data;
  // fade out toward the border of the parsing field (the crop, or field x its side with the context ring) over
  // FEATHER x the crop side, as tasks/parsing.py crop_fade: the field's straight edges never show
  const m = face.crop_matrix, side = p.side || 128, ring = ((p.field || 1) - 1) / 2 * side, full = side + 2 * ring;
  for (let i = 0; i < p.mask.length; i++) {
    const c = p.mask[i];
    if (!c) continue;
    const x = p.box[0] + (i % p.width), y = p.box[1] + Math.floor(i / p.width);
    const u = m[0][0] * x + m[0][1] * y + m[0][2] + ring + 0.5, v = m[1][0] * x + m[1][1] * y + m[1][2] + ring + 0.5;
    let r = Math.min(1, Math.max(0, Math.min(u, full - u, v, full - v) / (FEATHER * side)));
    r = r * r * (3 - 2 * r);
    const col = PALETTE[c % PALETTE.length];
    d[i * 4] = col[0]; d[i * 4 + 1] = col[1]; d[i * 4 + 2] = col[2]; d[i * 4 + 3] = 255 * PARSING_ALPHA * r;
  }
  lctx.putImageData(data, 0, 0);
  ctx.drawImage(layer, p.box[0], p.box[1]);
}

function drawPose(ctx, face, line) {
  if (!face.pose) return;
  const rad = Math.PI / 180, yaw = face.pose.yaw * rad, pitch = face.pose.pitch * rad, roll = -face.pose.roll * rad;
  const [cy, sy, cp, sp, cr, sr] = [Math.cos(yaw), Math.sin(yaw), Math.cos(pitch), Math.sin(pitch), Math.cos(roll), Math.sin(roll)];
  const mul = (a, b) => a.map((row) => b[0].map((_, j) => row.reduce((s, v, k) => s + v * b[k][j], 0)));
  const r = mul(mul([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]], [[1, 0, 0], [0, cp, -sp], [0, sp, cp]]),
    [[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]]);
  const [bx0, , bx1] = face.bbox, len = 0.5 * (bx1 - bx0), c = face.keypoints5[2];
  // axes: x (subject's left, red), y (down, green), z (toward the camera, blue)
  for (const [axis, colour] of [[[1, 0, 0], "#ff0000"], [[0, 1, 0], "#00ff00"], [[0, 0, -1], "#0000ff"]]) {
    const dx = r[0][0] * axis[0] + r[0][1] * axis[1] + r[0][2] * axis[2];
    const dy = r[1][0] * axis[0] + r[1][1] * axis[1] + r[1][2] * axis[2];
    const ex = c[0] + len * dx, ey = c[1] + len * dy;
    ctx.strokeStyle = colour; ctx.fillStyle = colour; ctx.lineWidth = line;
    ctx.beginPath(); ctx.moveTo(c[0], c[1]); ctx.lineTo(ex, ey); ctx.stroke();
    const a = Math.atan2(ey - c[1], ex - c[0]), tip = Math.max(4, 0.15 * len);
    ctx.beginPath(); ctx.moveTo(ex, ey);
    ctx.lineTo(ex - tip * Math.cos(a - 0.4), ey - tip * Math.sin(a - 0.4));
    ctx.lineTo(ex - tip * Math.cos(a + 0.4), ey - tip * Math.sin(a + 0.4)); ctx.closePath(); ctx.fill();
  }
}

function label(ctx, lines, x, y, colour, font) {
  ctx.font = `${font}px sans-serif`;
  const pad = font / 5, w = Math.max(...lines.map((t) => ctx.measureText(t).width)) + 2 * pad;
  const h = lines.length * font * 1.2 + 2 * pad;
  ctx.fillStyle = "rgba(0, 0, 0, 0.6)"; ctx.fillRect(x, y, w, h);
  ctx.fillStyle = colour; ctx.textBaseline = "top";
  lines.forEach((t, i) => ctx.fillText(t, x + pad, y + pad + i * font * 1.2));
  return h;
}

/** Draw the image and every face's tasks (parsing, box, landmarks, 5 points, pose axes and labels), all in image
 * pixels, magnified by ``zoom`` (the canvas must be zoom times the image's size). */
export function drawResult(ctx, source, faces, zoom = 1) {
  ctx.setTransform(zoom, 0, 0, zoom, 0, 0);
  ctx.drawImage(source, 0, 0);
  for (const f of faces) drawParsing(ctx, f);
  for (const f of faces) {
    const [x0, y0, x1, y1] = f.bbox, size = x1 - x0, line = Math.max(1 / zoom, size / 120);
    ctx.lineWidth = line; ctx.strokeStyle = "#00ff80";
    ctx.lineJoin = "round";
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    if (f.landmarks) {
      ctx.strokeStyle = "rgba(0, 255, 128, 0.8)";
      for (const idx of CONTOURS) {
        ctx.beginPath();
        idx.forEach((k, i) => (i ? ctx.lineTo(...f.landmarks[k]) : ctx.moveTo(...f.landmarks[k])));
        ctx.stroke();
      }
      ctx.fillStyle = "#ffffff";
      const r = Math.max(1.2 / zoom, size / 100);
      for (const [x, y] of f.landmarks) { ctx.beginPath(); ctx.arc(x, y, r, 0, 2 * Math.PI); ctx.fill(); }
    }
    ctx.fillStyle = "#ff00ff";
    for (const [x, y] of f.keypoints5) { ctx.beginPath(); ctx.arc(x, y, Math.max(1.5, size / 60), 0, 2 * Math.PI); ctx.fill(); }
    drawPose(ctx, f, line);
    const font = Math.max(11 / zoom, Math.min(18, size / 9));
    if (f.expression) {
      const p = f.expression_probs[f.expression];
      label(ctx, [`${f.expression} ${(100 * p).toFixed(0)}%`], x0, Math.max(0, y0 - font * 1.6), "#ffe600", font);
    }
    const lines = [];
    if (f.age !== undefined) lines.push(`${f.gender_label === "male" ? "M" : "F"} ${f.age.toFixed(0)}y`);
    if (f.attributes) {
      Object.entries(f.attributes).filter(([n, p]) => n !== "Male" && p > 0.5).sort((a, b) => b[1] - a[1]).slice(0, 3)
        .forEach(([n]) => lines.push(n.replace(/_/g, " ")));
    }
    if (f.pose) lines.push(`y/p/r ${f.pose.yaw.toFixed(0)}/${f.pose.pitch.toFixed(0)}/${f.pose.roll.toFixed(0)}`);
    if (lines.length) label(ctx, lines, x1 + 3, y0, "#ffffff", font);
  }
}
