"""The parsing context ring (``ModelConfig.parsing_field`` > 1): parsing maps beyond the aligned crop.

Grown from crop-only weights it changes nothing inside the crop and starts by carrying the crop's edge classes
outward; its training targets are the masks over the ring; ``to_face`` and drawing cover the wider field; a stage
can train it alone (``TrainConfig.trainable``) without touching any other output.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from faceanalysis import FaceAnalysisError
from faceanalysis.config import FaceAnalysisConfig, ModelConfig, PreprocessConfig
from faceanalysis.model import FaceModel
from faceanalysis.tasks.base import Geometry
from faceanalysis.tasks.parsing import CLASSES, FLIP_PERM, IGNORE, ParsingTask
from faceanalysis.train import freeze_except, set_train_mode

from conftest import TINY

FIELD = 1.5  # tiny crops are 64 px: 32x32 maps, a ring of 8 map pixels (2 cells of 4)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    plain = FaceModel(ModelConfig(**TINY)).eval()
    wide = FaceModel(dataclasses.replace(plain.cfg, parsing_field=FIELD)).eval()
    missing, unexpected = wide.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("heads.parsing.context.") for k in missing)
    return plain, wide


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(1)
    return torch.randn(2, 3, TINY["input_size"], TINY["input_size"])


def test_grown_ring_keeps_the_crop_and_extends_its_edges(models, batch):
    plain, wide = models
    m = TINY["input_size"] // 2
    r = int((FIELD - 1) / 2 * m)
    with torch.no_grad():
        before, after = plain(batch), wide(batch)
    assert wide.output_names[:2] == ["parsing", "parsing_wide"] and "parsing_wide" not in plain.output_names
    assert after["parsing_wide"].shape == (2, 19, m + 2 * r, m + 2 * r)
    for k in before:
        torch.testing.assert_close(after[k], before[k])
    torch.testing.assert_close(after["parsing_wide"][..., r:r + m, r:r + m], before["parsing"])
    # untrained (last conv zero): the ring is the crop's 4x4-pooled edge logits replicated outward, upsampled
    coarse = F.avg_pool2d(before["parsing"], 4)
    edge = F.pad(coarse, (r // 4,) * 4, mode="replicate")
    ring = F.interpolate(edge, scale_factor=4.0, mode="bilinear", align_corners=False)
    outside = torch.ones(m + 2 * r, m + 2 * r, dtype=torch.bool)
    outside[r:r + m, r:r + m] = False
    torch.testing.assert_close(after["parsing_wide"][..., outside], ring[..., outside])
    # trained, the ring is its own prediction
    ctx = wide.heads.parsing.context
    saved = ctx.out.weight.detach().clone()
    try:
        torch.nn.init.normal_(ctx.out.weight, std=0.5)
        with torch.no_grad():
            moved = wide(batch, tasks=["parsing"])["parsing_wide"]
        assert not torch.allclose(moved[..., outside], ring[..., outside], atol=1e-3)
        torch.testing.assert_close(moved[..., r:r + m, r:r + m], before["parsing"])
    finally:
        with torch.no_grad():
            ctx.out.weight.copy_(saved)


def test_field_config_is_checked_and_stored_only_when_used():
    base = ModelConfig(**TINY)
    with pytest.raises(FaceAnalysisError, match="multiple of 4"):
        FaceModel(dataclasses.replace(base, parsing_field=1.3))
    with pytest.raises(FaceAnalysisError, match="needs parsing_stride 2"):
        FaceModel(dataclasses.replace(base, parsing_field=FIELD, parsing_stride=1))
    plain, wide = FaceAnalysisConfig(), FaceAnalysisConfig(model=dataclasses.replace(ModelConfig(), parsing_field=FIELD))
    assert "parsing_field" not in plain.to_json() and '"parsing_field": 1.5' in wide.to_json()
    assert FaceAnalysisConfig.from_json(wide.to_json()) == wide


def test_ring_targets_cover_the_field_and_flip_with_the_crop():
    s = 64
    task = ParsingTask().for_model(dataclasses.replace(ModelConfig(**TINY), parsing_field=FIELD))
    assert task.field == FIELD and ParsingTask.field == 1.0  # a configured copy, the registry's untouched
    r = task.ring_pixels(s)
    rng = np.random.default_rng(0)
    src = rng.integers(0, 19, (96, 96)).astype(np.uint8)
    matrix = np.array([[0.9, 0.1, 5.0], [-0.1, 0.9, 8.0]])
    plain = task.warp_target({"mask": src}, Geometry(matrix=matrix, flip=False, size=s))
    wide = plain["mask_wide"]
    assert wide.shape == (s + 2 * r, s + 2 * r) and (wide[r:r + s, r:r + s] == IGNORE).all()
    ring = wide != IGNORE
    assert ring.mean() > 0.2  # the source covers part of the ring; beyond the source it is unlabelled
    flipped = task.warp_target({"mask": src}, Geometry(matrix=matrix, flip=True, size=s))["mask_wide"]
    mirror = wide[:, ::-1]
    expect = np.where(mirror == IGNORE, IGNORE, FLIP_PERM[np.minimum(mirror, 18)])
    np.testing.assert_array_equal(flipped, expect)
    assert set(task.empty_target(s)) == {"mask", "tags", "mask_wide"}
    assert "mask_wide" not in ParsingTask().empty_target(s)
    # the loss reads the ring at the map's pixels; no labelled ring pixel -> no term
    logits = torch.zeros(1, 19, (s + 2 * r) // 2, (s + 2 * r) // 2, requires_grad=True)
    empty = torch.from_numpy(task.empty_target(s)["mask_wide"][None])
    assert task.ring_loss(logits, empty) is None
    loss = task.ring_loss(logits, torch.from_numpy(wide[None].copy()))
    assert loss is not None and abs(float(loss.detach()) - np.log(19)) < 1e-4


def test_to_face_and_drawing_cover_the_wider_field():
    """A face whose ring says "cloth" below the crop: the mask's box grows to the field, the pixels below the crop
    are cloth, and drawing colours them (the fade follows the field, not the crop)."""
    from types import SimpleNamespace

    from faceanalysis import align

    pre = PreprocessConfig()
    s, m = pre.input_size, pre.input_size // 2
    r = int((FIELD - 1) / 2 * m)
    cloth, skin = CLASSES.index("cloth"), CLASSES.index("skin")
    fine = np.full((19, m, m), -5.0, np.float32)
    fine[skin] = 5.0
    wide = np.full((19, m + 2 * r, m + 2 * r), -5.0, np.float32)
    wide[skin] = 5.0
    wide[:, r + m:, :] = -5.0
    wide[cloth, r + m:, :] = 5.0  # the ring below the crop
    kps = np.array([[200, 200], [250, 200], [225, 230], [205, 255], [245, 255]], np.float32)
    matrix = align.alignment_matrix(kps, pre)
    task = ParsingTask()
    plain = task.to_face({"parsing": fine}, matrix, (600, 500), pre)["parsing"]
    pm = task.to_face({"parsing": fine, "parsing_wide": wide}, matrix, (600, 500), pre)["parsing"]
    assert pm.field == FIELD and plain.field == 1.0
    (x0, y0, x1, y1), (px0, py0, px1, py1) = pm.box, plain.box
    assert x0 < px0 and y0 < py0 and x1 > px1 and y1 > py1
    full, crop_only = pm.full((600, 500)), plain.full((600, 500))
    below = (full == cloth) & (crop_only == 0)
    assert below.sum() > 1000 and not (crop_only == cloth).any()
    ys = np.nonzero(below)[0]
    assert ys.min() >= py1 - 2  # cloth only below the crop's bottom edge
    seam = py1 - int(0.03 * (py1 - py0))  # at the crop's bottom edge the maps blend into the ring's cloth
    np.testing.assert_array_equal(full[py0:seam, px0:px1][crop_only[py0:seam, px0:px1] == skin], skin)
    canvas = np.zeros((600, 500, 3), np.uint8)
    face = SimpleNamespace(parsing=pm, crop_matrix=matrix, keypoints5=kps, bbox=np.array([180, 170, 270, 280.0]),
                           score=1.0)
    task.draw(canvas, face)
    ys, xs = np.nonzero(below)
    inner = (ys > ys.min() + 10) & (ys < ys.max() - 25)
    assert canvas[ys[inner], xs[inner]].any(1).mean() > 0.5


def test_a_stage_can_train_the_ring_alone(models, batch):
    """``TrainConfig.trainable``: only the ring's parameters move, everything else keeps its values and stays in
    eval mode (no batch-norm statistics update, no stochastic depth)."""
    _, wide = models
    model = FaceModel(wide.cfg)
    model.load_state_dict(wide.state_dict())
    with pytest.raises(FaceAnalysisError, match="no parameter of the model starts with"):
        freeze_except(model, ["heads.parsing.nothing"])
    n = freeze_except(model, ["heads.parsing.context"])
    assert n == sum(p.numel() for p in model.heads.parsing.context.parameters())
    set_train_mode(model, ["heads.parsing.context"])
    assert model.heads.parsing.context.training and not model.encoder.training
    assert not any(m.training for m in model.encoder.modules())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    task = ParsingTask().for_model(model.cfg)
    s = TINY["input_size"]
    r = task.ring_pixels(s)
    mask = torch.randint(0, 19, (2, s + 2 * r, s + 2 * r), dtype=torch.uint8)
    mask[:, r:r + s, r:r + s] = IGNORE
    target = {"mask": torch.full((2, s, s), IGNORE, dtype=torch.uint8), "tags": torch.full((2, 4), float("nan")),
              "mask_wide": mask}
    for _ in range(2):
        loss = task.loss(model(batch, raw=True), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith("heads.parsing.context.") for k in moved)


def test_analyzer_can_keep_parsing_to_the_crop(default_weights, face_photo):
    """The shipped weights have the ring: ``Face.parsing`` covers 1.5 crop sides by default, the crop alone with
    ``parsing_ring=False`` (``--no-parsing-ring``), and inside the crop the two agree away from its edge."""
    from faceanalysis import FaceAnalyzer
    from faceanalysis.weights import read_config

    assert read_config(default_weights).model.parsing_field == FIELD
    with pytest.raises(FaceAnalysisError, match="parsing_ring must be True or False"):
        FaceAnalyzer(parsing_ring="no")
    wide = FaceAnalyzer(tasks=["parsing"], backend="torch").analyze(face_photo)[0].parsing
    crop = FaceAnalyzer(tasks=["parsing"], backend="torch", parsing_ring=False).analyze(face_photo)[0].parsing
    assert wide.field == FIELD and crop.field == 1.0
    (x0, y0, x1, y1), (cx0, cy0, cx1, cy1) = wide.box, crop.box
    assert x0 <= cx0 and y0 <= cy0 and x1 >= cx1 and y1 >= cy1 and wide.mask.size > crop.mask.size
    h, w = face_photo.shape[:2]
    a, b = wide.full((h, w)), crop.full((h, w))
    mx, my = (cx1 - cx0) // 10, (cy1 - cy0) // 10
    inner = (slice(cy0 + my, cy1 - my), slice(cx0 + mx, cx1 - mx))
    assert (a[inner] == b[inner]).mean() > 0.99
    from faceanalysis.api import Face
    from faceanalysis.tasks.parsing import ParsingMask

    d = ParsingMask(wide.mask, wide.box, field=wide.field)

    face = Face(bbox=np.zeros(4, np.float32), score=1.0, keypoints5=np.zeros((5, 2), np.float32),
                crop_matrix=np.eye(2, 3), parsing=d)
    back = Face.from_dict(face.to_dict()).parsing
    assert back.field == FIELD and back.box == wide.box and np.array_equal(back.mask, wide.mask)
