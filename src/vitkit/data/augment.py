"""Batched augmentation on the training device: crop, flip, RandAugment, erasing, Mixup/CutMix, and evaluation.

**One stream for the whole global batch.** `TrainAugment` draws the random parameters of every image of the
*global* batch (a few numbers per image: crop box, flip, RandAugment operations and signs, erasing box and
noise seed, one Mixup/CutMix draw per batch) from a private CPU `torch.Generator` seeded by (run seed,
optimizer step) alone, and each rank applies the slice of its own images, which the loader hands out
contiguously from one seeded order (`data/loader.py`). So the augmented batch depends neither on the world
size nor on any saved RNG state: 1, 2 or N processes, and a run resumed on another world size, see the same
pixels. The draws are made on the host (so an accelerator gets them by a few small pinned copies and never
waits on a host sync, and a GPU run's crops, flips and mixing can be replayed on a CPU). Erasing noise is
per-pixel normal noise from a generator seeded per image (its seed is one of the drawn numbers), on the
images' device. Mixup/CutMix pair *adjacent* images of the global batch (0 with 1, 2 with 3, ...): the order
is shuffled, so these are random pairs, and they stay inside every rank's slice when the per-rank share is
even (an image whose partner lies on another rank, only possible with an odd share, is mixed with itself, i.e.
left as it is). Dropout and stochastic depth keep each rank's own seed.

**Why not kornia.augmentation** (measured with benchmarks/speed/augment_speed.py, CPU: 2-core Intel Xeon Sapphire
Rapids with AMX shared with other jobs (load ~4), torch 2.13, kornia 0.9.0, one thread, median of 31 calls
timed alternately, uint8 -> float and the parameter draw included, milliseconds):

    operation             batch 128 @ 32 px      batch 64 @ 160 px
                          vitkit    kornia       vitkit    kornia
    resized crop + flip     4.2       9.3          86.5      65.3
    random erasing          2.2       1.9          37.6      40.1
    mixup                   1.4       3.6          33.0      57.1
    cutmix                  1.3      12.2          30.6     236.8
    RandAugment n=2 m=9    11.5      12.5         111.3     163.7

The load makes single cells noisy: a second, crop-only run (41 calls) gave 63.0 vs 76.3 ms at 160 px
against kornia's default cropping_mode="slice" (which also rounds the box to whole pixels) and 84.8 vs
130.3 ms against "resample", so kornia is nowhere reliably faster; erasing is a tie. Besides speed,
kornia cannot give the exact, world-size-free resume above: its augmentations draw from torch's global RNG
(through torch.distributions and torch.randperm) and take no `generator`; they do accept pre-drawn
`params=`, but then the drawing is ours anyway. Its semantics differ too: RandomErasing fills a constant,
not per-pixel noise (Zhong et al. 2020); RandomMixUpV2 draws lambda uniformly per image rather than one
Beta(alpha, alpha) per batch and pairs images by a random permutation across the whole batch (and so across
ranks); RandAugment picks one set of operations for the whole batch, where the paper draws per image. So
nothing of kornia is used, and it is no longer a dependency (`color` and `contrast` need only the
ITU-R 601 luma, one weighted sum).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vitkit.data.config import AugmentConfig
from vitkit.data.decode import CROP_FRACTION
from vitkit.data.normalize import Normalize, channel_values
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
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601 grey level, as PIL's convert("L") and torchvision


def augment_seed(seed: int, step: int) -> int:
    """The seed of the augmentation draws of one global batch: a hash of (run seed, optimizer step)."""
    digest = hashlib.sha256(f"vitkit-augment:{seed}:{step}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # 63 bits: manual_seed takes any int64


def smooth_one_hot(labels: Tensor, num_classes: int, smoothing: float = 0.0) -> Tensor:
    """Soft targets (B, K): 1 - smoothing + smoothing / K on the label, smoothing / K elsewhere; rows sum to 1."""
    off = smoothing / num_classes
    targets = torch.full((labels.shape[0], num_classes), off, device=labels.device)
    return targets.scatter_(1, labels.long()[:, None], 1.0 - smoothing + off)


def _uniform(shape: Sequence[int], low: float, high: float, generator: torch.Generator | None) -> Tensor:
    return low + (high - low) * torch.rand(*shape, generator=generator)


def _first_valid(valid: Tensor, *values: Tensor) -> tuple[Tensor, ...]:
    """For rows of `valid` (B, T): whether any attempt is valid, and each value at the first valid attempt."""
    first = (valid.long().cumsum(1) == 0).sum(1, keepdim=True).clamp(max=valid.shape[1] - 1)
    return (valid.any(1), *(v.gather(1, first).squeeze(1) for v in values))


def crop_flip_theta(batch: int, config: AugmentConfig, stored: int, generator: torch.Generator | None = None) -> Tensor:
    """Per-image affine maps (B, 2, 3) on the CPU from output to input coordinates for the crop and the flip."""
    theta = torch.zeros(batch, 2, 3)
    if config.crop == "rrc":
        # Inception-style crop (Szegedy et al. 2015): area fraction and log aspect ratio uniform, 10 tries each.
        area = _uniform((batch, 10), *config.rrc_scale, generator)
        log_ratio = _uniform((batch, 10), math.log(config.rrc_ratio[0]), math.log(config.rrc_ratio[1]), generator)
        width, height = (area * log_ratio.exp()).sqrt(), (area / log_ratio.exp()).sqrt()
        ok, width, height = _first_valid((width <= 1) & (height <= 1), width, height)
        width, height = torch.where(ok, width, 1.0), torch.where(ok, height, 1.0)  # fallback: the whole image
        centre_x = _uniform((batch,), -1, 1, generator) * (1 - width)
        centre_y = _uniform((batch,), -1, 1, generator) * (1 - height)
    elif config.crop == "pad":
        # Pad-and-crop as whole-pixel shifts of up to `pad` pixels with zero fill (He et al. 2016, CIFAR).
        shift = torch.randint(-config.pad, config.pad + 1, (2, batch), generator=generator).float() * (2 / stored)
        width = height = torch.ones(batch)
        centre_x, centre_y = shift[0], shift[1]
    else:
        width = height = torch.ones(batch)
        centre_x = centre_y = torch.zeros(batch)
    if config.hflip:
        width = width * torch.where(torch.rand(batch, generator=generator) < 0.5, -1.0, 1.0)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = width, centre_x, height, centre_y
    return theta


def warp(images: Tensor, theta: Tensor, size: int, fill: Tensor | float = 0.0) -> Tensor:
    """Bilinear resampling of each image by its affine map `theta`; outside pixels take the value `fill`."""
    grid = F.affine_grid(theta, [images.shape[0], images.shape[1], size, size], align_corners=False)
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


def grayscale(images: Tensor) -> Tensor:
    """The grey level (B, 1, H, W) of RGB images (B, 3, H, W): the ITU-R 601 weighted sum of the channels."""
    if images.shape[1] != 3:
        raise UsageError(f"RandAugment's color and contrast need RGB images, got {images.shape[1]} channels")
    red, green, blue = images.unbind(1)
    return (LUMA[0] * red + LUMA[1] * green + LUMA[2] * blue).unsqueeze(1)


def _blend(a: Tensor, b: Tensor, factor: Tensor) -> Tensor:
    """b + factor * (a - b), clamped to [0, 1]: PIL's ImageEnhance (factor 1 is the identity)."""
    return (b + factor.view(-1, 1, 1, 1) * (a - b)).clamp_(0, 1)


