"""Batched augmentation on the training device: crop, flip, RandAugment, erasing, Mixup/CutMix, and evaluation.

Every random draw comes from torch's global RNG on the images' device (never a host-side RNG and never a
host sync), so saving and restoring that one RNG state reproduces an augmented batch bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vitkit.data.config import AugmentConfig
from vitkit.data.decode import CROP_FRACTION
from vitkit.errors import UsageError

# RandAugment's operations with their magnitude at m = 30 and whether it gets a random sign per image, as
# in torchvision's RandAugment (Cubuk et al. 2020, ranges from AutoAugment, Cubuk et al. 2019).
RANDAUGMENT_OPS = {
    "identity": (0.0, False),
    "shear_x": (0.3, True),  # shear factor
    "shear_y": (0.3, True),
    "translate_x": (150 / 331, True),  # fraction of the side (150 px on AutoAugment's 331 px images)
    "translate_y": (150 / 331, True),
    "rotate": (30.0, True),  # degrees
    "brightness": (0.9, True),  # enhance factor 1 + v
    "color": (0.9, True),
    "contrast": (0.9, True),
    "sharpness": (0.9, True),
    "posterize": (4.0, False),  # bits removed (rounded)
    "solarize": (1.0, False),  # threshold 1 - v
    "autocontrast": (0.0, False),
    "equalize": (0.0, False),
}
ERASE_AREA = (0.02, 1 / 3)  # random erasing rectangle, fraction of the image (Zhong et al. 2020)
ERASE_RATIO = (0.3, 1 / 0.3)


def smooth_one_hot(labels: Tensor, num_classes: int, smoothing: float = 0.0) -> Tensor:
    """Soft targets (B, K): 1 - smoothing + smoothing / K on the label, smoothing / K elsewhere; rows sum to 1."""
    off = smoothing / num_classes
    targets = torch.full((labels.shape[0], num_classes), off, device=labels.device)
    return targets.scatter_(1, labels.long()[:, None], 1.0 - smoothing + off)


def _uniform(shape: Sequence[int], low: float | Tensor, high: float | Tensor, device: torch.device) -> Tensor:
    return low + (high - low) * torch.rand(*shape, device=device)


def _first_valid(valid: Tensor, *values: Tensor) -> tuple[Tensor, ...]:
    """For rows of `valid` (B, T): whether any attempt is valid, and each value at the first valid attempt."""
    first = (valid.long().cumsum(1) == 0).sum(1, keepdim=True).clamp(max=valid.shape[1] - 1)
    return (valid.any(1), *(v.gather(1, first).squeeze(1) for v in values))


def crop_flip_theta(batch: int, config: AugmentConfig, stored: int, device: torch.device) -> Tensor:
    """Per-image affine maps (B, 2, 3) from output to input coordinates for the crop and the horizontal flip."""
    theta = torch.zeros(batch, 2, 3, device=device)
    if config.crop == "rrc":
        # Inception-style crop (Szegedy et al. 2015): area fraction and log aspect ratio uniform, 10 tries each.
        area = _uniform((batch, 10), *config.rrc_scale, device)
        log_ratio = _uniform((batch, 10), math.log(config.rrc_ratio[0]), math.log(config.rrc_ratio[1]), device)
        width, height = (area * log_ratio.exp()).sqrt(), (area / log_ratio.exp()).sqrt()
        ok, width, height = _first_valid((width <= 1) & (height <= 1), width, height)
        width, height = torch.where(ok, width, 1.0), torch.where(ok, height, 1.0)  # fallback: the whole image
        centre_x = _uniform((batch,), -1, 1, device) * (1 - width)
        centre_y = _uniform((batch,), -1, 1, device) * (1 - height)
    elif config.crop == "pad":
        # Pad-and-crop as whole-pixel shifts of up to `pad` pixels with zero fill (He et al. 2016, CIFAR).
        shift = torch.randint(-config.pad, config.pad + 1, (2, batch), device=device).float() * (2 / stored)
        width = height = torch.ones(batch, device=device)
        centre_x, centre_y = shift[0], shift[1]
    else:
        width = height = torch.ones(batch, device=device)
        centre_x = centre_y = torch.zeros(batch, device=device)
    if config.hflip:
        width = width * torch.where(torch.rand(batch, device=device) < 0.5, -1.0, 1.0)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = width, centre_x, height, centre_y
    return theta


def warp(images: Tensor, theta: Tensor, size: int, fill: Tensor | float = 0.0) -> Tensor:
    """Bilinear resampling of each image by its affine map `theta`; outside pixels take the value `fill`."""
    grid = F.affine_grid(theta, [images.shape[0], 3, size, size], align_corners=False)
    return F.grid_sample(images - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


def _affine(v: Tensor, row: int, col: int) -> Tensor:
    """Identity affine maps (B, 2, 3) with entry (row, col) set to v."""
    theta = torch.eye(2, 3, device=v.device).repeat(v.shape[0], 1, 1)
    theta[:, row, col] = v
    return theta


def _rotation(degrees: Tensor) -> Tensor:
    angle = torch.deg2rad(degrees)
    cos, sin = angle.cos(), angle.sin()
    return torch.stack([torch.stack([cos, -sin, 0 * cos], 1), torch.stack([sin, cos, 0 * cos], 1)], 1)


def _blend(a: Tensor, b: Tensor, factor: Tensor) -> Tensor:
    """b + factor * (a - b), clamped to [0, 1]: PIL's ImageEnhance (factor 1 is the identity)."""
    return (b + factor.view(-1, 1, 1, 1) * (a - b)).clamp_(0, 1)


