"""Streaming, resumable batch analysis of photo collections into a Parquet dataset (one row per face).

``faceanalysis analyze DIR --out faces.parquet`` (or :func:`analyze_to_parquet`) walks the folders like
``analyze`` does, decodes and detects in worker processes while the main process runs the model, and writes
the results as a **Parquet dataset directory** ``faces.parquet/part-NNNNNN.parquet``. Each part is written to a
temporary name and renamed when complete, so a part is either whole or absent: a run stopped by Ctrl-C (which
writes what is finished) or ``kill -9`` (which loses at most the images since the last part) continues with
``resume=True`` / ``--resume`` without duplicates. Which images a part covers (also those with no face and
those that failed) is stored in the part's footer metadata (:func:`read_manifest`). A resumed run skips the images
analysed before and retries those that failed: the retry's record goes into a new part and replaces the failure
(the latest record of an image counts; a failed image has no face rows, so nothing is duplicated).

Reading the result: ``pyarrow.parquet.read_table("faces.parquet")``, ``pandas.read_parquet("faces.parquet")``,
DuckDB ``read_parquet('faces.parquet/*.parquet')``, or :func:`read_faces` for :class:`~faceanalysis.Face` objects.

Needs pyarrow (the ``[parquet]`` extra); the rest is the core install (no torch unless the analyzer uses it).
"""
from __future__ import annotations

import json
import os
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from .errors import FaceAnalysisError

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

    from .api import Face, FaceAnalyzer

PARQUET_HINT = "pip install 'faceanalysis[parquet]'"
#: key of the JSON document in each part's footer (run settings + the images the part covers)
META_KEY = b"faceanalysis"
FORMAT_VERSION = 1
PART_PREFIX, PART_SUFFIX = "part-", ".parquet"
#: marker columns of the in-flight tables (not written): images without faces / with errors get one row
#: whose face_index is null
_N_FACES, _ERROR = "_n_faces", "_error"


def require_pyarrow(what: str = "Parquet output"):
    """Import pyarrow or raise :class:`FaceAnalysisError` naming the extra that installs it."""
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError as err:
        raise FaceAnalysisError(f"{what} needs pyarrow, which is not installed: {PARQUET_HINT} "
                                f"(or write JSON Lines with --jsonl)") from err
    return pyarrow


# ---- schema ---------------------------------------------------------------------------------------------------
def face_schema(embedding_dim: int = 128) -> "pa.Schema":
    """The Parquet schema: one row per face. Units as in :class:`~faceanalysis.Face` (original-image pixels,
    degrees, probabilities in [0, 1]); columns of tasks that were not run are null.

    ``bbox`` (4,) x0, y0, x1, y1; ``keypoints5`` (5, 2); ``landmarks`` (68, 2); ``crop_matrix`` (2, 3);
    ``attributes`` / ``expression_probs`` structs named like the model's classes; ``embedding``
    (``embedding_dim``,) float32, L2-normalised; ``parsing`` the class-id mask over ``box`` run-length encoded
    row by row as ``[class id, count, ...]`` (``Face.to_dict`` format; class names in the footer metadata) and
    ``field``, the side of the square the mask covers in aligned-crop sides (1.5 with the parsing context ring); parts
    written by earlier versions lack it and read back as 1.
    """
    pa = require_pyarrow()
    from .tasks.attributes import ATTRIBUTES
    from .tasks.expression import CLASSES as EXPRESSIONS

    f32, i32 = pa.float32(), pa.int32()

    def points(n: int) -> "pa.DataType":
        return pa.list_(pa.list_(f32, 2), n)

    return pa.schema([
        ("file", pa.string()), ("face_index", i32), ("image_width", i32), ("image_height", i32),
        ("bbox", pa.list_(f32, 4)), ("score", f32), ("keypoints5", points(5)),
        ("crop_matrix", pa.list_(pa.list_(pa.float64(), 3), 2)), ("landmarks", points(68)),
        ("yaw", f32), ("pitch", f32), ("roll", f32),
        ("attributes", pa.struct([(a, f32) for a in ATTRIBUTES])), ("age", f32), ("gender", f32),
        ("gender_label", pa.string()), ("expression", pa.string()),
        ("expression_probs", pa.struct([(e, f32) for e in EXPRESSIONS])),
        ("embedding", pa.list_(f32, embedding_dim)),
        ("parsing", pa.struct([("box", pa.list_(i32, 4)), ("shape", pa.list_(i32, 2)), ("rle", pa.list_(i32)),
                               ("field", f32)])),
    ])