def _sharpness(images: Tensor, factor: Tensor) -> Tensor:
    # PIL's SMOOTH filter; border pixels are kept as they are, as in PIL and torchvision.
    channels = images.shape[1]
    kernel = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]], device=images.device) / 13
    smooth = images.clone()
    smooth[..., 1:-1, 1:-1] = F.conv2d(images, kernel.expand(channels, 1, 3, 3), groups=channels)
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


def _to(tensor: Tensor, device: torch.device) -> Tensor:
    """A host tensor on `device`; to an accelerator through pinned memory, so the copy never waits for it."""
    if device.type == "cpu":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)


@dataclass
class RandAugmentDraw:
    """The random choices of RandAugment for a batch: per round and image, an operation index and a sign."""

    ops: Tensor  # (n, B) int64
    signs: Tensor  # (n, B) float, -1 or 1

    def share(self, start: int, size: int) -> RandAugmentDraw:
        """The draws of images start .. start + size - 1."""
        return RandAugmentDraw(self.ops[:, start : start + size], self.signs[:, start : start + size])


class RandAugment(nn.Module):
    """RandAugment (Cubuk et al. 2020), batched: every image draws its own `n` operations (with replacement).

    Kept per image, as in the paper (kornia's RandAugment picks one set of operations for the whole batch,
    and is slower: see the module docstring).
    """

    def __init__(self, n: int, m: float, fill: Sequence[float] = (0.5, 0.5, 0.5)) -> None:
        super().__init__()
        self.n, self.m = n, m
        self.register_buffer("fill", channel_values(fill), persistent=False)

    def draw(self, batch: int, generator: torch.Generator | None = None) -> RandAugmentDraw:
        """The operations and signs of `batch` images, on the CPU (torch's global CPU RNG without `generator`)."""
        ops = torch.randint(len(RANDAUGMENT_OPS), (self.n, batch), generator=generator)
        signs = torch.where(torch.rand(self.n, batch, generator=generator) < 0.5, -1.0, 1.0)
        return RandAugmentDraw(ops, signs)

    def forward(self, images: Tensor, draw: RandAugmentDraw | None = None) -> Tensor:
        """Augment float images in [0, 1] of shape (B, C, H, W), by `draw` (default: a new one)."""
        draw = self.draw(images.shape[0]) if draw is None else draw
        ops, signs = _to(draw.ops, images.device), _to(draw.signs, images.device)
        images = images.clone()  # updated in place on CPU
        for round_ in range(self.n):
            images = self._round(images, ops[round_], signs[round_])
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
            "color": lambda x, v: _blend(x, grayscale(x), 1 + v),
            "contrast": lambda x, v: _blend(x, grayscale(x).mean((-2, -1), keepdim=True), 1 + v),
            "sharpness": lambda x, v: _sharpness(x, 1 + v),
            "posterize": lambda x, v: _posterize(x, 8 - v.round()),
            "solarize": lambda x, v: torch.where(x >= 1 - v.view(-1, 1, 1, 1), 1 - x, x),
            "autocontrast": lambda x, v: _autocontrast(x),
            "equalize": lambda x, v: _equalize(x),
        }[name]

    def _round(self, images: Tensor, op: Tensor, sign: Tensor) -> Tensor:
        for index, (name, (maximum, signed)) in enumerate(RANDAUGMENT_OPS.items()):
            if name == "identity":
                continue
            value = maximum * self.m / 30 * (sign if signed else torch.ones_like(sign))
            images = _apply_where(images, op == index, self._op(name), value)
        return images


