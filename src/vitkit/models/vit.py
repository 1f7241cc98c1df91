"""The Vision Transformer as the paper writes it (Dosovitskiy et al. 2020, Sec. 3.1, equations 1-4).

    z_0 = [x_class; x_p^1 E; ...; x_p^N E] + E_pos          (1)  PatchEmbedding, class token, PositionEmbedding
    z'_l = MSA(LN(z_{l-1})) + z_{l-1}                        (2)  Block: attention half
    z_l = MLP(LN(z'_l)) + z'_l                               (3)  Block: MLP half
    y = LN(z_L^0)                                            (4)  final norm, pooling, head

Variants live in `registry.py`, position-embedding builders in `posemb.py`, foreign weights in
`vitkit.checkpoints`. DeiT's distillation token (Touvron et al. 2021, Sec. 4) is one option: a second
prefix token x_dist after x_class, with its own position and its own head; inference averages both heads.

Two options for small data from Lee et al. 2021 ("Vision Transformer for Small-Size Datasets"), each one config
field: shifted patch tokenization (`ViTConfig.spt`, their Sec. 3.2: `ShiftedPatchEmbedding`) widens what one
token sees; locality self-attention (`ViTConfig.lsa`, Sec. 3.3: a learned softmax temperature and the diagonal
masked in `Attention`) sharpens the attention that is otherwise nearly uniform at initialisation.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from vitkit.errors import UsageError
from vitkit.models.config import ViTConfig, check_divisible
from vitkit.models.hybrid import HybridEmbedding
from vitkit.models.interface import AttentionShape, Model
from vitkit.models.mimetic import mimetic_init_
from vitkit.models.posemb import PositionEmbedding


class PatchEmbedding(nn.Module):
    """x_p E of eq. (1): a PxP convolution with stride P equals flattening each patch and multiplying by E."""

    def __init__(self, patch_size: tuple[int, int], in_chans: int, dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(B, C, H, W) -> (B, N, D) patch tokens and the (H/P, W/P) grid they came from."""
        if images.ndim != 4:
            raise UsageError(f"expected images of shape (batch, channels, height, width), got {tuple(images.shape)}")
        if images.shape[1] != self.proj.in_channels:
            raise UsageError(f"expected {self.proj.in_channels} image channels, got {images.shape[1]}")
        check_divisible((images.shape[2], images.shape[3]), self.patch_size)
        tokens = self.proj(images)
        return tokens.flatten(2).transpose(1, 2), (tokens.shape[2], tokens.shape[3])


def shift_image(images: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """The image moved by (dy, dx) pixels (down, right when positive), zeros filling the uncovered border."""
    height, width = images.shape[-2:]
    padded = F.pad(images, (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0)))
    top, left = max(-dy, 0), max(-dx, 0)
    return padded[..., top : top + height, left : left + width]