def _work_schema(schema: "pa.Schema") -> "pa.Schema":
    pa = require_pyarrow()
    return schema.append(pa.field(_N_FACES, pa.int32())).append(pa.field(_ERROR, pa.string()))


def _face_row(name: str, j: int, face: "Face", shape: tuple[int, int]) -> dict[str, Any]:
    d = face.to_dict()
    pose = d["pose"] or {}
    p = d["parsing"]
    return {"file": name, "face_index": j, "image_width": shape[1], "image_height": shape[0],
            "bbox": d["bbox"], "score": d["score"], "keypoints5": d["keypoints5"], "crop_matrix": d["crop_matrix"],
            "landmarks": d["landmarks"], "yaw": pose.get("yaw"), "pitch": pose.get("pitch"), "roll": pose.get("roll"),
            "attributes": d["attributes"], "age": d["age"], "gender": d["gender"], "gender_label": d["gender_label"],
            "expression": d["expression"], "expression_probs": d["expression_probs"], "embedding": d["embedding"],
            "parsing": None if p is None else {"box": p["box"], "shape": p["shape"], "rle": p["rle"],
                                               "field": p.get("field", 1.0)}}


def image_table(name: str, faces: "list[Face] | None", schema: "pa.Schema", shape: tuple[int, int] | None = None,
                error: str | None = None) -> "pa.Table":
    """The in-flight table of one image: a row per face, or one marker row (``face_index`` null) when the image
    has no face or failed (``error``). Used by the local pipeline and the Ray workers alike."""
    pa = require_pyarrow()
    work = _work_schema(schema)
    if error is not None or not faces:
        row = {"file": name, _N_FACES: 0, _ERROR: error}
        if shape is not None:
            row.update(image_width=shape[1], image_height=shape[0])
        return pa.Table.from_pylist([row], schema=work)
    rows = [{**_face_row(name, j, f, shape), _N_FACES: len(faces)} for j, f in enumerate(faces)]
    return pa.Table.from_pylist(rows, schema=work)


def face_from_row(row: dict[str, Any]) -> "Face":
    """A :class:`~faceanalysis.Face` from one row of the table (``table.to_pylist()``)."""
    from .api import Face
    from .tasks.parsing import CLASSES

    p = row.get("parsing")
    pose = None if row.get("yaw") is None else {k: row[k] for k in ("yaw", "pitch", "roll")}
    return Face.from_dict({**row, "pose": pose, "parsing": None if p is None else {**p, "class_names": list(CLASSES)}})


# ---- the dataset directory --------------------------------------------------------------------------------------
def _parts(out: Path) -> list[Path]:
    return sorted(p for p in out.glob(f"{PART_PREFIX}*{PART_SUFFIX}") if p.is_file())


