"""Label transforms of each task: flip permutations, pose signs under flip and rotation, parsing l/r swap."""
from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest

from faceanalysis import align
from faceanalysis.tasks import TASKS, Geometry, get_tasks
from faceanalysis.tasks import landmarks as lm_mod
from faceanalysis.tasks import parsing as parsing_mod
from faceanalysis import FaceAnalysisError

S = 64


def _identity_geo(flip: bool) -> Geometry:
    return Geometry(matrix=np.array([[1.0, 0, 0], [0, 1.0, 0]]), flip=flip, size=S)


def _real_300w_points(data_root, n=5) -> np.ndarray:
    with open(data_root / "300w_partial" / "labels.csv", newline="") as f:
        rows = [r for _, r in zip(range(n), csv.DictReader(f))]
    cols = [f"{a}{i}" for i in range(68) for a in "xy"]
    return np.array([[float(r[c]) for c in cols] for r in rows], np.float32).reshape(-1, 68, 2)


# ---- landmarks ---------------------------------------------------------------------------------------------------
def test_landmark_flip_perm_is_an_involution_pairing_left_and_right():
    perm = lm_mod.FLIP_PERM
    assert sorted(perm.tolist()) == list(range(68))
    np.testing.assert_array_equal(perm[perm], np.arange(68))
    # iBUG pairs: jaw ends, brow ends, outer / inner eye corners, mouth corners; midline points stay
    for a, b in [(0, 16), (17, 26), (36, 45), (39, 42), (37, 44), (41, 46), (31, 35), (48, 54), (60, 64)]:
        assert perm[a] == b and perm[b] == a
    for mid in (8, 27, 28, 29, 30, 33, 51, 57, 62, 66):
        assert perm[mid] == mid


def test_landmark_warp_target_flip_mirrors_and_keeps_semantics(data_root):
    task = TASKS["landmarks"]
    for pts in _real_300w_points(data_root):
        kps = align.kps5_from_68(pts)
        from faceanalysis.config import PreprocessConfig

        pre = PreprocessConfig(input_size=S)
        m = align.alignment_matrix(kps, pre)
        plain = task.warp_target({"points": pts, "weight": np.float32(1)}, Geometry(m, False, S))["points"]
        flipped = task.warp_target({"points": pts, "weight": np.float32(1)}, Geometry(m, True, S))["points"]
        # geometry: each flipped point is the mirror image (x -> S-1-x) of its partner
        np.testing.assert_allclose(flipped[:, 0], S - 1 - plain[lm_mod.FLIP_PERM, 0], atol=1e-4)
        np.testing.assert_allclose(flipped[:, 1], plain[lm_mod.FLIP_PERM, 1], atol=1e-4)
        # semantics: the subject's right eye (36-41) and right mouth corner (48) stay on the image's left
        assert flipped[36:42, 0].mean() < flipped[42:48, 0].mean()
        assert flipped[48, 0] < flipped[54, 0]
        # the jaw still runs from image-left (0) to image-right (16)
        assert flipped[0, 0] < flipped[16, 0]


def test_landmark_warp_target_applies_the_matrix():
    task = TASKS["landmarks"]
    pts = np.random.default_rng(0).uniform(0, 100, (68, 2)).astype(np.float32)
    m = cv2.getRotationMatrix2D((50, 50), 25, 0.5)
    out = task.warp_target({"points": pts, "weight": np.float32(2)}, Geometry(m, False, S))
    np.testing.assert_allclose(out["points"], pts @ m[:, :2].T + m[:, 2], atol=1e-3)
    assert out["weight"] == 2


# ---- pose --------------------------------------------------------------------------------------------------------
def test_pose_flip_negates_yaw_and_roll_keeps_pitch():
    task = TASKS["pose"]
    out = task.warp_target({"ypr": np.array([20.0, -7.0, 5.0], np.float32)}, _identity_geo(True))["ypr"]
    np.testing.assert_allclose(out, [-20.0, -7.0, -5.0], atol=1e-5)
    out = task.warp_target({"ypr": np.array([20.0, -7.0, 5.0], np.float32)}, _identity_geo(False))["ypr"]
    np.testing.assert_allclose(out, [20.0, -7.0, 5.0], atol=1e-5)