@dataclass
class EraseDraw:
    """Random erasing of a batch: per image a box (top, left, height, width), whether to erase, a noise seed."""

    box: Tensor  # (B, 4) float
    erase: Tensor  # (B,) bool
    noise_seed: Tensor  # (B,) int64

    def share(self, start: int, size: int) -> EraseDraw:
        """The draws of images start .. start + size - 1."""
        end = start + size
        return EraseDraw(self.box[start:end], self.erase[start:end], self.noise_seed[start:end])


def draw_erase(
    batch: int, height: int, width: int, probability: float, generator: torch.Generator | None = None
) -> EraseDraw:
    """One erasing rectangle per image (Zhong et al. 2020: area and log aspect ratio uniform, 10 tries), on the CPU."""
    area = _uniform((batch, 10), *ERASE_AREA, generator) * height * width
    log_ratio = _uniform((batch, 10), math.log(ERASE_RATIO[0]), math.log(ERASE_RATIO[1]), generator)
    box_h, box_w = (area * log_ratio.exp()).sqrt().round(), (area / log_ratio.exp()).sqrt().round()
    ok, box_h, box_w = _first_valid((box_h < height) & (box_w < width) & (box_h > 0) & (box_w > 0), box_h, box_w)
    top = torch.floor(torch.rand(batch, generator=generator) * (height - box_h + 1))
    left = torch.floor(torch.rand(batch, generator=generator) * (width - box_w + 1))
    erase = ok & (torch.rand(batch, generator=generator) < probability)
    noise_seed = torch.randint(0, 2**62, (batch,), generator=generator)
    return EraseDraw(torch.stack([top, left, box_h, box_w], 1), erase, noise_seed)


