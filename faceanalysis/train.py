"""Multi-task training: ``faceanalysis train --config default --data-root DIR --out DIR``.

Mixed-dataset batches, per-task losses masked to labelled samples, configured task weights, AdamW with
warm-up + cosine decay, EMA of the weights, periodic validation on held-out splits, resumable
checkpoints (safetensors only), a progress bar with per-task losses and a log file.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from .config import FaceAnalysisConfig, ModelConfig, PreprocessConfig, _build
from .data.batches import AugmentConfig, MixtureSampler, collate, make_sample
from .data.sources import Source, default_data_root, load_source
from .errors import FaceAnalysisError, run_command
from .model import FaceModel
from .preprocess import to_tensor
from .tasks import Task, get_tasks
from .weights import save_weights

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass
class TrainConfig:
    """A training run. ``train_sets``/``val_sets`` map dataset name -> split."""

    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    steps: int = 7500
    batch_size: int = 64
    lr: float = 1e-3
    min_lr: float = 2e-5
    weight_decay: float = 0.05
    warmup: int = 400
    grad_clip: float = 2.0
    ema_decay: float = 0.999
    #: a stage started from ``init`` weights: remove their leftover share (decay^(n-1)) from the EMA before it is
    #: validated or saved (the bias correction of Adam, Kingma & Ba 2015); without it a 1,100-step stage at
    #: decay 0.999 would ship a third of its starting weights
    ema_debias: bool = True
    seed: int = 0
    amp: str = "auto"  # auto | bf16 | off
    threads: int = 0  # 0 = torch default
    val_every: int = 1000
    ckpt_every: int = 500
    log_every: int = 50  # steps between JSON loss lines in train.log (running means)
    val_max: int = 600  # images per validation set
    #: which ``val_max`` images of each validation split are scored: fixed apart from ``seed`` (which orders the
    #: training data), so stages run with different seeds are validated on the same images
    val_seed: int = 0
    train_sets: dict[str, str] = field(default_factory=lambda: {
        "utkface": "train", "celeba_attr": "train", "fer2013": "Training", "celebamask_mini": "train",
        "300w_partial": "afw_train", "celeba_more": "train"})
    val_sets: dict[str, str] = field(default_factory=lambda: {
        "utkface": "val", "celeba_attr": "val", "fer2013": "PublicTest", "celebamask_mini": "val",
        "300w_partial": "afw_val", "celeba_more": "val"})
    ratios: dict[str, float] = field(default_factory=lambda: {
        "utkface": 0.24, "celeba_attr": 0.24, "fer2013": 0.27, "celebamask_mini": 0.10, "300w_partial": 0.05,
        "celeba_more": 0.10})
    #: "sface": run the SFace teacher on every augmented training crop (consistent distillation; needs the
    #: ``teachers`` extra); "": use the stored pseudo-labels of the clean images
    online_teacher: str = ""
    identity_k: int = 2  # images per identity in a batch for identity-labelled sources (P x K sampling)
    #: start from these weights (a stage of a training campaign); resume checkpoints win. A trainer checkpoint
    #: (``OUT/checkpoint.safetensors`` of an earlier stage) also brings its AdamW moments, so the stage continues
    #: the earlier one's optimiser instead of starting Adam's estimates afresh
    init: str = ""
    #: per-task loss settings set on the fitted task copies, e.g. {"identity": {"sup_weight": 0.0}}
    task_options: dict[str, dict[str, float]] = field(default_factory=dict)
    task_weights: dict[str, float] = field(default_factory=lambda: {
        "parsing": 1.0, "landmarks": 5.0, "pose": 3.0, "attributes": 1.0, "expression": 1.0, "identity": 2.0})
    #: train only the parameters whose names start with one of these (empty: all). The rest stay frozen and in
    #: eval mode (no batch-norm statistics updates, no stochastic depth), so their outputs stay exactly those of
    #: the ``init`` weights: a stage that adds a head (e.g. ``heads.parsing.context``) leaves every other task alone
    trainable: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, name_or_path: str) -> "TrainConfig":
        """A named config from ``faceanalysis/configs`` (e.g. ``default``, ``smoke``) or a JSON file."""
        path = Path(name_or_path)
        if not path.suffix:
            path = CONFIG_DIR / f"{name_or_path}.json"
        if not path.is_file():
            names = sorted(p.stem for p in CONFIG_DIR.glob("*.json"))
            raise FaceAnalysisError(f"training config {name_or_path!r} not found; use a JSON file or one of {names}")
        return cls.from_dict(json.loads(path.read_text()))

    @classmethod
    def from_dict(cls, raw: dict) -> "TrainConfig":
        """A config from its JSON form (a config file, or the ``train_config`` a checkpoint records)."""
        raw = dict(raw)
        model = _build(ModelConfig, raw.pop("model", {}))
        aug = _build(AugmentConfig, raw.pop("augment", {}))
        cfg = _build(cls, raw)
        cfg.model, cfg.augment = model, aug
        return cfg


def resolve_amp(amp: str, device: str) -> bool:
    if amp == "off":
        return False
    if amp == "bf16":
        return True
    if device.startswith("cuda"):
        return torch.cuda.is_bf16_supported()
    return bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)())


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(t, 1.0)))


def to_torch(targets: dict[str, dict[str, np.ndarray]], device: str) -> dict[str, dict[str, torch.Tensor]]:
    return {t: {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in d.items()} for t, d in targets.items()}


def compute_losses(model: FaceModel, images: torch.Tensor, targets, tasks: list[Task], weights: dict[str, float],
                   amp: bool) -> tuple[torch.Tensor, dict[str, float]]:
    """The weighted sum of the task losses on one batch, and each task's loss for the log.

    A task of weight 0 is not run at all (its loss would add nothing and the model skips its layers: a stage that
    freezes identity saves the identity branch's forward pass), so it is absent from the log."""
    dev_type = "cuda" if images.is_cuda else "cpu"
    tasks = [t for t in tasks if weights.get(t.name, 1.0) != 0]
    if not tasks:
        raise FaceAnalysisError("task_weights: every task has weight 0, nothing to train")
    rows = [r for t in tasks if (r := t.fine_rows(targets[t.name])) is not None]
    fine_rows = torch.unique(torch.cat(rows)) if rows else None
    with torch.autocast(dev_type, dtype=torch.bfloat16, enabled=amp):
        raw = model(images, tasks=[t.name for t in tasks], raw=True, fine_rows=fine_rows)
    raw = {k: v.float() for k, v in raw.items()}
    total = torch.zeros((), device=images.device)
    logs = {}
    for t in tasks:
        loss = t.loss(raw, targets[t.name])
        if loss is not None:
            total = total + weights.get(t.name, 1.0) * loss
            logs[t.name] = float(loss.detach())
    return total, logs


@torch.no_grad()
def predict_crops(model: FaceModel, crops: np.ndarray, pre: PreprocessConfig, device: str, batch: int = 128) -> dict[str, np.ndarray]:
    """Run the model on aligned uint8 crops ``(N, S, S, 3)``; returns activated outputs as numpy."""
    outs: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(crops), batch):
        y = model(to_tensor(crops[i:i + batch], pre).to(device))
        for k, v in y.items():
            outs.setdefault(k, []).append(v.float().cpu().numpy())
    return {k: np.concatenate(v) for k, v in outs.items()}


