"""FaceModel: image encoder + task tokens + two-way decoder + pixel decoder + one head per task."""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ..config import ModelConfig
from ..errors import FaceAnalysisError
from ..tasks import HeadInputs, get_tasks
from .identity_branch import IdentityBranch
from .image_encoder import ImageEncoder
from .parsing_context import ring_size
from .parsing_refiner import ParsingRefiner
from .pixel_decoder import PixelDecoder
from .transformer import TwoWayTransformer


class FaceModel(nn.Module):
    """All six tasks in one forward pass.

    Input: ``(B, 3, S, S)`` normalised aligned crops. Output: a dict of named tensors, see each task's
    ``outputs`` (``raw=True`` gives the pre-activation values the losses use).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.parsing_stride not in (1, 2):
            raise FaceAnalysisError(f"model config: parsing_stride must be 1 or 2, got {cfg.parsing_stride!r}")
        if cfg.parsing_field != 1.0 and cfg.parsing_stride != 2:
            raise FaceAnalysisError("model config: parsing_field > 1 (the parsing context ring) needs parsing_stride 2")
        if cfg.parsing_field != 1.0:
            try:
                ring_size(cfg.input_size // 2, cfg.parsing_field)
            except ValueError as e:
                raise FaceAnalysisError(f"model config: {e}") from None
        if not 0 <= cfg.identity_branch <= cfg.depth:
            raise FaceAnalysisError(f"model config: identity_branch must be 0..depth ({cfg.depth}), "
                                    f"got {cfg.identity_branch!r}")
        if cfg.identity_branch and "identity" not in cfg.tasks:
            raise FaceAnalysisError("model config: identity_branch > 0 needs the identity task")
        if cfg.identity_branch_tokens not in ("all", "identity"):
            raise FaceAnalysisError("model config: identity_branch_tokens must be 'all' or 'identity', "
                                    f"got {cfg.identity_branch_tokens!r}")
        self.cfg = cfg
        self.tasks = get_tasks(cfg.tasks)
        d = cfg.embed_dim
        self.encoder = ImageEncoder(
            input_size=cfg.input_size, stem_channels=cfg.stem_channels, embed_dim=d, depth=cfg.depth,
            num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio, drop_path_rate=cfg.drop_path_rate,
        )
        self.token_counts = [t.num_tokens for t in self.tasks]
        self.task_tokens = nn.Parameter(torch.randn(1, sum(self.token_counts), d) * 0.02)
        grid = cfg.input_size // 16
        self.image_pe = nn.Parameter(torch.randn(1, grid * grid, d) * 0.02)
        self.decoder = TwoWayTransformer(dim=d, depth=cfg.decoder_depth, num_heads=cfg.decoder_heads,
                                         mlp_dim=cfg.decoder_mlp_dim)
        self.pixel_decoder = PixelDecoder(embed_dim=d, skip_channels=cfg.stem_channels[:3], out_dim=cfg.pixel_dim)
        self.heads = nn.ModuleDict({t.name: t.build_head(cfg) for t in self.tasks})
        # registered last, so a model grown from stride-2 weights keeps their parameter order (optimiser state)
        self.parsing_refiner = (ParsingRefiner(pixel_dim=cfg.pixel_dim)
                                if cfg.parsing_stride == 1 and "parsing" in cfg.tasks else None)
        names = [t.name for t in self.tasks]
        #: index of the identity token among the task tokens
        self.identity_token = sum(self.token_counts[:names.index("identity")]) if "identity" in names else None
        self.identity_branch = (IdentityBranch(self.encoder.vit.blocks[self.fork:], self.encoder.vit.norm,
                                               self.decoder, self.identity_token,
                                               alone=cfg.identity_branch_tokens == "identity")
                                if cfg.identity_branch else None)

    @property
    def fork(self) -> int:
        """Index of the first encoder block the identity branch has its own copy of (``depth`` without a branch)."""
        return self.cfg.depth - self.cfg.identity_branch

    def grow_identity_branch(self) -> None:
        """Copy the shared layers into the identity branch: the model then answers exactly as without the branch."""
        if self.identity_branch is None:
            raise FaceAnalysisError("this model has no identity branch (ModelConfig.identity_branch is 0)")
        self.identity_branch.copy_from(self.encoder.vit.blocks[self.fork:], self.encoder.vit.norm, self.decoder)

    @property
    def output_names(self) -> list[str]:
        return [name for t in self.tasks for name in t.output_names(self.cfg)]

    def forward(self, x: torch.Tensor, tasks: Iterable[str] | None = None, raw: bool = False,
                fine_rows: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``fine_rows`` (training only; int64 row indices): run the parsing refiner on these rows alone. Parsing
        then gives ``parsing`` at stride 2 for every row and ``parsing_fine`` at full resolution for these rows
        (a training step's mask rows are about a tenth of the batch; the refiner on all of them costs 2.5x the
        step). Ignored without a refiner."""
        wanted = set(tasks) if tasks is not None else None
        branch = self.identity_branch is not None and (wanted is None or "identity" in wanted)
        shared = not branch or wanted is None or bool(wanted & {t.name for t in self.tasks} - {"identity"})
        if branch:
            mid, skips = self.encoder.trunk(x, self.fork)
            id_token, id_face = self.identity_branch(mid, self.task_tokens, self.image_pe)
            face = self.encoder.tail(mid, self.fork) if shared else id_face
        else:
            face, skips = self.encoder(x)
        b, n, d = face.shape
        tokens = self.task_tokens.expand(b, -1, -1)
        if shared:
            tokens, face = self.decoder(tokens, face, self.task_tokens, self.image_pe)
        if branch:  # identity reads the branch's token; the other tasks the shared ones (unread when not wanted)
            lo = self.identity_token
            tokens = torch.cat([tokens[:, :lo], id_token, tokens[:, lo + 1:]], dim=1)
        needs_pixels = any(t.name in ("parsing", "landmarks") and (wanted is None or t.name in wanted)
                           for t in self.tasks)
        pixels = None
        if needs_pixels:
            g = self.cfg.input_size // 16
            pixels = self.pixel_decoder(face.transpose(1, 2).reshape(b, d, g, g), skips)
        fine = None
        if self.parsing_refiner is None or (wanted is not None and "parsing" not in wanted):
            fine_rows = None
        elif fine_rows is None:
            fine = self.parsing_refiner(pixels, x)
        elif len(fine_rows):
            fine = self.parsing_refiner(pixels[fine_rows], x[fine_rows])
        out: dict[str, torch.Tensor] = {}
        for task, tok in zip(self.tasks, tokens.split(self.token_counts, dim=1)):
            if wanted is not None and task.name not in wanted:
                continue
            r = task.head_forward(self.heads[task.name],
                                  HeadInputs(tokens=tok, image=id_face if branch and task.name == "identity" else face,
                                             pixels=pixels, fine_pixels=fine,
                                             fine_rows=fine_rows if fine is not None else None))
            out.update(r if raw else task.activate(r))
        return out


class ExportWrapper(nn.Module):
    """Tuple-returning wrapper with a fixed output order, for tracing exporters."""

    def __init__(self, model: FaceModel) -> None:
        super().__init__()
        self.model = model
        self.names = model.output_names

    def forward(self, x: torch.Tensor):
        out = self.model(x)
        return tuple(out[n] for n in self.names)
