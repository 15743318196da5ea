"""Parity of an exported artifact with the PyTorch model on the same normalised crops."""
from __future__ import annotations

from typing import Callable

import numpy as np
from tqdm import tqdm

#: a face counts in ``expression_top1_agreement_decided`` when the reference's top expression probability leads the
#: runner-up by at least this much: on a near-tie (0.349 vs 0.348 on one held-out crop) any numeric change, int8
#: rounding included, may swap the two, which says nothing about the artifact
DECIDED_MARGIN = 0.05
#: metric -> (floor, "min" | "max"): "min" = value must be >= floor, "max" = value must be <= floor
FLOORS: dict[str, dict[str, tuple[float, str]]] = {
    "int8": {"embedding_cosine_mean": (0.98, "min"), "landmarks_mean_px": (1.0, "max"),
             "parsing_agreement": (0.97, "min"), "parsing_wide_agreement": (0.97, "min"), "expression_top1_agreement_decided": (0.95, "min")},
    "fp16": {"embedding_cosine_min": (0.999, "min"), "landmarks_mean_px": (0.05, "max"),
             "parsing_agreement": (0.995, "min"), "parsing_wide_agreement": (0.995, "min"), "expression_top1_agreement": (0.99, "min"),
             "attributes_max_abs": (0.01, "max"), "pose_mean_deg": (0.05, "max")},
    "fp32": {"embedding_cosine_min": (0.9999, "min"), "landmarks_mean_px": (0.01, "max"),
             "parsing_agreement": (0.999, "min"), "parsing_wide_agreement": (0.999, "min"), "expression_top1_agreement": (0.99, "min"),
             "attributes_max_abs": (0.001, "max"), "pose_mean_deg": (0.01, "max")},
}


def floors_for(precision: str) -> dict[str, tuple[float, str]]:
    """Parity floors of a precision (every int8 variant shares the int8 floors)."""
    return FLOORS["int8" if precision.startswith("int8") else precision]


def compare(ref: dict[str, np.ndarray], out: dict[str, np.ndarray]) -> dict[str, float]:
    """Drift metrics of ``out`` against ``ref`` over the outputs both have."""
    m: dict[str, float] = {"n": float(len(next(iter(ref.values()))))}
    if "embedding" in ref and "embedding" in out:
        a, b = ref["embedding"].astype(np.float64), out["embedding"].astype(np.float64)
        cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
        m["embedding_cosine_mean"], m["embedding_cosine_min"] = float(cos.mean()), float(cos.min())
    if "landmarks" in ref and "landmarks" in out:
        err = np.linalg.norm(ref["landmarks"] - out["landmarks"], axis=-1)
        m["landmarks_mean_px"], m["landmarks_max_px"] = float(err.mean()), float(err.max())
    if "parsing" in ref and "parsing" in out:
        m["parsing_agreement"] = float((ref["parsing"].argmax(1) == out["parsing"].argmax(1)).mean())
    if "parsing_wide" in ref and "parsing_wide" in out:
        m["parsing_wide_agreement"] = float((ref["parsing_wide"].argmax(1) == out["parsing_wide"].argmax(1)).mean())
    if "pose" in ref and "pose" in out:
        d = np.abs(ref["pose"] - out["pose"])
        m["pose_mean_deg"], m["pose_max_deg"] = float(d.mean()), float(d.max())
    if "attributes" in ref and "attributes" in out:
        d = np.abs(ref["attributes"] - out["attributes"])
        m["attributes_mean_abs"], m["attributes_max_abs"] = float(d.mean()), float(d.max())
    if "expression" in ref and "expression" in out:
        same = ref["expression"].argmax(1) == out["expression"].argmax(1)
        top2 = np.sort(ref["expression"], axis=1)[:, -2:]
        decided = (top2[:, 1] - top2[:, 0]) >= DECIDED_MARGIN
        m["expression_top1_agreement"] = float(same.mean())
        m["expression_top1_agreement_decided"] = float(same[decided].mean()) if decided.any() else 1.0
        m["expression_decided_n"] = float(decided.sum())
        m["expression_max_abs"] = float(np.abs(ref["expression"] - out["expression"]).max())
    if "age" in ref and "age" in out:
        m["age_mean_abs_years"] = float(np.abs(ref["age"] - out["age"]).mean())
    if "gender" in ref and "gender" in out:
        m["gender_max_abs"] = float(np.abs(ref["gender"] - out["gender"]).max())
    return m


def failures(metrics: dict[str, float], precision: str) -> list[str]:
    """Human-readable list of the floors ``metrics`` misses (empty = pass)."""
    bad = []
    for k, (floor, kind) in floors_for(precision).items():
        if k not in metrics:
            continue
        v = metrics[k]
        if (kind == "min" and v < floor) or (kind == "max" and v > floor):
            bad.append(f"{k}={v:.4f} ({'>=' if kind == 'min' else '<='} {floor} required)")
    return bad


def run_batched(fn: Callable[[np.ndarray], dict[str, np.ndarray]], x: np.ndarray, batch: int = 16,
                desc: str | None = None) -> dict[str, np.ndarray]:
    """Run ``fn`` over ``x`` in batches and concatenate the named outputs."""
    parts: dict[str, list[np.ndarray]] = {}
    for i in tqdm(range(0, len(x), batch), desc=desc, leave=False, disable=desc is None):
        for k, v in fn(x[i:i + batch]).items():
            parts.setdefault(k, []).append(np.asarray(v, np.float32))
    return {k: np.concatenate(v) for k, v in parts.items()}


def torch_reference(model, x: np.ndarray, batch: int = 16) -> dict[str, np.ndarray]:
    """PyTorch outputs on normalised crops ``x``."""
    import torch

    def fn(b: np.ndarray) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            return {k: v.float().numpy() for k, v in model(torch.from_numpy(b)).items()}

    return run_batched(fn, x, batch)


def format_metrics(m: dict[str, float]) -> str:
    """One line for the console."""
    keys = ["embedding_cosine_mean", "embedding_cosine_min", "landmarks_mean_px", "parsing_agreement",
            "parsing_wide_agreement", "expression_top1_agreement", "expression_top1_agreement_decided", "attributes_max_abs", "pose_mean_deg",
            "age_mean_abs_years"]
    return " ".join(f"{k}={m[k]:.4f}" for k in keys if k in m)