@pytest.mark.parametrize("angle", [-30.0, 10.0, 45.0])
def test_pose_roll_follows_in_plane_rotation(angle):
    """A crop that rotates the content counter-clockwise by ``angle`` adds ``angle`` to roll (roll > 0 = CCW)."""
    task = TASKS["pose"]
    m = cv2.getRotationMatrix2D((S / 2, S / 2), angle, 1.0)  # OpenCV: positive angle = CCW as displayed
    assert align.rotation_ccw_deg(m) == pytest.approx(angle, abs=1e-6)
    ypr = np.array([3.0, 4.0, 5.0], np.float32)
    out = task.warp_target({"ypr": ypr.copy()}, Geometry(m, False, S))["ypr"]
    np.testing.assert_allclose(out, [3.0, 4.0, 5.0 + angle], atol=1e-4)
    # to_face undoes it: crop-frame pose -> image-frame pose
    back = task.to_face({"pose": out}, m, (S, S), None)["pose"]
    np.testing.assert_allclose(back, ypr, atol=1e-4)


def test_pose_roll_sign_matches_a_rotated_face(data_root):
    """Real geometry: rotate a labelled face CCW by 20 deg; the alignment matrix must report a CW correction."""
    pts = _real_300w_points(data_root, 1)[0]
    from faceanalysis.config import PreprocessConfig

    pre = PreprocessConfig(input_size=S)
    c = pts.mean(0)
    rot = cv2.getRotationMatrix2D((float(c[0]), float(c[1])), 20.0, 1.0)
    m0 = align.alignment_matrix(align.kps5_from_68(pts), pre)
    m1 = align.alignment_matrix(align.kps5_from_68(align.transform_points(pts, rot)), pre)
    # the head is 20 deg more CCW in the rotated image, so the aligning warp rotates 20 deg more CW
    assert align.rotation_ccw_deg(m1) - align.rotation_ccw_deg(m0) == pytest.approx(-20.0, abs=0.5)
    # and to_face reports the image roll grew by 20 deg for the same crop-frame prediction
    r0 = TASKS["pose"].to_face({"pose": np.zeros(3)}, m0, (256, 256), pre)["pose"][2]
    r1 = TASKS["pose"].to_face({"pose": np.zeros(3)}, m1, (256, 256), pre)["pose"][2]
    assert r1 - r0 == pytest.approx(20.0, abs=0.5)


def test_pose_roll_wraps_to_plus_minus_180():
    m = cv2.getRotationMatrix2D((0, 0), -170.0, 1.0)
    roll = TASKS["pose"].to_face({"pose": np.array([0.0, 0.0, 30.0])}, m, (10, 10), None)["pose"][2]
    assert -180.0 <= roll < 180.0
    assert roll == pytest.approx(-160.0, abs=1e-4)


# ---- parsing -----------------------------------------------------------------------------------------------------
def test_parsing_flip_perm_swaps_exactly_the_l_r_classes():
    names = parsing_mod.CLASSES
    perm = parsing_mod.FLIP_PERM
    np.testing.assert_array_equal(perm[perm], np.arange(len(names)))
    # subject-side pairs; note "l_lip" is the lower lip and "neck_l" the necklace: neither has a side
    pairs = [("l_eye", "r_eye"), ("l_brow", "r_brow"), ("l_ear", "r_ear")]
    sided = set()
    for a, b in pairs:
        assert perm[names.index(a)] == names.index(b) and perm[names.index(b)] == names.index(a)
        sided |= {a, b}
    for i, n in enumerate(names):
        if n not in sided:
            assert perm[i] == i, n


def test_parsing_warp_target_flip_moves_and_relabels():
    task = TASKS["parsing"]
    names = parsing_mod.CLASSES
    mask = np.zeros((S, S), np.uint8)
    mask[20:25, 40:48] = names.index("l_eye")  # subject's left eye: image right
    mask[20:25, 10:18] = names.index("r_eye")
    mask[30:40, 28:36] = names.index("nose")
    mask[0:3, :] = parsing_mod.IGNORE
    out = task.warp_target({"mask": mask}, _identity_geo(True))["mask"]
    assert out.dtype == np.uint8
    # after the flip the eye on the image right is again the subject's left eye (it was the right eye before)
    assert (out[20:25, S - 18:S - 10] == names.index("l_eye")).all()
    assert (out[20:25, S - 48:S - 40] == names.index("r_eye")).all()
    assert (out[30:40, S - 36:S - 28] == names.index("nose")).all()
    assert (out[0:3] == parsing_mod.IGNORE).all()
    no_flip = task.warp_target({"mask": mask}, _identity_geo(False))["mask"]
    np.testing.assert_array_equal(no_flip, mask)


