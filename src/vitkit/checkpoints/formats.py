"""Read any supported checkpoint and detect its format by content, returning vitkit names and a config.

Reading is in two steps: this module opens the bytes (never unpickling code) and tells formats apart by
what is inside; `timm.py`, `hf.py` and `jax.py` translate key names. `infer_config` then rebuilds the
architecture from the weight shapes, in one place for every foreign format.
"""

from __future__ import annotations

import json
import math
import pickle
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vitkit.checkpoints import hf, hub, hybrid, jax, timm
from vitkit.checkpoints.native import is_native_checkpoint, read_native, read_safetensors
from vitkit.errors import MissingPathError, UsageError
from vitkit.models import ArchConfig, ViTConfig
from vitkit.models.convnet_config import JAX_GN_EPS
from vitkit.models.registry import infer_num_heads

SUPPORTED = (
    "a vitkit checkpoint directory (written by vitkit.save or `vitkit convert`); a timm ViT or DeiT state dict "
    "(.pth/.pt/.bin/.safetensors, or a timm hub directory); a Hugging Face ViTModel/ViTForImageClassification or "
    "DeiTModel/DeiTForImageClassificationWithTeacher directory (config.json + model.safetensors or "
    "pytorch_model.bin); an original JAX ViT .npz (paper, AugReg, big_vision); or a hub id "
    "'hf-hub:<owner>/<repo>' / 'timm:<model>.<tag>'"
)

CONFIG_FILE = "config.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
SHARD_INDEX = "model.safetensors.index.json"

# Outer keys training scripts wrap a state dict in (timm train checkpoints, DeiT releases, plain scripts).
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module")

# Every parameter name of vitkit's ViT with a learned 1D position embedding (what foreign readers produce);
# a hybrid's CNN stem is checked by `hybrid.infer_stem` and by loading.
VITKIT_KEY = re.compile(
    r"^(patch_embed\.backbone\.[\w.]+|patch_embed\.proj\.(weight|bias)|cls_token|dist_token|pos_embed\.weight"
    r"|norm\.(weight|bias)|pre_logits\.(weight|bias)|head(_dist)?\.(weight|bias)"
    r"|blocks\.\d+\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias))$"
)


@dataclass
class Checkpoint:
    """A checkpoint translated to vitkit: its config, its state dict in vitkit key names, and where it came from."""

    config: ArchConfig
    state_dict: dict[str, torch.Tensor]
    format: str  # "vitkit", "timm", "hf" or "jax"
    origin: str  # the path, for messages
    heads_inferred: bool = False  # fused weights do not show the head count: taken from timm's width table
    class_names: list[str] | None = None


def read_checkpoint(source: str | Path, *, num_heads: int | None = None) -> Checkpoint:
    """Read a checkpoint of any supported format (a directory, a weights file or a hub id), detected by content.

    `num_heads` is needed only by timm state dicts of a width timm does not release (they do not record it).
    """
    origin = str(source)
    path = hub.download(source) if hub.is_hub_id(source) else Path(source)
    if not path.exists():
        raise MissingPathError(f"checkpoint {source} does not exist")
    return read_directory(path, origin, num_heads) if path.is_dir() else read_file(path, origin, num_heads)


def read_directory(path: Path, origin: str, num_heads: int | None = None) -> Checkpoint:
    """A vitkit, Hugging Face or timm-hub directory, told apart by its config.json."""
    if is_native_checkpoint(path):
        config, state, document = read_native(path)
        return Checkpoint(config, state, "vitkit", origin, class_names=document.get("class_names"))
    config_file = path / CONFIG_FILE
    if config_file.is_file():
        document = read_json(config_file)
        if hf.is_transformers_config(document):
            return read_hf_directory(path, document, origin)
        if "architecture" in document:  # timm's hub config.json (its model_args may name the head count)
            model_args = document.get("model_args") or {}
            heads = num_heads or model_args.get("num_heads")
            size = model_args.get("img_size")
            size = hf.as_pair(size) if isinstance(size, (int, list)) and size else None
            checkpoint = read_file(find_weights(path, origin), origin, heads, size)
            checkpoint.class_names = listed_names(document.get("label_names"), checkpoint.config.num_classes)
            if model_args.get("act_layer") == "gelu_tanh":  # the weights do not show it; `vitkit convert --to timm`
                checkpoint.config = checkpoint.config.replace(activation="gelu_tanh")
            return checkpoint
    weights = [path / name for name in WEIGHT_FILES if (path / name).is_file()]
    if len(weights) == 1 and not config_file.exists():
        return read_file(weights[0], origin, num_heads)
    raise UsageError(f"{origin} is a directory vitkit cannot read. Supported: {SUPPORTED}")