def _sharpness(images: Tensor, factor: Tensor) -> Tensor:
    # PIL's SMOOTH filter; border pixels are kept as they are, as in PIL and torchvision.
    kernel = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]], device=images.device) / 13
    smooth = images.clone()
    smooth[..., 1:-1, 1:-1] = F.conv2d(images, kernel.expand(3, 1, 3, 3), groups=3)
    return _blend(images, smooth, factor)


def _posterize(images: Tensor, bits: Tensor) -> Tensor:
    step = (2 ** (8 - bits)).view(-1, 1, 1, 1)
    return torch.floor(images * 255 / step) * step / 255


def _autocontrast(images: Tensor) -> Tensor:
    low = images.amin(dim=(-2, -1), keepdim=True)
    high = images.amax(dim=(-2, -1), keepdim=True)
    span = high - low
    return torch.where(span > 0, (images - low) / span.clamp(min=1e-8), images)


def _equalize(images: Tensor) -> Tensor:
    """Per-channel histogram equalisation of 8-bit levels, batched (PIL / torchvision semantics)."""
    batch, channels, height, width = images.shape
    levels = (images * 255).round_().long().clamp_(0, 255).view(batch * channels, -1)
    offsets = torch.arange(batch * channels, device=images.device).view(-1, 1) * 256
    hist = torch.bincount((levels + offsets).flatten(), minlength=batch * channels * 256).view(-1, 256).float()
    last = hist.gather(1, levels.amax(1, keepdim=True))  # count of the highest level present
    step = torch.div(height * width - last, 255, rounding_mode="floor")
    lut = torch.div(
        hist.cumsum(1) + torch.div(step, 2, rounding_mode="floor"), step.clamp(min=1), rounding_mode="floor"
    )
    lut = torch.cat([torch.zeros_like(lut[:, :1]), lut[:, :-1]], 1).clamp_(0, 255)
    out = lut.gather(1, levels).view_as(images) / 255
    return torch.where(step.view(batch, channels, 1, 1) > 0, out, images)


def _apply_where(images: Tensor, chosen: Tensor, op: Callable[[Tensor, Tensor], Tensor], value: Tensor) -> Tensor:
    """`op(images, value)` for the images where `chosen`, the others unchanged (CPU: `images` is updated in place).

    On CPU the op runs on the chosen images only (finding them costs nothing); on an accelerator it runs on
    the whole batch and is selected by mask, because finding the subset would stall on a host sync.
    """
    if images.device.type == "cpu":
        index = torch.nonzero(chosen).flatten()
        if index.numel():
            images[index] = op(images[index], value[index])
        return images
    return torch.where(chosen.view(-1, 1, 1, 1), op(images, value), images)


