"""Configuration dataclasses. Sizes live here, never in module code."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any


#: test-time augmentation modes of :class:`faceanalysis.FaceAnalyzer` (``tta=``) and the CLI (``--tta``);
#: :func:`faceanalysis.runtime.with_tta` applies them
TTA_MODES = ("flip",)
#: the ``--tta`` help text shared by the commands that take it
TTA_HELP = ("test-time augmentation: 'flip' also runs each face mirrored and combines the two answers (about 1.8-2.5x "
            "the model time per face; more accurate, benchmarks/tta.md); default: one pass")


@dataclass
class PreprocessConfig:
    """How a face becomes a model input: the canonical aligned crop and its normalisation.

    The crop is a similarity warp that sends the 5 key points (subject's right eye, left eye, nose tip,
    right mouth corner, left mouth corner; image-left eye first) onto ``template`` (fractions of the
    crop side). The template is the ArcFace 112 template scaled by 0.8 about the crop centre and moved
    up 5 % so the whole head, hair and some neck fit: the eye centres are 25 % of the side apart.
    """

    input_size: int = 128
    template: tuple[tuple[float, float], ...] = (
        (0.3735, 0.4193),
        (0.6252, 0.4179),
        (0.5002, 0.5624),
        (0.3968, 0.7098),
        (0.6052, 0.7087),
    )
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # RGB, applied to pixel / 255
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    border_value: tuple[int, int, int] = (0, 0, 0)  # fill outside the source image (RGB)


@dataclass
class ModelConfig:
    """Hyper-parameters of :class:`faceanalysis.model.FaceModel`."""

    input_size: int = 128
    stem_channels: tuple[int, int, int, int] = (24, 48, 96, 128)  # strides 2, 4, 8, 16
    embed_dim: int = 192
    depth: int = 6
    num_heads: int = 3
    mlp_ratio: float = 4.0
    decoder_depth: int = 2
    decoder_heads: int = 4
    decoder_mlp_dim: int = 384
    pixel_dim: int = 32  # channels of the stride-2 pixel features that spatial heads read
    #: parsing logits at S / parsing_stride per side: 2 reads the shared stride-2 pixel features; 1 adds the
    #: ParsingRefiner (full crop resolution, guided by the crop's pixels; training runs it on the rows with a
    #: mask only, so a step costs about what a stride-2 step does: 0.86 vs 0.84 s at batch 64 on 2 threads, 2.1 s
    #: with the refiner on every row)
    parsing_stride: int = 2
    #: side of the square the parsing maps cover, as a multiple of the crop side, centred on it: > 1 adds the
    #: ParsingContext ring (``parsing_wide``: hair, neck and cloth beyond the crop, which the full-image
    #: CelebAMask metric counts); the ring, (field - 1) / 2 x S / 2 map pixels, must be a multiple of 4
    parsing_field: float = 1.0
    #: > 0: identity reads its own copy of the encoder's last ``identity_branch`` ViT blocks (with the final norm)
    #: and of the two-way decoder (``model/identity_branch.py``); 0: identity shares every layer with the other tasks
    identity_branch: int = 0
    #: which task tokens the identity branch's decoder carries: ``"all"`` (every task token, as the shared decoder;
    #: the shipped weights) or ``"identity"`` (the identity token alone, the only one the branch's output is read
    #: for: the decoder's token-side work shrinks about 90-fold, but the token no longer attends to the others, and
    #: refitted it stayed short of the full branch: the model card's stage 26)
    identity_branch_tokens: str = "all"
    embedding_dim: int = 128
    age_bins: int = 101  # ages 0..100
    tasks: tuple[str, ...] = ("parsing", "landmarks", "pose", "attributes", "expression", "identity")
    drop_path_rate: float = 0.05


@dataclass
class FaceAnalysisConfig:
    """Everything a weights file must carry to rebuild and run the model."""

    model: ModelConfig = field(default_factory=ModelConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    version: str = "0.1.0"
    extra: dict[str, Any] = field(default_factory=dict)  # training command, metrics, ...

    def to_json(self) -> str:
        """JSON of every field, but ``parsing_stride`` / ``parsing_field`` / ``identity_branch`` /
        ``identity_branch_tokens`` only when they are not the defaults 2 / 1.0 / 0 / "all": weights without the parsing
        refiner, context ring or identity branch stay readable by releases that predate the fields."""
        d = dataclasses.asdict(self)
        if d["model"]["parsing_stride"] == 2:
            del d["model"]["parsing_stride"]
        if d["model"]["parsing_field"] == 1.0:
            del d["model"]["parsing_field"]
        if d["model"]["identity_branch"] == 0:
            del d["model"]["identity_branch"]
        if d["model"]["identity_branch_tokens"] == "all":
            del d["model"]["identity_branch_tokens"]
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "FaceAnalysisConfig":
        raw = json.loads(text)
        model = _build(ModelConfig, raw.get("model", {}))
        pre = _build(PreprocessConfig, raw.get("preprocess", {}))
        return cls(model=model, preprocess=pre, version=raw.get("version", "0"), extra=raw.get("extra", {}))


def _build(kind, raw: dict[str, Any]):
    names = {f.name: f for f in dataclasses.fields(kind)}
    unknown = set(raw) - set(names)
    if unknown:
        raise ValueError(f"unknown {kind.__name__} fields: {sorted(unknown)}")
    kwargs = {}
    for k, v in raw.items():
        default = getattr(kind(), k)
        if isinstance(default, tuple) and isinstance(v, list):
            v = tuple(tuple(x) if isinstance(x, list) else x for x in v)
        kwargs[k] = v
    return kind(**kwargs)