def read_hf_directory(path: Path, document: dict[str, Any], origin: str) -> Checkpoint:
    """A transformers ViT directory: settings from config.json, architecture checked against the weights."""
    fields = hf.config_fields(document, origin)
    state = hf.hf_to_vitkit(read_hf_weights(path, origin), origin)
    config, state, _ = infer_config(state, origin, "hf", **fields)
    for field, claimed in hf.expected_shape(document).items():
        if getattr(config, field) != claimed:
            raise UsageError(
                f"{origin}: config.json gives {field}={claimed} but the weights have {getattr(config, field)}; "
                "the directory mixes files of different models"
            )
    return Checkpoint(config, state, "hf", origin, class_names=hf.class_names(document, config.num_classes))


def read_hf_weights(path: Path, origin: str) -> dict[str, torch.Tensor]:
    """The weights of a transformers directory: one safetensors file, sharded safetensors, or pytorch_model.bin."""
    if (path / SHARD_INDEX).is_file():
        shards = sorted(set(read_json(path / SHARD_INDEX).get("weight_map", {}).values()))
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(read_safetensors(path / shard))
        return state
    weights = find_weights(path, origin)
    return read_safetensors(weights) if weights.suffix == ".safetensors" else read_torch_file(weights)


def find_weights(path: Path, origin: str) -> Path:
    """model.safetensors, else pytorch_model.bin, in a directory."""
    for name in WEIGHT_FILES:
        if (path / name).is_file():
            return path / name
    raise MissingPathError(f"{origin} has a {CONFIG_FILE} but no weights ({' or '.join(WEIGHT_FILES)})")


def read_file(
    path: Path, origin: str, num_heads: int | None = None, img_size: tuple[int, int] | None = None
) -> Checkpoint:
    """A single weights file: safetensors, PyTorch (zip or legacy pickle) or .npz, told apart by its bytes.

    `num_heads` and `img_size` are for timm state dicts, which record neither (a timm config.json may)."""
    if path.stat().st_size == 0:
        raise UsageError(f"{path} is empty (an interrupted download?); fetch or export it again")
    kind = sniff(path)
    if kind == "npz":
        return from_jax_arrays(read_npz(path), origin)
    if kind == "safetensors":
        return from_state_dict(read_safetensors(path), origin, num_heads, img_size)
    if kind == "torch":
        return from_state_dict(read_torch_file(path), origin, num_heads, img_size)
    raise UsageError(
        f"{path} is not a checkpoint vitkit recognises (unknown content; if it is one of the supported kinds it "
        f"is truncated or corrupt). Supported: {SUPPORTED}"
    )


def sniff(path: Path) -> str | None:
    """'npz', 'torch', 'safetensors' or None, from the file's first bytes (and a zip's member names)."""
    with open(path, "rb") as handle:
        head = handle.read(16)
    if head.startswith(b"PK"):
        # .npz and torch.save files are both zip archives: the members tell them apart.
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as error:
            detail = f"it is a zip archive (.npz or PyTorch file) that cannot be opened ({error})"
            raise corrupt(path, detail) from error
        if any(name.endswith(".npy") for name in names):
            return "npz"
        if any(name.endswith("data.pkl") for name in names):
            return "torch"
        return None
    if head.startswith(b"\x80"):  # a pickle protocol opcode: torch.save's legacy (pre-1.6) format
        return "torch"
    if len(head) >= 9 and head[8:9] == b"{":  # safetensors: 8-byte header length, then a JSON header
        return "safetensors"
    return None


def corrupt(path: Path, detail: str) -> UsageError:
    """The error for a file that has the right kind but cannot be read."""
    return UsageError(f"cannot read {path}: {detail}. The file is truncated or corrupt; fetch or export it again")


def read_json(path: Path) -> dict[str, Any]:
    """A JSON document, with a corrupt file reported by name."""
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise corrupt(path, f"not valid JSON ({error})") from error


# What torch.load(weights_only=True) raises on damaged bytes (it runs no code): a truncated zip archive or a
# damaged member (RuntimeError from its reader), a cut pickle stream (EOFError, IndexError, KeyError), bytes
# that do not decode (UnicodeDecodeError, a ValueError). Other failures (the disk, a bug) keep their traceback.
TORCH_FILE_DAMAGE = (RuntimeError, EOFError, LookupError, ValueError)


