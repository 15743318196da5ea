"""Ray Data scale-out (issue 13, part 2): on a local Ray cluster started here, ``analyze_with_ray`` writes the
same Parquet dataset as the single-process path. Ray is a test dependency (the [ray] extra in [test]): a missing
or broken Ray fails this test instead of skipping it."""
from __future__ import annotations

import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray

from faceanalysis import FaceAnalyzer
from faceanalysis.batch import analyze_to_parquet, read_manifest
from faceanalysis.cli import main
from faceanalysis.integrations.ray import analyze_with_ray


@pytest.fixture(scope="module")
def local_ray():
    import logging

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    yield
    ray.shutdown()


def _sorted(out):
    return pq.read_table(out).sort_by([("file", "ascending"), ("face_index", "ascending")])


def test_ray_equals_the_single_process_path(local_ray, tmp_path, celeba_photo_paths, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in celeba_photo_paths[:48]:
        shutil.copy(p, photos / p.name)
    (photos / "broken.jpg").write_bytes(b"not an image")
    import cv2

    cv2.imwrite(str(photos / "blank.png"), np.full((80, 80, 3), 200, np.uint8))
    local = tmp_path / "local.parquet"
    analyze_to_parquet([photos], local, FaceAnalyzer(backend="onnx"), workers=0, progress=False)
    out = tmp_path / "ray.parquet"
    s = analyze_with_ray([photos], out, {"backend": "onnx"}, concurrency=2, batch_size=8, flush_images=20,
                         progress=False)
    assert s.images == 50 and s.failed == [str(photos / "broken.jpg")]
    a, b = _sorted(out), _sorted(local)
    assert a.schema.remove_metadata() == b.schema.remove_metadata()
    assert a.num_rows == b.num_rows and a.column("file").to_pylist() == b.column("file").to_pylist()
    for col in a.column_names:
        x, y = a.column(col).to_pylist(), b.column(col).to_pylist()
        if col in ("file", "face_index", "gender_label", "expression", "image_width", "image_height"):
            assert x == y, col
        elif col == "parsing":
            assert [r["box"] for r in x] == [r["box"] for r in y]
        elif col in ("attributes", "expression_probs"):
            np.testing.assert_allclose([list(r.values()) for r in x], [list(r.values()) for r in y], atol=1e-3)
        else:
            np.testing.assert_allclose(np.array(x, float), np.array(y, float), atol=2e-2 if col == "landmarks" else 1e-3,
                                       err_msg=col)
    assert read_manifest(out).keys() == read_manifest(local).keys()
    # the CLI engine flag, resuming the finished dataset on the running cluster: only the failed file is tried
    # again (and fails again: exit status 1), the analysed ones are skipped
    assert main(["analyze", str(photos), "--out", str(out), "--engine", "ray", "--resume", "--backend", "onnx",
                 "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "0 image(s) analysed, 1 failed, 0 face(s) written" in err and "1 had failed before (retried)" in err, err
    assert "49 already in" in err and "broken.jpg: error:" in err, err
    assert pq.read_table(out).num_rows == a.num_rows  # nothing written twice
    assert read_manifest(out).keys() == read_manifest(local).keys()