def _under(name: str, prefixes: list[str] | tuple[str, ...]) -> bool:
    """Whether the module or parameter ``name`` is one of ``prefixes`` or inside one (dotted names)."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def set_train_mode(model: torch.nn.Module, trainable: list[str] | tuple[str, ...] = ()) -> None:
    """``model.train()``, but the modules outside the ``trainable`` name prefixes (when any are given) stay in eval
    mode, so frozen batch norms and stochastic depth behave as at inference (see ``TrainConfig.trainable``)."""
    model.train()
    if trainable:
        for name, m in model.named_modules():
            if not _under(name, trainable):
                m.training = False


def freeze_except(model: torch.nn.Module, trainable: list[str]) -> int:
    """Turn off gradients outside the ``trainable`` parameter-name prefixes; returns how many parameters
    (elements) stay trainable. Raises :class:`FaceAnalysisError` when a prefix matches no parameter."""
    names = [n for n, _ in model.named_parameters()]
    unmatched = [p for p in trainable if not any(_under(n, [p]) for n in names)]
    if unmatched:
        raise FaceAnalysisError(f"trainable: no parameter of the model starts with {unmatched} (e.g. {names[0]!r})")
    count = 0
    for n, p in model.named_parameters():
        p.requires_grad_(_under(n, trainable))
        count += p.numel() if p.requires_grad else 0
    return count


def validate(model: FaceModel, val: dict[str, tuple[np.ndarray, dict]], tasks: list[Task], pre: PreprocessConfig,
             device: str, trainable: list[str] | tuple[str, ...] = ()) -> dict[str, float]:
    model.eval()
    metrics = {}
    for name, (crops, targets) in val.items():
        pred = predict_crops(model, crops, pre, device)
        for t in tasks:
            for k, v in t.metrics(pred, targets[t.name]).items():
                metrics[f"{name}/{t.name}/{k}"] = round(v, 4)
    set_train_mode(model, trainable)
    return metrics


def build_val(sources: dict[str, Source], tasks: list[Task], pre: PreprocessConfig, limit: int, seed: int):
    """The validation batches: ``limit`` images of each source, drawn with ``seed`` (``TrainConfig.val_seed``)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, src in sources.items():
        idx = np.sort(rng.permutation(len(src))[:limit])
        out[name] = collate([make_sample(src, int(i), tasks, pre, None, None) for i in idx], tasks)
    return out