class RandAugment(nn.Module):
    """RandAugment (Cubuk et al. 2020), batched: every image draws its own `n` operations (with replacement).

    Written here rather than taken from kornia, whose RandAugment draws one set of operations for the
    whole batch and picks them with torch.randperm on the CPU RNG even for CUDA tensors; this one keeps the
    paper's per-image semantics, draws only from the images' device RNG, and never syncs with the host on
    an accelerator. On CPU it costs about the same as kornia's (~20 ms for 256 32x32 images, one thread).
    """

    def __init__(self, n: int, m: float, fill: Sequence[float] = (0.5, 0.5, 0.5)) -> None:
        super().__init__()
        self.n, self.m = n, m
        self.register_buffer("fill", torch.tensor(fill, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        """Augment float images in [0, 1] of shape (B, 3, H, W)."""
        images = images.clone()  # updated in place on CPU
        for _ in range(self.n):
            images = self._round(images)
        return images

    def _op(self, name: str) -> Callable[[Tensor, Tensor], Tensor]:
        """The operation `name` as f(images, per-image value)."""
        size = lambda x: x.shape[-1]  # noqa: E731
        geometric = {
            "shear_x": lambda v: _affine(v, 0, 1),
            "shear_y": lambda v: _affine(v, 1, 0),
            "translate_x": lambda v: _affine(2 * v, 0, 2),  # affine_grid spans the image as [-1, 1]
            "translate_y": lambda v: _affine(2 * v, 1, 2),
            "rotate": _rotation,
        }
        if name in geometric:
            return lambda x, v: warp(x, geometric[name](v), size(x), self.fill)
        return {
            "brightness": lambda x, v: (x * (1 + v).view(-1, 1, 1, 1)).clamp_(0, 1),
            "color": lambda x, v: _blend(x, kornia.color.rgb_to_grayscale(x), 1 + v),
            "contrast": lambda x, v: _blend(x, kornia.color.rgb_to_grayscale(x).mean((-2, -1), keepdim=True), 1 + v),
            "sharpness": lambda x, v: _sharpness(x, 1 + v),
            "posterize": lambda x, v: _posterize(x, 8 - v.round()),
            "solarize": lambda x, v: torch.where(x >= 1 - v.view(-1, 1, 1, 1), 1 - x, x),
            "autocontrast": lambda x, v: _autocontrast(x),
            "equalize": lambda x, v: _equalize(x),
        }[name]

    def _round(self, images: Tensor) -> Tensor:
        batch, device = images.shape[0], images.device
        op = torch.randint(len(RANDAUGMENT_OPS), (batch,), device=device)
        sign = torch.where(torch.rand(batch, device=device) < 0.5, -1.0, 1.0)
        for index, (name, (maximum, signed)) in enumerate(RANDAUGMENT_OPS.items()):
            if name == "identity":
                continue
            value = maximum * self.m / 30 * (sign if signed else torch.ones_like(sign))
            images = _apply_where(images, op == index, self._op(name), value)
        return images


def random_erase(images: Tensor, probability: float) -> Tensor:
    """Random erasing (Zhong et al. 2020) with per-pixel normal noise, one rectangle per chosen image, batched."""
    batch, _, height, width = images.shape
    device = images.device
    area = _uniform((batch, 10), *ERASE_AREA, device) * height * width
    log_ratio = _uniform((batch, 10), math.log(ERASE_RATIO[0]), math.log(ERASE_RATIO[1]), device)
    box_h, box_w = (area * log_ratio.exp()).sqrt().round(), (area / log_ratio.exp()).sqrt().round()
    ok, box_h, box_w = _first_valid((box_h < height) & (box_w < width) & (box_h > 0) & (box_w > 0), box_h, box_w)
    top = torch.floor(torch.rand(batch, device=device) * (height - box_h + 1))
    left = torch.floor(torch.rand(batch, device=device) * (width - box_w + 1))
    erase = ok & (torch.rand(batch, device=device) < probability)
    rows = torch.arange(height, device=device).view(1, -1, 1)
    cols = torch.arange(width, device=device).view(1, 1, -1)
    inside = (rows >= top.view(-1, 1, 1)) & (rows < (top + box_h).view(-1, 1, 1))
    inside = inside & (cols >= left.view(-1, 1, 1)) & (cols < (left + box_w).view(-1, 1, 1))
    mask = (inside & erase.view(-1, 1, 1)).unsqueeze(1)
    return torch.where(mask, torch.randn_like(images), images)


def mix(images: Tensor, targets: Tensor, mixup: float, cutmix: float, probability: float) -> tuple[Tensor, Tensor]:
    """Mixup (Zhang et al. 2018) or CutMix (Yun et al. 2019) of the batch with its reverse, one draw per batch.

    When both are enabled each batch picks one with equal odds (as timm does); targets are mixed by the
    area actually pasted, so soft targets stay exact and rows still sum to 1.
    """
    batch, _, height, width = images.shape
    device = images.device
    if mixup <= 0 and cutmix <= 0:
        return images, targets
    draws = torch.rand(3, device=device)
    apply = draws[0] < probability
    use_cutmix = draws[1] < 0.5 if mixup > 0 and cutmix > 0 else torch.tensor(cutmix > 0, device=device)
    lam_mix = _beta(mixup, device)
    lam_cut = _beta(cutmix, device)
    # CutMix box of area 1 - lam centred anywhere, clipped to the image (Yun et al. 2019, Algorithm A1).
    cut = (1 - lam_cut).sqrt()
    centre = torch.rand(2, device=device) * torch.tensor([height, width], device=device)
    top, bottom = (
        (centre[0] - cut * height / 2).clamp(0, height).floor(),
        (centre[0] + cut * height / 2).clamp(0, height).floor(),
    )
    left, right = (
        (centre[1] - cut * width / 2).clamp(0, width).floor(),
        (centre[1] + cut * width / 2).clamp(0, width).floor(),
    )
    rows = torch.arange(height, device=device).view(-1, 1)
    cols = torch.arange(width, device=device).view(1, -1)
    box = ((rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)).float()
    lam_cut = 1 - (bottom - top) * (right - left) / (height * width)
    weight = torch.where(use_cutmix, box, 1 - lam_mix) * apply  # share of each pixel taken from the partner
    lam = torch.where(apply, torch.where(use_cutmix, lam_cut, lam_mix), 1.0)
    images = images * (1 - weight) + images.flip(0) * weight
    return images, lam * targets + (1 - lam) * targets.flip(0)


def _beta(alpha: float, device: torch.device) -> Tensor:
    """One Beta(alpha, alpha) draw on `device` (0.5 when disabled, unused then)."""
    if alpha <= 0:
        return torch.tensor(0.5, device=device)
    concentration = torch.tensor(alpha, dtype=torch.float32, device=device)
    return torch.distributions.Beta(concentration, concentration).sample()


class TrainAugment(nn.Module):
    """uint8 (B, 3, S, S) images and int labels -> normalised float (B, 3, img_size, img_size) and soft targets (B, K).

    Order: crop (+ resize to img_size) and flip in one resampling, RandAugment, normalisation, random erasing,
    then Mixup/CutMix with label smoothing (the DeiT recipe, Touvron et al. 2021).
    """

    def __init__(
        self, config: AugmentConfig, img_size: int, mean: Sequence[float], std: Sequence[float], num_classes: int
    ) -> None:
        super().__init__()
        self.config, self.img_size, self.num_classes = config, img_size, num_classes
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        # Pixels shifted in by RandAugment take the mean colour, which normalises to 0 (as in timm).
        self.randaugment = RandAugment(config.randaugment_n, config.randaugment_m, fill=mean)

    def forward(self, images_uint8: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Augment a batch on its own device; randomness from that device's global RNG only."""
        x = images_uint8.float().div_(255)
        theta = crop_flip_theta(x.shape[0], self.config, x.shape[-1], x.device)
        x = warp(x, theta, self.img_size)
        if self.config.randaugment_n > 0:
            x = self.randaugment(x)
        x = (x - self.mean) / self.std
        if self.config.random_erasing > 0:
            x = random_erase(x, self.config.random_erasing)
        targets = smooth_one_hot(labels, self.num_classes, self.config.label_smoothing)
        return mix(x, targets, self.config.mixup, self.config.cutmix, self.config.mix_prob)


class EvalTransform(nn.Module):
    """uint8 (B, 3, S, S) -> normalised float (B, 3, img_size, img_size): centre crop, resize, normalise.

    crop_fraction None (the default) keeps the centre 87.5% when images are stored larger than img_size
    (stored at round(img_size / 0.875), this lands exactly on img_size) and the whole image otherwise
    (CIFAR at its natural 32 px, upsampled for a larger model).
    """

    def __init__(
        self, img_size: int, mean: Sequence[float], std: Sequence[float], crop_fraction: float | None = None
    ) -> None:
        super().__init__()
        if crop_fraction is not None and not 0 < crop_fraction <= 1:
            raise UsageError(f"crop_fraction must be in (0, 1], got {crop_fraction}")
        self.img_size, self.crop_fraction = img_size, crop_fraction
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, images_uint8: Tensor) -> Tensor:
        """Deterministic evaluation view of a batch."""
        x = images_uint8.float().div_(255)
        stored = x.shape[-1]
        fraction = self.crop_fraction or (CROP_FRACTION if stored > self.img_size else 1.0)
        side = min(stored, max(1, round(stored * fraction)))
        top, left = (x.shape[-2] - side) // 2, (stored - side) // 2
        x = x[..., top : top + side, left : left + side]
        if side != self.img_size:
            x = F.interpolate(
                x, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False, antialias=True
            )
            x = x.clamp_(0, 1)
        return (x - self.mean) / self.std