def test_parsing_warp_target_fills_outside_with_ignore():
    task = TASKS["parsing"]
    mask = np.full((S, S), 1, np.uint8)
    m = np.array([[1.0, 0, 20], [0, 1.0, 0]])  # shift right: the first 20 columns come from outside
    out = task.warp_target({"mask": mask}, Geometry(m, False, S))["mask"]
    assert (out[:, :20] == parsing_mod.IGNORE).all() and (out[:, 21:] == 1).all()


def test_parsing_tags_come_from_the_celeba_attribute_columns():
    from faceanalysis.tasks.attributes import ATTRIBUTES

    attrs = np.zeros((3, len(ATTRIBUTES)), np.float32)
    attrs[0, ATTRIBUTES.index("Eyeglasses")] = 1
    attrs[1, ATTRIBUTES.index("Wearing_Necklace")] = 1
    attrs[1, ATTRIBUTES.index("Wearing_Hat")] = 1
    attrs[2] = np.nan  # unlabelled row (e.g. UTKFace)
    tags = parsing_mod.tags_from_attributes(attrs, ATTRIBUTES)
    assert list(parsing_mod.TAG_ATTRIBUTES) == ["eye_g", "hat", "ear_r", "neck_l"]
    np.testing.assert_array_equal(tags[0], [1, 0, 0, 0])
    np.testing.assert_array_equal(tags[1], [0, 1, 0, 1])
    assert np.isnan(tags[2]).all()


def test_parsing_tag_only_target_has_no_mask_and_keeps_tags_under_flip():
    task = TASKS["parsing"]
    tags = np.array([1, 0, np.nan, 0], np.float32)
    for flip in (False, True):
        out = task.warp_target({"tags": tags}, _identity_geo(flip))
        assert (out["mask"] == parsing_mod.IGNORE).all()
        np.testing.assert_array_equal(out["tags"], tags)
    with_mask = task.warp_target({"mask": np.zeros((S, S), np.uint8)}, _identity_geo(False))
    assert np.isnan(with_mask["tags"]).all()  # masked images need no tags


def test_parsing_tag_loss_rewards_worn_classes_found_and_absent_classes_missing():
    import copy

    import torch

    task = copy.copy(TASKS["parsing"])
    task.tag_weight = 1.0
    names = parsing_mod.CLASSES
    g = names.index("eye_g")
    with_glasses = torch.zeros(1, len(names), 8, 8)
    with_glasses[0, g, 2:4, 2:5] = 12.0  # 6 confident glasses pixels
    without = torch.zeros(1, len(names), 8, 8)
    without[0, 1] = 12.0  # all skin
    worn = torch.tensor([[1.0, float("nan"), float("nan"), float("nan")]])
    not_worn = torch.tensor([[0.0, float("nan"), float("nan"), float("nan")]])
    task.tag_topk = 4
    found, missed = task.tag_loss(with_glasses, worn), task.tag_loss(without, worn)
    assert found < 0.01 < 3.0 < missed
    assert task.tag_loss(without, not_worn) < 0.01 < 3.0 < task.tag_loss(with_glasses, not_worn)
    assert task.tag_loss(without, torch.full((1, 4), float("nan"))) is None
    # through loss(): a tag-only row (mask all IGNORE) contributes tag_weight x the tag term; off at weight 0
    target = {"mask": torch.full((1, 16, 16), parsing_mod.IGNORE, dtype=torch.uint8), "tags": worn}
    assert torch.isclose(task.loss({"parsing": without}, target), missed)
    task.tag_weight = 0.0
    assert task.loss({"parsing": without}, target) is None


