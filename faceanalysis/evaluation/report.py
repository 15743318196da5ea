"""The evaluation report: the results table (Markdown), ``results.json``, PNG plots, README update."""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import FaceAnalysisError
from .protocols import Context, Example, Row

MAIN_METHODS = ("FaceXFormer", "Faceptor", "SwinFace")
README_START, README_END = "<!-- eval-table:start -->", "<!-- eval-table:end -->"


def load_published() -> dict[str, Any]:
    """The bundled ``published.json`` (published numbers, their settings and citations)."""
    return json.loads(resources.files("faceanalysis.evaluation").joinpath("published.json").read_text())


def _fmt(v: float | None, metric: str = "") -> str:
    if v is None or not np.isfinite(v):
        return "-"
    return f"{v:.3f}" if "AUC" in metric else f"{v:.2f}"


def results_table(rows: list[Row], published: dict[str, Any]) -> str:
    """One Markdown table: task, dataset, split, metric, ours, teachers, published values, note index;
    followed by the numbered notes (our protocol, the published protocol, how comparable they are)."""
    notes: list[str] = []

    def note_id(text: str) -> int:
        if text not in notes:
            notes.append(text)
        return notes.index(text) + 1

    head = ["task", "dataset", "split", "metric", "ours", "teacher (local)", *MAIN_METHODS, "others", "n", "notes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        bench = published["benchmarks"].get(r.key, {})
        vals = bench.get("values", {})
        cells = []
        for m in MAIN_METHODS:
            v = vals.get(m)
            cells.append(f"{v['value']:g} ({v['setting']})" if v else "-")
        others = "; ".join(f"{m} {v['value']:g} ({v['setting']})" for m, v in vals.items() if m not in MAIN_METHODS)
        teacher = "; ".join(f"{k} {_fmt(v, r.metric)}" for k, v in r.teachers.items()) or "-"
        refs = []
        if r.note:
            refs.append(note_id(r.note))
        if bench:
            refs.append(note_id(f"{bench['comparable']}: {bench['protocol_note']}"))
        lines.append("| " + " | ".join([r.task, r.dataset, r.split, r.metric, f"**{_fmt(r.value, r.metric)}**", teacher,
                                         *cells, others or "-", str(r.n), ",".join(f"[{i}]" for i in refs) or "-"]) + " |")
    lines.append("")
    lines += [f"[{i}] {t}  " for i, t in enumerate(notes, 1)]
    return "\n".join(lines).rstrip() + "\n"


def citations(published: dict[str, Any]) -> str:
    return "\n".join(f"- **{k}**: {v}" for k, v in published["sources"].items()) + "\n"


def update_readme(path: str | Path, block: str) -> None:
    """Replace the text between the eval-table markers of ``path`` with ``block``."""
    path = Path(path)
    if not path.is_file():
        raise FaceAnalysisError(f"--update-readme: {path} does not exist")
    text = path.read_text()
    a, b = text.find(README_START), text.find(README_END)
    if a < 0 or b < 0 or b < a:
        raise FaceAnalysisError(f"--update-readme: {path} lacks the markers {README_START} ... {README_END}; "
                                "add them where the table should go")
    path.write_text(text[:a + len(README_START)] + "\n" + block.strip() + "\n" + text[b:])


def protocol_of(row: dict[str, Any]) -> str:
    """The protocol (``PROTOCOLS`` key) a ``results.json`` row came from. Reports written before rows carried
    ``protocol`` are read by their dataset column (``"300w (HELEN)"`` -> ``300w_partial``)."""
    from .protocols import DATASETS

    if row.get("protocol"):
        return str(row["protocol"])
    first = str(row.get("dataset", "")).split(" ")[0]
    return next((d for d in DATASETS if d == first or d.startswith(first + "_")), "")


def merge_previous(ctx: Context, previous: dict[str, Any], ran: list[str]) -> list[str]:
    """Complete ``ctx`` with the rows, details and notes of the protocols *not* in ``ran`` from a previous
    ``results.json`` (``previous``), so re-scoring some protocols keeps the rest of the table. Rows end up
    in the order of ``DATASETS``. Returns the protocols taken from ``previous``."""
    from dataclasses import fields

    from .protocols import DATASETS

    names = {f.name for f in fields(Row)}
    old: dict[str, list[Row]] = {}
    for r in previous.get("rows", []):
        d = protocol_of(r)
        if d and d not in ran:
            old.setdefault(d, []).append(Row(**{**{k: v for k, v in r.items() if k in names}, "protocol": d}))
    kept = [d for d in DATASETS if d in old]
    new = {d: [r for r in ctx.rows if r.protocol == d] for d in DATASETS}
    other = [r for r in ctx.rows if r.protocol not in DATASETS]
    ctx.rows = [r for d in DATASETS for r in (new[d] if d in ran else old.get(d, []))] + other
    details = dict(ctx.details)
    for k, v in previous.get("details", {}).items():
        if k.split("/")[0] in kept and k not in details:
            details[k] = v
    order = {d: i for i, d in enumerate(DATASETS)}
    ctx.details.clear()
    ctx.details.update(sorted(details.items(), key=lambda kv: order.get(kv[0].split("/")[0], len(order))))
    ctx.notes[:0] = [n for n in previous.get("notes", []) if n.split(":")[0].split(" ")[0] in kept]
    return kept


# ---- plots ----------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_ced(d: dict[str, Any], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4))
    x = np.array(d["ced_x"]) * 100
    ax.plot(x, d["ced_io"], label=f"inter-ocular (NME {d['nme_io']:.2f}%, AUC@8 {d['auc8_io']:.3f})")
    ax.plot(x, d["ced_ip"], label=f"inter-pupil (NME {d['nme_ip']:.2f}%)")
    ax.axvline(8, color="grey", ls="--", lw=0.8)
    ax.set(xlabel="NME (%)", ylabel="fraction of images", title=f"CED, 300-W HELEN test (n={d['n']})", ylim=(0, 1))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_confusion(conf: list[list[int]], classes: list[str], title: str, path: Path) -> None:
    plt = _plt()
    c = np.array(conf, np.float64)
    norm = c / np.maximum(c.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{int(c[i, j])}", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_roc(d: dict[str, Any], path: Path, title: str | None = None, min_far: float = 1e-4) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, r in (("ours", d["ours"]), ("SFace teacher", d.get("teacher_sface"))):
        if r:
            far = np.maximum(np.array(r["roc_far"]), min_far)
            ax.plot(far, np.array(r["roc_tar"]) * 100, label=f"{name} ({r['acc_mean']:.2f}% 10-fold)")
    ax.set_xscale("log")
    ax.set(xlabel="false accept rate", ylabel="true accept rate (%)", title=title or f"LFW ROC ({d['pairs']} pairs)",
           xlim=(min_far, 1), ylim=(0, 100))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_bars(values: dict[str, float], title: str, ylabel: str, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6, 0.28 * len(values)), 3.8))
    ax.bar(range(len(values)), list(values.values()), color="#4c72b0")
    ax.set_xticks(range(len(values)), list(values), rotation=70, ha="right", fontsize=7)
    ax.set(ylabel=ylabel, title=title, ylim=(0, 100))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def example_grid(examples: list[Example], fa, path: Path, side: int = 256) -> None:
    """Overlay every task's result on a few test images (upscaled to ``side`` for display)."""
    from ..detect import Detection
    from ..draw import draw

    plt = _plt()
    if not examples:
        return
    rgbs, dets = [], []
    for ex in examples:
        h, w = ex.image.shape[:2]
        s = side / max(h, w)
        rgb = cv2.resize(ex.image, (round(w * s), round(h * s)), interpolation=cv2.INTER_CUBIC)
        k = (ex.kps5 + 0.5) * s - 0.5
        c, r = k.mean(0), 1.4 * np.linalg.norm(k[1] - k[0])
        dets.append([Detection(bbox=np.r_[c - r, c + r].astype(np.float32), score=1.0, kps5=k.astype(np.float32))])
        rgbs.append(rgb)
    faces = fa.analyze_detections(rgbs, dets)
    cols = min(4, len(rgbs))
    rows = (len(rgbs) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, ex, rgb, f in zip(axes.ravel(), examples, rgbs, faces):
        ax.imshow(draw(rgb, f))
        ax.set_title(ex.title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(ctx: Context, out_dir: Path, meta: dict[str, Any], fa_examples=None,
                 json_path: Path | None = None) -> tuple[str, dict[str, Any]]:
    """Write ``summary.md``, ``results.json`` (or ``json_path``) and the PNG plots; returns the table
    (Markdown) and the JSON dict."""
    out_dir.mkdir(parents=True, exist_ok=True)
    published = load_published()
    table = results_table(ctx.rows, published)
    plots: list[tuple[str, str]] = []
    d = ctx.details
    if "300w_partial/landmarks" in d:
        plot_ced(d["300w_partial/landmarks"], out_dir / "ced_300w.png")
        plots.append(("CED curve, 300-W HELEN test", "ced_300w.png"))
    if "fer2013/expression" in d:
        e = d["fer2013/expression"]
        plot_confusion(e["fer2013_confusion"], e["classes"], f"FER2013 PrivateTest ({e['fer2013_acc']:.1f}%)",
                       out_dir / "confusion_fer2013.png")
        plot_confusion(e["ferplus_confusion"], e["classes"], f"FER+ Test majority ({e['ferplus_acc']:.1f}%)",
                       out_dir / "confusion_ferplus.png")
        plots += [("Confusion matrix, FER2013 labels", "confusion_fer2013.png"),
                  ("Confusion matrix, FER+ majority labels", "confusion_ferplus.png")]
    if "lfw/identity" in d:
        plot_roc(d["lfw/identity"], out_dir / "roc_lfw.png")
        plots.append(("ROC, LFW", "roc_lfw.png"))
    if "celeba_more/identity" in d:
        c = d["celeba_more/identity"]
        plot_roc(c, out_dir / "roc_celeba_more.png", min_far=1e-5,
                 title=f"ROC, unseen CelebA ids ({c['identities']} ids, {c['pairs_all']:,} pairs)")
        plots.append(("ROC, celeba_more val (unseen identities, all pairs)", "roc_celeba_more.png"))
    if "celebamask_mini/parsing" in d:
        p = d["celebamask_mini/parsing"]
        f1 = {c: v for c, v in p["per_class_f1"].items() if p["present"][c]}
        plot_bars(f1, f"Parsing F1 per class (mean F1 {p['mean_f1']:.1f}%)", "F1 (%)", out_dir / "parsing_f1.png")
        plots.append(("Per-class parsing F1, CelebAMask mini test", "parsing_f1.png"))
    if "celeba_attr/attributes" in d:
        a = d["celeba_attr/attributes"]
        plot_bars(a["per_attribute_acc"], f"CelebA attribute accuracy (mean {a['mean_acc']:.1f}%)", "accuracy (%)",
                  out_dir / "attributes_acc.png")
        plots.append(("Per-attribute accuracy, CelebA pack test", "attributes_acc.png"))
    if fa_examples is not None and ctx.examples:
        example_grid(ctx.examples, fa_examples, out_dir / "examples.png")
        plots.append(("Example overlays (test images)", "examples.png"))
    elif meta.get("merged_from") and (out_dir / "examples.png").is_file():
        plots.append(("Example overlays (test images, from the merged report's run)", "examples.png"))
    data = {"meta": meta, "rows": [r.__dict__ for r in ctx.rows], "details": d, "notes": ctx.notes,
            "published": published}
    json_path = json_path or out_dir / "results.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(data, indent=1, default=_json_default))
    md = ["# faceanalysis evaluation\n", _meta_md(meta), "## Results\n", table]
    if ctx.notes:
        md += ["## Run notes\n", "\n".join(f"- {n}" for n in ctx.notes) + "\n"]
    md += _details_md(d)
    md += ["## Plots\n"] + [f"### {t}\n\n![{t}]({f})\n" for t, f in plots]
    md += ["## Published numbers: sources\n", citations(published)]
    (out_dir / "summary.md").write_text("\n".join(md))
    return table, data


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _meta_md(meta: dict[str, Any]) -> str:
    return "\n".join(f"- {k}: `{v}`" for k, v in meta.items()) + "\n"


def _details_md(d: dict[str, Any]) -> list[str]:
    out: list[str] = []
    if "celebamask_mini/parsing" in d:
        p = d["celebamask_mini/parsing"]
        out += ["## Parsing per class (F1 / IoU, %)\n", "| class | F1 | IoU | in test masks |", "|---|---|---|---|"]
        out += [f"| {c} | {p['per_class_f1'][c]:.2f} | {p['per_class_iou'][c]:.2f} | {'yes' if p['present'][c] else 'no'} |"
                for c in p["per_class_f1"]]
        out.append("")
    if "celeba_attr/attributes" in d:
        a = d["celeba_attr/attributes"]["per_attribute_acc"]
        out += ["## Attributes per attribute (accuracy, %)\n", "| attribute | accuracy |", "|---|---|"]
        out += [f"| {k} | {v:.2f} |" for k, v in a.items()] + [""]
    if "lfw/identity" in d:
        l = d["lfw/identity"]
        out += ["## LFW folds\n", "| fold | accuracy (%) | threshold |", "|---|---|---|"]
        out += [f"| {i} | {a:.2f} | {t:.4f} |" for i, (a, t) in enumerate(zip(l["ours"]["fold_acc"], l["ours"]["thresholds"]))]
        out.append(f"\nmean {l['ours']['acc_mean']:.2f} ± {l['ours']['acc_std']:.2f}; detector fallbacks: "
                   f"{l['detector_fallbacks']} of {l['images']} images\n")
    if "celeba_more/identity" in d:
        c = d["celeba_more/identity"]
        t = c.get("teacher_sface") or {}
        p = c["protocol"]
        out += ["## Unseen-identity CelebA verification (celeba_more val) folds\n",
                f"{c['identities']} identities, {c['images']} images; identities per fold {c['identities_per_fold']}; "
                f"pairs drawn within each fold (seed {p['seed']}); threshold from the other folds.\n",
                "| fold | identities | genuine | impostor | accuracy (%) | threshold | SFace accuracy (%) |",
                "|---|---|---|---|---|---|---|"]
        for i, (a, th) in enumerate(zip(c["ours"]["fold_acc"], c["ours"]["thresholds"])):
            ta = f"{t['fold_acc'][i]:.2f}" if t else "-"
            out.append(f"| {i} | {c['identities_per_fold'][i]} | {p['genuine_per_fold'][i]} | "
                       f"{p['impostor_per_fold'][i]} | {a:.2f} | {th:.4f} | {ta} |")
        o = c["ours"]
        out.append(f"\nours: {o['acc_mean']:.2f} ± {o['acc_std']:.2f}; over all {c['genuine_all']:,} genuine / "
                   f"{c['impostor_all']:,} impostor pairs TAR@FAR=1e-2 {o['tar_at_far_0.01']:.2f} %, TAR@FAR=1e-3 "
                   f"{o['tar_at_far_0.001']:.2f} %; leave-one-out rank-1 retrieval {o['rank1_retrieval']:.2f} %"
                   + (f". SFace: {t['acc_mean']:.2f} ± {t['acc_std']:.2f}, TAR@FAR=1e-2 {t['tar_at_far_0.01']:.2f} %, "
                      f"TAR@FAR=1e-3 {t['tar_at_far_0.001']:.2f} %, rank-1 {t['rank1_retrieval']:.2f} %" if t else "")
                   + f"; detector fallbacks: {c['detector_fallbacks']} of {c['images']} images\n")
    return out
