"""The ``faceanalysis`` command line: analyze files and folders, JSON / overlay outputs, errors."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from faceanalysis import Face
from faceanalysis.cli import main


@pytest.fixture()
def image_dir(tmp_path, celeba_photo_paths):
    d = tmp_path / "imgs"
    (d / "nested").mkdir(parents=True)
    for p in celeba_photo_paths[:5]:
        shutil.copy(p, d / p.name)
    shutil.copy(celeba_photo_paths[5], d / "nested" / "deep.jpg")
    cv2.imwrite(str(d / "noface.png"), np.full((120, 160, 3), 80, np.uint8))
    (d / "notes.txt").write_text("not an image, ignored")
    return d


def _run(args, capsys):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_analyze_folder_json_and_draw(image_dir, tmp_path, tiny_weights, capsys):
    out_json = tmp_path / "out" / "res.json"
    draw_dir = tmp_path / "drawn"
    rc, out, err = _run(["analyze", image_dir, "--json", out_json, "--draw", draw_dir, "--weights", tiny_weights], capsys)
    assert rc == 0, err
    assert "Traceback" not in err
    report = json.loads(out_json.read_text())
    assert len(report) == 7  # 5 + nested + noface; the .txt is skipped
    assert report[str(image_dir / "noface.png")] == []
    assert str(image_dir / "nested" / "deep.jpg") in report
    n_faces = 0
    for path, faces in report.items():
        for d in faces:
            f = Face.from_dict(d)
            assert f.landmarks.shape == (68, 2) and f.parsing is not None
            assert json.loads(json.dumps(f.to_dict())) == d  # exact round trip through Face
            n_faces += 1
    assert n_faces == 6
    pngs = sorted(p.name for p in draw_dir.iterdir())
    assert len(pngs) == 7 and all(n.endswith("_faces.png") for n in pngs)
    img = cv2.imread(str(draw_dir / "deep_faces.png"))
    assert img is not None and img.shape == (256, 256, 3)
    assert "face(s)" in out and "box=" in out


def test_refuses_to_overwrite_without_flag(image_dir, tmp_path, tiny_weights, capsys):
    out_json = tmp_path / "res.json"
    out_json.write_text("keep me")
    rc, _, err = _run(["analyze", image_dir, "--json", out_json, "--weights", tiny_weights, "--quiet"], capsys)
    assert rc == 2 and "--overwrite" in err and "Traceback" not in err
    assert out_json.read_text() == "keep me"
    rc, _, err = _run(["analyze", image_dir, "--json", out_json, "--weights", tiny_weights, "--quiet", "--overwrite"], capsys)
    assert rc == 0, err
    assert isinstance(json.loads(out_json.read_text()), dict)

    draw_dir = tmp_path / "drawn"
    draw_dir.mkdir()
    one = sorted(image_dir.glob("*.jpg"))[0]
    existing = draw_dir / (one.stem + "_faces.png")
    existing.write_bytes(b"old")
    rc, _, err = _run(["analyze", image_dir, "--draw", draw_dir, "--weights", tiny_weights, "--quiet"], capsys)
    assert rc == 2 and "--overwrite" in err
    assert existing.read_bytes() == b"old"
    assert sorted(draw_dir.iterdir()) == [existing]  # refused before writing anything
    rc, _, err = _run(["analyze", image_dir, "--draw", draw_dir, "--weights", tiny_weights, "--quiet", "--overwrite"],
                      capsys)
    assert rc == 0, err
    assert existing.read_bytes() != b"old" and len(list(draw_dir.iterdir())) == 7


@pytest.mark.parametrize("flag", ["--json", "--jsonl"])
def test_json_dash_writes_to_stdout_and_no_file(flag, image_dir, tmp_path, tiny_weights, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = _run(["analyze", image_dir, flag, "-", "--weights", tiny_weights], capsys)
    assert rc == 0, err
    assert not (tmp_path / "-").exists()  # not a file named "-"
    if flag == "--json":
        report = json.loads(out)  # stdout is one JSON document: the per-face lines went to stderr
    else:
        report = {r["path"]: r["faces"] for r in map(json.loads, out.splitlines())}
    assert len(report) == 7 and sum(len(v) for v in report.values()) == 6
    assert "face(s)" in err and "box=" in err


def test_reader_closing_stdout_early_ends_quietly(image_dir, tmp_path, tiny_weights):
    """``analyze ... --jsonl - | head -n 1``: the reader stops after one line; no traceback, status 141 (SIGPIPE)."""
    many = tmp_path / "many"
    many.mkdir()
    photo = next(image_dir.glob("*.jpg"))
    for i in range(40):  # ~10 KB of JSON each: more than a pipe buffer holds, so the writer meets the closed pipe
        shutil.copy(photo, many / f"p{i:02d}.jpg")
    proc = subprocess.Popen([sys.executable, "-m", "faceanalysis", "analyze", str(many), "--jsonl", "-",
                             "--weights", str(tiny_weights), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    first = proc.stdout.readline()
    proc.stdout.close()  # what head does after its line
    err = proc.stderr.read().decode()
    rc = proc.wait(timeout=120)
    assert json.loads(first)["path"]
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert rc == 141
    assert not (tmp_path / "-").exists()


@pytest.mark.parametrize("case", ["missing_path", "empty_folder", "bad_weights", "json_is_folder", "draw_is_file",
                                  "bad_task", "cuda", "bad_det_size", "draw_name_clash", "both_stdout", "draw_dash"])
def test_errors_exit_2_with_one_line(case, image_dir, tmp_path, tiny_weights, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    afile = tmp_path / "afile"
    afile.write_text("x")
    args = {
        "missing_path": ["analyze", tmp_path / "nope.jpg"],
        "empty_folder": ["analyze", empty],
        "bad_weights": ["analyze", image_dir, "--weights", tmp_path / "nope.safetensors"],
        "json_is_folder": ["analyze", image_dir, "--json", empty, "--weights", tiny_weights],
        "draw_is_file": ["analyze", image_dir, "--draw", afile, "--weights", tiny_weights],
        "bad_task": ["analyze", image_dir, "--tasks", "gaze", "--weights", tiny_weights],
        "cuda": ["analyze", image_dir, "--device", "cuda:7", "--weights", tiny_weights],
        "bad_det_size": ["analyze", image_dir, "--max-side", "0", "--weights", tiny_weights],
        # nested/deep.jpg and a copy named deep.png would both become deep_faces.png
        "draw_name_clash": ["analyze", image_dir, "--draw", tmp_path / "drawn", "--weights", tiny_weights],
        "both_stdout": ["analyze", image_dir, "--json", "-", "--jsonl", "-", "--weights", tiny_weights],
        "draw_dash": ["analyze", image_dir, "--draw", "-", "--weights", tiny_weights],
    }[case]
    if case == "draw_name_clash":
        shutil.copy(image_dir / "nested" / "deep.jpg", image_dir / "deep.png")
    if case == "cuda":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    rc, out, err = _run(args, capsys)
    assert rc == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("faceanalysis: error: "), err
    assert "Traceback" not in err
    if case == "draw_name_clash":
        assert not (tmp_path / "drawn").exists() or not any((tmp_path / "drawn").iterdir())


def test_unreadable_images_are_reported_and_skipped(image_dir, tmp_path, tiny_weights, capsys):
    bad = image_dir / "broken.jpg"
    bad.write_bytes(sorted(image_dir.glob("*.jpg"))[0].read_bytes()[:300])
    out_json = tmp_path / "r.json"
    rc, out, err = _run(["analyze", image_dir, "--json", out_json, "--weights", tiny_weights, "--quiet"], capsys)
    assert rc == 1  # any failed file makes the exit status non-zero (issue 11), the others are still analysed
    assert "broken.jpg: error: cannot decode" in err and "Traceback" not in err
    assert "1 failed" in err  # the summary count
    assert "error" in json.loads(out_json.read_text())[str(bad)]
    rc, _, err = _run(["analyze", bad, "--weights", tiny_weights, "--quiet"], capsys)
    assert rc == 1  # nothing could be analysed


def test_task_subset_and_single_file(celeba_photo_paths, tmp_path, tiny_weights, capsys):
    out_json = tmp_path / "r.json"
    rc, out, err = _run(["analyze", celeba_photo_paths[0], "--tasks", "pose", "expression", "--json", out_json,
                         "--weights", tiny_weights], capsys)
    assert rc == 0, err
    (faces,) = json.loads(out_json.read_text()).values()
    assert faces[0]["pose"] is not None and faces[0]["landmarks"] is None and faces[0]["expression"] is not None


def test_console_script_runs_in_a_subprocess(tmp_path):
    """The real entry point: exit status and stderr as a user sees them (no traceback)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "faceanalysis", "analyze", str(tmp_path / "missing.jpg")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"faceanalysis: error: {tmp_path / 'missing.jpg'} does not exist"]


def test_train_subcommand_passes_options_through(tmp_path, capsys):
    """`faceanalysis train --config ...` reaches the trainer's own parser (leading options included)."""
    rc = main(["train", "--config", "no_such_config", "--out", str(tmp_path / "o")])
    _, err = capsys.readouterr()
    assert rc == 2 and "training config 'no_such_config' not found" in err
    with pytest.raises(SystemExit) as info:
        main(["train", "--help"])
    assert info.value.code == 0
    assert "--data-root" in capsys.readouterr().out