# ---- vector tasks and registry -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["attributes", "expression", "identity"])
def test_vector_targets_do_not_change_under_flip(name):
    task = TASKS[name]
    tgt = task.empty_target(S)
    tgt = {k: np.nan_to_num(np.asarray(v, np.float32), nan=0.25) for k, v in tgt.items()}
    out = task.warp_target({k: v.copy() for k, v in tgt.items()}, _identity_geo(True))
    for k in tgt:
        np.testing.assert_array_equal(out[k], tgt[k])


def test_expression_target_mixes_fer2013_label_and_ferplus_votes_at_vote_weight():
    """ExpressionTask.vote_weight re-mixes the FER2013 label and the FER+ votes; rows without both parts (teacher
    pseudo-labels, images without votes) keep their stored probs; the metrics score each label set."""
    import copy

    import torch

    task = copy.copy(TASKS["expression"])
    votes = np.array([0.0, 0.2, 0.0, 0.8, 0.0, 0.0, 0.0], np.float32)  # FER+: mostly sadness
    fer = {"probs": 0.5 * np.eye(7, dtype=np.float32)[0] + 0.5 * votes, "weight": np.float32(1),
           "label": np.float32(0), "votes": votes}  # FER2013 label: neutral
    teacher = task.warp_target({"probs": np.full(7, 1 / 7, np.float32), "weight": np.float32(0.1)},
                               _identity_geo(False))
    assert set(teacher) == set(fer) == set(task.empty_target(S))  # a batch stacks the same keys
    batch = {k: torch.from_numpy(np.stack([np.asarray(fer[k]), np.asarray(teacher[k])])) for k in fer}
    np.testing.assert_allclose(task.target_probs(batch).numpy(), batch["probs"].numpy(), atol=1e-6)  # 0.5: as stored
    task.vote_weight = 0.75
    mixed = task.target_probs(batch).numpy()
    np.testing.assert_allclose(mixed[0], 0.25 * np.eye(7)[0] + 0.75 * votes, atol=1e-6)
    np.testing.assert_allclose(mixed[1], 1 / 7, atol=1e-6)
    # the loss follows the mix: a sadness-confident prediction costs less at vote_weight 0.75 than at 0.5
    raw = {"expression": torch.tensor([[0.0, 0, 0, 4, 0, 0, 0], [0.0] * 7])}
    low = task.loss(raw, batch)
    task.vote_weight = 0.5
    assert low < task.loss(raw, batch)
    pred = {"expression": np.eye(7, dtype=np.float32)[[3, 0]]}
    tgt = {k: np.stack([np.asarray(fer[k]), np.asarray(teacher[k])]) for k in fer}
    m = task.metrics(pred, tgt)  # the teacher row (weight 0.1) is not scored
    assert m == {"acc": 0.0, "acc_fer2013": 0.0, "acc_ferplus": 100.0}
    tgt["votes"][0] = [0.0, 0.5, 0.0, 0.5, 0, 0, 0]  # no majority (a tie): not scored against FER+
    assert "acc_ferplus" not in task.metrics(pred, tgt)
    task.vote_weight = 1.5
    with pytest.raises(FaceAnalysisError, match="vote_weight must be between 0 and 1"):
        task.loss(raw, batch)


def test_task_registry_and_unknown_names():
    assert list(TASKS) == ["parsing", "landmarks", "pose", "attributes", "expression", "identity"]
    assert [t.name for t in get_tasks(["identity", "pose"])] == ["pose", "identity"]
    assert [t.name for t in get_tasks("pose")] == ["pose"]
    with pytest.raises(FaceAnalysisError, match="unknown task"):
        get_tasks(["pose", "gaze"])


# ---- fitting tasks to the training data --------------------------------------------------------------------------
def test_parsing_class_balance_weights_by_hand():
    # pixel counts: class 0 -> 8, class 1 -> 2, class 2 -> 0 (never seen), class 3 -> 6; IGNORE is skipped
    m = np.array([[0, 0, 0, 0, 1, 1, 3, 3], [0, 0, 0, 0, 3, 3, 3, 3], [255] * 8], np.uint8)
    w = parsing_mod.class_balance_weights([m], 4, power=1.0, clip=(0.1, 10.0))
    freq = np.array([8, 2, 0, 6]) / 16
    med = np.median(freq[[0, 1, 3]])
    np.testing.assert_allclose(w, [med / freq[0], med / freq[1], 1.0, med / freq[3]], rtol=1e-6)
    clipped = parsing_mod.class_balance_weights([m], 4, power=1.0, clip=(0.9, 2.0))
    np.testing.assert_allclose(clipped, [0.9, 2.0, 1.0, 1.0], rtol=1e-6)


