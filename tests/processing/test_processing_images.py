"""Any image the user has becomes the same RGB input: PIL modes, numpy, torch, files; bad input fails clearly."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from xsam_hf.processing import load_image


@pytest.fixture(scope="module")
def rgb(photos):
    return photos["chelsea"][:120, :160]


def _pixels(image):
    return np.asarray(load_image(image))


def test_rgb_inputs_agree_across_types(rgb):
    reference = _pixels(Image.fromarray(rgb))
    assert np.array_equal(reference, rgb)
    assert np.array_equal(_pixels(rgb), rgb)  # numpy HWC
    assert np.array_equal(_pixels(torch.from_numpy(rgb).permute(2, 0, 1)), rgb)  # torch CHW uint8
    assert np.array_equal(_pixels(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255), rgb)  # torch float [0, 1]
    assert np.array_equal(_pixels(rgb.astype(np.float64)), rgb)  # float [0, 255]


def test_grey_palette_cmyk_and_alpha_modes(rgb):
    grey = Image.fromarray(rgb).convert("L")
    expected_grey = np.repeat(np.asarray(grey)[..., None], 3, axis=2)
    assert np.array_equal(_pixels(grey), expected_grey)
    assert np.array_equal(_pixels(np.asarray(grey)), expected_grey)  # numpy HW
    assert np.array_equal(_pixels(torch.from_numpy(np.array(grey))), expected_grey)  # torch HW
    palette = Image.fromarray(rgb).convert("P")
    assert np.array_equal(_pixels(palette), np.asarray(palette.convert("RGB")))
    cmyk = Image.fromarray(rgb).convert("CMYK")
    assert np.abs(_pixels(cmyk).astype(int) - rgb.astype(int)).max() <= 1
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    rgba[:10, :10, 3] = 0  # transparent corner -> white
    out = _pixels(Image.fromarray(rgba))
    assert np.array_equal(out[10:, 10:], rgb[10:, 10:]) and (out[:10, :10] == 255).all()
    assert np.array_equal(_pixels(rgba), out)  # numpy RGBA too


def test_sixteen_bit_images_are_rescaled_not_clipped(rgb):
    grey8 = np.asarray(Image.fromarray(rgb).convert("L"))
    grey16 = grey8.astype(np.uint16) * 257
    image16 = Image.fromarray(grey16)
    assert image16.mode.startswith("I;16")
    assert np.array_equal(_pixels(image16)[..., 0], grey8)
    assert np.array_equal(_pixels(grey16)[..., 0], grey8)
    assert np.array_equal(_pixels(Image.fromarray(grey16.astype(np.int32)))[..., 0], grey8)  # mode "I"


def test_files_and_bad_inputs(tmp_path, rgb):
    path = tmp_path / "cat.png"
    Image.fromarray(rgb).save(path)
    assert np.array_equal(_pixels(path), rgb) and np.array_equal(_pixels(str(path)), rgb)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ValueError, match="Could not read an image"):
        load_image(corrupt)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 3])
    with pytest.raises(ValueError, match="Could not read an image"):
        load_image(truncated)
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.png")
    with pytest.raises(TypeError, match="Unsupported image type"):
        load_image([[1, 2], [3, 4]])
    with pytest.raises(ValueError, match="Pass a batch as a list"):
        load_image(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\(H, W\) or \(H, W, C\)"):
        load_image(np.zeros((8, 8, 7), np.uint8))
    with pytest.raises(ValueError, match="NaN"):
        load_image(np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match=r"\[0, 1\] or \[0, 255\]"):
        load_image(np.full((4, 4, 3), 300.0))
    with pytest.raises(ValueError, match="empty"):
        load_image(np.zeros((0, 5, 3), np.uint8))


def test_processor_accepts_mixed_inputs_and_real_photos(processor, photos):
    images = [
        photos["astronaut"],
        Image.fromarray(photos["coffee"]).convert("L"),
        torch.from_numpy(photos["chelsea"]).permute(2, 0, 1),
    ]
    inputs = processor(images=images, task="semantic", categories=["person", "cup", "cat"])
    assert inputs["pixel_values"].shape == (3, 3, 56, 56)
    assert inputs["extra_pixel_values"].shape == (3, 3, 128, 128)
    assert inputs["original_sizes"].tolist() == [[512, 512], [400, 600], [300, 451]]
    assert inputs["reshaped_input_sizes"].tolist() == [[128, 128], [85, 128], [85, 128]]
    # The canvas padding is exactly zero below the resized image; SigLIP's square padding is the mean grey (~0).
    assert inputs["extra_pixel_values"][1, :, 85:].abs().max() == 0
    assert inputs["pixel_values"][1, :, :4].sub(-1 / 255).abs().max() < 1e-6  # grey 127 -> (127/255 - 0.5) / 0.5
    with pytest.raises(TypeError, match="Unsupported image type"):
        processor(images=[b"bytes"], task="semantic", categories=["x"])
