"""weights/parsing_oracle.py: the oracles that say where the full-image parsing errors are (model card, stage 24)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from faceanalysis.config import PreprocessConfig
from faceanalysis.tasks.parsing import CLASSES, ParsingTask, parsing_scores


@pytest.fixture(scope="module")
def oracle():
    spec = importlib.util.spec_from_file_location("parsing_oracle",
                                                  Path(__file__).resolve().parents[1] / "weights" / "parsing_oracle.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _scale_matrix(k: float, shift: float) -> np.ndarray:
    """image -> crop: crop = k * image - shift."""
    return np.array([[k, 0.0, -shift], [0.0, k, -shift]])


def test_crop_area_is_the_crop_in_image_pixels(oracle):
    m = _scale_matrix(0.5, 16.0)  # a 128 px crop covers image pixels 32 .. 288
    inside = oracle.crop_area(m, (320, 320), 128)
    ys, xs = np.nonzero(inside)
    assert abs(ys.min() - 32) <= 1 and abs(ys.max() - 287) <= 1 and abs(xs.min() - 32) <= 1
    assert abs(inside.sum() - 256 * 256) < 0.02 * 256 * 256


@pytest.mark.parametrize("field", [1.0, 1.5])
def test_map_resolution_oracle_keeps_blocks_and_loses_lines_thinner_than_a_map_pixel(oracle, field):
    """The truth area-averaged onto a 64x64 grid over a 128 px crop (2 px per map pixel) and mapped back: large
    regions come back nearly exactly; a class one image pixel wide (at 1 crop px per image px) cannot win a map
    pixel, which is why the necklace scores 0 at this resolution."""
    pre = PreprocessConfig(input_size=128)
    m = _scale_matrix(1.0, 0.0)  # image = crop frame
    mask = np.zeros((128, 128), np.uint8)
    mask[20:100, 24:104] = CLASSES.index("skin")
    mask[40:60, 40:90] = CLASSES.index("nose")
    mask[100:128, :] = CLASSES.index("cloth")
    mask[80, 10:118] = CLASSES.index("neck_l")  # one pixel thin
    maps = oracle.grid_truth(mask, m, 128, field, 2)
    assert maps["parsing"].shape == (19, 64, 64)
    assert ("parsing_wide" in maps) == (field != 1.0)
    pred = ParsingTask().to_face(maps, m, mask.shape, pre)["parsing"].full(mask.shape)
    f1, _, present = parsing_scores(pred, mask, len(CLASSES))
    for name in ("skin", "nose", "cloth"):
        assert f1[CLASSES.index(name)] > 0.95, name
    assert f1[CLASSES.index("neck_l")] == 0.0


def test_oracles_bound_the_model_on_the_val_masks(oracle, tiny_weights, data_root, capsys):
    rc = oracle.main(["val", str(tiny_weights), "--data-root", str(data_root)])
    assert rc == 0
    lines = [json.loads(ln) for ln in capsys.readouterr().out.splitlines() if ln.startswith("{")]
    assert 0 < lines[0]["labelled_pixels_outside_crop_pct"] < 100
    scores = {d["score"]: d["mean_f1"] for d in lines[1:]}
    assert list(scores) == ["model", "ring oracle", "crop oracle", "map-resolution oracle"]
    # an untrained model: pasting the truth in can only help, and the crop holds most of the labelled pixels
    assert scores["model"] <= scores["ring oracle"] < scores["crop oracle"] <= 100
    # the tiny test model's maps are 32x32 (64 px crops): coarser than the shipped 64x64, a lower ceiling (~80)
    assert scores["map-resolution oracle"] > max(60.0, scores["model"] + 20)


def test_missing_weights_is_a_one_line_error(oracle, tmp_path):
    from faceanalysis.errors import FaceAnalysisError

    with pytest.raises(FaceAnalysisError, match="no such weights file"):
        oracle.main(["val", str(tmp_path / "nope.safetensors")])