def random_erase(images: Tensor, probability: float, draw: EraseDraw | None = None) -> Tensor:
    """Random erasing with per-pixel normal noise, one rectangle per chosen image, by `draw` (default: a new one)."""
    batch, _, height, width = images.shape
    draw = draw_erase(batch, height, width, probability) if draw is None else draw
    device = images.device
    top, left, box_h, box_w = _to(draw.box, device).unbind(1)
    rows = torch.arange(height, device=device).view(1, -1, 1)
    cols = torch.arange(width, device=device).view(1, 1, -1)
    inside = (rows >= top.view(-1, 1, 1)) & (rows < (top + box_h).view(-1, 1, 1))
    inside = inside & (cols >= left.view(-1, 1, 1)) & (cols < (left + box_w).view(-1, 1, 1))
    mask = (inside & _to(draw.erase, device).view(-1, 1, 1)).unsqueeze(1)
    # Each image's noise comes from its own seed, so it does not depend on which rank holds the image; the
    # erased images are known on the host (the draw is there), so picking them costs no device sync.
    noise = torch.zeros_like(images)
    for index in torch.nonzero(draw.erase).flatten().tolist():
        generator = torch.Generator(device=device).manual_seed(int(draw.noise_seed[index]))
        noise[index] = torch.randn(images.shape[1:], generator=generator, device=device, dtype=images.dtype)
    return torch.where(mask, noise, images)


@dataclass
class MixDraw:
    """One Mixup/CutMix draw for a whole batch: the share `lam` kept of each image and the partner's pixel weights."""

    lam: Tensor  # () float, the share of the image's own target
    weight: Tensor  # (H, W) float, the share of each pixel taken from the partner


def _beta(alpha: float, generator: torch.Generator | None) -> Tensor:
    """One Beta(alpha, alpha) draw as X / (X + Y) of two Gamma(alpha) draws (torch.distributions takes no generator)."""
    gammas = torch._standard_gamma(torch.full((2,), float(alpha)), generator=generator)
    return gammas[0] / gammas.sum()


def draw_mix(
    config: AugmentConfig, height: int, width: int, generator: torch.Generator | None = None
) -> MixDraw | None:
    """Mixup (Zhang et al. 2018) or CutMix (Yun et al. 2019) for one batch, on the CPU; None when both are off.

    When both are enabled each batch picks one with equal odds (as timm does); the CutMix share is the area
    actually pasted, so soft targets stay exact and rows still sum to 1.
    """
    mixup, cutmix = config.mixup, config.cutmix
    if mixup <= 0 and cutmix <= 0:
        return None
    draws = torch.rand(3, generator=generator)
    if draws[0] >= config.mix_prob:
        return MixDraw(torch.tensor(1.0), torch.zeros(height, width))
    use_cutmix = bool(draws[1] < 0.5) if mixup > 0 and cutmix > 0 else cutmix > 0
    if not use_cutmix:
        lam = _beta(mixup, generator)
        return MixDraw(lam, torch.full((height, width), 1 - float(lam)))
    # CutMix box of area 1 - lam centred anywhere, clipped to the image (Yun et al. 2019, Algorithm A1).
    cut = float((1 - _beta(cutmix, generator)).sqrt())
    centre = torch.rand(2, generator=generator) * torch.tensor([height, width])
    top, bottom = (int((centre[0] + s * cut * height / 2).clamp(0, height).floor()) for s in (-1, 1))
    left, right = (int((centre[1] + s * cut * width / 2).clamp(0, width).floor()) for s in (-1, 1))
    weight = torch.zeros(height, width)
    weight[top:bottom, left:right] = 1.0
    return MixDraw(torch.tensor(1 - (bottom - top) * (right - left) / (height * width)), weight)