class _Src:
    def __init__(self, masks=None, targets=None):
        self.masks, self.targets = masks, targets or {}


def test_fit_returns_configured_copies_and_leaves_the_registry_alone():
    parsing, identity = TASKS["parsing"], TASKS["identity"]
    masks = [np.random.default_rng(0).integers(0, 19, (16, 16)).astype(np.uint8)]
    emb = np.random.default_rng(1).normal(size=(5, 128)).astype(np.float32)
    emb[2] = np.nan  # a teacher failure is left out of the bank
    srcs = {"a": _Src(masks=masks), "b": _Src(targets={"identity": {"embedding": emb}})}
    p2, i2 = parsing.fit(srcs), identity.fit(srcs)
    assert p2 is not parsing and p2.class_weights is not None and parsing.class_weights is None
    assert i2 is not identity and tuple(i2.bank.shape) == (4, 128) and identity.bank is None
    np.testing.assert_allclose(i2.bank.norm(dim=1).numpy(), 1.0, rtol=1e-5)
    # a task with nothing to fit is returned as is
    assert TASKS["pose"].fit(srcs) is TASKS["pose"]
    # identity always gets its own copy: the copy carries the training-time cross-batch memory
    bare = identity.fit({"a": _Src(masks=masks)})
    assert bare is not identity and bare.bank is None and "_memory" not in identity.__dict__


def test_parsing_class_balance_settings_reach_the_fitted_weights():
    """``task_options`` are applied before ``fit`` (the trainer's order), so ``balance_power`` / ``balance_max``
    shape the class weights; the registry's task keeps its defaults."""
    from faceanalysis.tasks.parsing import class_balance_weights
    from faceanalysis.train import _with_options

    rng = np.random.default_rng(3)
    masks = [np.where(rng.random((32, 32)) < 0.002, 16, rng.integers(0, 3, (32, 32))).astype(np.uint8)
             for _ in range(4)]
    srcs = {"a": _Src(masks=masks)}
    default = TASKS["parsing"].fit(srcs).class_weights.numpy()
    strong = _with_options(TASKS["parsing"], {"balance_power": 1.0, "balance_max": 20.0}).fit(srcs)
    np.testing.assert_allclose(strong.class_weights.numpy(), class_balance_weights(masks, 19, power=1.0, clip=(0.5, 20)))
    assert strong.class_weights[16] > default[16] and default[16] <= 4.0
    assert TASKS["parsing"].balance_power == 0.5 and TASKS["parsing"].balance_max == 4.0


def test_identity_bank_term_is_zero_for_a_perfect_student_and_grows_with_error():
    import torch

    rng = np.random.default_rng(2)
    emb = rng.normal(size=(50, 128)).astype(np.float32)
    task = TASKS["identity"].fit({"a": _Src(targets={"identity": {"embedding": emb}})})
    t = torch.from_numpy(emb[:8])
    perfect = task.loss({"embedding": t.clone()}, {"embedding": t})
    noisy = task.loss({"embedding": t + 0.8 * torch.randn_like(t)}, {"embedding": t})
    assert float(perfect) == pytest.approx(0.0, abs=1e-5)
    assert float(noisy) > float(perfect) + 0.1
    # the bank adds to the loss of the unfitted task for the same imperfect student
    s = t + 0.8 * torch.from_numpy(rng.normal(size=t.shape).astype(np.float32))
    assert float(task.loss({"embedding": s}, {"embedding": t})) > float(TASKS["identity"].loss({"embedding": s},
                                                                                                 {"embedding": t}))


def test_parsing_to_face_maps_crop_classes_to_the_right_image_pixels():
    from faceanalysis.config import PreprocessConfig

    pre = PreprocessConfig(input_size=32)
    logits = np.full((19, 16, 16), -5.0, np.float32)
    logits[1, :, :8] = 5.0  # skin on the crop's left half
    logits[13, :, 8:] = 5.0  # hair on its right half
    m = np.array([[0.5, 0, 0], [0, 0.5, 0]])  # image -> crop: the crop covers image pixels 0..63 at half scale
    pm = TASKS["parsing"].to_face({"parsing": logits}, m, (80, 80), pre)["parsing"]
    full = pm.full((80, 80))
    assert (full[:60, :28] == 1).all() and (full[:60, 36:62] == 13).all()
    assert (full[66:, :] == 0).all() and (full[:, 66:] == 0).all()  # outside the crop: background


