"""Face search and clustering over a photo collection: ``faceanalysis index add / search / cluster``.

The store is one SQLite file (``faces.db``: the files, their faces' boxes and identity embeddings, the person
groups; stdlib ``sqlite3``, transactional, so an interrupted ``add`` keeps every image it finished) plus a FAISS
index built from it (``faces.db.faiss``, a cache rebuilt whenever the database changed). Clustering is
scikit-learn's HDBSCAN on the L2-normalised embeddings. Both come with the ``[index]`` extra; why these, and the
measured search / clustering quality, are in ``docs/index_quality.md``.

Python::

    from faceanalysis.index import FaceIndex

    with FaceIndex("faces.db") as idx:
        idx.add(["photos/"])                    # incremental: new and changed files, removes deleted ones
        for m in idx.search("query.jpg", k=10)[0]:   # one list per face in the query photo
            print(m.similarity, m.file, m.bbox)
        people = idx.cluster()                  # person id per face (None = unknown)
"""
from __future__ import annotations

import json
import os
import sqlite3
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ._lazy import LazyModule
from .errors import FaceAnalysisError

np = LazyModule("numpy")  # imported on first use: `faceanalysis --help` registers this module's parser

if TYPE_CHECKING:  # pragma: no cover
    from .api import Face, FaceAnalyzer
    from .preprocess import ImageInput

INDEX_HINT = "pip install 'faceanalysis[index]'"
FORMAT = 1
#: HDBSCAN defaults, fixed before measuring (docs/index_quality.md shows the other settings it was compared with)
MIN_CLUSTER_SIZE, MIN_SAMPLES = 3, 2
#: HDBSCAN cluster selection: "leaf" (the leaves of the condensed tree), not the "excess of mass" default, which can
#: pick a few huge, stable clusters that span many people (on the 4eb8a6bc0fb2 weights it merged the 2,000-face
#: benchmark set into 2 groups, BCubed F 0.016, where "leaf" gives 0.656; docs/index_quality.md)
CLUSTER_METHOD = "leaf"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, n_faces INTEGER NOT NULL, error TEXT);
CREATE TABLE IF NOT EXISTS faces (id INTEGER PRIMARY KEY, file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    face_index INTEGER NOT NULL, x0 REAL, y0 REAL, x1 REAL, y1 REAL, score REAL, embedding BLOB NOT NULL,
    person INTEGER);