def _part_meta(path: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
        return json.loads(meta[META_KEY])
    except Exception as err:  # noqa: BLE001 - a foreign or damaged file in the output folder
        raise FaceAnalysisError(f"{path} is not a part written by faceanalysis ({type(err).__name__}: {err}); "
                                f"move it out of the output folder") from err


def _latest_records(parts: Sequence[Path], metas: Sequence[dict[str, Any]] | None = None
                    ) -> dict[str, dict[str, Any]]:
    """``{file: {"faces": n, "error": message or None, "part": part file}}`` from the manifests of ``parts`` (in
    part order). An image listed by several parts (a failure retried by a resumed run) gets its latest record."""
    images: dict[str, dict[str, Any]] = {}
    for part, meta in zip(parts, metas if metas is not None else map(_part_meta, parts)):
        for name, n, err in meta["images"]:
            images[name] = {"faces": n, "error": err, "part": part.name}
    return images


def read_manifest(out: str | Path) -> dict[str, dict[str, Any]]:
    """Every image a dataset covers: ``{file: {"faces": n, "error": message or None, "part": part file}}``,
    including images without faces and images that failed (they have no face rows). An image that failed and
    was retried by a resumed run has the record of its latest try."""
    require_pyarrow()
    out = Path(out)
    if not out.is_dir():
        raise FaceAnalysisError(f"{out} is not a Parquet dataset written by faceanalysis (no such folder)")
    return _latest_records(_parts(out))


def read_faces(out: str | Path) -> dict[str, "list[Face]"]:
    """All results as ``{file: [Face, ...]}`` (``[]`` for images without faces; failed images are left out,
    see :func:`read_manifest`), faces in detection order. Loads everything: for big datasets read the columns
    you need with pyarrow instead."""
    pa = require_pyarrow()
    import pyarrow.parquet as pq

    out = Path(out)
    manifest = read_manifest(out)
    result: dict[str, list] = {k: [] for k, v in manifest.items() if v["error"] is None}
    parts = _parts(out)
    if parts:
        table = pa.concat_tables([pq.read_table(p) for p in parts])
        for row in sorted(table.to_pylist(), key=lambda r: (r["file"], r["face_index"])):
            result.setdefault(row["file"], []).append(face_from_row(row))
    return result


class PartWriter:
    """Writes in-flight tables (:func:`image_table`) into ``out/part-NNNNNN.parquet`` files, atomically, each
    with the manifest of the images it covers. ``mode``: ``"new"`` (``out`` must not exist or be empty),
    ``"resume"`` (keep the parts there: :attr:`done` names their images that were analysed, :attr:`failed` those
    whose latest try failed, to be retried) or ``"overwrite"`` (delete the parts there first). ``run`` (the
    analysis settings) must match the existing parts' on resume."""

    def __init__(self, out: str | Path, schema: "pa.Schema", run: dict[str, Any], mode: str = "new",
                 flush_images: int = 256, flush_seconds: float = 60.0) -> None:
        require_pyarrow()
        if flush_images < 1:
            raise FaceAnalysisError(f"flush_images (--flush-every) must be >= 1 (got {flush_images})")
        self.out, self.schema, self.run = Path(out), schema, run
        self.flush_images, self.flush_seconds = flush_images, flush_seconds
        out = self.out
        if out.exists() and not out.is_dir():
            raise FaceAnalysisError(f"{out} exists and is a file; --out names a Parquet dataset folder "
                                    f"(e.g. faces.parquet): give a new name or remove the file")
        parts = _parts(out) if out.is_dir() else []
        others = [p for p in out.iterdir() if p not in parts and not _is_tmp(p)] if out.is_dir() else []
        if others:
            raise FaceAnalysisError(f"{out} holds files that faceanalysis did not write ({others[0].name}, ...); "
                                    f"give an empty or new folder for --out")
        #: images analysed (with or without faces): a resumed run skips them
        self.done: set[str] = set()
        #: images whose latest record is a failure: a resumed run retries them
        self.failed: set[str] = set()
        if parts and mode == "new":
            raise FaceAnalysisError(f"{out} exists ({len(parts)} part file(s)); pass --resume to continue that run "
                                    f"or --overwrite to replace it")
        if mode == "overwrite":
            for p in parts:
                p.unlink()
            parts = []
        metas = [_part_meta(p) for p in parts]
        for meta in metas:
            old = {k: meta.get(k) for k in run}
            if old != run:
                diff = ", ".join(f"{k}: {old[k]!r} there, {run[k]!r} now" for k in run if old[k] != run[k])
                raise FaceAnalysisError(f"{out} was written with other settings ({diff}); resume with the same "
                                        f"settings or write to a new --out")
        for name, rec in _latest_records(parts, metas).items():
            (self.done if rec["error"] is None else self.failed).add(name)
        out.mkdir(parents=True, exist_ok=True)
        for tmp in out.iterdir():  # parts a killed run did not finish
            if _is_tmp(tmp):
                tmp.unlink()
        self._next = 1 + max((int(p.name[len(PART_PREFIX):-len(PART_SUFFIX)]) for p in parts), default=-1)
        self._tables: list = []
        self._images = 0
        self._last = time.monotonic()
        self.written_images = 0
        self.written_faces = 0

    def add(self, table: "pa.Table") -> None:
        """Buffer the tables of whole images; writes a part when enough images or time have gathered."""
        self._tables.append(table)
        self._images += len(set(table.column("file").to_pylist()))
        if self._images >= self.flush_images or time.monotonic() - self._last >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Write the buffered images as one part (nothing when the buffer is empty)."""
        if not self._tables:
            return
        pa = require_pyarrow()
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        work = pa.concat_tables(self._tables)
        images: dict[str, list] = {}
        for name, n, err in zip(*(work.column(c).to_pylist() for c in ("file", _N_FACES, _ERROR))):
            images.setdefault(name, [name, n, err])
        faces = work.filter(pc.is_valid(work.column("face_index"))).drop_columns([_N_FACES, _ERROR])
        meta = {**self.run, "images": list(images.values())}
        table = faces.cast(self.schema.with_metadata({META_KEY: json.dumps(meta).encode()}))
        final = self.out / f"{PART_PREFIX}{self._next:06d}{PART_SUFFIX}"
        tmp = self.out / f".{final.name}.tmp"
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
        try:  # make the rename durable
            fd = os.open(self.out, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass
        self._next += 1
        self.written_images += len(images)
        self.written_faces += table.num_rows
        for name, _, err in images.values():
            if err is None:
                self.done.add(name)
                self.failed.discard(name)
            else:
                self.failed.add(name)
        self._tables, self._images, self._last = [], 0, time.monotonic()


def _is_tmp(p: Path) -> bool:
    return p.name.startswith(f".{PART_PREFIX}") and p.name.endswith(".tmp")


# ---- decode + detect in worker processes --------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _detector_spec(fa: "FaceAnalyzer") -> tuple[Any, ...] | None:
    """How a worker rebuilds the analyzer's detector; None when it cannot (then everything runs in-process)."""
    from .detect import YuNetDetector

    d = fa.detector
    if type(d) is YuNetDetector:  # rebuilt from its constructor arguments (its OpenCV / ORT objects don't pickle)
        import inspect

        names = [n for n in inspect.signature(YuNetDetector.__init__).parameters if n != "self"]
        if all(hasattr(d, n) for n in names):
            kw = {n: getattr(d, n) for n in names}
            kw["model_path"] = str(kw["model_path"])
            return ("yunet", kw, fa.max_faces)
    import pickle

    try:
        pickle.dumps(d)
    except Exception:  # noqa: BLE001
        return None
    return ("object", d, fa.max_faces)


def _worker_init(spec: tuple[Any, ...]) -> None:
    import cv2

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is handled by the main process
    cv2.setNumThreads(1)  # parallelism comes from the processes
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    _exit_with_parent()
    kind, det, max_faces = spec
    if kind == "yunet":
        from .detect import YuNetDetector

        det = YuNetDetector(**det)
    _WORKER["stub"] = _DetectStub(det, max_faces)


def _exit_with_parent() -> None:
    """End this worker when the main process is gone (kill -9 leaves workers waiting on their queue forever)."""
    import threading

    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="faceanalysis-parent-watch").start()


