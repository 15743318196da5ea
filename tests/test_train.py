"""`faceanalysis train` with the smoke config on the real data pack: end to end, loss decreases, resume.

The first run on a fresh machine decodes the data pack into ~/.cache/faceanalysis (1-2 min, ~1.6 GB).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from faceanalysis import FaceAnalyzer
from faceanalysis.cli import main
from faceanalysis.train import TrainConfig
from faceanalysis.weights import load_model, read_config


def _log(out):
    lines = (out / "train.log").read_text().splitlines()
    return [json.loads(ln) for ln in lines if ln.startswith("{")], lines


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("smoke")
    rc = main(["train", "--config", "smoke", "--data-root", str(data_root), "--out", str(out), "--no-resume"])
    assert rc == 0
    return out


def test_smoke_config_is_small():
    cfg = TrainConfig.load("smoke")
    assert cfg.steps <= 200 and cfg.model.input_size == 64 and cfg.log_every <= cfg.steps // 5


def test_smoke_training_runs_end_to_end(smoke_run, face_photo):
    cfg = TrainConfig.load("smoke")
    records, _ = _log(smoke_run)
    steps = [r for r in records if "step" in r]
    assert [r["step"] for r in steps] == list(range(cfg.log_every, cfg.steps + 1, cfg.log_every))
    # every task produced a finite loss
    for task in ("parsing", "landmarks", "pose", "attributes", "expression", "identity", "total"):
        assert all(np.isfinite(r[task]) for r in steps), task
    # the running loss goes down: first log vs. last, and the second half of the total is below the first.
    # The identity loss's supervised term compares each anchor with a cross-batch memory that fills for
    # memory_size / batch_size = 512 steps (all of this run), and its value grows with the log of the number
    # of candidates at equal embeddings (~+2.4 from 160 to 1600), so the identity term is only required to
    # fall at all, and the 10 % drop is required of the weighted sum of the other tasks' losses.
    total = np.array([r["total"] for r in steps])
    assert total[-1] < total[0], total
    assert total[len(total) // 2:].mean() < total[: len(total) // 2].mean()
    identity = np.array([r["identity"] for r in steps])
    assert identity[-1] < identity[0], identity
    others = np.array([sum(cfg.task_weights[t] * r[t] for t in cfg.task_weights if t != "identity") for r in steps])
    assert others[-1] < 0.9 * others[0], others
    val = [r for r in records if "val_step" in r]
    assert val and val[-1]["val_step"] == cfg.steps

    weights = smoke_run / "ema_fp16.safetensors"
    model, mcfg = load_model(weights)
    assert mcfg.model == cfg.model and read_config(weights).extra["steps"] == cfg.steps
    faces = FaceAnalyzer(weights=weights).analyze(face_photo)
    assert len(faces) == 1 and faces[0].landmarks.shape == (68, 2)


def test_resume_continues_from_the_checkpoint(tmp_path, data_root):
    out = tmp_path / "run"
    assert main(["train", "--config", "smoke", "--data-root", str(data_root), "--out", str(out), "--steps", "20"]) == 0
    assert read_config(out / "ema_fp16.safetensors").extra["steps"] == 20
    assert main(["train", "--config", "smoke", "--data-root", str(data_root), "--out", str(out), "--steps", "30"]) == 0
    records, lines = _log(out)
    assert any(ln.startswith("resumed from") and ln.endswith("at step 20") for ln in lines)
    steps = [r["step"] for r in records if "step" in r]
    assert steps == [10, 20, 30]  # no step trained twice
    assert read_config(out / "ema_fp16.safetensors").extra["steps"] == 30
    load_model(out / "ema_fp16.safetensors")


def test_init_from_a_checkpoint_continues_its_adam_moments(tmp_path, data_root):
    """--init with an earlier stage's checkpoint starts from its raw weights and carries AdamW's moments and step
    counts, so Adam's bias correction does not start over; the new stage's schedule and step are its own."""
    from faceanalysis import FaceAnalysisError
    from faceanalysis.config import ModelConfig
    from faceanalysis.model import FaceModel
    from faceanalysis.train import _init_from, read_checkpoint

    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["train", "--config", "smoke", "--data-root", str(data_root), "--out", str(first), "--steps", "20"]) == 0
    ckpt = first / "checkpoint.safetensors"
    _, raw_first, _, opt_first = read_checkpoint(ckpt)
    assert main(["train", "--config", "smoke", "--data-root", str(data_root), "--out", str(second), "--steps", "10",
                 "--init", str(ckpt)]) == 0
    records, lines = _log(second)
    assert f"initialised from {ckpt}" in lines and f"AdamW moments carried over from {ckpt}" in lines
    assert [r["step"] for r in records if "step" in r] == [10]  # the new stage counts its own steps
    _, raw_second, _, opt_second = read_checkpoint(second / "checkpoint.safetensors")
    # each parameter's Adam step count goes on from the first run's (20, or fewer for the few parameters that get no
    # gradient on some batches) by the new stage's updates: 10 for most
    first_steps = {k: float(v) for k, v in opt_first.items() if k.endswith("/step")}
    steps = {k: float(v) for k, v in opt_second.items() if k.endswith("/step")}
    assert steps.keys() == first_steps.keys() and max(first_steps.values()) == 20.0
    assert all(first_steps[k] < v <= first_steps[k] + 10 for k, v in steps.items()), steps
    assert sum(v == 30.0 for v in steps.values()) > 0.9 * len(steps)
    assert any(not torch.equal(raw_first[k], raw_second[k]) for k in raw_first)
    # plain weights still start a stage with fresh moments
    third = tmp_path / "third"
    assert main(["train", "--config", "smoke", "--data-root", str(data_root), "--out", str(third), "--steps", "10",
                 "--init", str(second / "ema_fp16.safetensors")]) == 0
    _, lines = _log(third)
    assert not any(ln.startswith("AdamW moments") for ln in lines)
    _, _, _, opt_third = read_checkpoint(third / "checkpoint.safetensors")
    assert max(float(v) for k, v in opt_third.items() if k.endswith("/step")) == 10.0
    with pytest.raises(FaceAnalysisError, match="another model config"):
        _init_from(FaceModel(ModelConfig()), ckpt)
    with pytest.raises(FaceAnalysisError, match="no such file"):
        _init_from(FaceModel(ModelConfig()), tmp_path / "gone.safetensors")


def test_a_stage_may_grow_the_parsing_refiner_and_keeps_adam_moments_by_name(smoke_run, data_root, tmp_path):
    """--init from stride-2 weights into a config with parsing_stride 1 (the only growth allowed): the shared
    tensors and their AdamW moments carry over by parameter name (the refiner's are new); dropping the refiner
    again (1 -> 2) is allowed too; any other model change is still refused."""
    import dataclasses

    from faceanalysis import FaceAnalysisError
    from faceanalysis.model import FaceModel
    from faceanalysis.train import CONFIG_DIR, _init_from, _init_optimizer_from, _optimizer, read_checkpoint

    ckpt = smoke_run / "checkpoint.safetensors"
    cfg = TrainConfig.load("smoke")
    grown_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, parsing_stride=1))
    model = FaceModel(grown_cfg.model)
    _init_from(model, ckpt)
    _, saved, _, opt_tensors = read_checkpoint(ckpt)
    for k, v in saved.items():
        torch.testing.assert_close(model.state_dict()[k], v.float() if v.is_floating_point() else v)
    opt = _optimizer(model, grown_cfg)
    assert _init_optimizer_from(opt, ckpt, model)
    names = {id(p): n for n, p in model.named_parameters()}
    # the checkpoint numbers the stride-2 model's parameters as its optimiser did: decayed group, then the rest
    old_params = dict(FaceModel(cfg.model).named_parameters())
    decayed = [n for n, p in old_params.items()
               if p.ndim >= 2 and "token" not in n and "pos_embed" not in n and not n.endswith("image_pe")]
    old_order = decayed + [n for n in old_params if n not in decayed]
    saved_avg = {old_order[int(k.split("/")[0])]: v for k, v in opt_tensors.items() if k.endswith("/exp_avg")}
    carried = 0
    for p, st in opt.state.items():
        n = names[id(p)]
        assert not n.startswith("parsing_refiner.")
        torch.testing.assert_close(st["exp_avg"], saved_avg[n])
        assert st["exp_avg"].shape == p.shape
        carried += 1
    assert carried == len(saved_avg) == len(old_params)
    assert any(n.startswith("parsing_refiner.") for n in names.values())
    with pytest.raises(FaceAnalysisError, match="another model config"):
        _init_from(FaceModel(dataclasses.replace(cfg.model, pixel_dim=8)), ckpt)
    # end to end: a few steps of the grown model train, validate and save weights with full-resolution parsing
    raw = json.loads((CONFIG_DIR / "smoke.json").read_text())
    raw["model"]["parsing_stride"] = 1
    raw.update(steps=6, val_every=6, ckpt_every=6, log_every=3)
    (tmp_path / "grown.json").write_text(json.dumps(raw))
    out = tmp_path / "grown"
    assert main(["train", "--config", str(tmp_path / "grown.json"), "--init", str(ckpt), "--out", str(out),
                 "--data-root", str(data_root)]) == 0
    _, lines = _log(out)
    assert any("AdamW moments carried over" in ln for ln in lines)
    assert read_config(out / "ema_fp16.safetensors").model.parsing_stride == 1
    # and back: a stride-2 stage may start from the grown run, the refiner dropped, every shared tensor and its
    # AdamW moments carried over (stage 20 did this to leave a refiner that cost more than it gave)
    grown_ckpt = out / "checkpoint.safetensors"
    small = FaceModel(cfg.model)
    _init_from(small, grown_ckpt)
    _, grown_saved, _, _ = read_checkpoint(grown_ckpt)
    assert all(torch.equal(small.state_dict()[k], v.float() if v.is_floating_point() else v)
               for k, v in grown_saved.items() if not k.startswith("parsing_refiner."))
    assert not any(k.startswith("parsing_refiner.") for k in small.state_dict())
    back = tmp_path / "back"
    assert main(["train", "--config", "smoke", "--init", str(grown_ckpt), "--out", str(back), "--steps", "3",
                 "--data-root", str(data_root)]) == 0
    _, lines = _log(back)
    assert any("AdamW moments carried over" in ln for ln in lines)
    assert read_config(back / "ema_fp16.safetensors").model.parsing_stride == 2


def test_validation_images_do_not_follow_the_data_order_seed(tmp_path, data_root, monkeypatch):
    """Stages run with different data-order seeds are validated on the same images (val_seed); a different
    val_seed draws other images."""
    import faceanalysis.train as train_mod

    drawn = []
    real = train_mod.build_val

    def spy(sources, tasks, pre, limit, seed):
        val = real(sources, tasks, pre, limit, seed)
        drawn.append({k: v[0].copy() for k, v in val.items()})
        return val

    monkeypatch.setattr(train_mod, "build_val", spy)
    for seed, val_seed in ((0, 0), (7, 0), (0, 3)):
        cfg = TrainConfig.load("smoke")
        cfg.steps, cfg.seed, cfg.val_seed = 1, seed, val_seed
        train_mod.train(cfg, data_root, tmp_path / f"run{seed}_{val_seed}")
    same, other = drawn[:2], drawn[2]
    assert all(np.array_equal(same[0][k], same[1][k]) for k in same[0])
    assert any(not np.array_equal(same[0][k], other[k]) for k in other)


def test_bad_data_root(tmp_path):
    from faceanalysis import FaceAnalysisError
    from faceanalysis.train import train

    with pytest.raises(FaceAnalysisError, match="data root|not found"):
        train(TrainConfig.load("smoke"), tmp_path / "nowhere", tmp_path / "out")


def test_select_candidate_validates_each_candidate(smoke_run, data_root, tmp_path, capsys):
    """weights/select_candidate.py: the stage's candidates (plain EMA, raw; debiased EMA only for a run started
    from --init) and every reference are validated, saved apart from the trainer's file, and tabulated."""
    import importlib.util
    import shutil
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("select_candidate",
                                                  Path(__file__).resolve().parents[1] / "weights" / "select_candidate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    trainer_file = (run / "ema_fp16.safetensors").read_bytes()
    rc = mod.main([str(run), "--ref", f"start={smoke_run / 'ema_fp16.safetensors'}", "--soup", "start",
                   "--soup-weights", "0.5,0.25", "--data-root", str(data_root)])
    assert rc == 0
    results = json.loads((run / "validation_candidates.json").read_text())
    assert list(results) == ["start", "ema", "raw", "soup", "soup25"]  # no --init in smoke: nothing to debias
    # the soup is the fp16 midpoint of the reference file and the saved raw candidate, tensor by tensor
    import torch
    from safetensors.torch import load_file

    ends = [load_file(str(smoke_run / "ema_fp16.safetensors")), load_file(str(run / "candidate_raw.safetensors"))]
    soup = load_file(str(run / "candidate_soup.safetensors"))
    for k, v in soup.items():
        if v.is_floating_point():
            assert torch.equal(v.float(), ((ends[0][k].float() + ends[1][k].float()) / 2).half().float()), k
    assert "soup: 0.5 x" in read_config(run / "candidate_soup.safetensors").extra["averaging"]
    quarter = load_file(str(run / "candidate_soup25.safetensors"))
    for k, v in quarter.items():
        if v.is_floating_point():
            assert torch.equal(v.float(), (0.75 * ends[0][k].float() + 0.25 * ends[1][k].float()).half().float()), k
    # the reference is the trainer's (plain) EMA of this run, stored in fp16: the same validation numbers
    assert results["start"] == pytest.approx(results["ema"], rel=1e-2, abs=1e-2)
    assert results["raw"] != results["ema"]
    assert (run / "ema_fp16.safetensors").read_bytes() == trainer_file
    assert read_config(run / "candidate_raw.safetensors").extra["averaging"] == "raw"
    table = capsys.readouterr().out
    assert "| validation metric | start | ema | raw | soup |" in table
    assert "no worse than every --ref on every headline metric:" in table and "- soup: " in table
    from faceanalysis import FaceAnalysisError

    with pytest.raises(FaceAnalysisError, match="--soup other: name one of the --ref"):
        mod.main([str(run), "--ref", f"start={smoke_run / 'ema_fp16.safetensors'}", "--soup", "other"])
    with pytest.raises(FaceAnalysisError, match="NAME=PATH"):
        mod.main([str(run), "--ref", "nopath", "--data-root", str(data_root)])
    with pytest.raises(FaceAnalysisError, match="--init PATH"):
        mod.main([str(run), "--init", str(tmp_path / "gone.safetensors"), "--data-root", str(data_root)])
    with pytest.raises(FaceAnalysisError, match="--soup-weights '1.5'"):
        mod.main([str(run), "--ref", f"start={smoke_run / 'ema_fp16.safetensors'}", "--soup", "start",
                  "--soup-weights", "1.5", "--data-root", str(data_root)])
    with pytest.raises(FaceAnalysisError, match="--allow-drop 'nope=1'"):
        mod.main([str(run), "--allow-drop", "nope=1", "--data-root", str(data_root)])
    with pytest.raises(FaceAnalysisError, match="AMOUNT >= 0"):
        mod.main([str(run), "--allow-drop", "fer2013/expression/acc_fer2013=x", "--data-root", str(data_root)])
    # the rule: worse on any headline metric is a regression unless a pre-declared drop allows it
    fer, nme = "fer2013/expression/acc_fer2013", "300w_partial/landmarks/nme_io"
    res = {"ref": {fer: 65.0, nme: 4.0}, "cand": {fer: 64.0, nme: 3.9}}
    assert mod.regressions(res, "cand", ["ref"]) == ["FER2013 PublicTest accuracy, FER2013 labels (%) vs ref"]
    assert mod.regressions(res, "cand", ["ref"], {fer: 1.0}) == []
    assert mod.regressions(res, "cand", ["ref"], {fer: 0.5}) != []
    res["cand"][nme] = 4.01
    assert mod.regressions(res, "cand", ["ref"], {fer: 1.0}) == ["300-W AFW val NME inter-ocular (%) vs ref"]
    res["cand"][nme] = float("nan")  # a metric that broke is never a pass
    assert mod.regressions(res, "cand", ["ref"], {fer: 1.0}) == ["300-W AFW val NME inter-ocular (%) vs ref"]
    with pytest.raises(FaceAnalysisError, match="--allow-drop needs --ref"):
        mod.main([str(run), "--allow-drop", f"{fer}=1", "--data-root", str(data_root)])
    with pytest.raises(FaceAnalysisError, match="--soup-weights needs --soup"):
        mod.main([str(run), "--soup-weights", "0.3", "--data-root", str(data_root)])
    with pytest.raises(FaceAnalysisError, match="distinct numbers"):
        mod.main([str(run), "--ref", f"start={smoke_run / 'ema_fp16.safetensors'}", "--soup", "start",
                  "--soup-weights", "0.7,0.701", "--data-root", str(data_root)])


def test_refit_head_changes_only_the_expression_layer(tiny_weights, data_root, tmp_path, capsys):
    """weights/refit_head.py refits the expression head's last Linear at each vote weight; every other tensor is
    the input's, and the fit moves the layer toward its targets (lower training loss than the input layer)."""
    import importlib.util
    from pathlib import Path

    from safetensors.torch import load_file

    from faceanalysis import FaceAnalysisError

    spec = importlib.util.spec_from_file_location("refit_head",
                                                  Path(__file__).resolve().parents[1] / "weights" / "refit_head.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main([str(tiny_weights), "--vote-weights", "0.5,1", "--limit", "200", "--out-dir", str(tmp_path),
                     "--data-root", str(data_root)]) == 0
    before = load_file(str(tiny_weights))
    last = "heads.expression.mlp.layers.1."
    for vw in ("50", "100"):
        path = tmp_path / f"{tiny_weights.stem}_vw{vw}.safetensors"
        after = load_file(str(path))
        assert set(after) == set(before)
        changed = [k for k in after if not torch.equal(after[k], before[k])]
        assert changed and all(k.startswith(last) for k in changed)
        assert read_config(path).extra["expression_head_refit"]["vote_weight"] == int(vw) / 100
    # the fit itself: from a layer, L-BFGS lowers the soft-target loss it minimises
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    y = np.eye(7, dtype=np.float32)[(x[:, 0] > 0).astype(int) * 3]
    w0, b0 = torch.zeros(7, 8), torch.zeros(7)
    w, b = mod.fit_last_layer(x, y, w0, b0, l2=1e-4)
    acc = ((torch.from_numpy(x) @ w.T + b).argmax(1).numpy() == y.argmax(1)).mean()
    assert acc > 0.95
    table = capsys.readouterr().out
    assert "| input |" in table and "| vote_weight 1 |" in table
    with pytest.raises(FaceAnalysisError, match="--vote-weights"):
        mod.main([str(tiny_weights), "--vote-weights", "2", "--data-root", str(data_root)])