CREATE INDEX IF NOT EXISTS faces_file ON faces(file_id);
"""


def _faiss():
    try:
        import faiss
    except ImportError as err:
        raise FaceAnalysisError(f"face search needs faiss, which is not installed: {INDEX_HINT}") from err
    return faiss


@dataclass
class Match:
    """One indexed face: the ``file`` and the face's ``bbox`` (x0, y0, x1, y1, original-image pixels), its index
    in that file, and its person group (None = not clustered yet or unknown). ``similarity`` is a cosine in
    [-1, 1]: in :meth:`FaceIndex.search` results, to the query face (1 = same embedding); in
    :meth:`FaceIndex.people` groups, to the mean embedding of the face's group (1 = the group's typical face,
    lower for outliers), None for faces in no group."""

    similarity: float | None
    file: str
    face_index: int
    bbox: tuple[float, float, float, float]
    face_id: int
    person: int | None = None

    def to_dict(self) -> dict[str, Any]:
        sim = None if self.similarity is None else round(self.similarity, 4)
        return {"similarity": sim, "file": self.file, "face_index": self.face_index,
                "bbox": [round(v, 1) for v in self.bbox], "face_id": self.face_id, "person": self.person}


@dataclass
class AddSummary:
    """What :meth:`FaceIndex.add` did (counts of files) and which files failed."""

    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    faces: int = 0
    failed: list[str] = field(default_factory=list)


@dataclass
class Clusters:
    """Result of :meth:`FaceIndex.cluster`: ``person[face_id]`` (None = unknown: a face like no other), people
    numbered 0.. by decreasing size."""

    person: dict[int, int | None]
    sizes: list[int]
    unknown: int

    @property
    def people(self) -> int:
        return len(self.sizes)


class FaceIndex:
    """A searchable, clusterable index of the faces in a photo collection (see the module docstring).

    Args:
        db: the SQLite file (created when missing).
        analyzer: the :class:`~faceanalysis.FaceAnalyzer` used to add and to search photos (default: the shipped
            model with the identity task). Embeddings of other weights are not comparable: a database remembers
            the weights it was built with and refuses others.

    Raises :class:`FaceAnalysisError` when faiss / scikit-learn are missing, ``db`` is not such a database, or
    the weights differ from the ones it was built with.
    """

    def __init__(self, db: str | Path, analyzer: "FaceAnalyzer | None" = None) -> None:
        _faiss()
        self.path = Path(db)
        if self.path.is_dir():
            raise FaceAnalysisError(f"--db {self.path} is a folder; give a file name such as faces.db")
        if self.path.exists():
            with open(self.path, "rb") as f:
                if f.read(16) != b"SQLite format 3\0":
                    raise FaceAnalysisError(f"{self.path} exists and is not a faceanalysis index (not SQLite); "
                                            "give another --db")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.con = sqlite3.connect(self.path)
        self.con.execute("PRAGMA foreign_keys = ON")
        try:
            self.con.executescript(_SCHEMA)
        except sqlite3.DatabaseError as err:
            raise FaceAnalysisError(f"{self.path} is not a faceanalysis index ({err}); give another --db") from err
        self._fa = analyzer
        self._index = None

    # ---- bookkeeping ------------------------------------------------------------------------------------------------
    def __enter__(self) -> "FaceIndex":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.con.close()

    def _meta(self, key: str, default: str | None = None) -> str | None:
        row = self.con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def _set_meta(self, key: str, value: Any) -> None:
        self.con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, str(value)))

    @property
    def analyzer(self) -> "FaceAnalyzer":
        if self._fa is None:
            from .api import FaceAnalyzer

            self._fa = FaceAnalyzer(tasks=["identity"])
        if "identity" not in self._fa.task_names:
            raise FaceAnalysisError("the index needs identity embeddings: FaceAnalyzer(tasks=[..., 'identity'])")
        return self._fa

    def _check_model(self) -> None:
        """The database's weights and embedding size must be this analyzer's (set on first use)."""
        fa = self.analyzer
        model = (str(fa.weights) if fa.weights else "shipped") + (f" tta={fa.tta}" if fa.tta else "")
        dim = fa.config.model.embedding_dim
        old = self._meta("model")
        if old is None:
            with self.con:
                self._set_meta("format", FORMAT)
                self._set_meta("model", model)
                self._set_meta("dim", dim)
                self._set_meta("generation", 0)
        elif old != model or int(self._meta("dim", "0")) != dim:
            raise FaceAnalysisError(f"{self.path} was built with weights {old!r}; this analyzer uses {model!r}, whose "
                                    "embeddings are not comparable: use the same --weights (and --tta) or a new --db")

    def __len__(self) -> int:
        return self.con.execute("SELECT COUNT(*) FROM faces").fetchone()[0]

    def files(self) -> dict[str, dict[str, Any]]:
        """Every indexed file: ``{path: {"faces": n, "error": message or None}}``."""
        return {p: {"faces": n, "error": e} for p, n, e in self.con.execute("SELECT path, n_faces, error FROM files")}

    # ---- add ----------------------------------------------------------------------------------------------------------
    def add(self, paths: Sequence[str | Path], workers: int | None = None, max_side: int | None = None,
            progress: bool = True) -> AddSummary:
        """Index the image files of ``paths`` (files and folders, walked like ``faceanalysis analyze``).

        Incremental: a file already indexed with the same size and modification time is skipped, a changed one
        is re-analysed, and files the database has under a given folder that are gone from disk are removed.
        Each analysed batch is committed, so an interrupted call keeps what it finished. ``workers``: decode +
        detect processes as in :func:`faceanalysis.batch.analyze_to_parquet`. Files that cannot be analysed are
        recorded with their error (retried when they change) and listed in the summary.
        """
        from tqdm import tqdm

        from .batch import default_workers, iter_results, plan

        self._check_model()
        fa = self.analyzer
        pairs = plan(paths, self.path, [Path(str(self.path) + ".faiss")])
        files: dict[str, tuple[Path, int, int]] = {}
        for _, p in pairs:
            st = p.stat()
            files[_key(p)] = (p, st.st_size, st.st_mtime_ns)
        known = {path: (fid, size, mtime) for fid, path, size, mtime in
                 self.con.execute("SELECT id, path, size, mtime_ns FROM files")}
        s = AddSummary()
        folders = [os.path.abspath(p) + os.sep for p in map(os.fspath, paths) if Path(p).is_dir()]
        gone = [k for k in known if k not in files and any(k.startswith(f) for f in folders)]
        if gone:
            with self.con:
                self.con.executemany("DELETE FROM files WHERE path = ?", [(k,) for k in gone])
                self._bump()
            s.removed = len(gone)
        todo = [(k, p) for k, (p, size, mtime) in files.items() if known.get(k, (None, None, None))[1:] != (size, mtime)]
        s.unchanged = len(files) - len(todo)
        n = default_workers() if workers is None else workers
        bar = tqdm(total=len(todo), desc="index add", unit="img", disable=not progress or not todo)
        try:
            for results in iter_results(fa, todo, n, max_side):
                with self.con:
                    for r in results:
                        p, size, mtime = files[r.name]
                        if r.name in known:
                            self.con.execute("DELETE FROM files WHERE path = ?", (r.name,))
                            s.updated += 1
                        else:
                            s.added += 1
                        cur = self.con.execute("INSERT INTO files (path, size, mtime_ns, n_faces, error) "
                                               "VALUES (?, ?, ?, ?, ?)", (r.name, size, mtime, len(r.faces or []), r.error))
                        if r.error:
                            s.failed.append(r.name)
                        for j, f in enumerate(r.faces or []):
                            e = np.asarray(f.embedding, np.float32)
                            e = e / max(float(np.linalg.norm(e)), 1e-12)
                            self.con.execute("INSERT INTO faces (file_id, face_index, x0, y0, x1, y1, score, embedding) "
                                             "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                             (cur.lastrowid, j, *map(float, f.bbox), float(f.score), e.tobytes()))
                            s.faces += 1
                    self._bump()
                bar.update(len(results))
        finally:
            bar.close()
        return s

    def _bump(self) -> None:
        self._set_meta("generation", int(self._meta("generation", "0")) + 1)
        self._index = None

    # ---- search -------------------------------------------------------------------------------------------------------
    def _faiss_index(self):
        """The FAISS index (exact inner product = cosine on the unit embeddings, ids = face ids), loaded from the
        sidecar file when it matches the database, else rebuilt from the database and saved."""
        faiss = _faiss()
        if self._index is not None:
            return self._index
        gen = self._meta("generation", "0")
        side = Path(str(self.path) + ".faiss")
        if side.is_file() and self._meta("faiss_generation") == gen:
            try:
                self._index = faiss.read_index(str(side))
                return self._index
            except RuntimeError:
                pass  # damaged: rebuilt below
        dim = int(self._meta("dim", "128"))
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        ids, embs = self._embeddings()
        if len(ids):
            index.add_with_ids(embs, ids)
        tmp = side.with_name(side.name + ".tmp")
        faiss.write_index(index, str(tmp))
        os.replace(tmp, side)
        with self.con:
            self._set_meta("faiss_generation", gen)
        self._index = index
        return index

    def _embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        rows = self.con.execute("SELECT id, embedding FROM faces ORDER BY id").fetchall()
        dim = int(self._meta("dim", "128"))
        ids = np.array([r[0] for r in rows], np.int64)
        embs = np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), dim) if rows else \
            np.zeros((0, dim), np.float32)
        return ids, embs

    def search_embedding(self, embedding: np.ndarray, k: int = 10) -> list[Match]:
        """The ``k`` indexed faces most similar to an identity embedding ``(D,)``, best first."""
        if k < 1:
            raise FaceAnalysisError(f"k (-k) must be >= 1 (got {k})")
        e = np.asarray(embedding, np.float32).reshape(-1)
        dim = int(self._meta("dim", "128"))
        if e.shape != (dim,) or not np.isfinite(e).all():
            raise FaceAnalysisError(f"the query embedding must be {dim} finite numbers (got shape {e.shape})")
        index = self._faiss_index()
        if index.ntotal == 0:
            return []
        sims, ids = index.search((e / max(float(np.linalg.norm(e)), 1e-12))[None], min(k, index.ntotal))
        out = []
        for sim, fid in zip(sims[0], ids[0]):
            if fid < 0:
                continue
            row = self.con.execute("SELECT files.path, faces.face_index, x0, y0, x1, y1, person FROM faces JOIN files "
                                   "ON files.id = faces.file_id WHERE faces.id = ?", (int(fid),)).fetchone()
            out.append(Match(float(sim), row[0], row[1], tuple(row[2:6]), int(fid), row[6]))
        return out

    def search(self, query: "ImageInput | Face", k: int = 10) -> list[list[Match]]:
        """Search with every face of a photo (a path, bytes, PIL image or RGB array; or one :class:`Face`):
        one list of the ``k`` most similar indexed faces per query face, in the photo's detection order (an empty
        list when the photo has no face). Raises :class:`FaceAnalysisError` for an unreadable photo."""
        from .api import Face

        if self._meta("model") is None:
            raise FaceAnalysisError(f"{self.path} is empty: add photos first (faceanalysis index add DIR --db ...)")
        self._check_model()
        faces = [query] if isinstance(query, Face) else self.analyzer.analyze(query)
        return [self.search_embedding(f.embedding, k) for f in faces]

    # ---- cluster ------------------------------------------------------------------------------------------------------
    def cluster(self, min_cluster_size: int = MIN_CLUSTER_SIZE, min_samples: int | None = MIN_SAMPLES,
                method: str = CLUSTER_METHOD) -> Clusters:
        """Group the indexed faces into people with HDBSCAN (scikit-learn) on their unit embeddings and store
        the person of each face in the database (search results show it).

        ``min_cluster_size``: the fewest faces a person needs to become a group; faces in no group are
        'unknown' (``None``). ``min_samples`` / ``method`` (``"leaf"``, the default, or ``"eom"``): HDBSCAN's. Raises
        :class:`FaceAnalysisError` when scikit-learn is missing or the arguments are out of range.
        """
        try:
            from sklearn.cluster import HDBSCAN
        except ImportError as err:
            raise FaceAnalysisError(f"clustering needs scikit-learn, which is not installed: {INDEX_HINT}") from err
        if min_cluster_size < 2:
            raise FaceAnalysisError(f"min_cluster_size (--min-size) must be >= 2 (got {min_cluster_size})")
        if min_samples is not None and min_samples < 1:
            raise FaceAnalysisError(f"min_samples (--min-samples) must be >= 1 (got {min_samples})")
        if method not in ("eom", "leaf"):
            raise FaceAnalysisError(f"method must be 'eom' or 'leaf' (got {method!r})")
        ids, embs = self._embeddings()
        labels = np.full(len(ids), -1)
        if len(ids) >= min_cluster_size:
            labels = HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples,
                             cluster_selection_method=method, copy=True).fit_predict(embs.astype(np.float64))
        groups, counts = np.unique(labels[labels >= 0], return_counts=True)
        order = groups[np.argsort(-counts, kind="stable")]
        renum = {int(g): i for i, g in enumerate(order)}
        person = {int(f): renum.get(int(l)) for f, l in zip(ids, labels)}
        with self.con:
            self.con.executemany("UPDATE faces SET person = ? WHERE id = ?", [(p, f) for f, p in person.items()])
            self._set_meta("clustered_generation", self._meta("generation", "0"))
            self._set_meta("cluster_params", json.dumps({"min_cluster_size": min_cluster_size,
                                                         "min_samples": min_samples, "method": method}))
        return Clusters(person, sorted(counts.tolist(), reverse=True), int((labels < 0).sum()))

    def people(self) -> dict[int | None, list[Match]]:
        """The stored groups: ``{person: [faces]}`` (key ``None``: unknown), from the last :meth:`cluster`.

        Each face's ``similarity`` is its cosine similarity to its group's mean embedding (the L2-normalised mean
        of the members' unit embeddings): how typical of the group the face is, low for a doubtful member.
        ``None`` for unknown faces, which have no group."""
        out: dict[int | None, list[Match]] = {}
        embs: dict[int, list[np.ndarray]] = {}
        dim = int(self._meta("dim", "128"))
        for fid, path, j, x0, y0, x1, y1, person, emb in self.con.execute(
                "SELECT faces.id, files.path, face_index, x0, y0, x1, y1, person, embedding FROM faces JOIN files "
                "ON files.id = faces.file_id ORDER BY person, faces.id"):
            out.setdefault(person, []).append(Match(None, path, j, (x0, y0, x1, y1), fid, person))
            if person is not None:
                embs.setdefault(person, []).append(np.frombuffer(emb, np.float32, count=dim))
        for person, e in embs.items():
            members = np.stack(e).astype(np.float64)
            mean = members.mean(axis=0)
            sims = members @ (mean / max(float(np.linalg.norm(mean)), 1e-12))
            for m, sim in zip(out[person], sims):
                m.similarity = float(sim)
        return out

    def contact_sheet(self, out: str | Path, people: int = 6, per_person: int = 8, tile: int = 96,
                      labels: dict[str, str] | None = None) -> Path:
        """Write a PNG with the first ``per_person`` face crops of the ``people`` largest groups, one row each
        (``labels``: optional text per file shown under its crop, e.g. a ground-truth name)."""
        import cv2

        from .preprocess import load_image

        groups = [(p, ms) for p, ms in self.people().items() if p is not None][:people]
        if not groups:
            raise FaceAnalysisError("no person groups: run cluster first (faceanalysis index cluster --db ...)")
        pad, text_h = 4, 16 if labels else 0
        sheet = np.full((len(groups) * (tile + text_h + pad) + pad, 80 + per_person * (tile + pad), 3), 255, np.uint8)
        for r, (p, ms) in enumerate(groups):
            y = pad + r * (tile + text_h + pad)
            cv2.putText(sheet, f"#{p}", (6, y + tile // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
            cv2.putText(sheet, f"{len(ms)} faces", (6, y + tile // 2 + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (80, 80, 80),
                        1, cv2.LINE_AA)
            for c, m in enumerate(ms[:per_person]):
                x = 80 + c * (tile + pad)
                try:
                    rgb = load_image(m.file)
                except FaceAnalysisError:
                    continue
                x0, y0, x1, y1 = m.bbox
                cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, 0.65 * max(x1 - x0, y1 - y0)
                mat = np.array([[tile / (2 * half), 0, tile / 2 - cx * tile / (2 * half)],
                                [0, tile / (2 * half), tile / 2 - cy * tile / (2 * half)]])
                sheet[y:y + tile, x:x + tile] = cv2.warpAffine(rgb, mat, (tile, tile), borderValue=(255, 255, 255))
                if labels:
                    cv2.putText(sheet, labels.get(m.file, "?")[:14], (x + 2, y + tile + 12), cv2.FONT_HERSHEY_SIMPLEX,
                                0.38, (0, 0, 0), 1, cv2.LINE_AA)
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(out), sheet[:, :, ::-1]):
            raise FaceAnalysisError(f"could not write {out}")
        return out


def _key(p: Path) -> str:
    """How a file is stored: its absolute path (symlinks kept), as one printable line."""
    from .cli import _shown

    return _shown(os.path.abspath(p))


# ---- the command ----------------------------------------------------------------------------------------------------
def _open(args: Any, need: bool = True) -> FaceIndex:
    if need and not Path(args.db).is_file():
        raise FaceAnalysisError(f"--db {args.db} does not exist: build it with faceanalysis index add DIR --db {args.db}")
    fa = None
    if getattr(args, "weights", None) or getattr(args, "backend", "auto") != "auto" or getattr(args, "tta", None):
        from .api import FaceAnalyzer

        fa = FaceAnalyzer(weights=args.weights, tasks=["identity"],
                          backend=None if args.backend == "auto" else args.backend, tta=getattr(args, "tta", None))
    return FaceIndex(args.db, fa)


def cmd_index(args: Any) -> int:
    from .cli import _say

    if args.index_command == "add":
        from .cli import _shown

        for p in args.paths:  # before the database file is created
            if not os.path.exists(p):
                raise FaceAnalysisError(f"{_shown(p)} does not exist")
        with _open(args, need=False) as idx:
            s = idx.add(args.paths, workers=args.workers, max_side=args.max_side, progress=not args.quiet)
            for name in s.failed[:20]:
                _say(f"{name}: error: {idx.files()[name]['error']}", sys.stderr)
            _say(f"faceanalysis index: {s.added} added, {s.updated} updated, {s.removed} removed, {s.unchanged} "
                 f"unchanged file(s); {s.faces} new face(s), {len(idx)} in {args.db}; {len(s.failed)} failed",
                 sys.stderr)
        return 1 if s.failed else 0
    if args.index_command == "search":
        if args.json and Path(args.json).exists() and not args.overwrite:
            raise FaceAnalysisError(f"{args.json} exists; pass --overwrite to replace it")
        with _open(args) as idx:
            results = idx.search(args.photo, args.k)
        if not results:
            _say(f"{args.photo}: no face found", sys.stderr)
        for q, ms in enumerate(results):
            _say(f"query face {q}:")
            for rank, m in enumerate(ms, 1):
                who = "" if m.person is None else f" person={m.person}"
                _say(f"  {rank:2d}. similarity={m.similarity:.3f} {m.file} [{m.face_index}] "
                     f"box=({','.join(str(int(round(v))) for v in m.bbox)}){who}")
        if args.json:
            Path(args.json).write_text(json.dumps([[m.to_dict() for m in ms] for ms in results], indent=1))
        return 0 if results else 1
    # cluster
    for flag, out in (("--json", args.json), ("--sheet", args.sheet)):
        if out and Path(out).exists() and not args.overwrite:
            raise FaceAnalysisError(f"{out} exists; pass --overwrite to replace it ({flag})")
    with _open(args) as idx:
        c = idx.cluster(args.min_size, args.min_samples, args.method)
        _say(f"faceanalysis index: {len(c.person)} face(s): {c.people} people (largest groups: "
             f"{', '.join(map(str, c.sizes[:10])) or '-'}), {c.unknown} unknown")
        if args.json:
            groups = {("unknown" if p is None else str(p)): [m.to_dict() for m in ms] for p, ms in idx.people().items()}
            Path(args.json).write_text(json.dumps(groups, indent=1))
        if args.sheet and c.people:
            idx.contact_sheet(args.sheet)
    return 0


def add_index_parser(sub: Any) -> None:
    """Register ``faceanalysis index add / search / cluster`` (imports nothing heavy)."""
    import argparse

    from ._argparse import HelpFormatter
    from .config import TTA_MODES

    p = sub.add_parser("index", help="face search and clustering over a photo collection (the [index] extra)",
                       formatter_class=HelpFormatter,
                       description="Index the faces of a photo collection in a database file, then find a person "
                                   "(search) or group the faces into people (cluster). See docs/index_quality.md.")
    isub = p.add_subparsers(dest="index_command", required=True, metavar="SUBCOMMAND")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--db", required=True, metavar="FILE", help="the index database (SQLite), e.g. faces.db")
        q.add_argument("--weights", metavar="FILE", default=None, help="model weights (default: the shipped model); "
                       "a database records the weights it was built with and refuses others")
        q.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx", "tflite"],
                       help="runtime; auto: from the suffix of --weights, else torch when installed, else onnx")
        q.set_defaults(func=cmd_index)

    def tta(q: argparse.ArgumentParser) -> None:
        q.add_argument("--tta", default=None, choices=list(TTA_MODES),
                       help="test-time augmentation (default: none, one pass): flip averages each face's embedding "
                            "with its mirror's (about 1.8-2.5x the model time, better matches; benchmarks/tta.md). A "
                            "database built with --tta flip must be added to and searched with --tta flip (anything "
                            "else is refused)")

    a = isub.add_parser("add", help="add new and changed photos, remove deleted ones", formatter_class=HelpFormatter)
    a.add_argument("paths", nargs="+", help="image files or folders (searched recursively)")
    common(a)
    tta(a)
    a.add_argument("--workers", type=int, default=None, metavar="N",
                   help="decode/detect processes (default: usable cores - 1; 0 = one process)")
    a.add_argument("--max-side", type=int, default=None, metavar="PX", help="detector resolution (default: adaptive)")
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    s = isub.add_parser("search", help="the faces most like each face in a photo", formatter_class=HelpFormatter)
    s.add_argument("photo", help="the query photo")
    common(s)
    tta(s)
    s.add_argument("-k", type=int, default=10, help="matches per query face")
    s.add_argument("--json", metavar="FILE", help="also write the matches as JSON")
    s.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    c = isub.add_parser("cluster", help="group the indexed faces into people (HDBSCAN)", formatter_class=HelpFormatter)
    common(c)
    c.add_argument("--min-size", type=int, default=MIN_CLUSTER_SIZE, metavar="N",
                   help="fewest faces that make a person; the rest is 'unknown'")
    c.add_argument("--min-samples", type=int, default=MIN_SAMPLES, metavar="N", help="HDBSCAN min_samples")
    c.add_argument("--method", default=CLUSTER_METHOD, choices=["leaf", "eom"], help="HDBSCAN cluster selection")
    c.add_argument("--json", metavar="FILE", help="write the groups as JSON ({person or 'unknown': [faces]}); a "
                   "face's \"similarity\" is its cosine similarity to its group's mean embedding (how typical of "
                   "the group it is), null for unknown faces")
    c.add_argument("--sheet", metavar="PNG", help="write a contact sheet of the largest groups")
    c.add_argument("--overwrite", action="store_true", help="replace existing --json / --sheet files")


__all__ = ["AddSummary", "Clusters", "FaceIndex", "Match", "add_index_parser"]