def _param_groups(model: torch.nn.Module) -> tuple[list[str], list[str]]:
    """Parameter names with and without weight decay (vectors, tokens and position embeddings go without)."""
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "token" in n or "pos_embed" in n or n.endswith("image_pe") else decay).append(n)
    return decay, no_decay


def _optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    params = dict(model.named_parameters())
    decay, no_decay = ([params[n] for n in g] for g in _param_groups(model))
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.999))


def save_checkpoint(path: Path, model, ema, opt, step: int, sampler: MixtureSampler, cfg: TrainConfig, history) -> None:
    tensors = {f"model/{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"ema/{k}": v.detach().cpu().contiguous() for k, v in ema.state_dict().items()})
    opt_state = opt.state_dict()
    for pid, st in opt_state["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"opt/{pid}/{k}"] = v.detach().cpu().contiguous().reshape(v.shape)
    meta = {"step": str(step), "sampler": json.dumps(sampler.state()), "train_config": json.dumps(dataclasses.asdict(cfg)),
            "history": json.dumps(history), "torch_rng": json.dumps(torch.get_rng_state().tolist())}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)


def make_ema(model: torch.nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """The exponential moving average of ``model``'s weights and buffers that the trainer keeps and saves."""
    return torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(decay),
                                               use_buffers=True)


def read_checkpoint(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor], dict[str, torch.Tensor],
                                         dict[str, torch.Tensor]]:
    """A checkpoint's metadata and its model, EMA and optimiser tensors (prefixes ``model/``, ``ema/``, ``opt/``)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    t = load_file(str(path))
    parts: dict[str, dict[str, torch.Tensor]] = {"model": {}, "ema": {}, "opt": {}}
    for key, v in t.items():
        head, _, rest = key.partition("/")
        if head in parts:
            parts[head][rest] = v
    return meta, parts["model"], parts["ema"], parts["opt"]


def _load_opt_state(opt: torch.optim.Optimizer, opt_tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    """Put a checkpoint's ``opt/PARAM_ID/NAME`` tensors (AdamW moments and step counts) into ``opt``."""
    st = opt.state_dict()
    n_params = sum(len(g["params"]) for g in st["param_groups"])
    for key, v in opt_tensors.items():
        pid, name = key.split("/")
        if int(pid) >= n_params:
            raise FaceAnalysisError(f"checkpoint {path} has optimiser state for another model")
        st["state"].setdefault(int(pid), {})[name] = v
    opt.load_state_dict(st)


