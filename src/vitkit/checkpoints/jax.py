"""The original JAX/Flax `.npz` weights (ViT paper, AugReg, big_vision) translated to vitkit names.

Flax stores a Dense kernel as (in, out), a conv kernel as HWIO, and attention projections per head:
query/key/value kernels (D, heads, head_dim), the output kernel (heads, head_dim, D). The head count is
therefore visible in these files, unlike in fused PyTorch weights.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import torch

from vitkit.checkpoints import hybrid
from vitkit.errors import UsageError

# Outer scopes some releases save the parameters under (AugReg's optimizer state; big_vision's tree).
PREFIXES = ("opt/target/", "params/")

# Sub-module names inside an encoder block: the paper's release (google-research/vision_transformer)
# counts every sub-module; big_vision counts per module type.
BLOCK_NAMES = {
    "paper": ("LayerNorm_0", "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3"),
    "big_vision": ("LayerNorm_0", "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0"),
}

# Where each release keeps the learned position embedding (paper, pre-2022 big_vision, big_vision).
POSEMB_KEYS = ("Transformer/posembed_input/pos_embedding", "Transformer/pos_embedding", "pos_embedding")

UNSUPPORTED = {
    "MAPHead_0/": "it pools with attention (a MAP head), while vitkit pools with the class token or GAP",
}


def strip_prefix(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Drop an outer `opt/target/` or `params/` scope so every release has the same names."""
    for prefix in PREFIXES:
        if f"{prefix}embedding/kernel" in arrays:
            return {key.removeprefix(prefix): value for key, value in arrays.items() if key.startswith(prefix)}
    return arrays


def is_jax_layout(keys: set[str]) -> bool:
    """True for Flax ViT parameter names (an `embedding` conv and a `Transformer` encoder)."""
    return any(key.endswith("embedding/kernel") for key in keys) and any("Transformer/" in key for key in keys)