@dataclass
class _DetectStub:
    """What :meth:`FaceAnalyzer._detect` reads, so that workers detect exactly like the analyzer."""

    detector: Any
    max_faces: int | None


def _load_detect(stub: Any, path: str | bytes, max_side: int | None) -> tuple[np.ndarray | None, list, str | None]:
    from .api import FaceAnalyzer
    from .preprocess import load_image

    try:
        rgb = load_image(Path(os.fsdecode(path)))
        return rgb, FaceAnalyzer._detect(stub, rgb, max_side), None
    except FaceAnalysisError as err:
        return None, [], str(err)
    except MemoryError:
        return None, [], "out of memory decoding or detecting this image"
    except Exception as err:  # noqa: BLE001 - one user file must never end the run
        return None, [], f"unexpected {type(err).__name__}: {err} (please report this file)"


def _worker_task(path: str, max_side: int | None):
    return _load_detect(_WORKER["stub"], path, max_side)


@dataclass
class ImageResult:
    """One analysed image: ``faces`` (None when it failed), its ``shape`` (H, W) and the ``error`` message."""

    name: str
    faces: "list[Face] | None"
    shape: tuple[int, int] | None
    error: str | None = None


def analyze_detected(fa: "FaceAnalyzer", items: list[tuple[str, np.ndarray | None, list, str | None]]
                     ) -> list[ImageResult]:
    """Run the model on decoded + detected images ``(name, rgb, detections, error)`` (faces of all images share
    model batches). A batch that fails is retried image by image, so one bad image only fails itself."""
    ok = [(n, rgb, dets) for n, rgb, dets, err in items if err is None]
    results: dict[str, Any] = {}
    try:
        faces = fa.analyze_detections([r for _, r, _ in ok], [d for _, _, d in ok]) if ok else []
        results = {n: f for (n, _, _), f in zip(ok, faces)}
    except Exception:  # noqa: BLE001
        for n, rgb, dets in ok:
            try:
                results[n] = fa.analyze_detections([rgb], [dets])[0]
            except FaceAnalysisError as err:
                results[n] = err
            except Exception as err:  # noqa: BLE001
                results[n] = FaceAnalysisError(f"unexpected {type(err).__name__}: {err} (please report this file)")
    out = []
    for n, rgb, dets, err in items:
        r = results.get(n)
        if err is None and isinstance(r, Exception):
            err = str(r)
        out.append(ImageResult(n, None if err else r, None if rgb is None else rgb.shape[:2], err))
    return out


