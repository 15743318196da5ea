"""Scale-out on Ray Data: the batch analysis of :mod:`faceanalysis.batch` on a Ray cluster (the ``[ray]`` extra).

The standard Ray Data pattern: a file list (``ray.data.from_items``) -> ``map_batches`` with a callable class
(:class:`FaceAnalyzerUDF`) that loads the analyzer once per actor, ``concurrency=`` actors, ``batch_size=`` images
per call. The driver streams the results (``iter_batches``) into the same Parquet dataset as the local engine
(same schema, same part files and manifest), so a Ray run resumes like a local one and either engine can continue
the other's dataset.

Local cluster (started and stopped here)::

    faceanalysis analyze photos/ --out faces.parquet --engine ray --workers 4

Existing cluster: ``--address auto`` on a node of the cluster (or ``ray://head:10001`` from outside, via Ray
Client). Every node needs faceanalysis installed with the same version (``pip install 'faceanalysis[ray]'``) and
must read the photos under the same paths (a shared filesystem); the driver writes the dataset.

Python::

    from faceanalysis.integrations.ray import analyze_with_ray
    analyze_with_ray(["photos/"], "faces.parquet", {"backend": "onnx"}, concurrency=4)
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from ..batch import (BatchSummary, PartWriter, analyze_files, check_write_mode, default_workers, face_schema, plan,
                     require_pyarrow, results_table, run_batch, run_settings)
from ..errors import FaceAnalysisError

RAY_HINT = "pip install 'faceanalysis[ray]'"


def require_ray():
    """Import ray (with Ray Data) or raise :class:`FaceAnalysisError` naming the extra."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as err:
        raise FaceAnalysisError(f"--engine ray needs Ray Data, which is not installed: {RAY_HINT}") from err
    return ray


class FaceAnalyzerUDF:
    """The ``map_batches`` callable: builds one :class:`~faceanalysis.FaceAnalyzer` per actor (the model is
    loaded once), then turns each batch ``{"name": (B,) str, "path": (B,) bytes}`` into the in-flight Parquet
    table of those images (one row per face; images without faces / with errors get a marker row)."""

    def __init__(self, analyzer_kwargs: dict[str, Any], max_side: int | None = None) -> None:
        import cv2

        from ..api import FaceAnalyzer

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        self.fa = FaceAnalyzer(**analyzer_kwargs)
        self.schema = face_schema(self.fa.config.model.embedding_dim)
        self.max_side = max_side

    def __call__(self, batch: dict[str, Any]):
        pairs = [(str(n), bytes(p)) for n, p in zip(batch["name"], batch["path"])]
        return results_table(analyze_files(self.fa, pairs, self.max_side), self.schema)


def analyze_with_ray(paths: Sequence[str | Path], out: str | Path, analyzer_kwargs: dict[str, Any] | None = None, *,
                     address: str | None = None, concurrency: int | None = None, batch_size: int = 16,
                     resume: bool = False, overwrite: bool = False, max_side: int | None = None,
                     flush_images: int = 256, progress: bool = True, num_cpus: float = 1.0) -> BatchSummary:
    """Analyse every image in ``paths`` on Ray into the Parquet dataset ``out`` (the schema of
    :func:`faceanalysis.batch.face_schema`; results equal the local engine's).

    Args:
        analyzer_kwargs: :class:`~faceanalysis.FaceAnalyzer` arguments for each actor (weights, tasks, backend, ...).
        address: the Ray cluster (``"auto"``, ``"ray://head:10001"``); ``None`` = the one this process is connected
            to, else a new local one (stopped at the end).
        concurrency: number of actors (each loads the model once); default: the cluster's CPUs / ``num_cpus``
            (at least 1).
        batch_size: images per ``map_batches`` call; their faces share model batches.
        resume, overwrite, max_side, flush_images, progress: as in :func:`~faceanalysis.batch.analyze_to_parquet`.
        num_cpus: CPUs reserved per actor.

    Raises :class:`FaceAnalysisError` when Ray is missing or the arguments are bad (same checks as the local
    engine). Photos must be readable by every node under the same path.
    """
    require_pyarrow()
    ray = require_ray()
    check_write_mode(resume, overwrite)
    if concurrency is not None and concurrency < 1:
        raise FaceAnalysisError(f"concurrency (--workers with --engine ray) must be >= 1 actor (got {concurrency})")
    if batch_size < 1:
        raise FaceAnalysisError(f"batch_size must be >= 1 (got {batch_size})")
    from ..api import FaceAnalyzer

    kwargs = dict(analyzer_kwargs or {})
    fa = FaceAnalyzer(**kwargs)  # checks the arguments here, before any cluster work; gives the run settings
    schema = face_schema(fa.config.model.embedding_dim)
    files = plan(paths, out)
    writer = PartWriter(out, schema, run_settings(fa, max_side),
                        "resume" if resume else "overwrite" if overwrite else "new", flush_images=flush_images)
    started = False
    if not ray.is_initialized():
        import logging

        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
        started = True
    elif address:
        raise FaceAnalysisError("this process is already connected to a Ray cluster; leave out address (--address)")
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # ours counts images
        if concurrency is None:
            concurrency = max(1, int(ray.cluster_resources().get("CPU", default_workers() + 1) // num_cpus))

        def tables(todo):
            if not todo:
                return
            items = [{"name": n, "path": os.fsencode(p)} for n, p in todo]
            ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items) // batch_size, 1000)))
            ds = ds.map_batches(FaceAnalyzerUDF, fn_constructor_kwargs={"analyzer_kwargs": kwargs, "max_side": max_side},
                                batch_size=batch_size, batch_format="numpy", concurrency=concurrency,
                                num_cpus=num_cpus)
            yield from ds.iter_batches(batch_format="pyarrow", batch_size=None)

        return run_batch(files, writer, tables, progress, desc="analyze (ray)")
    finally:
        if started:
            ray.shutdown()


__all__ = ["FaceAnalyzerUDF", "analyze_with_ray", "require_ray"]
