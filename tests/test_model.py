"""FaceModel: named outputs, shapes, activations, task subsets, batch independence (tiny config)."""
from __future__ import annotations

import pytest
import torch

from faceanalysis.config import ModelConfig
from faceanalysis.model import FaceModel
from faceanalysis.tasks import TASKS
from faceanalysis.weights import load_model

from conftest import TINY


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return FaceModel(ModelConfig(**TINY)).eval()


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(1)
    return torch.randn(3, 3, TINY["input_size"], TINY["input_size"])


def test_outputs_names_and_shapes(tiny_model, batch):
    s = TINY["input_size"]
    with torch.no_grad():
        out = tiny_model(batch)
    assert list(out) == tiny_model.output_names
    # every task output but the optional ones a plain config leaves out (parsing_wide needs parsing_field > 1)
    assert tiny_model.output_names == [n for t in TASKS.values() for n in t.outputs if n not in t.optional_outputs]
    shapes = {k: tuple(v.shape) for k, v in out.items()}
    assert shapes == {"parsing": (3, 19, s // 2, s // 2), "landmarks": (3, 68, 2), "pose": (3, 3), "attributes": (3, 40),
                      "age": (3,), "gender": (3,), "expression": (3, 7), "embedding": (3, 128)}
    assert all(torch.isfinite(v).all() for v in out.values())


def test_activations(tiny_model, batch):
    with torch.no_grad():
        out = tiny_model(batch)
        raw = tiny_model(batch, raw=True)
    torch.testing.assert_close(out["expression"].sum(-1), torch.ones(3))
    torch.testing.assert_close(out["embedding"].norm(dim=-1), torch.ones(3))
    assert ((out["attributes"] >= 0) & (out["attributes"] <= 1)).all()
    assert ((out["gender"] >= 0) & (out["gender"] <= 1)).all()
    assert ((out["age"] >= 0) & (out["age"] <= 100)).all()
    assert raw["age"].shape == (3, 101)  # age bins before the expectation
    torch.testing.assert_close(out["pose"], raw["pose"] * 45.0)
    # landmarks are soft-argmax positions inside the crop
    s = TINY["input_size"]
    assert (out["landmarks"] >= -0.5).all() and (out["landmarks"] <= s - 0.5).all()


def test_task_subset_gives_the_same_values(tiny_model, batch):
    with torch.no_grad():
        full = tiny_model(batch)
        part = tiny_model(batch, tasks=["pose", "identity"])
        part2 = tiny_model(batch, tasks=["landmarks"])
    assert set(part) == {"pose", "embedding"} and set(part2) == {"landmarks"}
    for k, v in {**part, **part2}.items():
        torch.testing.assert_close(v, full[k])


def test_samples_are_independent_in_a_batch(tiny_model, batch):
    with torch.no_grad():
        together = tiny_model(batch)
        alone = [tiny_model(batch[i:i + 1]) for i in range(len(batch))]
    for k, v in together.items():
        torch.testing.assert_close(v, torch.cat([a[k] for a in alone]), atol=1e-4, rtol=1e-4)


def test_config_with_fewer_tasks_builds_fewer_heads():
    m = FaceModel(ModelConfig(**{**TINY, "tasks": ("pose", "expression")})).eval()
    assert set(m.heads) == {"pose", "expression"}
    with torch.no_grad():
        out = m(torch.zeros(1, 3, TINY["input_size"], TINY["input_size"]))
    assert set(out) == {"pose", "expression"}


def test_shipped_weights_build_the_documented_model(default_weights):
    model, cfg = load_model(default_weights)
    assert cfg.model.input_size == cfg.preprocess.input_size == 128
    assert not model.training
    with torch.no_grad():
        out = model(torch.zeros(2, 3, 128, 128))
    assert out["parsing"].shape == (2, 19, 64, 64) and out["landmarks"].shape == (2, 68, 2)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_parsing_refiner_grows_the_model_without_changing_what_it_computes(tiny_model, batch):
    """parsing_stride 1 adds the ParsingRefiner (full-resolution parsing maps). Grown from stride-2 weights, its
    zero-initialised last conv makes the model compute exactly what they did, the parsing maps bilinearly
    upsampled (the class vectors are dotted with linearly upsampled features); the other outputs are unchanged."""
    import dataclasses

    from torch.nn import functional as F

    from faceanalysis import FaceAnalysisError

    s = TINY["input_size"]
    grown = FaceModel(dataclasses.replace(tiny_model.cfg, parsing_stride=1)).eval()
    missing, unexpected = grown.load_state_dict(tiny_model.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("parsing_refiner.") for k in missing)
    with torch.no_grad():
        before, after = tiny_model(batch), grown(batch)
    assert after["parsing"].shape == (3, 19, s, s)
    up = F.interpolate(before["parsing"], size=(s, s), mode="bilinear", align_corners=False)
    torch.testing.assert_close(after["parsing"], up, atol=1e-4, rtol=1e-4)
    for k in before:
        if k != "parsing":
            torch.testing.assert_close(after[k], before[k])
    # the refiner is trainable: with a non-zero last conv the maps differ from the upsampled ones
    torch.nn.init.normal_(grown.parsing_refiner.out.weight, std=0.1)
    with torch.no_grad():
        assert not torch.allclose(grown(batch, tasks=["parsing"])["parsing"], up, atol=1e-3)
    with pytest.raises(FaceAnalysisError, match="parsing_stride must be 1 or 2"):
        FaceModel(dataclasses.replace(tiny_model.cfg, parsing_stride=4))
    # weights files name the field only when it is not the default, so stride-2 weights stay readable by releases
    # that predate it
    from faceanalysis.config import FaceAnalysisConfig

    plain, fine = FaceAnalysisConfig(), FaceAnalysisConfig(model=grown.cfg)
    assert "parsing_stride" not in plain.to_json() and '"parsing_stride": 1' in fine.to_json()
    assert FaceAnalysisConfig.from_json(plain.to_json()) == plain
    assert FaceAnalysisConfig.from_json(fine.to_json()).model.parsing_stride == 1


def test_refiner_on_masked_rows_only_matches_the_full_pass(tiny_model, batch):
    """Training runs the parsing refiner on the rows with a mask alone (``fine_rows``): those rows' full-resolution
    maps equal the full pass's (eval mode, so batch norm does not depend on the batch), every row keeps its
    stride-2 maps for the tag term, and the mask loss reads the fine maps; a mismatch between the rows and the
    masks is an error, not a silent misalignment."""
    import dataclasses

    from faceanalysis import FaceAnalysisError
    from faceanalysis.tasks.parsing import IGNORE, ParsingTask

    s = TINY["input_size"]
    grown = FaceModel(dataclasses.replace(tiny_model.cfg, parsing_stride=1)).eval()
    grown.load_state_dict(tiny_model.state_dict(), strict=False)
    torch.nn.init.normal_(grown.parsing_refiner.out.weight, std=0.1)
    mask = torch.full((3, s, s), IGNORE, dtype=torch.uint8)
    mask[1] = torch.randint(0, 19, (s, s), dtype=torch.uint8)
    target = {"mask": mask, "tags": torch.full((3, 4), float("nan"))}
    task = ParsingTask()
    rows = task.fine_rows(target)
    assert rows.tolist() == [1]
    with torch.no_grad():
        full = grown(batch, raw=True)
        part = grown(batch, raw=True, fine_rows=rows)
        plain = tiny_model(batch, raw=True)
    torch.testing.assert_close(part["parsing_fine"], full["parsing"][rows], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(part["parsing"], plain["parsing"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(task.mask_loss(part, target), task.mask_loss(full, target), atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # no masked row: the refiner is skipped, stride-2 maps only
        none = grown(batch, raw=True, fine_rows=rows[:0])
    assert "parsing_fine" not in none and none["parsing"].shape[-1] == s // 2
    with pytest.raises(FaceAnalysisError, match="full-resolution maps for 1 masked rows"):
        task.mask_loss({"parsing_fine": full["parsing"]}, target)


def test_identity_branch_grows_the_model_without_changing_what_it_computes(tiny_model, batch):
    """identity_branch k copies the encoder's last k blocks, its final norm and the decoder for identity alone. Grown
    from weights without it (grow_identity_branch), every output is bit-identical; once the branch moves, only the
    embedding does; identity alone gives what the full pass gives; bad configs raise FaceAnalysisError; weights without
    a branch do not name the field."""
    import dataclasses

    from faceanalysis import FaceAnalysisError
    from faceanalysis.config import FaceAnalysisConfig

    grown = FaceModel(dataclasses.replace(tiny_model.cfg, identity_branch=1)).eval()
    missing, unexpected = grown.load_state_dict(tiny_model.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("identity_branch.") for k in missing)
    grown.grow_identity_branch()
    with torch.no_grad():
        before, after = tiny_model(batch), grown(batch)
    assert set(after) == set(before)
    for k in before:
        assert torch.equal(after[k], before[k]), k
    with torch.no_grad():
        for p in grown.identity_branch.blocks.parameters():
            p.add_(0.05 * torch.randn_like(p))
        moved = grown(batch)
        alone = grown(batch, tasks=["identity"])
    assert not torch.allclose(moved["embedding"], before["embedding"], atol=1e-3)
    torch.testing.assert_close(alone["embedding"], moved["embedding"])
    for k in before:
        if k != "embedding":
            assert torch.equal(moved[k], before[k]), k
    for bad in (-1, tiny_model.cfg.depth + 1):
        with pytest.raises(FaceAnalysisError, match="identity_branch"):
            FaceModel(dataclasses.replace(tiny_model.cfg, identity_branch=bad))
    with pytest.raises(FaceAnalysisError, match="identity task"):
        FaceModel(dataclasses.replace(tiny_model.cfg, identity_branch=1, tasks=("parsing", "landmarks")))
    with pytest.raises(FaceAnalysisError, match="no identity branch"):
        FaceModel(tiny_model.cfg).grow_identity_branch()
    plain, forked = FaceAnalysisConfig(), FaceAnalysisConfig(model=grown.cfg)
    assert "identity_branch" not in plain.to_json() and '"identity_branch": 1' in forked.to_json()
    assert FaceAnalysisConfig.from_json(forked.to_json()).model.identity_branch == 1


def test_identity_branch_alone_carries_only_the_identity_token(tiny_model, batch):
    """identity_branch_tokens="identity" runs the same branch tensors with the identity token alone: the
    embedding changes (the token no longer attends to the others), no other output does, identity alone gives
    what the full pass gives, the setting round-trips through the config JSON (and is omitted at its default),
    the branch does less work, and a bad value raises FaceAnalysisError."""
    import dataclasses

    from faceanalysis import FaceAnalysisError
    from faceanalysis.config import FaceAnalysisConfig

    full = FaceModel(dataclasses.replace(tiny_model.cfg, identity_branch=1)).eval()
    full.load_state_dict(tiny_model.state_dict(), strict=False)
    full.grow_identity_branch()
    light = FaceModel(dataclasses.replace(full.cfg, identity_branch_tokens="identity")).eval()
    light.load_state_dict(full.state_dict())  # the same tensors
    with torch.no_grad():
        a, b, alone = full(batch), light(batch), light(batch, tasks=["identity"])
    assert not torch.allclose(a["embedding"], b["embedding"], atol=1e-4)
    torch.testing.assert_close(alone["embedding"], b["embedding"])
    for k in a:
        if k != "embedding":
            assert torch.equal(a[k], b[k]), k
    mid = torch.randn(2, light.image_pe.shape[1], light.cfg.embed_dim)
    with torch.no_grad():
        tok_full, _ = full.identity_branch(mid, full.task_tokens, full.image_pe)
        tok_light, _ = light.identity_branch(mid, light.task_tokens, light.image_pe)
    assert tok_full.shape == tok_light.shape == (2, 1, light.cfg.embed_dim)
    from torch.utils.flop_counter import FlopCounterMode

    flops = []
    for m in (full, light):
        m.requires_grad_(False)  # FlopCounterMode wants parameters without grad (as benchmarks/model_bench.py)
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            m.identity_branch(mid, m.task_tokens, m.image_pe)
        flops.append(fc.get_total_flops())
    assert flops[1] < 0.8 * flops[0], flops
    text = FaceAnalysisConfig(model=light.cfg).to_json()
    assert '"identity_branch_tokens": "identity"' in text
    assert FaceAnalysisConfig.from_json(text).model.identity_branch_tokens == "identity"
    assert "identity_branch_tokens" not in FaceAnalysisConfig(model=full.cfg).to_json()
    with pytest.raises(FaceAnalysisError, match="identity_branch_tokens"):
        FaceModel(dataclasses.replace(full.cfg, identity_branch_tokens="some"))