class ShiftedPatchEmbedding(nn.Module):
    """Shifted patch tokenization (Lee et al. 2021, Sec. 3.2, eq. 2): the image and its four diagonal shifts by half
    a patch, concatenated along channels (5C), split into P x P patches, then LayerNorm and a linear map to D.

    Each token sees the pixels of its own patch and of half of each neighbour: a wider receptive field for the
    first layer, where a plain ViT's tokens know only their own 16 x 16 pixels.
    """

    def __init__(self, patch_size: tuple[int, int], in_chans: int, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.patch_size, self.in_chans = patch_size, in_chans
        features = 5 * in_chans * patch_size[0] * patch_size[1]
        self.norm = nn.LayerNorm(features, eps=eps)
        self.proj = nn.Linear(features, dim)

    def shifts(self) -> list[tuple[int, int]]:
        """The four diagonal half-patch shifts (up-left, up-right, down-left, down-right)."""
        sy, sx = self.patch_size[0] // 2, self.patch_size[1] // 2
        return [(-sy, -sx), (-sy, sx), (sy, -sx), (sy, sx)]

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(B, C, H, W) -> (B, N, D) tokens of the shifted patches and the (H/P, W/P) grid."""
        if images.ndim != 4:
            raise UsageError(f"expected images of shape (batch, channels, height, width), got {tuple(images.shape)}")
        if images.shape[1] != self.in_chans:
            raise UsageError(f"expected {self.in_chans} image channels, got {images.shape[1]}")
        check_divisible((images.shape[2], images.shape[3]), self.patch_size)
        stacked = torch.cat([images] + [shift_image(images, dy, dx) for dy, dx in self.shifts()], dim=1)
        batch, chans, height, width = stacked.shape
        (ph, pw), grid = self.patch_size, (height // self.patch_size[0], width // self.patch_size[1])
        patches = stacked.reshape(batch, chans, grid[0], ph, grid[1], pw).permute(0, 2, 4, 3, 5, 1)
        patches = patches.reshape(batch, grid[0] * grid[1], ph * pw * chans)  # row-major tokens, (y, x, channel)
        return self.proj(self.norm(patches)), grid


_eager_attention = False  # set by `eager_attention()`; a module global, which torch.compile guards on


@contextlib.contextmanager
def eager_attention(enabled: bool = True) -> Iterator[None]:
    """Compute attention as explicit matmuls and softmax (Hugging Face's "eager") instead of the fused
    `scaled_dot_product_attention`, inside this context.

    On CPU with bf16 the explicit path can be the faster one: torch's SDPA math kernel computes bf16 inputs in
    fp32, and its flash kernel is tuned for long sequences; at ViT's 64-200 tokens two small bf16 matmuls win.
    Training runtimes time both (`runtime.attention: auto`) and enter this context when it wins.
    """
    global _eager_attention
    previous, _eager_attention = _eager_attention, enabled
    try:
        yield
    finally:
        _eager_attention = previous


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    dropout: float = 0.0,
    need_weights: bool = False,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """softmax(q k^T / sqrt(d)) v over (B, heads, N, d) tensors, plus the probabilities when `need_weights`.

    `mask`, a boolean (N, N), keeps the logits where it is True and sets the others to -inf (LSA's diagonal).
    The explicit path is the same function as the fused kernel, spelled out: for the probabilities, or where
    `eager_attention()` chose it for speed.
    """
    if not (need_weights or _eager_attention):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout), None
    logits = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    weights = logits.softmax(dim=-1)
    out = F.dropout(weights, dropout, dropout > 0) @ v
    return out, weights if need_weights else None


class Attention(nn.Module):
    """Multi-head self-attention (Appendix A) with fused qkv; the explicit path when weights are asked for.

    With `locality` (LSA, Lee et al. 2021, Sec. 3.3) the logits are divided by a learned temperature tau,
    initialised at sqrt(d_head) (so training starts from the usual scaling), and each token's logit for itself
    is masked to -inf: attention goes to the other tokens, and tau can learn to sharpen it.
    """

    def __init__(
        self, dim: int, num_heads: int, qkv_bias: bool, attn_dropout: float, dropout: float, locality: bool = False
    ) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.attn_dropout, self.proj_dropout = attn_dropout, nn.Dropout(dropout)
        # log tau: a positive temperature whatever the step; a 0-dim parameter, so never weight-decayed.
        self.log_temperature = nn.Parameter(torch.tensor(0.5 * math.log(self.head_dim))) if locality else None

    @property
    def temperature(self) -> torch.Tensor | None:
        """LSA's softmax temperature tau (sqrt(d_head) at initialisation), or None without LSA."""
        return None if self.log_temperature is None else self.log_temperature.exp()

    def forward(self, x: torch.Tensor, need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, N, D) -> (B, N, D), plus the (B, heads, N, N) attention probabilities when `need_weights`."""
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        mask = None
        if self.log_temperature is not None:
            # attend() scales by 1/sqrt(d); q * sqrt(d)/tau makes the logits q k^T / tau.
            q = q * (math.sqrt(self.head_dim) / self.temperature).to(q.dtype)
            mask = ~torch.eye(tokens, dtype=torch.bool, device=x.device)
        out, weights = attend(q, k, v, self.attn_dropout if self.training else 0.0, need_weights, mask)
        out = out.transpose(1, 2).reshape(batch, tokens, dim)
        return self.proj_dropout(self.proj(out)), weights


class Mlp(nn.Module):
    """The two-layer GELU MLP of eq. (3); exact GELU, or its tanh approximation (flax's, for JAX weights)."""

    def __init__(self, dim: int, hidden: int, dropout: float, activation: str) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)
        self.approximate = "tanh" if activation == "gelu_tanh" else "none"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, N, D)."""
        return self.dropout(self.fc2(self.dropout(F.gelu(self.fc1(x), approximate=self.approximate))))


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth (Huang et al. 2016): drop a residual branch per sample, rescaling the survivors."""
    if rate == 0.0 or not training:
        return x
    keep = torch.empty((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device).bernoulli_(1 - rate)
    return x * keep / (1 - rate)


def drop_patches(tokens: torch.Tensor, prefix: int, rate: float, training: bool) -> torch.Tensor:
    """PatchDropout (Liu et al. 2022) / FLIP: keep a random (1 - rate) share of the patch tokens of each image.

    Training only; prefix tokens are always kept, and the kept patches keep their order and their E_pos.
    """
    if rate == 0.0 or not training:
        return tokens
    batch, patches = tokens.shape[0], tokens.shape[1] - prefix
    keep = max(1, round(patches * (1 - rate)))
    chosen = torch.rand(batch, patches, device=tokens.device).argsort(dim=1)[:, :keep].sort(dim=1).values
    kept = tokens[:, prefix:].gather(1, chosen[..., None].expand(-1, -1, tokens.shape[2]))
    return torch.cat([tokens[:, :prefix], kept], dim=1)


class Block(nn.Module):
    """One pre-norm encoder layer: eq. (2) then eq. (3)."""

    def __init__(self, config: ViTConfig, drop_path_rate: float) -> None:
        super().__init__()
        dim, eps = config.hidden_dim, config.layer_norm_eps
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(
            dim, config.num_heads, config.qkv_bias, config.attn_dropout, config.dropout, locality=config.lsa
        )
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, config.mlp_dim, config.dropout, config.activation)
        self.drop_path_rate = drop_path_rate

    def forward(self, x: torch.Tensor, need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """z_{l-1} -> z_l, plus this layer's attention probabilities when asked."""
        attended, weights = self.attn(self.norm1(x), need_weights)
        x = x + drop_path(attended, self.drop_path_rate, self.training)  # eq. (2)
        x = x + drop_path(self.mlp(self.norm2(x)), self.drop_path_rate, self.training)  # eq. (3)
        return x, weights


@dataclass
class ViTOutput:
    """Everything one forward pass can report: logits, per-block hidden states, attention probabilities."""

    logits: torch.Tensor
    features: torch.Tensor  # final-norm tokens (B, prefix + N, D): class token, distillation token, patches
    hidden_states: list[torch.Tensor] = field(default_factory=list)  # z_0 .. z_L (L + 1 entries)
    attentions: list[torch.Tensor] = field(default_factory=list)  # one (B, heads, T, T) per block
    grid: tuple[int, int] = (0, 0)


def linear_head(dim: int, num_classes: int) -> nn.Module:
    """A linear classifier, or the identity for a headless model (num_classes=0) that returns features."""
    return nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()


class VisionTransformer(Model):
    """ViT: image -> patch tokens (+ class token, + E_pos) -> L blocks -> LN -> pooled -> (pre-logits) -> head.

    With `config.distilled` (DeiT), a distillation token follows the class token and feeds its own head.
    """

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = config
        self.class_names: list[str] | None = None  # labels of the head's outputs, set by checkpoint loading
        dim = config.hidden_dim
        # Raw patches, shifted patches (SPT), or the hybrid's patches of a CNN feature map (Sec. 3.1): all give the
        # same (tokens, grid).
        self.patch_embed: nn.Module
        if config.stem:
            self.patch_embed = HybridEmbedding(config)
        elif config.spt:
            self.patch_embed = ShiftedPatchEmbedding(config.patch_size, config.in_chans, dim, config.layer_norm_eps)
        else:
            self.patch_embed = PatchEmbedding(config.patch_size, config.in_chans, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if config.pool == "token" else None
        self.dist_token = nn.Parameter(torch.zeros(1, 1, dim)) if config.distilled else None
        self.pos_embed = PositionEmbedding(config.posemb, config.grid_size, dim, config.num_prefix_tokens)
        self.dropout = nn.Dropout(config.dropout)
        rates = [config.drop_path * i / max(config.depth - 1, 1) for i in range(config.depth)]
        self.blocks = nn.ModuleList(Block(config, rate) for rate in rates)
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.pre_logits = nn.Linear(dim, config.representation_size) if config.representation_size else None
        head_in = config.representation_size or dim
        self.head = linear_head(head_in, config.num_classes)
        self.head_dist = linear_head(head_in, config.num_classes) if config.distilled else None  # DeiT's second
        self.reset_parameters()

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches (1 with a class token, 2 with DeiT's distillation token too, else 0)."""
        return self.config.num_prefix_tokens

    def reset_parameters(self) -> None:
        """Initialise as the reference JAX implementation: xavier-uniform linears, small-normal MLP biases."""
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.normal_(module.bias, std=1e-6) if ".mlp." in f".{name}." else nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for block in self.blocks:
            # The reference initialises q, k and v as three D x D kernels, not one D x 3D kernel.
            for chunk in block.attn.qkv.weight.data.chunk(3, dim=0):
                nn.init.xavier_uniform_(chunk)
            if block.attn.log_temperature is not None:
                nn.init.constant_(block.attn.log_temperature, 0.5 * math.log(block.attn.head_dim))  # tau = sqrt(d)
            if self.config.attn_init == "mimetic":
                mimetic_init_(block.attn.qkv, block.attn.proj, self.config.num_heads)
        conv = self.patch_embed.proj
        if isinstance(conv, nn.Conv2d):  # CCT's tokenizer ends at the token width: no projection to initialise
            fan_in = conv.in_channels * math.prod(conv.kernel_size)
            nn.init.trunc_normal_(conv.weight, std=math.sqrt(1.0 / fan_in) / 0.87962566103423978)  # lecun_normal
            nn.init.zeros_(conv.bias)
        if self.pre_logits is not None:
            nn.init.trunc_normal_(self.pre_logits.weight, std=math.sqrt(1.0 / self.pre_logits.in_features) / 0.8796)
        if self.cls_token is not None:
            nn.init.zeros_(self.cls_token)
        if self.dist_token is not None:
            nn.init.trunc_normal_(self.dist_token, std=0.02)  # as DeiT's release does
        self.pos_embed.reset_parameters()
        self.reset_head()

    def reset_head(self) -> None:
        """Zero the head(s) (paper Sec. 3.2 fine-tuning) or give them a xavier init, as the config says."""
        for head in (self.head, self.head_dist):
            if isinstance(head, nn.Linear):
                init = nn.init.zeros_ if self.config.zero_init_head else nn.init.xavier_uniform_
                init(head.weight)
                nn.init.zeros_(head.bias)

    def embed(
        self, images: torch.Tensor, corrupt: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[int, int]]:
        """Eq. (1): z_0 for a batch of images of any size the patches tile, and the patch grid.

        `corrupt`, when given, maps the (B, N, D) patch embeddings to corrupted ones before the prefix tokens
        and E_pos are added: where masked-patch prediction masks them (paper Sec. 4.6).
        """
        tokens, grid = self.patch_embed(images)
        tokens = tokens if corrupt is None else corrupt(tokens)
        posemb = self.pos_embed(grid)
        covers_prefix = self.pos_embed.covers_prefix()
        if posemb is not None and not covers_prefix:
            tokens = tokens + posemb.to(tokens.dtype)
        prefix = [token for token in (self.cls_token, self.dist_token) if token is not None]  # x_class (, x_dist)
        tokens = torch.cat([token.expand(tokens.shape[0], -1, -1).to(tokens.dtype) for token in prefix] + [tokens], 1)
        if posemb is not None and covers_prefix:
            tokens = tokens + posemb.to(tokens.dtype)
        tokens = drop_patches(tokens, self.num_prefix_tokens, self.config.patch_drop, self.training)
        return self.dropout(tokens), grid

    def forward_features(
        self, images: torch.Tensor, corrupt: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Eqs. (1)-(3) and the final LayerNorm: (B, C, H, W) -> (B, prefix + N, D); `corrupt` as in `embed`."""
        x, _ = self.embed(images, corrupt)
        for block in self.blocks:
            x, _ = block(x)
        return self.norm(x)

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """The image representation: the class token (eq. 4) or the mean of all tokens (GAP)."""
        return features[:, 0] if self.config.pool == "token" else features.mean(dim=1)

    def representations(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each head's input: the pooled image ("cls") and, for DeiT, the distillation token ("dist").

        The optional Dense+tanh pre-logits layer is applied to each.
        """
        pooled = {"cls": self.pool(features)}
        if self.dist_token is not None:
            pooled["dist"] = features[:, 1]
        if self.pre_logits is None:
            return pooled
        return {name: torch.tanh(self.pre_logits(x)) for name, x in pooled.items()}

    def forward_heads(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits of every head: "cls" (the paper's head) and, for DeiT, "dist" (the distillation head)."""
        heads = {"cls": self.head, "dist": self.head_dist}
        return {name: heads[name](x) for name, x in self.representations(features).items()}

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The logits (or, with `pre_logits`, the heads' inputs), averaged over the heads as DeiT infers."""
        outputs = self.representations(features) if pre_logits else self.forward_heads(features)
        return sum(outputs.values()) / len(outputs)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W), normalised, of any size the patches tile -> logits (B, num_classes)."""
        return self.forward_head(self.forward_features(images))

    def forward_with_details(self, images: torch.Tensor, attentions: bool = True) -> ViTOutput:
        """Forward pass that also returns z_0..z_L and, when `attentions`, every block's attention probabilities.

        Attention probabilities come from the explicit softmax path, which computes the same function as the
        fused kernel used by `forward`.
        """
        x, grid = self.embed(images)
        hidden, maps = [x], []
        for block in self.blocks:
            x, weights = block(x, need_weights=attentions)
            hidden.append(x)
            if weights is not None:
                maps.append(weights)
        features = self.norm(x)
        return ViTOutput(self.forward_head(features), features, hidden, maps, grid)

    def no_weight_decay(self) -> set[str]:
        """Parameter names that AdamW should not decay: biases, norms, position embeddings and tokens."""
        skip = set()
        for name, param in self.named_parameters():
            if param.ndim <= 1 or name.startswith(("pos_embed.", "cls_token", "dist_token")):
                skip.add(name)
        return skip

    def block_list(self) -> nn.ModuleList:
        """The L encoder blocks."""
        return self.blocks

    def embedding_parameters(self) -> list[nn.Parameter]:
        """Eq. (1)'s parameters: the patch embedding (the hybrid's whole stem), the prefix tokens and E_pos."""
        tokens = [token for token in (self.cls_token, self.dist_token) if token is not None]
        return [*self.patch_embed.parameters(), *tokens, *self.pos_embed.parameters()]

    def patch_embedding(self) -> nn.Module:
        """E of eq. (1): the patch projection, or the hybrid's ConvNet and 1x1 projection."""
        return self.patch_embed

    @property
    def patch_size(self) -> tuple[int, int]:
        """The patch size P (a hybrid's: the stem's total stride)."""
        return self.config.patch_size

    def attention_shape(self) -> AttentionShape:
        """Heads, prefix + N tokens and D / heads at the configured image size."""
        config = self.config
        return AttentionShape(
            config.num_heads, config.num_patches + config.num_prefix_tokens, config.hidden_dim // config.num_heads
        )

    @property
    def has_distillation_head(self) -> bool:
        """DeiT's distillation token and head (`config.distilled`)."""
        return self.dist_token is not None