def mix_partners(start: int, size: int) -> Tensor:
    """The Mixup/CutMix partner (a local index) of each of the images start .. start + size - 1 of the global batch.

    Adjacent images pair up (global 0 with 1, 2 with 3, ...); an image whose partner is outside the share,
    the last of an odd batch or (with an odd per-rank share) one at a rank boundary, pairs with itself.
    """
    partner = (torch.arange(start, start + size) ^ 1) - start
    return torch.where((partner >= 0) & (partner < size), partner, torch.arange(size))


def mix(images: Tensor, targets: Tensor, draw: MixDraw | None, partners: Tensor) -> tuple[Tensor, Tensor]:
    """Images and soft targets mixed with their partners' by `draw` (unchanged when it is None)."""
    if draw is None:
        return images, targets
    device = images.device
    partners, weight, lam = _to(partners, device), _to(draw.weight, device), _to(draw.lam, device)
    images = images * (1 - weight) + images.index_select(0, partners) * weight
    return images, lam * targets + (1 - lam) * targets.index_select(0, partners)


class TrainAugment(nn.Module):
    """uint8 (B, C, S, S) images and int labels -> normalised float (B, C, img_size, img_size) and soft targets (B, K).

    Order: crop (+ resize to img_size) and flip in one resampling, RandAugment, normalisation, random erasing,
    then Mixup/CutMix with label smoothing (the DeiT recipe, Touvron et al. 2021). With `step` the draws come
    from the stream of (seed, step) for the whole global batch of `world_size` equal shares, of which the
    images are share `rank` (see the module docstring); without it, from torch's global CPU RNG.
    """

    def __init__(
        self,
        config: AugmentConfig,
        img_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        num_classes: int,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.config, self.img_size, self.num_classes, self.seed = config, img_size, num_classes, seed
        self.normalize = Normalize(mean, std)
        # Pixels shifted in by RandAugment take the mean colour, which normalises to 0 (as in timm).
        self.randaugment = RandAugment(config.randaugment_n, config.randaugment_m, fill=mean)

    def forward(
        self, images_uint8: Tensor, labels: Tensor, step: int | None = None, rank: int = 0, world_size: int = 1
    ) -> tuple[Tensor, Tensor]:
        """Augment this rank's share of global batch `step` on its own device."""
        if not 0 <= rank < world_size:
            raise UsageError(f"rank {rank} is outside a world of {world_size} processes")
        config, size = self.config, self.img_size
        share = images_uint8.shape[0]
        start, total = rank * share, share * world_size
        generator = None if step is None else torch.Generator().manual_seed(augment_seed(self.seed, step))
        # Every draw is made for the whole global batch, in this fixed order, so each rank's stream agrees.
        theta = crop_flip_theta(total, config, images_uint8.shape[-1], generator)[start : start + share]
        rand = self.randaugment.draw(total, generator).share(start, share) if config.randaugment_n > 0 else None
        erase = draw_erase(total, size, size, config.random_erasing, generator) if config.random_erasing > 0 else None
        mixing = draw_mix(config, size, size, generator)

        x = warp(images_uint8.float().div_(255), _to(theta, images_uint8.device), size)
        if rand is not None:
            x = self.randaugment(x, rand)
        x = self.normalize(x)
        if erase is not None:
            x = random_erase(x, config.random_erasing, erase.share(start, share))
        targets = smooth_one_hot(labels, self.num_classes, config.label_smoothing)
        return mix(x, targets, mixing, mix_partners(start, share))


class EvalTransform(nn.Module):
    """uint8 (B, C, S, S) -> normalised float (B, C, img_size, img_size): centre crop, resize, normalise.

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
        self.normalize = Normalize(mean, std)

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
        return self.normalize(x)