def test_parsing_sides_follow_the_crop_midline_not_the_model():
    """assign_sides: an eye the model calls l_eye on the crop's left half (the subject's right) becomes r_eye, the
    pair keeps the larger of its two logits, and classes without a side are untouched."""
    from faceanalysis.config import PreprocessConfig

    pre = PreprocessConfig(input_size=32)
    names = parsing_mod.CLASSES
    le, re_, lb, rb = (names.index(n) for n in ("l_eye", "r_eye", "l_brow", "r_brow"))
    logits = np.full((19, 16, 16), -5.0, np.float32)
    logits[1] = 0.0  # skin everywhere
    logits[le, 6:8, 2:6] = 4.0  # an eye on the crop's left half, called the subject's LEFT eye (wrong)
    logits[re_, 6:8, 2:6] = 3.0
    logits[le, 6:8, 10:14] = 2.5  # the other eye, on the right half, also called l_eye (right)
    logits[rb, 3:5, 10:14] = 6.0  # a brow on the right half called r_brow (wrong)
    out = parsing_mod.assign_sides(logits, pre)
    ids = out.argmax(0)
    assert (ids[6:8, 2:6] == re_).all() and (ids[6:8, 10:14] == le).all() and (ids[3:5, 10:14] == lb).all()
    np.testing.assert_allclose(out[re_, 6:8, 2:6], 4.0)  # the larger of the pair's two logits
    keep = [c for c in range(19) if c not in (le, re_, lb, rb, names.index("l_ear"), names.index("r_ear"))]
    np.testing.assert_array_equal(out[keep], logits[keep])
    np.testing.assert_array_equal(logits[le, 6:8, 2:6], 4.0)  # the input is not modified
    # batched input (N, 19, h, w) gives the same as one map at a time; a mirrored map gives the mirrored answer
    both = parsing_mod.assign_sides(np.stack([logits, logits[:, :, ::-1]]), pre)
    np.testing.assert_array_equal(both[0], out)
    mirrored = both[1].argmax(0)[:, ::-1]
    np.testing.assert_array_equal(parsing_mod.FLIP_PERM[mirrored], ids)


def test_parsing_to_face_assigns_sides_by_the_crop_midline():
    from faceanalysis.config import PreprocessConfig

    pre = PreprocessConfig(input_size=32)
    names = parsing_mod.CLASSES
    logits = np.full((19, 16, 16), -5.0, np.float32)
    logits[1] = 0.0
    logits[names.index("l_eye"), 6:9, 1:7] = 5.0  # both eyes called l_eye by the "model"
    logits[names.index("l_eye"), 6:9, 9:15] = 5.0
    m = np.array([[0.5, 0, 0], [0, 0.5, 0]])
    full = TASKS["parsing"].to_face({"parsing": logits}, m, (64, 64), pre)["parsing"].full((64, 64))
    # map pixel = 4 image pixels; image left = crop left = the subject's right eye
    assert (full[26:34, 8:24] == names.index("r_eye")).all() and (full[26:34, 40:56] == names.index("l_eye")).all()


def test_parsing_tag_metric_scores_how_well_the_maps_find_tagged_classes():
    task = TASKS["parsing"]
    names = parsing_mod.CLASSES
    logits = np.zeros((4, len(names), 8, 8), np.float32)
    logits[:, 1] = 5.0  # skin everywhere
    logits[0, names.index("hat"), :3] = 9.0  # hat found on images 0 and 1 (1 weaker), not on 2 and 3
    logits[1, names.index("hat"), :2] = 7.0
    tags = np.full((4, 4), np.nan, np.float32)
    tags[:, 1] = [1, 1, 0, 0]
    assert task.tag_metrics(logits, tags) == {"tag_auc": 100.0}
    # worn on 1 and 2, not on 0 and 3: of the (worn, not worn) pairs (1, 3) is right, (2, 3) a tie (no hat
    # pixels on either), (1, 0) and (2, 0) wrong: 1.5 of 4
    tags[:, 1] = [0, 1, 1, 0]
    assert task.tag_metrics(logits, tags)["tag_auc"] == pytest.approx(37.5)
    assert task.tag_metrics(logits, np.full((4, 4), np.nan, np.float32)) == {}
    assert "tag_auc" not in task.metrics({"parsing": logits}, {"mask": np.full((4, 16, 16), 255, np.uint8),
                                                             "tags": np.full((4, 4), np.nan, np.float32)})