def load_checkpoint(path: Path, model, ema, opt, sampler: MixtureSampler):
    meta, model_state, ema_state, opt_tensors = read_checkpoint(path)
    model.load_state_dict(model_state)
    ema.load_state_dict(ema_state)
    _load_opt_state(opt, opt_tensors, path)
    sampler.set_state(json.loads(meta["sampler"]))
    torch.set_rng_state(torch.tensor(json.loads(meta["torch_rng"]), dtype=torch.uint8))
    return int(meta["step"]), json.loads(meta.get("history", "[]"))


def train(cfg: TrainConfig, data_root: str | Path, out: str | Path, device: str = "cpu", resume: bool = True,
          config_name: str = "") -> Path:
    """Run training; returns the path of the final fp16 weights (EMA)."""
    if cfg.online_teacher not in ("", "sface"):
        raise FaceAnalysisError(f"online_teacher must be 'sface' or empty, got {cfg.online_teacher!r}")
    if not any(cfg.task_weights.get(t, 1.0) != 0 for t in cfg.model.tasks):
        raise FaceAnalysisError("task_weights: every task has weight 0, nothing to train")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    amp = resolve_amp(cfg.amp, device)
    tasks = [t.for_model(cfg.model) for t in get_tasks(cfg.model.tasks)]
    pre = PreprocessConfig(input_size=cfg.model.input_size)
    full_cfg = FaceAnalysisConfig(model=cfg.model, preprocess=pre)
    teacher = None
    if cfg.online_teacher:  # fail before the data loads when the teachers extra is missing
        from .teachers import CropTeacher

        teacher = CropTeacher(pre)

    log = open(out / "train.log", "a")

    def say(msg: str) -> None:
        tqdm.write(msg)
        log.write(msg + "\n")
        log.flush()

    say(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} config={config_name} device={device} amp={amp} "
        f"threads={torch.get_num_threads()}")
    train_sources = {n: load_source(n, s, data_root) for n, s in cfg.train_sets.items()}
    val_sources = {n: load_source(n, s, data_root) for n, s in cfg.val_sets.items()}
    say("train: " + ", ".join(f"{n}={len(s)}" for n, s in train_sources.items()))
    val = build_val(val_sources, tasks, pre, cfg.val_max, cfg.val_seed)
    # options first: a task's fit may read them (parsing's class-balance settings)
    tasks = [_with_options(t, cfg.task_options.get(t.name, {})).fit(train_sources) for t in tasks]

    model = FaceModel(cfg.model).to(device)
    if cfg.init:
        _init_from(model, cfg.init)
        say(f"initialised from {cfg.init}")
    ema = make_ema(model, cfg.ema_decay)
    opt = _optimizer(model, cfg)
    if cfg.init and _init_optimizer_from(opt, cfg.init, model):
        say(f"AdamW moments carried over from {cfg.init}")
    if teacher is not None:
        say("identity targets: SFace online on each augmented crop (consistent distillation)")
    sampler = MixtureSampler(train_sources, cfg.ratios, tasks, pre, cfg.batch_size, cfg.seed, cfg.augment, cfg.identity_k,
                             teacher)
    ckpt = out / "checkpoint.safetensors"
    step, history = 0, []
    if resume and ckpt.exists():
        step, history = load_checkpoint(ckpt, model, ema, opt, sampler)
        say(f"resumed from {ckpt} at step {step}")
    n_params = sum(p.numel() for p in model.parameters())
    say(f"model: {n_params / 1e6:.2f} M parameters")
    if cfg.trainable:
        say(f"training only {', '.join(cfg.trainable)}: {freeze_except(model, cfg.trainable) / 1e3:.1f} k parameters")

    init_state = None
    if cfg.init and cfg.ema_debias:
        init_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        filled = _init_state_from(init_state, cfg.init)  # from the file: after a resume the model is no longer there
        # only the tensors the file has: a grown model's new layers' start values are not on disk (after a resume
        # the model holds trained values there), so debias_ema leaves those tensors as the plain EMA
        init_state = {k: v for k, v in init_state.items() if k in filled}

    def averaged() -> torch.nn.Module:
        return debias_ema(ema, init_state, cfg.ema_decay) if init_state is not None else ema.module

    set_train_mode(model, cfg.trainable)
    bar = tqdm(total=cfg.steps, initial=step, desc="train", dynamic_ncols=True, mininterval=5)
    running: dict[str, float] = {}
    t0 = time.time()
    while step < cfg.steps:
        images, targets = sampler.next()
        x = to_tensor(images, pre).to(device)
        tg = to_torch(targets, device)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        loss, logs = compute_losses(model, x, tg, tasks, cfg.task_weights, amp)
        opt.zero_grad(set_to_none=True)
        if loss.requires_grad:  # a batch without a label for any task of non-zero weight has nothing to learn from
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
        ema.update_parameters(model)
        step += 1
        logs["total"] = float(loss.detach())
        for k, v in logs.items():
            running[k] = 0.98 * running.get(k, v) + 0.02 * v
        bar.update(1)
        bar.set_postfix({k[:5]: f"{v:.3f}" for k, v in running.items()}, refresh=False)
        if step % cfg.log_every == 0:
            say(json.dumps({"step": step, "lr": round(lr_at(step, cfg), 6),
                            "s_per_step": round((time.time() - t0) / cfg.log_every, 3),
                            **{k: round(v, 4) for k, v in running.items()}}))
            t0 = time.time()
        if step % cfg.val_every == 0 or step == cfg.steps:
            metrics = validate(averaged(), val, tasks, pre, device, cfg.trainable)
            history.append({"step": step, **metrics})
            say(json.dumps({"val_step": step, **metrics}))
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            save_checkpoint(ckpt, model, ema, opt, step, sampler, cfg, history)
            save_weights(averaged(), _with_extra(full_cfg, cfg, config_name, step, history), out / "ema_fp16.safetensors")
    bar.close()
    final = save_weights(averaged(), _with_extra(full_cfg, cfg, config_name, step, history), out / "ema_fp16.safetensors")
    say(f"done: {final}")
    log.close()
    return final


