"""The one configuration object of a Vision Transformer, serialised into every checkpoint."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from vitkit import configs
from vitkit.configs import knob
from vitkit.errors import UsageError

ConfigT = TypeVar("ConfigT", bound="ConfigDict")

POOLS = ("token", "gap")
POSEMBS = ("learned", "learned_2d", "sincos_2d", "none")
# "gelu": exact (erf) GELU, as timm and Hugging Face use; "gelu_tanh": the tanh approximation, flax's default
# and so the function the original JAX ViT releases were trained with.
ACTIVATIONS = ("gelu", "gelu_tanh")
ATTN_INITS = ("xavier", "mimetic")
# A hybrid stem's weight standardisation: timm's (w - mean) / sqrt(var + 1e-8), or the original JAX code's
# (w - mean) / (std + 1e-5) (models/resnet.py computes both).
STEM_WEIGHT_STDS = ("timm", "jax")


def to_pair(value: int | tuple[int, int] | list[int], what: str) -> tuple[int, int]:
    """Return (height, width) from an int or a pair, refusing anything else with a clear message."""
    if isinstance(value, int):
        pair = (value, value)
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        pair = (int(value[0]), int(value[1]))
    else:
        raise UsageError(f"{what} must be an int or a (height, width) pair of ints, got {value!r}")
    if min(pair) <= 0:
        raise UsageError(f"{what} must be positive, got {value!r}")
    return pair


def nearest_multiples(size: int, step: int) -> list[int]:
    """The multiples of `step` just below and just above `size` (the valid sizes to suggest)."""
    below = (size // step) * step
    return [s for s in (below, below + step) if s > 0]


def check_divisible(img_size: tuple[int, int], patch_size: tuple[int, int]) -> None:
    """Raise a UsageError naming both numbers and the nearest valid sizes when patches do not tile the image."""
    square = img_size[0] == img_size[1] and patch_size[0] == patch_size[1]
    for axis, size, patch in (("height", img_size[0], patch_size[0]), ("width", img_size[1], patch_size[1])):
        if size % patch:
            valid = " or ".join(str(s) for s in nearest_multiples(size, patch))
            what = "image size" if square else f"image {axis}"
            raise UsageError(f"{what} {size} is not divisible by patch size {patch}; use an {what} of {valid}")


class ConfigDict:
    """What every model config shares: its family's name for messages, a validated copy, a JSON-ready dict.

    Built, copied and checked by the one mechanism of `vitkit.configs` (`make`, `replace`, `plain`): values are
    checked by the config's own `__post_init__` (which accepts an int for a pair, a list for a tuple), not
    coerced to the type hints, so a checkpoint's JSON rebuilds exactly what was saved.
    """

    label: ClassVar[str] = "model"  # the model family, for error messages
    in_chans: int  # every family's input channels (the data's normalisation has one mean and std per channel)

    def replace(self: ConfigT, **changes: Any) -> ConfigT:
        """A copy with some fields changed, validated again (`vitkit.configs.replace`)."""
        return configs.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        return configs.plain(self)


@dataclass
class ViTConfig(ConfigDict):
    """Every architectural choice of a ViT (paper Sec. 3.1 and Appendix D); defaults are ViT-B/16 at 224."""

    label: ClassVar[str] = "ViT"
    img_size: tuple[int, int] = (224, 224)
    patch_size: tuple[int, int] = knob((16, 16), "patch size P (with a CNN stem: its total stride)")
    stem: str | None = knob(None, "hybrid (Sec. 3.1): a CNN stem such as R50 or C20 instead of raw patches")
    stem_weight_std: str = knob(
        "timm", "ResNet stem weight standardisation: timm (sqrt(var + 1e-8)) | jax (std + 1e-5, the JAX releases)"
    )
    stem_norm_eps: float = knob(1e-5, "ResNet stem GroupNorm epsilon (timm 1e-5; Flax, the JAX releases, 1e-6)")
    in_chans: int = knob(3, "input image channels")
    num_classes: int = 1000
    hidden_dim: int = knob(768, "width D of the tokens (paper Table 1)")
    depth: int = knob(12, "number of encoder blocks L")
    num_heads: int = knob(12, "attention heads per block")
    mlp_dim: int = knob(3072, "hidden size of each block's MLP")
    pool: str = knob("token", "token (class token, paper) | gap (mean of the tokens after the final norm, App. D.3)")
    posemb: str = knob("learned", "learned (1D, paper) | learned_2d (App. D.4) | sincos_2d (fixed) | none")
    spt: bool = knob(False, "shifted patch tokenization (Lee et al. 2021): image + 4 half-patch shifts, LN, linear")
    lsa: bool = knob(False, "locality self-attention (Lee et al. 2021): learned temperature, diagonal masked")
    distilled: bool = knob(False, "DeiT: a distillation token after the class token, with its own head")
    representation_size: int | None = knob(None, "pre-logits Dense+tanh layer of this size (pre-training, Sec. 3.1)")
    zero_init_head: bool = knob(True, "zero-initialise the head, as the paper does for fine-tuning (Sec. 3.2)")
    qkv_bias: bool = knob(True, "biases in the query/key/value projection")
    attn_init: str = knob(
        "xavier",
        "attention init: xavier (the reference) | mimetic (Trockman & Kolter 2023: W_q^T W_k ~ I, W_o W_v ~ -I)",
    )
    activation: str = knob("gelu", "MLP activation: gelu (exact, timm/HF) | gelu_tanh (Flax, the JAX releases)")
    layer_norm_eps: float = knob(1e-6, "LayerNorm epsilon (JAX/timm 1e-6; Hugging Face checkpoints bring 1e-12)")
    dropout: float = knob(0.0, "dropout rate")
    attn_dropout: float = knob(0.0, "attention-probability dropout rate")
    drop_path: float = knob(0.0, "stochastic depth: rate of the last block, rising linearly from 0")
    patch_drop: float = knob(0.0, "patch dropout (training only): share of patch tokens left out of each image")
    name: str = ""  # the variant string it was built from, for display only
    extra: dict[str, Any] = field(default_factory=dict)  # free-form provenance (e.g. source checkpoint)

    def __post_init__(self) -> None:
        self.img_size = to_pair(self.img_size, "img_size")
        self.patch_size = to_pair(self.patch_size, "patch_size")
        if self.pool not in POOLS:
            raise UsageError(f"pool must be one of {POOLS}, got {self.pool!r}")
        if self.posemb not in POSEMBS:
            raise UsageError(f"posemb must be one of {POSEMBS}, got {self.posemb!r}")
        if self.activation not in ACTIVATIONS:
            raise UsageError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.attn_init not in ATTN_INITS:
            raise UsageError(f"attn_init must be one of {ATTN_INITS}, got {self.attn_init!r}")
        if self.stem_weight_std not in STEM_WEIGHT_STDS:
            raise UsageError(f"stem_weight_std must be one of {STEM_WEIGHT_STDS}, got {self.stem_weight_std!r}")
        if self.distilled and self.pool != "token":
            raise UsageError(
                f"distilled=True needs pool='token', got pool={self.pool!r}: DeiT's distillation token is a second "
                "prefix token beside the class token; use pool='token' or distilled=False"
            )
        if self.spt and self.stem:
            raise UsageError(
                f"spt=True tokenizes raw patches, but stem={self.stem!r} already makes the tokens; use one or the other"
            )
        if self.hidden_dim % self.num_heads:
            raise UsageError(
                f"hidden_dim {self.hidden_dim} is not divisible by num_heads {self.num_heads}; "
                f"pick num_heads among {[h for h in range(1, 33) if self.hidden_dim % h == 0]}"
            )
        if self.posemb in ("learned_2d", "sincos_2d") and self.hidden_dim % 4:
            raise UsageError(f"posemb {self.posemb!r} needs hidden_dim divisible by 4, got {self.hidden_dim}")
        for rate in ("dropout", "attn_dropout", "drop_path", "patch_drop"):
            if not 0.0 <= getattr(self, rate) < 1.0:
                raise UsageError(f"{rate} must be in [0, 1), got {getattr(self, rate)}")
        check_divisible(self.img_size, self.patch_size)

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patches along (height, width) at the configured resolution."""
        return (self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1])

    @property
    def num_patches(self) -> int:
        """N = HW / P^2 in the paper."""
        return math.prod(self.grid_size)

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patch tokens: the class token when pool='token', then the distillation token."""
        return (1 + self.distilled) if self.pool == "token" else 0
