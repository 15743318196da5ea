"""``faceanalysis eval``: loaders fail clearly on bad folders, options are checked, and a small end-to-end
run on the real data pack writes the whole report."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from faceanalysis.detect import Detection
from faceanalysis.errors import FaceAnalysisError
from faceanalysis.evaluate import main
from faceanalysis.evaluation.detection import pick_face
from faceanalysis.evaluation.lfw import load_lfw, select_pairs
from faceanalysis.evaluation.report import README_END, README_START, update_readme


def _lfw_pack(tmp_path: Path, data_root: Path, n_pairs: int = 4) -> Path:
    """A tiny copy of the LFW folder (first pairs only) for loader tests."""
    src = data_root / "lfw"
    dst = tmp_path / "pack" / "lfw"
    (dst / "images").mkdir(parents=True)
    lines = (src / "pairs.csv").read_text().splitlines()
    pairs = [lines[0]] + lines[1:1 + n_pairs]
    (dst / "pairs.csv").write_text("\n".join(pairs) + "\n")
    ids = {c for row in pairs[1:] for c in row.split(",")[1:3]}
    rows = ["id,identity,path"]
    for k in sorted(ids):
        shutil.copy(src / "images" / f"{k}.jpg", dst / "images" / f"{k}.jpg")
        rows.append(f"{k},{k.rsplit('_', 1)[0]},images/{k}.jpg")
    (dst / "labels.csv").write_text("\n".join(rows) + "\n")
    return dst.parent


def test_lfw_loader_missing_folder(tmp_path):
    with pytest.raises(FaceAnalysisError, match="LFW folder not found"):
        load_lfw(tmp_path)


def test_lfw_loader_malformed(tmp_path, data_root):
    root = _lfw_pack(tmp_path, data_root)
    pairs = load_lfw(root)
    assert len(pairs.same) == 4 and pairs.detected.all() and pairs.kps5.shape[1:] == (5, 2)
    # a missing column
    (root / "lfw" / "pairs.csv").write_text("fold,id1,id2\n0,a,b\n")
    with pytest.raises(FaceAnalysisError, match="missing column"):
        load_lfw(root)
    # a pair that names an unknown image
    (root / "lfw" / "pairs.csv").write_text("fold,id1,id2,same\n0,Nobody_0001,Nobody_0002,1\n")
    with pytest.raises(FaceAnalysisError, match="missing from labels.csv"):
        load_lfw(root)
    # a corrupt image
    first = sorted((root / "lfw" / "images").iterdir())[0]
    (root / "lfw" / "pairs.csv").write_text(f"fold,id1,id2,same\n0,{first.stem},{first.stem},1\n")
    first.write_bytes(b"not a jpeg")
    with pytest.raises(FaceAnalysisError, match="cannot read LFW image"):
        load_lfw(root)


def test_select_pairs_balanced_over_folds():
    fold = np.repeat(np.arange(10), 600)
    same = np.tile(np.r_[np.ones(300), np.zeros(300)], 10).astype(bool)
    sel = select_pairs(fold, same, 40)
    assert len(sel) == 40
    for k in range(10):
        assert same[sel][fold[sel] == k].sum() == 2 and (~same[sel][fold[sel] == k]).sum() == 2
    assert len(select_pairs(fold, same, None)) == 6000


def test_pick_face_prefers_large_central_face():
    def det(x0, y0, s):
        return Detection(np.array([x0, y0, x0 + s, y0 + s], np.float32), 0.9, np.zeros((5, 2), np.float32))

    central, corner = det(40, 40, 20), det(0, 0, 24)
    assert pick_face([corner, central], (100, 100, 3)) is central
    assert pick_face([], (100, 100, 3)) is None


def test_update_readme_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{README_START}\nold\n{README_END}\nend\n")
    update_readme(readme, "| new |")
    text = readme.read_text()
    assert "old" not in text and "| new |" in text and text.startswith("intro") and text.endswith("end\n")
    readme.write_text("no markers")
    with pytest.raises(FaceAnalysisError, match="markers"):
        update_readme(readme, "x")


def test_eval_cli_errors(tmp_path, data_root, capsys, monkeypatch):
    assert main(["--data-root", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    # an explicitly requested dataset whose folder is missing
    assert main(["--data-root", str(tmp_path), "--datasets", "utkface"]) == 2
    assert "not found" in capsys.readouterr().err
    # a malformed dataset folder (labels.csv without the needed columns)
    (tmp_path / "celebamask_mini").mkdir()
    (tmp_path / "celebamask_mini" / "labels.csv").write_text("id,image\nx,y\n")
    monkeypatch.setenv("FACEANALYSIS_CACHE", str(tmp_path / "cache"))
    assert main(["--data-root", str(tmp_path), "--datasets", "celebamask_mini", "--report", str(tmp_path / "r")]) == 2
    assert "malformed" in capsys.readouterr().err
    assert main(["--data-root", str(data_root), "--tasks", "telepathy"]) == 2
    assert main(["--data-root", str(data_root), "--update-readme", str(tmp_path / "missing.md")]) == 2
    assert "markers" in capsys.readouterr().err


def test_eval_end_to_end_tiny(tmp_path, data_root, tiny_weights):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{README_START}\nplaceholder\n{README_END}\n")
    report = tmp_path / "report"
    rc = main(["--data-root", str(data_root), "--weights", str(tiny_weights), "--limit", "8", "--report", str(report),
               "--update-readme", str(readme), "--threads", "1"])
    assert rc == 0
    for name in ("summary.md", "results.json", "ced_300w.png", "confusion_fer2013.png", "confusion_ferplus.png",
                 "roc_lfw.png", "parsing_f1.png", "examples.png"):
        assert (report / name).is_file() and (report / name).stat().st_size > 0, name
    data = json.loads((report / "results.json").read_text())
    keys = {r["key"] for r in data["rows"]}
    assert {"parsing/mean_f1", "landmarks/nme_io", "landmarks/fr8", "landmarks/auc8", "pose/mae_yaw",
            "attributes/celeba_mean_acc", "expression/fer2013_acc", "expression/ferplus_acc", "age/utkface_mae",
            "gender/utkface_acc", "identity/lfw_acc", "identity/lfw_tar_far1e-3"} <= keys
    for r in data["rows"]:
        assert r["n"] > 0 and np.isfinite(r["value"]), r
    assert len(data["details"]["lfw/identity"]["ours"]["fold_acc"]) == 10
    text = readme.read_text()
    assert "placeholder" not in text and "| parsing | celebamask_mini |" in text
    assert "FaceXFormer" in text and "vs teacher" in text
