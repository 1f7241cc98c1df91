"""Batched augmentation: shapes, ranges, soft targets, determinism, RandAugment ops against PIL, evaluation view."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from vitkit.data import AugmentConfig, EvalTransform, Normalize, RandAugment, TrainAugment, smooth_one_hot
from vitkit.data import augment as A

HALF = (0.5, 0.5, 0.5)
PAIRS = torch.arange(16) ^ 1  # Mixup/CutMix partners: adjacent images of the (shuffled) global batch
PLAIN = {"crop": "none", "hflip": False, "randaugment_n": 0, "mixup": 0.0, "cutmix": 0.0, "random_erasing": 0.0}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny batches run fastest on one thread, and intra-op threads stall badly on a shared, busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def batch(n: int = 16, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator)
    return images, torch.arange(n) % 10


@pytest.mark.parametrize("crop", ["rrc", "pad", "none"])
@pytest.mark.parametrize("stored", [32, 37])
def test_default_recipe_shapes_and_soft_targets(crop, stored):
    images, labels = batch(size=stored)
    augment = TrainAugment(AugmentConfig(crop=crop), 32, HALF, HALF, num_classes=10)
    x, targets = augment(images, labels)
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and torch.isfinite(x).all()
    assert targets.shape == (16, 10) and (targets >= 0).all()
    assert torch.allclose(targets.sum(1), torch.ones(16))


def test_values_stay_in_the_normalised_range_without_erasing():
    images, labels = batch()
    augment = TrainAugment(AugmentConfig(random_erasing=0.0), 32, HALF, HALF, 10)
    x, _ = augment(images, labels)
    assert x.min() >= -1 - 1e-5 and x.max() <= 1 + 1e-5  # (0..1 - 0.5) / 0.5


def test_same_rng_state_same_batch():
    images, labels = batch()
    augment = TrainAugment(AugmentConfig(), 32, HALF, HALF, 10)
    torch.manual_seed(1)
    first = augment(images, labels)
    torch.manual_seed(1)
    again = augment(images, labels)
    other = augment(images, labels)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])


def test_no_augmentation_is_the_evaluation_view_with_smoothed_labels():
    images, labels = batch()
    augment = TrainAugment(AugmentConfig(**PLAIN, label_smoothing=0.1), 32, (0.4, 0.5, 0.6), (0.2, 0.3, 0.4), 10)
    x, targets = augment(images, labels)
    expected = EvalTransform(32, (0.4, 0.5, 0.6), (0.2, 0.3, 0.4))(images)
    assert torch.allclose(x, expected, atol=1e-5)
    assert torch.allclose(targets, smooth_one_hot(labels, 10, 0.1))
    assert torch.allclose(targets[0], torch.tensor([0.91] + [0.01] * 9))


def test_pad_crop_shifts_by_whole_pixels_with_black_fill():
    images, labels = batch()
    config = AugmentConfig(**{**PLAIN, "crop": "pad", "pad": 4})
    x, _ = TrainAugment(config, 32, (0, 0, 0), (1, 1, 1), 10)(images, labels)
    assert torch.allclose(x * 255, (x * 255).round(), atol=1e-3)  # no interpolation between pixels
    shifted = sum(int(not torch.equal((x[i] * 255).round().to(torch.uint8), images[i])) for i in range(16))
    assert shifted >= 10  # (a 1-in-81 chance of no shift per image)


def test_hflip_flips_about_half():
    images, labels = batch(64)
    config = AugmentConfig(**{**PLAIN, "hflip": True})
    x, _ = TrainAugment(config, 32, (0, 0, 0), (1, 1, 1), 10)(images, labels)
    flipped = [torch.allclose(x[i] * 255, images[i].flip(-1).float(), atol=1e-3) for i in range(64)]
    same = [torch.allclose(x[i] * 255, images[i].float(), atol=1e-3) for i in range(64)]
    assert all(f or s for f, s in zip(flipped, same, strict=True)) and 16 < sum(flipped) < 48


def test_cutmix_targets_match_the_pasted_area():
    images, labels = batch()
    config = AugmentConfig(**{**PLAIN, "cutmix": 1.0}, label_smoothing=0.0)
    torch.manual_seed(0)
    x, targets = TrainAugment(config, 32, (0, 0, 0), (1, 1, 1), 10)(images, labels)
    original = (x * 255 - images.float()).abs().amax(1) < 1e-3
    partner = (x * 255 - images[PAIRS].float()).abs().amax(1) < 1e-3
    assert (original | partner).all() and not original.all()
    kept = original[0].float().mean()
    assert torch.isclose(targets[0, labels[0]], kept, atol=1e-5)  # labels 0 and 1 differ


def test_mixup_blends_images_and_targets_alike():
    images, labels = batch()
    config = AugmentConfig(**{**PLAIN, "mixup": 0.8}, label_smoothing=0.0)
    x, targets = TrainAugment(config, 32, (0, 0, 0), (1, 1, 1), 10)(images, labels)
    lam = targets[0, labels[0]]
    assert torch.allclose(x * 255, lam * images.float() + (1 - lam) * images[PAIRS].float(), atol=1e-3)
    assert torch.allclose(targets, lam * smooth_one_hot(labels, 10) + (1 - lam) * smooth_one_hot(labels[PAIRS], 10))


def test_mix_prob_zero_leaves_batch_unmixed():
    images, labels = batch()
    config = AugmentConfig(**{**PLAIN, "mixup": 0.8, "cutmix": 1.0, "mix_prob": 0.0}, label_smoothing=0.0)
    x, targets = TrainAugment(config, 32, (0, 0, 0), (1, 1, 1), 10)(images, labels)
    assert torch.equal(targets, smooth_one_hot(labels, 10))


def test_random_erasing_erases_about_the_requested_share():
    images, labels = batch(200)
    config = AugmentConfig(**{**PLAIN, "random_erasing": 0.5})
    x, _ = TrainAugment(config, 32, (0, 0, 0), (1, 1, 1), 10)(images, labels)
    changed = ((x * 255 - images.float()).abs() > 1e-3).flatten(1).any(1).float().mean()
    assert 0.35 < changed < 0.65


def test_randaugment_changes_images_and_keeps_range():
    x = batch(64)[0].float() / 255
    out = RandAugment(2, 9)(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    changed = ((out - x).abs().flatten(1).amax(1) > 1e-4).float().mean()
    assert changed > 0.7  # identity twice is 1/196


def test_randaugment_masked_path_equals_subset_path():
    # The accelerator path (whole batch, selected by mask) and the CPU path (chosen subset) are the same op.
    x = batch(32)[0].float() / 255
    chosen = torch.arange(32) % 3 == 0
    value = torch.linspace(-0.5, 0.5, 32)
    ops = RandAugment(1, 9)
    for name in A.RANDAUGMENT_OPS:
        if name == "identity":
            continue
        op = ops._op(name)
        subset = A._apply_where(x.clone(), chosen, op, value.abs() if name in ("posterize", "solarize") else value)
        masked = torch.where(
            chosen.view(-1, 1, 1, 1), op(x, value.abs() if name in ("posterize", "solarize") else value), x
        )
        assert torch.allclose(subset, masked, atol=1e-6), name


def pil_and_tensor(seed: int = 0) -> tuple[Image.Image, torch.Tensor]:
    pixels = np.random.default_rng(seed).integers(30, 200, (16, 16, 3), dtype=np.uint8)
    return Image.fromarray(pixels), torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255


def test_randaugment_ops_match_pil():
    image, x = pil_and_tensor()

    def as_tensor(pil: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.array(pil)).permute(2, 0, 1)[None].float() / 255

    assert torch.allclose(A._equalize(x), as_tensor(ImageOps.equalize(image)), atol=1e-6)
    assert torch.allclose(A._autocontrast(x), as_tensor(ImageOps.autocontrast(image)), atol=1.5 / 255)
    assert torch.allclose(A._posterize(x, torch.tensor([5.0])), as_tensor(ImageOps.posterize(image, 5)), atol=1e-6)
    from PIL import ImageEnhance

    sharp = A._sharpness(x, torch.tensor([1.8]))
    assert torch.allclose(sharp, as_tensor(ImageEnhance.Sharpness(image).enhance(1.8)), atol=1.5 / 255)


def test_eval_transform_crops_only_images_stored_larger():
    images = torch.zeros(2, 3, 37, 37, dtype=torch.uint8)
    images[:, :, 2:34, 2:34] = 255  # a white square that the 87.5% centre crop (32 px) keeps, border black
    out = EvalTransform(32, (0, 0, 0), (1, 1, 1))(images)
    assert out.shape == (2, 3, 32, 32) and out.min() > 0.5
    small = torch.full((2, 3, 32, 32), 128, dtype=torch.uint8)
    up = EvalTransform(64, HALF, HALF)(small)  # CIFAR at 32 for a 64 px model: no crop, upsampled
    assert up.shape == (2, 3, 64, 64) and torch.allclose(up, torch.full_like(up, 128 / 255 * 2 - 1), atol=1e-5)
    cropped = EvalTransform(32, (0, 0, 0), (1, 1, 1), crop_fraction=0.5)(images)
    assert cropped.shape == (2, 3, 32, 32) and cropped.min() > 0.99
    with pytest.raises(ValueError, match="crop_fraction"):
        EvalTransform(32, HALF, HALF, crop_fraction=1.5)


def test_bad_augment_config_messages():
    with pytest.raises(ValueError, match="crop must be one of"):
        AugmentConfig(crop="center")
    with pytest.raises(ValueError, match="0 <= m <= 30"):
        AugmentConfig(randaugment_m=31)


@pytest.mark.parametrize("crop", ["rrc", "pad"])
@pytest.mark.parametrize("world_size", [2, 4])
def test_global_batch_is_the_concatenation_of_the_rank_shares(crop, world_size):
    """Each rank's share of step s, augmented with its rank set, is that share of the one-process batch."""
    images, labels = batch(16, size=37)
    augment = TrainAugment(AugmentConfig(crop=crop, random_erasing=0.5), 32, HALF, HALF, 10, seed=3)
    whole = augment(images, labels, step=5)
    share = 16 // world_size
    parts = [
        augment(images[r * share : (r + 1) * share], labels[r * share : (r + 1) * share], 5, r, world_size)
        for r in range(world_size)
    ]
    for got, expected in zip((torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])), whole, strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)  # bit-exact on this CPU
    assert not torch.equal(whole[1], smooth_one_hot(labels, 10, 0.1))  # the batch was mixed


