"""Face search and clustering (issue 13, part 3): ``faceanalysis index add / search / cluster`` and
:class:`faceanalysis.index.FaceIndex`: incremental add (skips known files, re-reads changed ones, removes deleted
ones), search round trip, clustering into people with an 'unknown' group, and every bad input."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from faceanalysis import FaceAnalysisError, FaceAnalyzer
from faceanalysis.cli import main
from faceanalysis.index import FaceIndex
from faceanalysis.preprocess import load_image


@pytest.fixture(scope="module")
def fa():
    return FaceAnalyzer(backend="onnx", tasks=["identity"])


@pytest.fixture
def photos(tmp_path, celeba_photo_paths) -> Path:
    """4 people x 3 photos (original, mirrored, brighter + smaller) and 2 people with one photo each."""
    d = tmp_path / "photos"
    d.mkdir()
    for i, p in enumerate(celeba_photo_paths[:6]):
        rgb = load_image(p)
        variants = [rgb] if i >= 4 else [rgb, rgb[:, ::-1], cv2.resize(np.clip(rgb * 1.15 + 10, 0, 255).astype(np.uint8),
                                                                        (200, 200))]
        for j, v in enumerate(variants):
            cv2.imwrite(str(d / f"p{i}_{j}.jpg"), v[:, :, ::-1])
    return d


def test_add_search_cluster_round_trip(photos, tmp_path, fa):
    db = tmp_path / "faces.db"
    with FaceIndex(db, fa) as idx:
        s = idx.add([photos], workers=0, progress=False)
        assert (s.added, s.updated, s.removed, s.unchanged, s.faces, s.failed) == (14, 0, 0, 0, 14, [])
        assert len(idx) == 14
        # search with a photo that is in the index: it comes first, similarity ~1; then its two variants
        (ms,) = idx.search(photos / "p0_0.jpg", k=3)
        assert len(ms) == 3 and ms[0].file == str(photos / "p0_0.jpg") and ms[0].similarity > 0.999
        assert {m.file for m in ms} == {str(photos / f"p0_{j}.jpg") for j in range(3)}
        assert all(a.similarity >= b.similarity for a, b in zip(ms, ms[1:]))
        x0, y0, x1, y1 = ms[0].bbox
        assert 0 <= x0 < x1 <= 256 and 0 <= y0 < y1 <= 256
        assert len(idx.search(photos / "p1_0.jpg", k=100)[0]) == 14  # k larger than the index
        c = idx.cluster()
        assert len(c.person) == 14 and c.people >= 3
        groups = idx.people()
        # each person's three photos end up in one group; the singletons are unknown
        for i in range(4):
            persons = {m.person for ms_ in groups.values() for m in ms_ if Path(m.file).name.startswith(f"p{i}_")}
            assert len(persons) == 1 and None not in persons, (i, persons)
        assert {Path(m.file).name for m in groups.get(None, [])} <= {"p4_0.jpg", "p5_0.jpg"}
        _check_group_similarities({"unknown" if p is None else str(p): [m.to_dict() for m in ms]
                                   for p, ms in groups.items()}, db)
        assert idx.search(photos / "p0_1.jpg", k=1)[0][0].person is not None  # search shows the person
        sheet = idx.contact_sheet(tmp_path / "sheet.png", people=3, per_person=3)
        assert cv2.imread(str(sheet)).shape[0] > 96
    # incremental: unchanged files are skipped, a deleted one removed, a changed one re-read, a new one added
    (photos / "p5_0.jpg").unlink()
    cv2.imwrite(str(photos / "p4_0.jpg"), cv2.imread(str(photos / "p4_0.jpg"))[:, ::-1])
    os.utime(photos / "p4_0.jpg", ns=(1, 1))
    cv2.imwrite(str(photos / "new.png"), cv2.imread(str(photos / "p3_0.jpg")))
    with FaceIndex(db, fa) as idx:
        s = idx.add([photos], workers=1, progress=False)
        assert (s.added, s.updated, s.removed, s.unchanged) == (1, 1, 1, 12)
        assert len(idx) == 14 and str(photos / "p5_0.jpg") not in idx.files()
        (ms,) = idx.search(photos / "new.png", k=2)
        assert {m.file for m in ms} == {str(photos / "new.png"), str(photos / "p3_0.jpg")}
        assert idx.add([photos], workers=0, progress=False).unchanged == 14


def test_cli_round_trip(photos, tmp_path, capsys):
    db = str(tmp_path / "faces.db")
    assert main(["index", "add", str(photos), "--db", db, "--backend", "onnx", "--workers", "0", "--quiet"]) == 0
    assert "14 added" in capsys.readouterr().err
    assert main(["index", "add", str(photos), "--db", db, "--backend", "onnx", "--quiet"]) == 0
    assert "0 added, 0 updated, 0 removed, 14 unchanged" in capsys.readouterr().err
    assert main(["index", "search", str(photos / "p2_1.jpg"), "--db", db, "--backend", "onnx", "-k", "2",
                 "--json", str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out
    assert "1. similarity=1.000" in out and str(photos / "p2_1.jpg") in out and "box=(" in out
    assert len(json.loads((tmp_path / "m.json").read_text())[0]) == 2
    assert main(["index", "cluster", "--db", db, "--backend", "onnx", "--json", str(tmp_path / "people.json"),
                 "--sheet", str(tmp_path / "people.png")]) == 0
    assert "people" in capsys.readouterr().out
    groups = json.loads((tmp_path / "people.json").read_text())
    assert sum(map(len, groups.values())) == 14 and set(groups) - {"unknown"}
    _check_group_similarities(groups, db)
    assert (tmp_path / "people.png").is_file()


def test_cli_tta(photos, tmp_path, capsys):
    """--tta flip builds a database of mirrored-average embeddings; the database keeps it and a search or an add
    without the flag is refused with a one-line error naming it."""
    import sqlite3

    db = str(tmp_path / "flip.db")
    one = [str(photos / "p0_0.jpg"), str(photos / "p1_0.jpg")]
    assert main(["index", "add", *one, "--db", db, "--backend", "onnx", "--tta", "flip", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["index", "search", one[0], "--db", db, "--backend", "onnx", "--tta", "flip", "-k", "1"]) == 0
    assert f"1. similarity=1.000 {one[0]}" in capsys.readouterr().out
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT value FROM meta WHERE key = 'model'").fetchone()[0] == "shipped tta=flip"
    assert main(["index", "search", one[0], "--db", db, "--backend", "onnx"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "tta=flip" in err and "--tta" in err, err
    with pytest.raises(SystemExit):
        main(["index", "add", str(photos), "--db", db, "--tta", "rotate"])
    assert "invalid choice: 'rotate'" in capsys.readouterr().err
    # cluster reads the stored embeddings and runs no model: no --tta there, and a flip database clusters as is
    with pytest.raises(SystemExit):
        main(["index", "cluster", "--db", db, "--tta", "flip"])
    assert "unrecognized arguments: --tta" in capsys.readouterr().err
    assert main(["index", "cluster", "--db", db, "--backend", "onnx", "--min-size", "2"]) == 0


def _check_group_similarities(groups: dict[str, list[dict]], db: str | Path) -> None:
    """Each grouped face's "similarity" is the cosine of its embedding to its group's normalised mean embedding
    (computed here from the database); unknown faces have none."""
    import sqlite3

    with sqlite3.connect(db) as con:
        emb = {fid: np.frombuffer(e, np.float32) for fid, e in con.execute("SELECT id, embedding FROM faces")}
    sims = []
    for person, faces in groups.items():
        if person == "unknown":
            assert all(f["similarity"] is None for f in faces)
            continue
        e = np.stack([emb[f["face_id"]] for f in faces]).astype(np.float64)
        mean = e.mean(axis=0)
        want = e @ (mean / np.linalg.norm(mean))
        np.testing.assert_allclose([f["similarity"] for f in faces], want, atol=1e-4)
        sims += [f["similarity"] for f in faces]
    # the variants of a photo are alike but not identical: below 1, well above chance
    assert sims and all(0.3 < v < 0.9999 for v in sims), sims


def test_bad_inputs(photos, tmp_path, capsys, monkeypatch, fa, tiny_weights):
    db = tmp_path / "faces.db"

    def cli(*args: str) -> str:
        assert main(["index", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        return err

    assert "does not exist" in cli("search", str(photos / "p0_0.jpg"), "--db", str(db))
    assert "does not exist" in cli("cluster", "--db", str(db))
    assert not db.exists()
    (tmp_path / "notes.db").write_text("my notes")
    assert "not a faceanalysis index" in cli("add", str(photos), "--db", str(tmp_path / "notes.db"))
    assert (tmp_path / "notes.db").read_text() == "my notes"
    assert "is a folder" in cli("add", str(photos), "--db", str(photos))
    assert "does not exist" in cli("add", str(tmp_path / "missing"), "--db", str(db))
    assert main(["index", "add", str(photos / "p0_0.jpg"), "--db", str(db), "--backend", "onnx", "--quiet"]) == 0
    capsys.readouterr()
    assert "-k" in cli("search", str(photos / "p0_0.jpg"), "--db", str(db), "-k", "0", "--backend", "onnx")
    assert "cannot decode" in cli("search", str(tmp_path / "notes.db"), "--db", str(db), "--backend", "onnx")
    assert "--min-size" in cli("cluster", "--db", str(db), "--min-size", "1")
    (tmp_path / "people.json").write_text("{}")
    assert "--overwrite" in cli("cluster", "--db", str(db), "--json", str(tmp_path / "people.json"))
    assert (tmp_path / "people.json").read_text() == "{}"
    # other weights: embeddings not comparable
    with pytest.raises(FaceAnalysisError, match="not comparable"):
        FaceIndex(db, FaceAnalyzer(weights=tiny_weights, tasks=["identity"])).add([photos], progress=False)
    with pytest.raises(FaceAnalysisError, match="tta=flip"):  # mirrored-average embeddings: another model, in effect
        FaceIndex(db, FaceAnalyzer(backend="onnx", tasks=["identity"], tta="flip")).add([photos], progress=False)
    with pytest.raises(FaceAnalysisError, match="identity"):
        FaceIndex(db, FaceAnalyzer(backend="onnx", tasks=["pose"])).search(photos / "p0_0.jpg")
    with pytest.raises(FaceAnalysisError, match="128 finite"):
        FaceIndex(db, fa).search_embedding(np.zeros(5))
    # a broken photo is recorded with its error, the others are indexed, exit status 1
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 broken")
    assert main(["index", "add", str(photos), "--db", str(db), "--backend", "onnx", "--quiet"]) == 1
    assert "broken.jpg: error: cannot decode" in capsys.readouterr().err
    # without the extra, the message names it
    monkeypatch.setitem(sys.modules, "faiss", None)
    assert "faceanalysis[index]" in cli("cluster", "--db", str(db))
