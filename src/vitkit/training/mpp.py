"""Masked patch prediction (paper Sec. 4.6, App. B.1.2): self-supervised pre-training in the spirit of BERT.

Half of the patch embeddings are corrupted before E_pos is added (through the model's `corrupt=` hook): of
those, 80% become a learnable [mask] embedding, 10% a random other patch embedding and 10% stay as they are.
From the final representation of each corrupted patch a small head owned by the objective predicts its
3-bit mean colour (512 classes; "mean3bit", the paper's choice), or the alternatives the paper compares:
its 4x4 downsized version in 3-bit colours ("4x4", 16 predictions of 512 classes) or its normalised pixels
("l2", regression). Targets come from the un-normalised image. The head and the [mask] embedding live in
the training state only; the model checkpoint is a plain ViT that `vitkit finetune` loads like any other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vitkit.data.normalize import Normalize
from vitkit.errors import UsageError
from vitkit.inference.device import autocast
from vitkit.inference.evaluate import eval_batches
from vitkit.models import VisionTransformer
from vitkit.training.mpp_config import MPPSettings
from vitkit.training.objectives import Batch, BuildContext, Objective, StepOutput, Validation, ValidationContext

COLOURS = 512  # 3 bits per channel
SPLIT = (0.8, 0.1)  # of the corrupted patches: replaced by [mask], by a random other patch; the rest are kept
VAL_SEED = 0  # validation corrupts the same patches every epoch, so its loss is comparable across epochs


def corrupt_patches(
    tokens: torch.Tensor, mask_token: torch.Tensor, ratio: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Corrupt round(ratio * N) patch embeddings of each image; returns the tokens and the (B, N) corrupted mask.

    Each corrupted patch becomes `mask_token` with probability 0.8, a random patch embedding of another
    position or image of the batch with 0.1, and stays unchanged with 0.1 (BERT's 80/10/10).
    """
    batch, count, dim = tokens.shape
    draw = {"generator": generator, "device": tokens.device}
    chosen = torch.rand(batch, count, **draw).argsort(1)[:, : max(1, round(ratio * count))]
    corrupted = torch.zeros(batch, count, dtype=torch.bool, device=tokens.device).scatter_(1, chosen, True)
    action = torch.rand(batch, count, **draw)
    masked = corrupted & (action < SPLIT[0])
    replaced = corrupted & (action >= SPLIT[0]) & (action < SPLIT[0] + SPLIT[1])
    flat = tokens.reshape(batch * count, dim)
    total = batch * count
    # Any other patch of the batch: an offset in 1..total-1 never lands on the patch itself.
    offset = torch.randint(1, max(2, total), (total,), **draw)
    other = flat[(torch.arange(total, device=tokens.device) + offset) % total].view_as(tokens)
    out = torch.where(masked[..., None], mask_token.to(tokens.dtype), tokens)
    return torch.where(replaced[..., None], other, out), corrupted