def _with_options(task: Task, options: dict[str, float]) -> Task:
    """``task`` with the config's loss settings (a copy when ``task`` is the registry's); unknown names are an error."""
    import copy

    if not options:
        return task
    unknown = [k for k in options if not hasattr(task, k) or callable(getattr(task, k))]
    if unknown:
        raise FaceAnalysisError(f"task_options for {task.name!r}: unknown setting(s) {unknown}")
    task = task if task is not get_tasks([task.name])[0] else copy.copy(task)
    for k, v in options.items():
        setattr(task, k, type(getattr(task, k))(v))
    return task


def debias_ema(ema: torch.optim.swa_utils.AveragedModel, init_state: dict[str, torch.Tensor], decay: float) -> torch.nn.Module:
    """A copy of ``ema.module`` with the starting weights' share removed.

    After ``n`` updates an EMA that began at the stage's first weights ``w0`` is ``d^(n-1) w0 + (1 - d^(n-1)) m``,
    where ``m`` is the average of the trained weights; this returns ``m`` for every floating tensor (``w0`` taken
    as ``init_state``, the weights the stage started from: one warm-up step away from the first update).
    """
    import copy

    n = int(ema.n_averaged.item())
    out = copy.deepcopy(ema.module)
    share = decay ** max(n - 1, 0)
    if n < 2 or share < 1e-6:
        return out
    with torch.no_grad():
        for k, v in out.state_dict().items():
            if v.is_floating_point() and k in init_state:
                v.copy_((v - share * init_state[k].to(v)) / (1.0 - share))
    return out