def analyze_files(fa: "FaceAnalyzer", names_paths: Iterable[tuple[str, bytes]], max_side: int | None = None
                  ) -> list[ImageResult]:
    """Decode, detect and analyse files in this process (``(name, os.fsencode(path))`` pairs), like
    ``fa.analyze(path)`` each, the faces of all of them sharing model batches. Used by the Ray workers."""
    stub = _DetectStub(fa.detector, fa.max_faces)
    return analyze_detected(fa, [(n, *_load_detect(stub, p, max_side)) for n, p in names_paths])


def iter_results(fa: "FaceAnalyzer", files: Sequence[tuple[str, Path]], workers: int = 1,
                 max_side: int | None = None, batch_images: int = 8) -> Iterator[list[ImageResult]]:
    """Analyse ``files`` (``(name, path)`` pairs) and yield lists of :class:`ImageResult`, in input order.

    ``workers`` > 0 processes decode and detect while this process runs the model; at most
    ``4 * workers + batch_images`` decoded images are in flight, so memory stays flat. 0 = all in this process.
    Worker processes are started with ``spawn``: a script that calls this must guard its entry point with
    ``if __name__ == "__main__":``.
    """
    if workers > 0 and _detector_spec(fa) is None:
        workers = 0  # a custom detector that cannot be sent to another process
    if workers == 0:
        for i in range(0, len(files), batch_images):
            yield analyze_files(fa, [(n, os.fsencode(p)) for n, p in files[i:i + batch_images]], max_side)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    window = 4 * workers + batch_images
    spec = _detector_spec(fa)

    def new_pool(n: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(n, mp_context=mp.get_context("spawn"), initializer=_worker_init, initargs=(spec,))

    pool = new_pool(workers)
    try:
        pending: deque = deque()
        todo = iter(files)
        batch: list = []
        while True:
            while len(pending) < window:
                nxt = next(todo, None)
                if nxt is None:
                    break
                path = os.fsencode(nxt[1])
                pending.append((nxt[0], path, pool.submit(_worker_task, path, max_side)))
            if not pending:
                break
            name, path, fut = pending.popleft()
            try:
                res = fut.result()
            except BrokenProcessPool:  # a worker died (a decoder crash, out of memory): find the file, go on
                pool.shutdown(wait=True, cancel_futures=True)
                res = _alone(new_pool, path, max_side)
                pool = new_pool(workers)
                pending = deque((n, p, pool.submit(_worker_task, p, max_side)) for n, p, _ in pending)
            batch.append((name, *res))
            faces = sum(len(d) for _, _, d, _ in batch)
            if len(batch) >= batch_images or faces >= fa.batch_size or not pending:
                yield analyze_detected(fa, batch)
                batch = []
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _alone(new_pool: Callable[[int], Any], path: bytes, max_side: int | None):
    """Decode + detect one file in a process of its own: its result, or an error when that process dies too."""
    from concurrent.futures.process import BrokenProcessPool

    pool = new_pool(1)
    try:
        return pool.submit(_worker_task, path, max_side).result()
    except BrokenProcessPool:
        return None, [], "the decoding / detection process died on this file (a decoder crash or out of memory)"
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def results_table(results: Iterable[ImageResult], schema: "pa.Schema") -> "pa.Table":
    """The in-flight table of several images (see :func:`image_table`)."""
    pa = require_pyarrow()
    return pa.concat_tables([image_table(r.name, r.faces, schema, r.shape, r.error) for r in results])


# ---- the command / API ----------------------------------------------------------------------------------------------
@dataclass
class BatchSummary:
    """What a batch run did.

    ``total``: images found; ``skipped``: analysed by an earlier run (not redone); ``retried``: failed in an
    earlier run and tried again in this one; ``images``: images processed this run, analysed or failed
    (:attr:`analysed` + ``len(failed)``); ``failed``: the files that failed this run; ``faces``: face rows
    written this run.
    """

    out: Path
    total: int
    skipped: int = 0
    images: int = 0
    faces: int = 0
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    retried: int = 0

    @property
    def analysed(self) -> int:
        """Images analysed this run (with or without faces); failed images are not counted."""
        return self.images - len(self.failed)

    @property
    def images_per_second(self) -> float:
        """Images processed (analysed or failed) per second this run."""
        return self.images / self.seconds if self.seconds > 0 else 0.0


def run_settings(fa: "FaceAnalyzer", max_side: int | None) -> dict[str, Any]:
    """The settings stored with every part; a resumed run must use the same ones."""
    return {"format": FORMAT_VERSION, "weights": str(fa.weights) if fa.weights else "shipped",
            "tasks": list(fa.task_names), "max_side": max_side, "max_faces": fa.max_faces,
            **({"tta": fa.tta} if fa.tta else {})}  # no key without tta: datasets written before it still resume


def default_workers() -> int:
    """Decode / detect processes by default: one per usable core but one (the model's); 0 (all in this
    process) when only one core is usable, since two processes on one core only add overhead."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        n = os.cpu_count() or 1
    return n - 1 if n > 1 else 0


def plan(paths: Sequence[str | Path], out: str | Path, exclude: Iterable[Path] = ()) -> list[tuple[str, Path]]:
    """The image files of ``paths`` (folders walked like ``faceanalysis analyze``; ``out`` and ``exclude``
    left out) as ``(name, path)`` pairs; ``name`` is the printable path stored in the ``file`` column."""
    from .cli import _collect, _shown

    files, _ = _collect([os.fspath(p) for p in paths], [Path(out), *exclude])
    seen: set[str] = set()
    pairs = []
    for p in files:
        n = _shown(p)
        if n not in seen:  # the same file given twice
            seen.add(n)
            pairs.append((n, p))
    return pairs


def run_batch(files: Sequence[tuple[str, Path]], writer: PartWriter,
              tables: Callable[[Sequence[tuple[str, Path]]], Iterator["pa.Table"]],
              progress: bool = True, desc: str = "analyze") -> BatchSummary:
    """Drive ``tables(todo)`` (in-flight tables of whole images) into ``writer`` with a progress bar (images/s,
    ETA); Ctrl-C writes what is done. ``todo``: the ``files`` not in ``writer.done``, i.e. new ones and those
    whose earlier try failed (retried)."""
    import pyarrow.compute as pc
    from tqdm import tqdm

    todo = [(n, p) for n, p in files if n not in writer.done]
    s = BatchSummary(writer.out, len(files), skipped=len(files) - len(todo),
                     retried=sum(n in writer.failed for n, _ in todo))
    t0 = time.perf_counter()
    bar = tqdm(total=len(files), initial=s.skipped, desc=desc, unit="img", disable=not progress, smoothing=0.1)
    try:
        for t in tables(todo):
            n = len(pc.unique(t.column("file")))
            s.failed.extend(pc.unique(t.filter(pc.is_valid(t.column(_ERROR))).column("file")).to_pylist())
            writer.add(t)
            bar.update(n)
            s.images += n
    except KeyboardInterrupt:
        s.interrupted = True
        raise
    finally:
        bar.close()
        writer.flush()
        s.faces = writer.written_faces
        s.seconds = time.perf_counter() - t0
    return s


def check_write_mode(resume: bool, overwrite: bool) -> None:
    """Raise :class:`FaceAnalysisError` when both ``resume`` and ``overwrite`` are asked for."""
    if resume and overwrite:
        raise FaceAnalysisError("resume and overwrite exclude each other: resume continues the dataset, overwrite "
                                "replaces it")


def analyze_to_parquet(paths: Sequence[str | Path], out: str | Path, analyzer: "FaceAnalyzer | None" = None, *,
                       resume: bool = False, overwrite: bool = False, workers: int | None = None,
                       max_side: int | None = None, flush_images: int = 256, batch_images: int = 8,
                       progress: bool = True) -> BatchSummary:
    """Analyse every image in ``paths`` (files and folders) into the Parquet dataset folder ``out``.

    Args:
        analyzer: the :class:`~faceanalysis.FaceAnalyzer` to use (default: the shipped model, all tasks).
        resume: continue a dataset that exists (its analysed images are skipped, the ones that failed are
            retried; settings must match).
        overwrite: replace an existing dataset. Without ``resume`` / ``overwrite`` an existing one is an error.
        workers: decode + detect processes (default: usable cores - 1; 0 = all in this process).
        max_side: detector resolution (px), as in :meth:`FaceAnalyzer.analyze`; ``None`` = adaptive.
        flush_images: images per part file (a killed run redoes at most this many; a part is also written
            every 60 s).
        batch_images: images whose faces share one model call.

    Returns a :class:`BatchSummary`. Raises :class:`FaceAnalysisError` for bad arguments, an existing ``out``
    without ``resume`` / ``overwrite``, or a dataset written with other settings. ``KeyboardInterrupt``
    propagates after the finished images are written. Results equal ``[fa.analyze(p) for p in files]``.
    """
    require_pyarrow()
    check_write_mode(resume, overwrite)
    if workers is not None and workers < 0:
        raise FaceAnalysisError(f"workers (--workers) must be >= 0 (got {workers})")
    if batch_images < 1:
        raise FaceAnalysisError(f"batch_images must be >= 1 (got {batch_images})")
    from .api import FaceAnalyzer

    files = plan(paths, out)
    fa = analyzer or FaceAnalyzer()
    schema = face_schema(fa.config.model.embedding_dim)
    writer = PartWriter(out, schema, run_settings(fa, max_side), "resume" if resume else "overwrite" if overwrite
                        else "new", flush_images=flush_images)
    n = default_workers() if workers is None else workers
    return run_batch(files, writer, lambda todo: (image_table(r.name, r.faces, schema, r.shape, r.error) for rs in
                                                  iter_results(fa, todo, n, max_side, batch_images) for r in rs),
                     progress)


def cmd_batch(args: Any) -> int:
    """``faceanalysis analyze PATHS --out DATASET.parquet [--resume] [--engine ray]`` (called by the CLI)."""
    import sys

    from .cli import _say

    for flag, val in (("--json", args.json), ("--jsonl", args.jsonl), ("--draw", args.draw)):
        if val:
            raise FaceAnalysisError(f"{flag} and --out exclude each other: --out streams every face into a Parquet "
                                    f"dataset (read it with pyarrow / pandas); run {flag} separately")
    if args.resume and args.overwrite:
        raise FaceAnalysisError("--resume and --overwrite exclude each other: --resume continues the dataset, "
                                "--overwrite replaces it")
    require_pyarrow("analyze --out")
    kwargs = dict(weights=args.weights, device=args.device, tasks=args.tasks,
                  backend=None if args.backend == "auto" else args.backend, max_faces=args.max_faces, tta=args.tta,
                  parsing_ring=not args.no_parsing_ring)
    mode = dict(resume=args.resume, overwrite=args.overwrite, max_side=args.max_side, flush_images=args.flush_every,
                progress=not args.quiet)
    try:
        if args.engine == "ray":
            from .integrations.ray import analyze_with_ray

            s = analyze_with_ray(args.paths, args.out, kwargs, address=args.address, concurrency=args.workers,
                                 **mode)
        else:
            if args.address:
                raise FaceAnalysisError("--address is for --engine ray (the address of a Ray cluster)")
            from .api import FaceAnalyzer

            s = analyze_to_parquet(args.paths, args.out, FaceAnalyzer(**kwargs), workers=args.workers, **mode)
    except KeyboardInterrupt:
        _say(f"faceanalysis analyze: interrupted; the finished images are in {args.out}: run the same command with "
             f"--resume to continue", sys.stderr)
        raise
    parts = [f"{s.analysed} image(s) analysed", f"{len(s.failed)} failed", f"{s.faces} face(s) written",
             f"{s.images_per_second:.2f} images/s"]
    if s.retried:
        parts.append(f"{s.retried} had failed before (retried)")
    if s.skipped:
        parts.append(f"{s.skipped} already in {args.out} (skipped)")
    manifest = read_manifest(args.out) if s.failed else {}
    for name in s.failed[:20]:
        _say(f"{name}: error: {manifest[name]['error']}", sys.stderr)
    if s.failed or s.skipped or not args.quiet:
        _say(f"faceanalysis analyze: {', '.join(parts)} -> {args.out}", sys.stderr)
    return 1 if s.failed else 0


__all__ = ["BatchSummary", "ImageResult", "PartWriter", "analyze_to_parquet", "face_from_row", "face_schema", "image_table",
           "read_faces", "read_manifest"]