def test_celeba_samples_carry_parsing_tags_from_their_attributes(data_root):
    from faceanalysis.config import PreprocessConfig
    from faceanalysis.data.batches import AugmentConfig, collate, make_sample
    from faceanalysis.data.sources import load_source
    from faceanalysis.tasks.attributes import ATTRIBUTES

    src = load_source("celeba_attr", "val", data_root)
    tasks = get_tasks(["parsing", "attributes"])
    rng = np.random.default_rng(0)
    _, tg = collate([make_sample(src, i, tasks, PreprocessConfig(), rng, AugmentConfig()) for i in range(40)], tasks)
    attrs = tg["attributes"]["attrs"]
    for j, (cls, attr) in enumerate(parsing_mod.TAG_ATTRIBUTES.items()):
        np.testing.assert_array_equal(tg["parsing"]["tags"][:, j], attrs[:, ATTRIBUTES.index(attr)], err_msg=cls)
    assert (tg["parsing"]["mask"] == parsing_mod.IGNORE).all()  # no masks: only the tags supervise parsing
    masked = load_source("celebamask_mini", "val", data_root)
    _, tm = collate([make_sample(masked, i, tasks, PreprocessConfig(), None, None) for i in range(4)], tasks)
    assert np.isnan(tm["parsing"]["tags"]).all() and (tm["parsing"]["mask"] != parsing_mod.IGNORE).any()


def test_fer2013_samples_carry_their_label_and_ferplus_votes(data_root):
    """load_fer2013 adds the two parts of the stored 1/2 + 1/2 expression mix (FER2013 label, FER+ votes read
    from labels.csv); re-mixed at 0.5 they give the stored probs back; a batch mixing FER2013 and teacher rows
    stacks (the same keys)."""
    import csv

    import torch

    from faceanalysis.config import PreprocessConfig
    from faceanalysis.data.batches import collate, make_sample
    from faceanalysis.data.sources import load_source

    src = load_source("fer2013", "PublicTest", data_root)
    t = src.targets["expression"]
    has = np.isfinite(t["votes"]).all(1)
    assert has.mean() > 0.99 and np.allclose(t["votes"][has].sum(1), 1, atol=1e-5)
    with open(data_root / "fer2013" / "labels.csv", newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["id"] == src.ids[0])
    from faceanalysis.tasks.expression import CLASSES

    raw = np.array([float(row["votes_" + c]) for c in CLASSES])
    np.testing.assert_allclose(t["votes"][0], raw / raw.sum(), atol=1e-6)
    task = TASKS["expression"]
    back = task.target_probs({k: torch.from_numpy(np.asarray(v)) for k, v in t.items()}).numpy()
    np.testing.assert_allclose(back, t["probs"], atol=1e-6)
    tasks = get_tasks(["expression"])
    teacher = load_source("utkface", "val", data_root)
    samples = [make_sample(s, i, tasks, PreprocessConfig(), None, None) for s in (src, teacher) for i in range(3)]
    _, tg = collate(samples, tasks)
    assert np.isfinite(tg["expression"]["label"][:3]).all() and np.isnan(tg["expression"]["label"][3:]).all()