def test_refit_identity_head_changes_only_the_identity_head(tiny_weights, data_root, tmp_path, capsys):
    """weights/refit_identity_head.py: every tensor outside heads.identity.mlp is the input's, the run is recorded
    in the weights' extra, and the fit itself lowers the distillation loss it minimises."""
    import importlib.util
    from pathlib import Path

    from safetensors.torch import load_file

    from faceanalysis import FaceAnalysisError
    from faceanalysis.model.common import MLP
    from faceanalysis.tasks import get_tasks

    spec = importlib.util.spec_from_file_location(
        "refit_identity_head", Path(__file__).resolve().parents[1] / "weights" / "refit_identity_head.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main([str(tiny_weights), "--limit", "40", "--epochs", "2", "--batch", "16",
                     "--out-dir", str(tmp_path), "--data-root", str(data_root)]) == 0
    before = load_file(str(tiny_weights))
    path = tmp_path / f"{tiny_weights.stem}_idrefit.safetensors"
    after = load_file(str(path))
    assert set(after) == set(before)
    assert all(k.startswith("heads.identity.mlp.") for k in after if not torch.equal(after[k], before[k]))
    rec = read_config(path).extra["identity_head_refit"]
    assert rec["mirror"] and rec["epoch"] in (0, 1, 2) and rec["train_views"] > 40
    assert "| 0 (input)" in capsys.readouterr().out
    # the fit: a head learns a fixed linear map to the targets
    torch.manual_seed(0)
    x = torch.randn(512, 16)
    target = x @ torch.randn(16, 8)
    mlp = MLP(16, 16, 8)
    task = get_tasks(["identity"])[0].fit({})
    losses = mod.fit_head(mlp, x, target, task, epochs=15, lr=1e-2, batch=64, l2=0.0)
    assert losses[-1] < 0.5 * losses[0]
    for n in (160, 32):  # 10 steps (a one-cycle warm-up of one step divided by zero) and 2 steps: no crash
        assert len(mod.fit_head(MLP(16, 16, 8), x[:n], target[:n], task, epochs=1, lr=1e-2, batch=16, l2=0.0)) == 1
    with pytest.raises(FaceAnalysisError, match="--epochs"):
        mod.main([str(tiny_weights), "--epochs", "0", "--data-root", str(data_root)])
    with pytest.raises(FaceAnalysisError, match="no such weights"):
        mod.main([str(tmp_path / "missing.safetensors"), "--data-root", str(data_root)])
    with pytest.raises(FaceAnalysisError, match="--branch"):
        mod.main([str(tiny_weights), "--branch", "9", "--data-root", str(data_root)])
    with pytest.raises(FaceAnalysisError, match="--overwrite"):  # the refit above is not replaced unasked
        mod.main([str(tiny_weights), "--limit", "40", "--out-dir", str(tmp_path), "--data-root", str(data_root)])