def read_torch_file(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a torch.save file, loaded with weights_only=True: no code from the file is ever run."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Unsupported global" in str(error):
            raise UsageError(
                f"{path} holds Python objects besides tensors (e.g. training arguments), and vitkit never unpickles "
                "code. Re-save only the weights where you trust the file, e.g. torch.save(ckpt['model'], "
                "'weights.pth'), or export them to .safetensors"
            ) from error
        raise corrupt(path, "its pickled data cannot be read") from error
    except TORCH_FILE_DAMAGE as error:
        raise corrupt(path, first_line(error)) from error
    return unwrap_state_dict(obj, path)


def first_line(error: BaseException) -> str:
    """The first line of an error message (torch's run to paragraphs), or its type when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def unwrap_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a state dict, out of `{"model": ...}` / `{"state_dict": ...}` wrappers and DDP's `module.`."""
    for _ in range(len(WRAPPER_KEYS)):
        if not isinstance(obj, dict) or any(isinstance(value, torch.Tensor) for value in obj.values()):
            break
        inner = next((obj[key] for key in WRAPPER_KEYS if isinstance(obj.get(key), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict):
        raise UsageError(f"{path} holds a {type(obj).__name__}, not a state dict of tensors")
    state = {str(key): value for key, value in obj.items() if isinstance(value, torch.Tensor)}
    if not state:
        raise UsageError(
            f"{path} holds no tensors at the top level or under {', '.join(WRAPPER_KEYS)} (keys: "
            f"{', '.join(map(str, list(obj)[:8]))}); save the model's state_dict() itself"
        )
    if all(key.startswith("module.") for key in state):  # saved from DistributedDataParallel
        state = {key.removeprefix("module."): value for key, value in state.items()}
    return state


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Arrays of an .npz file, loaded with allow_pickle=False."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise corrupt(path, str(error)) from error


def from_state_dict(
    state: dict[str, torch.Tensor],
    origin: str,
    num_heads: int | None = None,
    img_size: tuple[int, int] | None = None,
) -> Checkpoint:
    """A PyTorch state dict whose layout (timm, transformers, bare vitkit) is recognised by its key names."""
    keys = set(state)
    if timm.is_timm_state_dict(keys):
        state = timm.timm_to_vitkit(state, origin)
        config, state, heads_inferred = infer_config(state, origin, "timm", num_heads=num_heads, img_size=img_size)
        return Checkpoint(config, state, "timm", origin, heads_inferred=heads_inferred)
    if hf.is_hf_state_dict(keys):
        raise UsageError(
            f"{origin} holds Hugging Face ViT or DeiT weights; pass the directory that holds them together with their "
            f"{CONFIG_FILE} (vitkit takes the image size, head count and LayerNorm eps from it)"
        )
    if "pos_embed.weight" in keys or "pos_embed.row" in keys:
        raise UsageError(
            f"{origin} is a bare vitkit state dict; vitkit checkpoints are directories written by vitkit.save "
            "(config.json + model.safetensors). Save with vitkit.save(model, path) to keep the config"
        )
    sample = ", ".join(sorted(keys)[:6])
    raise UsageError(f"{origin}: unknown weight layout (keys: {sample}, ...). Supported: {SUPPORTED}")


def from_jax_arrays(arrays: dict[str, np.ndarray], origin: str) -> Checkpoint:
    """An .npz of Flax ViT parameters."""
    if not jax.is_jax_layout(set(arrays)):
        sample = ", ".join(sorted(arrays)[:6])
        raise UsageError(f"{origin}: an .npz, but not of a JAX ViT (keys: {sample}, ...). Supported: {SUPPORTED}")
    state, num_heads = jax.jax_to_vitkit(arrays, origin)
    # Flax's nn.gelu is the tanh approximation by default: the function these weights were trained with; a
    # hybrid's stem standardises weights as vit_jax's StdConv, (w - mean) / (std + 1e-5), with Flax's GroupNorm eps.
    config, state, _ = infer_config(state, origin, "jax", num_heads=num_heads, activation="gelu_tanh")
    if config.stem is not None:
        config = config.replace(stem_weight_std="jax", stem_norm_eps=JAX_GN_EPS)
    return Checkpoint(config, state, "jax", origin)


def infer_config(
    state: dict[str, torch.Tensor],
    origin: str,
    source_format: str,
    *,
    num_heads: int | None = None,
    img_size: tuple[int, int] | None = None,
    patch_size: tuple[int, int] | None = None,
    layer_norm_eps: float = 1e-6,
    activation: str = "gelu",
) -> tuple[ViTConfig, dict[str, torch.Tensor], bool]:
    """The config vitkit-named foreign weights imply, the state dict fitted to it, and whether heads were inferred.

    Shapes give everything but the head count (taken from timm's widths when not given) and, for
    non-square inputs, the image size (a square grid is assumed unless `img_size` is given).
    """
    unknown = sorted(key for key in state if not VITKIT_KEY.match(key))
    if unknown:
        raise UsageError(
            f"{origin} has weights vitkit's ViT has no place for ({', '.join(unknown[:5])}); it is not a plain ViT"
        )
    proj = require(state, "patch_embed.proj.weight", origin)
    hidden_dim, in_chans, patch = proj.shape[0], proj.shape[1], (proj.shape[2], proj.shape[3])
    stem = None
    if hybrid.is_hybrid(state):
        if patch != (1, 1):
            raise UsageError(
                f"{origin}: the hybrid projects {patch[0]}x{patch[1]} patches of its feature map; vitkit's hybrids "
                "project 1x1 patches, as the paper (Sec. 3.1)"
            )
        stem, stride, in_chans = hybrid.infer_stem(state, origin)
        patch = (stride, stride)
    if patch_size is not None and tuple(patch_size) != patch:
        raise UsageError(f"{origin}: the config gives patch size {patch_size} but the weights have {patch}")
    depth = len({key.split(".")[1] for key in state if key.startswith("blocks.")})
    pool = "token" if "cls_token" in state else "gap"
    distilled = "dist_token" in state
    prefix = (1 + distilled) if pool == "token" else 0
    posemb = require(state, "pos_embed.weight", origin)
    img_size = img_size or square_image(posemb.shape[1], prefix, patch, origin)
    grid_tokens = (img_size[0] // patch[0]) * (img_size[1] // patch[1])
    state = dict(state)
    if prefix and posemb.shape[1] == grid_tokens:
        # The source added E_pos before prepending the prefix tokens (big_vision, timm no_embed_class); vitkit's
        # table covers them, so zero entries there compute the same function.
        state["pos_embed.weight"] = torch.cat([posemb.new_zeros(1, prefix, posemb.shape[2]), posemb], dim=1)
    elif posemb.shape[1] != grid_tokens + prefix:
        needs = f"{grid_tokens} + {prefix} (prefix tokens)" if prefix else str(grid_tokens)
        raise UsageError(
            f"{origin}: the position embedding has {posemb.shape[1]} entries, but a {img_size[0]}x{img_size[1]} "
            f"image in {patch[0]}x{patch[1]} patches needs {needs}"
        )
    head = state.get("head.weight")
    pre_logits = state.get("pre_logits.weight")
    config = ViTConfig(
        img_size=img_size,
        patch_size=patch,
        stem=stem,
        in_chans=in_chans,
        num_classes=head.shape[0] if head is not None else 0,
        hidden_dim=hidden_dim,
        depth=depth,
        num_heads=head_count(hidden_dim, num_heads, origin),
        mlp_dim=require(state, "blocks.0.mlp.fc1.weight", origin).shape[0],
        pool=pool,
        posemb="learned",
        distilled=distilled,
        representation_size=pre_logits.shape[0] if pre_logits is not None else None,
        qkv_bias="blocks.0.attn.qkv.bias" in state,
        layer_norm_eps=layer_norm_eps,
        activation=activation,
        extra={"source_format": source_format, "source": origin},
    )
    return config, state, num_heads is None


def head_count(hidden_dim: int, num_heads: int | None, origin: str) -> int:
    """The given head count, else the one timm always uses at this width; refuses to guess for other widths."""
    heads = num_heads or infer_num_heads(hidden_dim)
    if heads is None:
        raise UsageError(
            f"{origin}: a timm state dict does not record its number of attention heads, and its width {hidden_dim} "
            "is not one timm releases models at; give it, e.g. create_model(pretrained=..., num_heads=4) "
            "(or `vitkit convert --num-heads 4`)"
        )
    if hidden_dim % heads:
        raise UsageError(
            f"{origin}: {heads} heads do not divide its width {hidden_dim}; check the model name or num_heads given"
        )
    return heads


def require(state: dict[str, torch.Tensor], key: str, origin: str) -> torch.Tensor:
    """A weight every ViT has; its absence means a truncated export or a different model."""
    if key not in state:
        raise UsageError(f"{origin} has no {key}; it is incomplete or not a ViT checkpoint")
    return state[key]


def square_image(positions: int, prefix: int, patch: tuple[int, int], origin: str) -> tuple[int, int]:
    """The image size of a square patch grid with `positions` entries (with or without the class-token entry)."""
    for tokens in (positions - prefix, positions):
        side = math.isqrt(max(tokens, 0))
        if tokens > 0 and side * side == tokens:
            return (side * patch[0], side * patch[1])
    raise UsageError(
        f"{origin}: the position embedding has {positions} entries, which is not a square patch grid; "
        "vitkit cannot infer a non-square image size from the weights alone"
    )


def listed_names(names: Any, num_classes: int) -> list[str] | None:
    """A list of class names when it matches the head, else None."""
    if isinstance(names, list) and len(names) == num_classes > 0 and all(isinstance(n, str) for n in names):
        return names
    return None