def test_the_stream_is_a_function_of_seed_and_step_alone():
    images, labels = batch()
    augment = TrainAugment(AugmentConfig(), 32, HALF, HALF, 10, seed=1)
    first = augment(images, labels, step=7)
    torch.manual_seed(123)  # the global RNG plays no part
    again = augment(images, labels, step=7)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(augment(images, labels, step=8)[0], first[0])
    assert not torch.equal(TrainAugment(AugmentConfig(), 32, HALF, HALF, 10, seed=2)(images, labels, 7)[0], first[0])


def test_mix_partners_stay_in_the_share():
    assert A.mix_partners(0, 6).tolist() == [1, 0, 3, 2, 5, 4]
    assert A.mix_partners(4, 4).tolist() == [1, 0, 3, 2]  # global 4..7: 4<->5, 6<->7
    assert A.mix_partners(0, 5).tolist() == [1, 0, 3, 2, 4]  # the last of an odd batch keeps itself
    assert A.mix_partners(3, 3).tolist() == [0, 2, 1]  # global 3's partner (2) is on another rank


def test_normalize_checks_the_channels():
    images = torch.rand(2, 4, 8, 8)
    norm = Normalize((0.1, 0.2, 0.3, 0.4), (0.5, 0.5, 0.5, 0.5))
    assert torch.allclose(norm.inverse(norm(images)), images, atol=1e-6)
    with pytest.raises(ValueError, match="do not have the 3 channels"):
        Normalize(HALF, HALF)(images)
    with pytest.raises(ValueError, match="one value per channel"):
        Normalize(HALF, (0.5, 0.5))
    gray = TrainAugment(AugmentConfig(**PLAIN), 16, (0.5,), (0.5,), 10)  # one channel end to end
    x, _ = gray(torch.zeros(2, 1, 16, 16, dtype=torch.uint8), torch.zeros(2, dtype=torch.long))
    assert x.shape == (2, 1, 16, 16) and torch.all(x == -1)


def test_grayscale_is_pil_luma():
    image, x = pil_and_tensor()
    expected = torch.from_numpy(np.array(image.convert("L"))).float() / 255
    assert torch.allclose(A.grayscale(x)[0, 0], expected, atol=1 / 255)