def _checkpoint_meta(path: str | Path) -> dict[str, str] | None:
    """The metadata of a trainer checkpoint (``model/``, ``ema/``, ``opt/`` tensors), without reading its tensors;
    ``None`` for a weights file."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        return meta if "train_config" in meta and any(k.startswith("model/") for k in f.keys()) else None


def _is_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a trainer checkpoint rather than weights."""
    return _checkpoint_meta(path) is not None


def _init_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The model tensors of ``path``: a weights file, or the ``model/`` (raw, not EMA) part of a checkpoint."""
    if _is_checkpoint(path):
        return read_checkpoint(Path(path))[1]
    return load_file(str(path))


def _init_optimizer_from(opt: torch.optim.AdamW, path: str | Path, model: torch.nn.Module) -> bool:
    """Load the AdamW moments (and step counts) of a checkpoint ``path`` into ``opt``; False for plain weights.

    The learning rate, schedule and step of the new stage are its own: only Adam's running estimates carry over.
    """
    if not _is_checkpoint(path):
        return False
    # map the moments by parameter name (``model``'s optimiser order): a grown model has more parameters
    src_cfg = TrainConfig.from_dict(json.loads(_checkpoint_meta(path)["train_config"]))
    src_names = _optimizer_param_names(FaceModel(src_cfg.model))
    dst_ids = {n: i for i, n in enumerate(_optimizer_param_names(model))}
    tensors = {f"{dst_ids[src_names[int(pid)]]}/{name}": v for key, v in read_checkpoint(Path(path))[3].items()
               for pid, name in [key.split("/")] if int(pid) < len(src_names) and src_names[int(pid)] in dst_ids}
    _load_opt_state(opt, tensors, path)
    return True


def _optimizer_param_names(model: torch.nn.Module) -> list[str]:
    """The model's parameter names in the order :func:`_optimizer` numbers them (its groups in turn)."""
    return [n for g in _param_groups(model) for n in g]


def _init_state_from(state: dict[str, torch.Tensor], path: str | Path) -> set[str]:
    """Fill ``state`` (a model state dict) in place with the float32 tensors of a weights file or checkpoint;
    returns the names filled (a grown model's new layers are not among them)."""
    filled = set()
    for k, v in _init_weights(path).items():
        if k in state:
            state[k].copy_(v.float() if v.is_floating_point() else v)
            filled.add(k)
    return filled


def _init_from(model: FaceModel, path: str | Path) -> None:
    """Load a weights file (safetensors with embedded config) or a trainer checkpoint's raw weights into ``model``;
    the architectures must match."""
    from .weights import read_config

    if not Path(path).is_file():
        raise FaceAnalysisError(f"--init {path}: no such file")
    meta = _checkpoint_meta(path)
    if meta is not None:
        src_model = TrainConfig.from_dict(json.loads(meta["train_config"])).model
    else:
        src_model = read_config(path).model
    changed = _layer_changes(src_model, model.cfg)
    if changed is None:
        raise FaceAnalysisError(f"--init weights {path} were trained with another model config; "
                                "use the same model section as the run's config (or add or drop a module: "
                                "parsing_stride 2 <-> 1, the parsing refiner; parsing_field 1 <-> more, the context ring; "
                                "identity_branch 0 <-> K, identity's own late layers)")
    state = {k: v.float() if v.is_floating_point() else v for k, v in _init_weights(path).items()}
    own = model.state_dict()
    # a dropped module's tensors go (the layers it was built on remain); a grown module's are filled below
    state = {k: v for k, v in state.items() if k in own or not k.startswith(_GROWN_PREFIXES)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith(_GROWN_PREFIXES) for k in missing):
        raise FaceAnalysisError(f"--init weights {path} do not fit the grown model (missing {missing[:3]}, "
                                f"unexpected {unexpected[:3]})")
    if "identity_branch" in changed and model.identity_branch is not None:
        model.grow_identity_branch()  # the copies start equal to the shared layers: the same answers