def _js_parsing_to_image(logits: np.ndarray, matrix: np.ndarray, pre, shape: tuple[int, int]) -> np.ndarray:
    """The web client's ``parsingToImage`` (demos/web/faceanalysis.js) run by node: the full-image mask."""
    import json
    import shutil
    import subprocess
    from pathlib import Path

    node = shutil.which("node")
    if node is None:
        pytest.fail("node not found: the web client's tests need Node.js (.ci/run installs it)")
    js = Path(__file__).resolve().parents[1] / "demos" / "web" / "faceanalysis.js"
    script = ("import { parsingToImage } from " + json.dumps(js.as_uri()) + ";\n"
              "let s = ''; process.stdin.on('data', (d) => { s += d; });\n"
              "process.stdin.on('end', () => { const a = JSON.parse(s);\n"
              "  const r = parsingToImage(Float32Array.from(a.logits), a.n, a.half, a.matrix, a.pre, a.w, a.h);\n"
              "  process.stdout.write(JSON.stringify({ box: r.box, mask: Array.from(r.mask) })); });\n")
    arg = {"logits": logits.ravel().tolist(), "n": logits.shape[0], "half": logits.shape[-1],
           "matrix": matrix.tolist(), "pre": {"input_size": pre.input_size, "template": [list(p) for p in pre.template]},
           "w": shape[1], "h": shape[0]}
    out = subprocess.run([node, "--input-type=module", "-e", script], input=json.dumps(arg), capture_output=True,
                         text=True, check=True, timeout=60)
    r = json.loads(out.stdout)
    x0, y0, x1, y1 = r["box"]
    full = np.zeros(shape, np.uint8)
    full[y0:y1, x0:x1] = np.asarray(r["mask"], np.uint8).reshape(y1 - y0, x1 - x0)
    return full


@pytest.mark.parametrize("stride", [2, 1])
def test_parsing_maps_at_either_resolution_map_back_alike_in_python_and_the_web_client(stride):
    """to_face reads the map's resolution from its shape (S/2 or, with parsing_stride 1, S): a full-resolution map
    that is the pixel-centre bilinear upsampling of a half-resolution one gives (nearly) the same image mask; the
    web client's parsingToImage gives the same mask as Python at both resolutions."""
    from faceanalysis.config import PreprocessConfig

    pre = PreprocessConfig(input_size=32)
    names = parsing_mod.CLASSES
    # crop-frame regions with sharp edges on even crop pixels: skin, a nose square, hair along the top, an eye
    coarse = np.full((19, 16, 16), -5.0, np.float32)
    coarse[names.index("skin")] = 0.0
    coarse[names.index("nose"), 6:10, 7:11] = 5.0  # crop pixels [12, 20) x [14, 22)
    coarse[names.index("hair"), :4] = 5.0  # crop rows [0, 8)
    coarse[names.index("l_eye"), 5:7, 10:13] = 5.0  # subject's left = crop right
    logits = coarse if stride == 2 else coarse.repeat(2, 1).repeat(2, 2)  # the same regions, one map pixel each
    m = np.array([[0.4, 0.05, 2.0], [-0.05, 0.4, 3.0]])  # image -> crop: a face about 80 px wide, turned a little
    task = TASKS["parsing"]
    py = task.to_face({"parsing": logits}, m, (90, 100), pre)["parsing"].full((90, 100))
    ref = task.to_face({"parsing": coarse}, m, (90, 100), pre)["parsing"].full((90, 100))
    assert (py != 0).mean() > 0.3  # the crop covers much of the image
    # inside the crop (outside it the maps' one-pixel edge padding reaches 1 or 2 crop pixels further)
    yy, xx = np.mgrid[0:90, 0:100]
    cx, cy = (align.transform_points(np.stack([xx.ravel(), yy.ravel()], 1).astype(np.float32), m).T
              .reshape(2, 90, 100))
    inside = (cx > 0) & (cx < 31) & (cy > 0) & (cy < 31)
    assert (py == ref)[inside].mean() > 0.97  # the edges are as sharp as each map's pixels: they may differ by 1 px
    nose = names.index("nose")
    assert abs(int((py == nose).sum()) - int((ref == nose).sum())) <= 0.15 * (ref == nose).sum()
    centre = np.argwhere(py == nose).mean(0)
    np.testing.assert_allclose(centre, np.argwhere(ref == nose).mean(0), atol=0.5)
    # the nose square's centre, crop pixel (x, y) = (17.5, 15.5), lands where the matrix puts it in the image
    np.testing.assert_allclose(centre[::-1], align.transform_points(np.array([[17.5, 15.5]]), align.invert(m))[0],
                               atol=0.75)
    js = _js_parsing_to_image(logits, m, pre, (90, 100))
    assert (js == py).mean() > 0.995