def test_refit_identity_branch_grows_and_fits_only_the_branch(tiny_weights, data_root, tmp_path):
    """refit_identity_head.py --branch 1: the weights gain an identity branch (ModelConfig.identity_branch 1), the fit
    changes only the branch and the identity head, and every other output stays bit-identical to the input's; with
    --branch-tokens identity the branch is refitted in its lighter form."""
    import importlib.util

    from faceanalysis import FaceAnalysisError
    from pathlib import Path

    from safetensors.torch import load_file

    from faceanalysis.weights import load_model

    spec = importlib.util.spec_from_file_location(
        "refit_identity_head", Path(__file__).resolve().parents[1] / "weights" / "refit_identity_head.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    # lr high enough that an epoch moves the branch, so the kept epoch is one the fit made (or the input: epoch 0)
    assert mod.main([str(tiny_weights), "--branch", "1", "--limit", "40", "--epochs", "2", "--batch", "16",
                     "--lr", "1e-3", "--out-dir", str(tmp_path), "--data-root", str(data_root)]) == 0
    path = tmp_path / f"{tiny_weights.stem}_idbranch.safetensors"
    before, after = load_file(str(tiny_weights)), load_file(str(path))
    assert set(before) < set(after) and all(k.startswith("identity_branch.") for k in set(after) - set(before))
    assert all(torch.equal(after[k], before[k]) for k in before if not k.startswith("heads.identity."))
    cfg = read_config(path)
    assert cfg.model.identity_branch == 1 and cfg.extra["identity_branch_refit"]["branch"] == 1
    old, _ = load_model(tiny_weights)
    new, _ = load_model(path)
    x = torch.randn(2, 3, old.cfg.input_size, old.cfg.input_size)
    with torch.no_grad():
        a, b = old(x), new(x)
    assert all(torch.equal(a[k], b[k]) for k in a if k != "embedding")
    # --branch-tokens identity refits the written branch in its lighter form (stage 26) and says so in the config;
    # it is refused without --branch (checked before any feature is computed)
    light_dir = tmp_path / "light"
    assert mod.main([str(path), "--branch", "1", "--branch-tokens", "identity", "--limit", "20", "--epochs", "1",
                     "--batch", "16", "--out-dir", str(light_dir), "--data-root", str(data_root)]) == 0
    light = light_dir / f"{path.stem}_idbranch.safetensors"
    assert read_config(light).model.identity_branch_tokens == "identity"
    assert set(load_file(str(light))) == set(after)  # the same tensors; only how the branch runs changed
    for tokens in ("identity", "all"):  # "all" is the weights' own setting: refused all the same, not ignored
        with pytest.raises(FaceAnalysisError, match="--branch-tokens needs --branch"):
            mod.main([str(path), "--branch-tokens", tokens, "--out-dir", str(tmp_path / "no"),
                      "--data-root", str(data_root)])


def test_init_grows_and_drops_the_identity_branch(tiny_weights, tmp_path):
    """--init may add the identity branch (grown as a copy of the shared layers: every output the same) or drop it
    (the shared layers remain: every output but the embedding the same); a branch of another size is refused."""
    import dataclasses

    from faceanalysis import FaceAnalysisError
    from faceanalysis.model import FaceModel
    from faceanalysis.train import _init_from
    from faceanalysis.weights import save_weights

    cfg = read_config(tiny_weights)
    ref, _ = load_model(tiny_weights)
    x = torch.randn(2, 3, cfg.model.input_size, cfg.model.input_size)
    grown = FaceModel(dataclasses.replace(cfg.model, identity_branch=1))
    _init_from(grown, tiny_weights)
    grown.eval()
    with torch.no_grad():
        a, b = ref(x), grown(x)
        assert all(torch.equal(a[k], b[k]) for k in a)
        for p in grown.identity_branch.parameters():
            p.add_(0.05 * torch.randn_like(p))
    forked = save_weights(grown, dataclasses.replace(cfg, model=grown.cfg), tmp_path / "forked.safetensors")
    dropped = FaceModel(cfg.model)
    _init_from(dropped, forked)
    dropped.eval()
    with torch.no_grad():
        c = dropped(x)
    assert all(torch.equal(a[k], c[k]) for k in a)  # the fp16 file holds the same shared tensors
    with pytest.raises(FaceAnalysisError, match="identity_branch"):
        _init_from(FaceModel(dataclasses.replace(cfg.model, identity_branch=2)), forked)


def test_a_task_of_weight_zero_is_not_run(data_root):
    """``compute_losses`` skips a task whose weight is 0: the model is asked for the other tasks only (so a stage that
    freezes identity does not run the identity branch), the log leaves it out, and the total is unchanged."""
    from conftest import TINY

    from faceanalysis.config import FaceAnalysisConfig, ModelConfig, PreprocessConfig
    from faceanalysis.data.batches import AugmentConfig, MixtureSampler
    from faceanalysis.data.sources import load_source
    from faceanalysis.errors import FaceAnalysisError
    from faceanalysis.model import FaceModel
    from faceanalysis.preprocess import to_tensor
    from faceanalysis.tasks import get_tasks
    from faceanalysis.train import compute_losses, to_torch

    torch.manual_seed(0)
    model = FaceModel(ModelConfig(**TINY, identity_branch=1)).eval()  # with the branch a frozen-identity stage skips
    cfg = FaceAnalysisConfig(model=model.cfg, preprocess=PreprocessConfig(input_size=TINY["input_size"]))
    branch_calls = []
    model.identity_branch.register_forward_hook(lambda *_: branch_calls.append(1))
    tasks = [t.for_model(cfg.model) for t in get_tasks(cfg.model.tasks)]
    sources = {"celeba_attr": load_source("celeba_attr", "val", data_root),
               "celebamask_mini": load_source("celebamask_mini", "val", data_root)}
    tasks = [t.fit(sources) for t in tasks]
    sampler = MixtureSampler(sources, {"celeba_attr": 0.5, "celebamask_mini": 0.5}, tasks, cfg.preprocess, 8, 0,
                             AugmentConfig())
    images, targets = sampler.next()
    x, tg = to_tensor(images, cfg.preprocess), to_torch(targets, "cpu")
    asked = []
    forward = model.forward
    model.forward = lambda *a, **k: (asked.append(k.get("tasks")), forward(*a, **k))[1]
    weights = {t.name: 1.0 + 0.5 * i for i, t in enumerate(tasks)}  # distinct, so the weighting is checked too
    torch.manual_seed(0)
    full, full_logs = compute_losses(model, x, tg, tasks, weights, False)
    torch.manual_seed(0)
    part, part_logs = compute_losses(model, x, tg, tasks, {**weights, "identity": 0.0}, False)
    assert "identity" in asked[0] and "identity" not in asked[1] and set(asked[1]) == set(weights) - {"identity"}
    assert len(branch_calls) == 1  # the identity branch ran for the full loss only
    assert part_logs == {k: v for k, v in full_logs.items() if k != "identity"}
    assert float(part.detach()) == pytest.approx(sum(weights[k] * v for k, v in part_logs.items()), rel=1e-5)
    assert float(part.detach()) == pytest.approx(float(full.detach()) - weights["identity"] * full_logs["identity"],
                                                 rel=1e-5)
    with pytest.raises(FaceAnalysisError, match="every task has weight 0"):
        compute_losses(model, x, tg, tasks, {t.name: 0.0 for t in tasks}, False)
