"""Issue 11, folder-run kind: `faceanalysis analyze FOLDER` never loses work. Results are streamed as they are
produced, a file that cannot be decoded / drawn / written (odd names and encodings included) is reported and
skipped, the exit status is non-zero with a summary count when any file failed, and outputs written into the
input folder are never read back as inputs."""
from __future__ import annotations

import json
import os
import shutil

import cv2
import numpy as np
import pytest

from faceanalysis import FaceAnalyzer
from faceanalysis.cli import _is_overlay, main

ODD_NAMES = ["with space.jpg", "ünïcødé 顔.jpg", "new\nline.jpg", "semi;colon'quote\".jpg", "x" * 248 + ".jpg",
             "-starts-with-dash.jpg", "UPPER.JPG"]


@pytest.fixture()
def folder(tmp_path, celeba_photo_paths):
    d = tmp_path / "photos"
    d.mkdir()
    for name, src in zip(ODD_NAMES, celeba_photo_paths):
        shutil.copy(src, d / name)
    undecodable = os.fsencode(d) + b"/latin1-\xe9t\xe9.jpg"  # not valid UTF-8
    with open(undecodable, "wb") as f:
        f.write(celeba_photo_paths[8].read_bytes())
    (d / "truncated.jpg").write_bytes(celeba_photo_paths[9].read_bytes()[:400])
    (d / "text.jpg").write_text("not an image")
    (d / "png_named.jpg").write_bytes(cv2.imencode(".png", cv2.imread(str(celeba_photo_paths[10])))[1].tobytes())
    (d / "notes.txt").write_text("ignored")
    return d


def _run(args, capsys):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_folder_run_reports_skips_and_summarises(folder, tmp_path, tiny_weights, capsys):
    jsonl, js = tmp_path / "r.jsonl", tmp_path / "r.json"
    rc, out, err = _run(["analyze", folder, "--jsonl", jsonl, "--json", js, "--draw", folder, "--weights", tiny_weights],
                        capsys)
    assert rc == 1  # some files failed
    assert "Traceback" not in err
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(records) == len(ODD_NAMES) + 4  # every image file, good or bad, exactly once
    bad = {os.path.basename(r["path"]) for r in records if "error" in r}
    assert bad == {"truncated.jpg", "text.jpg"}, bad
    assert "faceanalysis analyze: 11 of 11 file(s) processed, 9 analysed, 2 failed" in err
    assert "truncated.jpg: error: cannot decode" in err
    assert all(len(r["faces"]) == 1 for r in records if "faces" in r)
    # the --json file is a valid JSON object with the same entries
    assert set(json.loads(js.read_text())) == {r["path"] for r in records}
    # names are printed on one line each, undecodable bytes escaped
    assert "new\\nline.jpg: 1 face(s)" in out and "latin1-\\udce9t\\udce9.jpg" in out
    overlays = [p for p in folder.iterdir() if p.name.endswith("_faces.png")]
    assert len(overlays) == 9 and all(_is_overlay(p) for p in overlays)
    # a second run over the same folder never reads the overlays back as inputs
    rc, out, err = _run(["analyze", folder, "--jsonl", jsonl, "--draw", folder, "--overwrite", "--weights", tiny_weights,
                         "--quiet"], capsys)
    assert rc == 1 and len(jsonl.read_text().splitlines()) == len(records)
    assert "9 output file(s) of faceanalysis in the input folders left out" in err
    # a user's own file that merely ends in _faces.png is still an input
    cv2.imwrite(str(folder / "team_faces.png"), cv2.imread(str(folder / "UPPER.JPG")))
    rc, _, _ = _run(["analyze", folder, "--jsonl", jsonl, "--overwrite", "--weights", tiny_weights, "--quiet"], capsys)
    assert len(jsonl.read_text().splitlines()) == len(records) + 1


def test_draw_folder_inside_the_input_folder_is_left_out(folder, tmp_path, tiny_weights, capsys):
    out_dir = folder / "drawn"
    out_dir.mkdir()
    cv2.imwrite(str(out_dir / "stray.png"), np.zeros((20, 20, 3), np.uint8))
    rc, _, err = _run(["analyze", folder, "--draw", out_dir, "--jsonl", tmp_path / "a.jsonl", "--weights", tiny_weights,
                       "--quiet"], capsys)
    lines = (tmp_path / "a.jsonl").read_text().splitlines()
    assert not any("drawn" in json.loads(x)["path"] for x in lines) and len(lines) == len(ODD_NAMES) + 4


def test_results_written_before_the_run_stops(folder, tmp_path, tiny_weights, capsys, monkeypatch):
    """A run interrupted after 3 images keeps their results (JSON Lines flushed, the JSON object closed); an
    unexpected exception on one image is reported and the run goes on."""
    calls = {"n": 0}
    real = FaceAnalyzer.analyze

    def flaky(self, image, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("native library hiccup")
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(self, image, *a, **k)

    monkeypatch.setattr(FaceAnalyzer, "analyze", flaky)
    jsonl, js = tmp_path / "r.jsonl", tmp_path / "r.json"
    rc, _, err = _run(["analyze", folder, "--jsonl", jsonl, "--json", js, "--weights", tiny_weights, "--quiet"], capsys)
    assert rc == 130
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(records) >= 3
    assert any("unexpected RuntimeError: native library hiccup" in r.get("error", "") for r in records)
    assert len(json.loads(js.read_text())) == len(records)
    assert "processed" in err


def test_unwritable_overlay_is_reported_not_fatal(folder, tmp_path, tiny_weights, capsys):
    out_dir = tmp_path / "drawn"
    out_dir.mkdir()
    (out_dir / "UPPER_faces.png").mkdir()  # a folder where one overlay should go
    rc, _, err = _run(["analyze", folder, "--draw", out_dir, "--overwrite", "--jsonl", tmp_path / "r.jsonl",
                       "--weights", tiny_weights, "--quiet"], capsys)
    assert rc == 1
    assert "UPPER.JPG: error: analysed, but the overlay" in err
    rec = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    upper = [r for r in rec if r["path"].endswith("UPPER.JPG")][0]
    assert "faces" in upper and "error" in upper  # the analysis itself is kept
    assert len(list(out_dir.glob("*_faces.png"))) == 8 + 1  # the others were drawn (+ the blocking folder)


def test_all_good_folder_exits_zero(tmp_path, celeba_photo_paths, tiny_weights, capsys):
    d = tmp_path / "ok"
    d.mkdir()
    for p in celeba_photo_paths[:3]:
        shutil.copy(p, d / p.name)
    rc, _, err = _run(["analyze", d, "--jsonl", tmp_path / "r.jsonl", "--weights", tiny_weights, "--quiet"], capsys)
    assert rc == 0 and err == ""