def patches(images: torch.Tensor, patch_size: tuple[int, int]) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, C, Ph, Pw): the patches in the order the patch embedding flattens them (row-major)."""
    ph, pw = patch_size
    grid = images.unfold(2, ph, ph).unfold(3, pw, pw)  # (B, C, H/Ph, W/Pw, Ph, Pw)
    return grid.permute(0, 2, 3, 1, 4, 5).flatten(1, 2)


def colour_classes(pixels: torch.Tensor) -> torch.Tensor:
    """RGB values in [0, 1] (..., 3) -> 3-bit colour classes r * 64 + g * 8 + b in 0..511."""
    bits = (pixels * 8).floor().clamp(0, 7).long()
    return bits[..., 0] * 64 + bits[..., 1] * 8 + bits[..., 2]


def mpp_targets(raw: torch.Tensor, normalised: torch.Tensor, patch_size: tuple[int, int], target: str) -> torch.Tensor:
    """Per-patch targets: (B, N) mean colours, (B, N, 16) 4x4 colours, or (B, N, C*Ph*Pw) normalised pixels (l2).

    `raw` is the image in [0, 1] (normalisation undone), `normalised` what the model sees.
    """
    if target == "l2":
        return patches(normalised, patch_size).flatten(2)
    cells = patches(raw, patch_size)  # (B, N, C, Ph, Pw)
    if target == "mean3bit":
        return colour_classes(cells.mean(dim=(3, 4)))
    batch, count = cells.shape[:2]
    small = F.adaptive_avg_pool2d(cells.flatten(0, 1), 4)  # (B*N, C, 4, 4)
    return colour_classes(small.flatten(2).transpose(1, 2)).view(batch, count, 16)


class MaskedPatchPrediction(Objective):
    """BERT-style masked patch prediction; validated by the loss on the val split with fixed corruptions."""

    name = "mpp"
    best_metric = "loss"
    higher_is_better = False
    needs_labels = False
    train_metrics = ("loss", "acc")
    val_metrics = ("loss", "acc")
    find_unused_parameters = True  # the model's own head is never used
    Settings = MPPSettings

    def __init__(
        self,
        dim: int,
        patch_size: tuple[int, int],
        mean: Sequence[float],
        std: Sequence[float],
        target: str = "mean3bit",
        ratio: float = 0.5,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        if target == "4x4" and (patch_size[0] % 4 or patch_size[1] % 4):
            raise UsageError(f"mpp_target '4x4' needs a patch size divisible by 4, got {patch_size}; use mean3bit")
        self.patch_size, self.target, self.ratio = tuple(patch_size), target, ratio
        self.mask_token = nn.Parameter(torch.zeros(dim))  # the learnable [mask] embedding
        outputs = {"mean3bit": COLOURS, "4x4": 16 * COLOURS, "l2": in_chans * patch_size[0] * patch_size[1]}
        self.head = nn.Linear(dim, outputs[target])
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.normalize = Normalize(mean, std)  # of the input images: their pixels give the colour targets

    def forward(self, model: nn.Module, batch: Batch) -> StepOutput:
        """Corrupt, encode, predict the corrupted patches' targets; loss and accuracy over those patches."""
        return self.loss(model, batch.images)

    def loss(self, model: nn.Module, images: torch.Tensor, generator: torch.Generator | None = None) -> StepOutput:
        """The objective on normalised `images`; `generator` fixes the corruption (validation)."""
        found: dict[str, torch.Tensor] = {}
        features = model.forward_features(images, corrupt=self.corruption(found, generator))
        corrupted = found["corrupted"]
        predicted = self.head(features[:, model.num_prefix_tokens :][corrupted]).float()  # (M, outputs)
        raw = self.normalize.inverse(images.float()).clamp(0, 1)
        targets = mpp_targets(raw, images.float(), self.patch_size, self.target)[corrupted]
        if self.target == "l2":
            loss = F.mse_loss(predicted, targets)
            return StepOutput(loss, {"loss": loss.detach(), "acc": torch.zeros((), device=loss.device)})
        logits = predicted.view(-1, COLOURS)  # 4x4: 16 predictions per patch
        targets = targets.reshape(-1)
        loss = F.cross_entropy(logits, targets)
        accuracy = (logits.detach().argmax(1) == targets).float().mean() * 100
        return StepOutput(loss, {"loss": loss.detach(), "acc": accuracy})

    def corruption(
        self, found: dict[str, torch.Tensor], generator: torch.Generator | None
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """The `corrupt=` hook for the model; it records which patches it corrupted in `found`."""

        def corrupt(tokens: torch.Tensor) -> torch.Tensor:
            out, found["corrupted"] = corrupt_patches(tokens, self.mask_token, self.ratio, generator)
            return out

        return corrupt

    @torch.no_grad()
    def validate(self, model: nn.Module, context: ValidationContext) -> Validation:
        """Loss and accuracy over the val images, with corruptions drawn from a fixed seed (the same every epoch)."""
        was_training = self.training
        self.eval()
        generator = torch.Generator(device=context.device).manual_seed(VAL_SEED)
        sums = {"loss": 0.0, "acc": 0.0}
        for inputs, _ in eval_batches(model, context.source, context.transform, context.batch_size, context.device):
            with autocast(context.precision, context.device):
                out = self.loss(model, inputs, generator)
            for key in sums:
                sums[key] += out.metrics[key].item() * len(inputs)
        self.train(was_training)
        total = max(1, len(context.source))
        return Validation({key: value / total for key, value in sums.items()}, len(context.source))

    @classmethod
    def build(cls, settings: object | None, context: BuildContext) -> MaskedPatchPrediction:
        """The MPP objective for `context.model` (a ViT), with the data's normalisation to undo for colour targets."""
        settings = settings if isinstance(settings, MPPSettings) else MPPSettings()
        model = context.model
        if not isinstance(model, VisionTransformer):  # MPP corrupts eq. (1)'s patch embeddings: a ViT's own
            raise UsageError(f"objective mpp needs a ViT (patch embeddings to corrupt); got {type(model).__name__}")
        vit = model.config
        return cls(
            vit.hidden_dim, vit.patch_size, context.mean, context.std, settings.target, settings.corrupt, vit.in_chans
        )