#: model-config fields a stage may change from its ``init`` weights (their module added or dropped; see
#: :func:`_layer_changes`), each with its value without the module and its parameter-name prefix
_GROWABLE = {"parsing_stride": (2, "parsing_refiner."), "parsing_field": (1.0, "heads.parsing.context."),
             "identity_branch": (0, "identity_branch.")}
_GROWN_PREFIXES = tuple(prefix for _, prefix in _GROWABLE.values())


def _layer_changes(src: ModelConfig, dst: ModelConfig) -> set[str] | None:
    """The model-config fields in which ``dst`` differs from ``src``, when each adds or drops one module and nothing
    else differs; else None. A model grown from ``src``'s weights computes exactly what they did: the parsing
    refiner's and the context ring's last convs start at zero (parsing maps bilinearly upsampled, or extended by their
    edge classes), and the identity branch starts as a copy of the shared layers (``grow_identity_branch``); a dropped
    module leaves the layers it was built on."""
    a, b = dataclasses.asdict(src), dataclasses.asdict(dst)
    changed = {k for k in a if a[k] != b[k]}
    if changed - set(_GROWABLE):
        return None
    if any(_GROWABLE[k][0] not in (a[k], b[k]) for k in changed):  # e.g. a ring of another size: not one module
        return None
    return changed


def _grown_only(src: ModelConfig, dst: ModelConfig) -> bool:
    """True when ``dst`` is ``src`` with modules added (:func:`_layer_changes`) and none dropped."""
    changed = _layer_changes(src, dst)
    return bool(changed) and all(getattr(src, k) == _GROWABLE[k][0] for k in changed)


def _with_extra(full_cfg: FaceAnalysisConfig, cfg: TrainConfig, name: str, step: int, history) -> FaceAnalysisConfig:
    extra = {"train_config": name, "steps": step, "validation": history[-1] if history else {}}
    return dataclasses.replace(full_cfg, extra=extra)


def main(argv: list[str] | None = None) -> int:
    from ._argparse import ArgumentParser, HelpFormatter

    p = ArgumentParser(prog="faceanalysis train", description=__doc__.splitlines()[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--config", default="default", help="config name (faceanalysis/configs) or JSON file")
    p.add_argument("--data-root", default=None, help="data pack root (default ../shared/data)")
    p.add_argument("--out", required=True, help="output folder (checkpoints, log, weights)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    p.add_argument("--no-resume", action="store_true", help="start over even if OUT has a checkpoint")
    p.add_argument("--steps", type=int, default=None, help="override the config's step count")
    p.add_argument("--threads", type=int, default=None, help="override the config's CPU thread count")
    p.add_argument("--init", default=None, help="start from these weights (e.g. the shipped ones: a new training stage), or from an earlier "
                   "stage's OUT/checkpoint.safetensors: its raw weights and AdamW moments (the lr schedule and "
                   "step count are this stage's own)")
    args = p.parse_args(argv)
    return run_command("faceanalysis train", lambda: _main(args))


def _main(args: argparse.Namespace) -> int:
    cfg = TrainConfig.load(args.config)
    if args.steps is not None:
        cfg.steps = args.steps
    if args.threads is not None:
        cfg.threads = args.threads
    if args.init is not None:
        cfg.init = args.init
    root = args.data_root or default_data_root()
    train(cfg, root, args.out, device=args.device, resume=not args.no_resume, config_name=args.config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
