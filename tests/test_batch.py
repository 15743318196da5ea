"""Streaming, resumable batch analysis into Parquet (issue 13, part 1): equality with the plain loop, resume
after kill -9 and after Ctrl-C, and every bad input."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from faceanalysis import FaceAnalysisError, FaceAnalyzer
from faceanalysis import batch
from faceanalysis.batch import analyze_to_parquet, face_from_row, face_schema, read_faces, read_manifest
from faceanalysis.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def onnx_analyzer():
    return FaceAnalyzer(backend="onnx")


@pytest.fixture
def photos(tmp_path, celeba_photo_paths) -> Path:
    """A folder of 10 one-face photos, a picture without a face and a broken file."""
    d = tmp_path / "photos"
    (d / "sub").mkdir(parents=True)
    for i, p in enumerate(celeba_photo_paths[:10]):
        shutil.copy(p, d / ("sub" if i % 3 == 0 else "") / p.name)
    import cv2

    cv2.imwrite(str(d / "blank.png"), np.full((64, 64, 3), 127, np.uint8))
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    return d


def _table(out: Path):
    t = pq.read_table(out)
    return t.sort_by([("file", "ascending"), ("face_index", "ascending")])


def _assert_same_faces(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert len(a[k]) == len(b[k]), k
        for x, y in zip(a[k], b[k]):
            np.testing.assert_allclose(x.bbox, y.bbox, atol=1e-3)
            np.testing.assert_allclose(x.keypoints5, y.keypoints5, atol=1e-3)
            np.testing.assert_allclose(x.embedding, y.embedding, atol=1e-4)
            np.testing.assert_allclose(x.landmarks, y.landmarks, atol=0.02)
            np.testing.assert_allclose(x.pose, y.pose, atol=0.01)
            assert abs(x.age - y.age) < 0.01 and abs(x.gender - y.gender) < 1e-3 and x.expression == y.expression
            assert max(abs(x.attributes[n] - y.attributes[n]) for n in x.attributes) < 1e-3
            assert x.parsing.box == y.parsing.box and (x.parsing.mask == y.parsing.mask).mean() > 0.999
            assert x.parsing.field == y.parsing.field  # the ring's wider field survives the Parquet row


def test_batch_equals_the_plain_loop(photos, tmp_path, onnx_analyzer):
    out = tmp_path / "faces.parquet"
    s = analyze_to_parquet([photos], out, onnx_analyzer, workers=1, flush_images=4, progress=False)
    files = sorted(str(p) for p in photos.rglob("*") if p.is_file())
    assert s.total == s.images == len(files) == 12 and s.skipped == 0
    assert s.failed == [str(photos / "broken.jpg")]
    assert len(list(out.glob("part-*.parquet"))) == 3  # 12 images, 4 per part
    got = read_faces(out)
    ref = {p: onnx_analyzer.analyze(p) for p in files if not p.endswith("broken.jpg")}
    _assert_same_faces(got, ref)
    assert got[str(photos / "blank.png")] == []
    man = read_manifest(out)
    assert man[str(photos / "blank.png")]["faces"] == 0 and man[str(photos / "blank.png")]["error"] is None
    assert "cannot decode" in man[str(photos / "broken.jpg")]["error"]
    t = _table(out)
    assert t.schema.remove_metadata() == face_schema(128)
    assert t.num_rows == s.faces == sum(map(len, ref.values()))
    assert t.column("embedding").type.list_size == 128 and t.column("parsing").null_count == 0
    assert {p["field"] for p in t.column("parsing").to_pylist()} == {onnx_analyzer.config.model.parsing_field}
    # a row of a part written before the field column existed reads back with field 1
    row = dict(t.slice(0, 1).to_pylist()[0])
    row["parsing"] = {k: v for k, v in row["parsing"].items() if k != "field"}
    assert face_from_row(row).parsing.field == 1.0
    # the in-process path (workers=0) writes the same
    out0 = tmp_path / "faces0.parquet"
    analyze_to_parquet([photos], out0, onnx_analyzer, workers=0, progress=False)
    _assert_same_faces(read_faces(out0), got)


def test_resume_after_kill_9(photos, tmp_path, celeba_photo_paths, onnx_analyzer):
    for p in celeba_photo_paths[10:30]:
        shutil.copy(p, photos / p.name)
    ref = tmp_path / "ref.parquet"
    assert main(["analyze", str(photos), "--out", str(ref), "--backend", "onnx", "--workers", "0", "--quiet"]) == 1
    out = tmp_path / "faces.parquet"
    cmd = [sys.executable, "-m", "faceanalysis", "analyze", str(photos), "--out", str(out), "--backend", "onnx",
           "--flush-every", "3", "--workers", "1", "--quiet"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(list(out.glob("part-*.parquet"))) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    workers = _children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    deadline = time.monotonic() + 10  # its worker processes end too (no orphans left behind)
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert workers and not any(Path(f"/proc/{pid}").exists() for pid in workers), workers
    done = read_manifest(out)
    assert 0 < len(done) < 32
    # an existing dataset is never replaced or appended to without saying so
    assert main(["analyze", str(photos), "--out", str(out), "--backend", "onnx", "--quiet"]) == 2
    assert main(["analyze", str(photos), "--out", str(out), "--backend", "onnx", "--workers", "0", "--resume",
                 "--quiet"]) == 1  # 1: broken.jpg failed
    t, r = _table(out), _table(ref)
    keys = list(zip(t.column("file").to_pylist(), t.column("face_index").to_pylist()))
    assert len(keys) == len(set(keys)), "duplicate faces after resume"
    assert keys == list(zip(r.column("file").to_pylist(), r.column("face_index").to_pylist()))
    assert read_manifest(out).keys() == read_manifest(ref).keys()
    _assert_same_faces(read_faces(out), read_faces(ref))
    # a finished dataset resumes to a no-op but for the failed file, which is tried again (and fails again)
    s = analyze_to_parquet([photos], out, onnx_analyzer, resume=True, progress=False)
    assert s.skipped == 31 and s.retried == 1 and s.images == 1 and s.analysed == 0
    assert s.failed == [str(photos / "broken.jpg")] and s.faces == 0
    assert _table(out).num_rows == r.num_rows


def test_resume_retries_failed_images(photos, tmp_path, celeba_photo_paths, onnx_analyzer):
    """A file that failed is tried again on resume (here: still broken, then repaired); the files analysed before
    are skipped, and no face is written twice."""
    out = tmp_path / "faces.parquet"
    broken = str(photos / "broken.jpg")
    s = analyze_to_parquet([photos], out, onnx_analyzer, workers=0, progress=False)
    assert s.images == 12 and s.failed == [broken] and read_manifest(out)[broken]["error"]
    # still broken: retried, fails again, nothing else redone
    s = analyze_to_parquet([photos], out, onnx_analyzer, workers=0, resume=True, progress=False)
    assert (s.skipped, s.images, s.failed, s.faces) == (11, 1, [broken], 0), "the failed file was not retried"
    assert (s.retried, s.analysed) == (1, 0)
    # repaired: retried, analysed, its face written once; the manifest holds its latest record
    shutil.copy(celeba_photo_paths[10], photos / "broken.jpg")
    s = analyze_to_parquet([photos], out, onnx_analyzer, workers=0, resume=True, progress=False)
    assert (s.skipped, s.images, s.failed, s.faces) == (11, 1, [], 1)
    assert (s.retried, s.analysed) == (1, 1)
    man = read_manifest(out)
    assert len(man) == 12 and man[broken]["error"] is None and man[broken]["faces"] == 1
    assert man[broken]["part"] == "part-000002.parquet"
    t = _table(out)
    keys = list(zip(t.column("file").to_pylist(), t.column("face_index").to_pylist()))
    assert len(keys) == len(set(keys)) == 11 and (broken, 0) in keys
    assert [f.bbox.tolist() for f in read_faces(out)[broken]] == \
        [f.bbox.tolist() for f in onnx_analyzer.analyze(photos / "broken.jpg")]
    # now everything is done
    s = analyze_to_parquet([photos], out, onnx_analyzer, workers=0, resume=True, progress=False)
    assert (s.skipped, s.retried, s.images) == (12, 0, 0)


def test_summary_counts_failed_images_apart(photos, tmp_path, celeba_photo_paths, capsys):
    """The end-of-run line reports analysed and failed images separately (a failure is not 'analysed')."""
    out = tmp_path / "faces.parquet"
    cmd = ["analyze", str(photos), "--out", str(out), "--backend", "onnx", "--workers", "0", "--quiet"]
    assert main(cmd) == 1
    err = capsys.readouterr().err
    assert "broken.jpg: error: cannot decode" in err
    assert "11 image(s) analysed, 1 failed, 10 face(s) written" in err, err
    shutil.copy(celeba_photo_paths[10], photos / "broken.jpg")
    assert main([*cmd, "--resume"]) == 0
    err = capsys.readouterr().err
    assert "1 image(s) analysed, 0 failed, 1 face(s) written" in err, err
    assert "1 had failed before (retried)" in err and "11 already in" in err, err


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def test_ctrl_c_writes_what_is_finished_and_resumes(photos, tmp_path, onnx_analyzer, monkeypatch):
    real = batch.iter_results

    def interrupted(*a, **k):
        gen = real(*a, **k)
        yield next(gen)
        raise KeyboardInterrupt

    monkeypatch.setattr(batch, "iter_results", interrupted)
    out = tmp_path / "faces.parquet"
    with pytest.raises(KeyboardInterrupt):
        analyze_to_parquet([photos], out, onnx_analyzer, workers=0, batch_images=5, progress=False)
    assert len(read_manifest(out)) == 5  # the first batch, written although no part was full
    monkeypatch.setattr(batch, "iter_results", real)
    s = analyze_to_parquet([photos], out, onnx_analyzer, workers=0, resume=True, progress=False)
    assert s.skipped == 5 and s.images == 7 and len(read_manifest(out)) == 12


def test_bad_inputs(photos, tmp_path, onnx_analyzer, capsys, monkeypatch):
    out = tmp_path / "faces.parquet"

    def cli(*extra: str) -> str:
        assert main(["analyze", str(photos), "--backend", "onnx", "--quiet", *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        return err

    assert "exclude each other" in cli("--out", str(out), "--json", str(tmp_path / "r.json"))
    assert "exclude each other" in cli("--out", str(out), "--resume", "--overwrite")
    assert "needs --out" in cli("--engine", "ray")
    assert "is for --out" in cli("--resume")
    (tmp_path / "file.parquet").write_text("x")
    assert "is a file" in cli("--out", str(tmp_path / "file.parquet"))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert "did not write" in cli("--out", str(tmp_path / "other"))
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"
    assert "--flush-every" in cli("--out", str(out), "--flush-every", "0")
    assert "--workers" in cli("--out", str(out), "--workers", "-1")
    assert main(["analyze", str(photos), str(tmp_path / "missing"), "--out", str(out), "--backend", "onnx"]) == 2
    assert "does not exist" in capsys.readouterr().err
    # resuming with other settings
    analyze_to_parquet([photos / "sub"], out, onnx_analyzer, workers=0, progress=False)
    assert "other settings" in cli("--out", str(out), "--resume", "--tasks", "landmarks")
    # overwrite replaces
    assert main(["analyze", str(photos / "sub"), "--out", str(out), "--backend", "onnx", "--overwrite", "--quiet",
                 "--tasks", "landmarks"]) == 0
    assert pq.read_table(out).column("embedding").null_count == pq.read_table(out).num_rows
    capsys.readouterr()
    with pytest.raises(FaceAnalysisError, match="not a Parquet dataset"):
        read_manifest(tmp_path / "nothing.parquet")
    # without pyarrow: the extra is named
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    assert "faceanalysis[parquet]" in cli("--out", str(tmp_path / "new.parquet"))


def test_batch_module_imports_no_torch():
    code = ("import sys, faceanalysis.batch, faceanalysis.index, faceanalysis.integrations.ray; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env={**os.environ})


class CrashDetector:
    """YuNet, except that the process dies on 77x77 images (as a decoder crash would)."""

    def __init__(self) -> None:
        self._det = None

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self._det = None

    def detect(self, rgb, max_side=None):
        if rgb.shape[:2] == (77, 77):
            os._exit(3)
        if self._det is None:
            from faceanalysis.detect import YuNetDetector

            self._det = YuNetDetector()
        return self._det.detect(rgb, max_side)


def test_a_crashing_worker_fails_only_its_file(photos, tmp_path):
    import cv2

    cv2.imwrite(str(photos / "crash.png"), np.full((77, 77, 3), 50, np.uint8))
    fa = FaceAnalyzer(backend="onnx", detector=CrashDetector())
    out = tmp_path / "faces.parquet"
    s = analyze_to_parquet([photos], out, fa, workers=1, progress=False)
    assert sorted(s.failed) == sorted([str(photos / "broken.jpg"), str(photos / "crash.png")])
    man = read_manifest(out)
    assert "died on this file" in man[str(photos / "crash.png")]["error"]
    assert sum(v["faces"] for v in man.values()) == 10 and len(man) == 13