def unstack_scanned(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """big_vision's scanned encoder stacks all blocks on axis 0 under `encoderblock/`: split it per block."""
    out = {}
    for key, value in arrays.items():
        if key.startswith("Transformer/encoderblock/"):
            rest = key.removeprefix("Transformer/encoderblock/")
            for index in range(value.shape[0]):
                out[f"Transformer/encoderblock_{index}/{rest}"] = value[index]
        else:
            out[key] = value
    return out


def to_tensor(array: np.ndarray, key: str, origin: str) -> torch.Tensor:
    """A float tensor from a numpy array, refusing dtypes numpy cannot represent (e.g. bfloat16 saved as raw)."""
    if array.dtype.kind != "f":
        raise UsageError(
            f"{origin}: {key} has dtype {array.dtype}, not a float; re-export the weights as float32 "
            "(bfloat16 arrays are not representable in .npz)"
        )
    return torch.from_numpy(np.ascontiguousarray(array))


def jax_to_vitkit(arrays: dict[str, np.ndarray], origin: str) -> tuple[dict[str, torch.Tensor], int]:
    """Translate Flax ViT parameters to a vitkit state dict; also returns the head count they show."""
    arrays = unstack_scanned(strip_prefix(arrays))
    for fragment, reason in UNSUPPORTED.items():
        if any(fragment in key for key in arrays):
            raise UsageError(f"cannot load JAX checkpoint {origin}: {reason}")
    remaining = dict(arrays)

    def take(key: str) -> torch.Tensor:
        """Remove one parameter from `remaining` (leftovers are reported), as a tensor."""
        if key not in remaining:
            raise UsageError(f"{origin} has no {key}; the file is incomplete or not a ViT checkpoint")
        return to_tensor(remaining.pop(key), key, origin)

    state = {
        "patch_embed.proj.weight": take("embedding/kernel").permute(3, 2, 0, 1),  # HWIO -> OIHW
        "patch_embed.proj.bias": take("embedding/bias"),
        "pos_embed.weight": take(find_posemb(remaining, origin)),
        "norm.weight": take("Transformer/encoder_norm/scale"),
        "norm.bias": take("Transformer/encoder_norm/bias"),
    }
    if "conv_root/kernel" in remaining:  # the hybrid's ResNet stem (paper Sec. 3.1)
        state.update(hybrid.jax_to_vitkit(take, set(remaining)))
    if "cls" in remaining:
        state["cls_token"] = take("cls")
    for name in ("pre_logits", "head"):
        if f"{name}/kernel" in remaining:
            state[f"{name}.weight"] = take(f"{name}/kernel").T
            state[f"{name}.bias"] = take(f"{name}/bias")
    flavour = "paper" if any("MultiHeadDotProductAttention_1/" in key for key in remaining) else "big_vision"
    num_heads = 0
    for index in range(count_blocks(remaining)):
        block, num_heads = translate_block(take, f"Transformer/encoderblock_{index}", BLOCK_NAMES[flavour])
        state.update({f"blocks.{index}.{key}": value for key, value in block.items()})
    if remaining:
        raise UsageError(
            f"{origin} has parameters vitkit's ViT has no place for ({', '.join(sorted(remaining)[:5])}); "
            "it is not a plain ViT checkpoint"
        )
    return state, num_heads


def find_posemb(arrays: dict[str, np.ndarray], origin: str) -> str:
    """The key of the learned position embedding, or a clear error for models without one."""
    for key in POSEMB_KEYS:
        if key in arrays:
            return key
    raise UsageError(
        f"{origin} has no learned position embedding. big_vision models with posemb='sincos2d' are not supported: "
        "their fixed table spaces frequencies differently from vitkit's sincos_2d"
    )


def count_blocks(arrays: dict[str, np.ndarray]) -> int:
    """Number of `Transformer/encoderblock_N` scopes."""
    indices = {int(m[1]) for key in arrays if (m := re.match(r"^Transformer/encoderblock_(\d+)/", key))}
    if indices != set(range(len(indices))):
        raise UsageError(f"encoder blocks {sorted(indices)} are not numbered 0..N-1; the file is incomplete")
    return len(indices)


def translate_block(
    take: Callable[[str], torch.Tensor], scope: str, names: tuple[str, str, str, str]
) -> tuple[dict[str, torch.Tensor], int]:
    """One encoder block in vitkit names, with query/key/value fused; also returns its head count."""
    norm1, attn, norm2, mlp = (f"{scope}/{name}" for name in names)
    query = take(f"{attn}/query/kernel")
    dim, heads, head_dim = query.shape
    kernels = [query] + [take(f"{attn}/{name}/kernel") for name in ("key", "value")]
    biases = [take(f"{attn}/{name}/bias") for name in ("query", "key", "value")]
    block = {
        "norm1.weight": take(f"{norm1}/scale"),
        "norm1.bias": take(f"{norm1}/bias"),
        # (D, heads, head_dim) -> (heads * head_dim, D): heads stay contiguous, as vitkit's qkv expects.
        "attn.qkv.weight": torch.cat([k.reshape(dim, heads * head_dim).T for k in kernels], dim=0),
        "attn.qkv.bias": torch.cat([b.reshape(heads * head_dim) for b in biases], dim=0),
        "attn.proj.weight": take(f"{attn}/out/kernel").reshape(heads * head_dim, dim).T,
        "attn.proj.bias": take(f"{attn}/out/bias"),
        "norm2.weight": take(f"{norm2}/scale"),
        "norm2.bias": take(f"{norm2}/bias"),
        "mlp.fc1.weight": take(f"{mlp}/Dense_0/kernel").T,
        "mlp.fc1.bias": take(f"{mlp}/Dense_0/bias"),
        "mlp.fc2.weight": take(f"{mlp}/Dense_1/kernel").T,
        "mlp.fc2.bias": take(f"{mlp}/Dense_1/bias"),
    }
    return {key: value.contiguous() for key, value in block.items()}, heads
