"""Decoding photos once at a size fitted to the run: JPEG draft (DCT scaling), the stored size, what is kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitkit.data import DataConfig, decode_image, load_dataset
from vitkit.data.imagefolder import decode_chunk


def photo(path: Path, size: tuple[int, int], label: int, index: int) -> None:
    """A smooth JPEG photo stand-in: a gradient whose colour encodes the class (red) and index (green)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    ramp = np.linspace(0, 1, width)[None, :, None] * np.linspace(0.5, 1, height)[:, None, None]
    colour = np.array([40 * label + 20, 8 * index + 20, 128])
    Image.fromarray((ramp * colour).astype(np.uint8)).save(path, quality=95)


def photo_folder(root: Path) -> Path:
    """train/ and val/ of 3 classes, JPEGs of 480x360, 400x500 and 460x460, one broken file and one non-image."""
    sizes = [(480, 360), (400, 500), (460, 460)]
    for split, count in (("train", 4), ("val", 2)):
        for label in range(3):
            for index in range(count):
                photo(root / split / f"c{label}" / f"{index}.jpg", sizes[(label + index) % 3], label, index)
    (root / "train" / "c0" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    (root / "train" / "c1" / "notes.txt").write_text("not an image")
    return root


def test_draft_decodes_a_large_jpeg_at_a_reduced_scale_that_still_covers_the_size(tmp_path):
    photo(tmp_path / "big.jpg", (480, 360), 1, 1)
    assert decode_image(tmp_path / "big.jpg").size == (480, 360)
    assert decode_image(tmp_path / "big.jpg", draft=146).size == (240, 180)  # 1/2: 1/4 would be 120x90 < 146
    assert decode_image(tmp_path / "big.jpg", draft=40).size == (60, 45)  # 1/8
    Image.new("RGB", (480, 360), (10, 20, 30)).save(tmp_path / "big.png")
    assert decode_image(tmp_path / "big.png", draft=40).size == (480, 360)  # not a JPEG: decoded whole


def test_draft_and_full_decodes_agree_after_the_resize(tmp_path):
    paths = []
    for index, size in enumerate([(480, 360), (400, 500)]):
        photo(tmp_path / f"{index}.jpg", size, 2, index)
        paths.append(str(tmp_path / f"{index}.jpg"))
    drafted, _ = decode_chunk(paths, 37)
    full, _ = decode_chunk(paths, 37, draft=False)
    assert drafted.shape == full.shape == (2, 3, 37, 37)
    assert (drafted.float() - full.float()).abs().mean() < 3  # of 255: the same picture


@pytest.mark.parametrize(("img_size", "eval_img_size", "stored"), [(32, None, 37), (32, 40, 46), (64, None, 73)])
def test_the_cache_stores_the_size_the_run_asks_for_and_keeps_labels_and_skips(
    tmp_path, img_size, eval_img_size, stored
):
    root = photo_folder(tmp_path / "photos")
    config = DataConfig(
        path=str(root), img_size=img_size, eval_img_size=eval_img_size, cache_dir=str(tmp_path / "cache"), num_workers=0
    )
    with pytest.warns(UserWarning, match="skipped 2 unusable"):
        splits = load_dataset(config)
    assert splits.train.images.shape == (12, 3, stored, stored)  # round(max(img, eval) / 0.875)
    assert splits.val.images.shape == (6, 3, stored, stored)
    assert splits.train.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert sorted(Path(s.path).name for s in splits.skipped) == ["broken.jpg", "notes.txt"]
    # Each class keeps its colour: the red channel at the centre increases with the label.
    centre = splits.train.images[:, 0, stored // 2, stored // 2].float()
    assert centre[0] < centre[4] < centre[8]
    with pytest.warns(UserWarning, match="skipped 2 unusable"):
        again = load_dataset(config)  # from the cache: the same tensor, the same skipped files
    assert again.train.images.equal(splits.train.images) and len(again.skipped) == 2


def test_eval_img_size_must_be_positive():
    with pytest.raises(ValueError, match="eval_img_size must be positive"):
        DataConfig(eval_img_size=0)
