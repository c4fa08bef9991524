"""Visual prompts: rasterisation in original-image pixels, the same resize and padding as the SAM canvas, and clear
errors for prompts that do not fit the image."""

import math

import numpy as np
import pytest
import torch

from xsam_hf.processing import VisualPrompt
from xsam_hf.processing.visual_prompts import POINT_RADIUS, bounding_box, mask_to_canvas, rasterize

H, W = 100, 140  # the canvas scale is 128 / 140; the resized image is 91 x 128


def test_point_is_a_disc_of_radius_10():
    mask = rasterize(VisualPrompt.point(50, 40), H, W)
    # Pixel centres within 10 px of (50, 40): a 20 x 20 box, area close to pi r^2.
    assert bounding_box(mask) == (40, 30, 60, 50)
    assert abs(int(mask.sum()) - math.pi * POINT_RADIUS**2) < 0.05 * math.pi * POINT_RADIUS**2
    assert mask[39, 49] and mask[30, 49] and not mask[29, 49] and not mask[30, 40]


def test_scribble_is_a_polyline_dilated_by_5():
    mask = rasterize(VisualPrompt.scribble([(20, 50), (120, 50), (120, 90)]), H, W)
    assert bounding_box(mask) == (15, 45, 125, 95)
    assert mask[50, 70] and mask[54, 70] and not mask[56, 70]  # 5 px either side of the horizontal stroke
    assert mask[70, 124] and not mask[70, 126] and not mask[60, 100]


def test_box_and_mask_prompts():
    box = rasterize(VisualPrompt.box(10, 20, 60, 45), H, W)
    assert bounding_box(box) == (10, 20, 60, 45) and int(box.sum()) == 50 * 25
    thin = rasterize(VisualPrompt.box(10.2, 20, 10.4, 30), H, W)  # thinner than a pixel: still one column
    assert bounding_box(thin) == (10, 20, 11, 30)
    array = np.zeros((H, W), dtype=np.uint8)
    array[5:15, 100:130] = 255
    assert np.array_equal(rasterize(VisualPrompt.mask(array), H, W), array > 0)
    assert np.array_equal(rasterize(VisualPrompt.mask(torch.from_numpy(array > 0)), H, W), array > 0)


def test_canvas_mask_follows_the_image_resize_and_padding():
    mask = rasterize(VisualPrompt.box(0, 0, 70, 100), H, W)  # left half of the image
    canvas = mask_to_canvas(mask, (91, 128), 128)
    assert canvas.shape == (128, 128) and canvas.dtype == torch.bool
    assert canvas[:91, :64].all() and not canvas[:, 64:].any() and not canvas[91:].any()


def test_tiny_prompt_survives_downscaling():
    mask = np.zeros((2000, 3000), dtype=bool)
    mask[1000, 1500] = True  # one pixel: nearest resizing to 85 x 128 would miss it
    canvas = mask_to_canvas(mask, (85, 128), 128)
    assert int(canvas.sum()) == 1 and bool(canvas[42, 64])


@pytest.mark.parametrize(
    "prompt, message",
    [
        (VisualPrompt.point(150, 10), "outside the image"),
        (VisualPrompt.point(-1, 10), "outside the image"),
        (VisualPrompt.scribble([(10, 10), (10, 120)]), "outside the image"),
        (VisualPrompt.box(10, 10, 5, 20), "x0 < x1"),
        (VisualPrompt.box(10, 10, 150, 20), "outside the image"),
        (VisualPrompt.mask(np.zeros((H, W), bool)), "empty"),
        (VisualPrompt.mask(np.ones((50, 50), bool)), "shape"),
    ],
)
def test_invalid_prompts_raise_clear_errors(prompt, message):
    with pytest.raises(ValueError, match=message):
        rasterize(prompt, H, W)


def test_prompt_construction_errors():
    with pytest.raises(ValueError, match="exactly one of the keys"):
        VisualPrompt.coerce({"point": (1, 2), "box": (0, 0, 1, 1)})
    with pytest.raises(ValueError, match="needs 4 numbers"):
        VisualPrompt.coerce({"box": (1, 2, 3)})
    with pytest.raises(ValueError, match="non-finite"):
        VisualPrompt.point(float("nan"), 1)
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        VisualPrompt.scribble([1, 2, 3])
    with pytest.raises(TypeError, match="Cannot read a visual prompt"):
        VisualPrompt.coerce("a point")
    with pytest.raises(ValueError, match="2-D"):
        VisualPrompt.mask(np.ones((2, 3, 4), bool))


def test_processor_rasterises_prompts_on_the_canvas(processor):
    image = np.zeros((H, W, 3), dtype=np.uint8)
    inputs = processor(images=image, task="vgd", visual_prompts=[{"box": (0, 0, 70, 100)}, {"point": (100, 50)}])
    masks = inputs["region_masks"][0]
    assert masks.shape == (2, 128, 128) and masks.dtype == torch.bool
    assert masks[0, :91, :64].all() and not masks[0, :, 64:].any()
    expected_point = mask_to_canvas(rasterize(VisualPrompt.point(100, 50), H, W), (91, 128), 128)
    assert torch.equal(masks[1], expected_point)
    assert inputs["region_image_indices"][0].tolist() == [0, 0]
    assert "region_pixel_values" not in inputs
    assert inputs.sample_info[0].prompt_boxes == ((0, 0, 70, 100), (90, 40, 110, 60))
    with pytest.raises(ValueError, match="outside the image"):
        processor(images=image, task="interactive", visual_prompts={"point": (500, 5)})


def test_cross_image_prompts_get_their_own_canvas(processor, photos):
    target, reference = photos["coffee"], photos["chelsea"]  # 400 x 600 and 300 x 451
    inputs = processor(
        images=[target, reference],
        task="vgd",
        visual_prompts=[
            [{"box": (100, 50, 200, 150), "image": reference}, {"point": (30, 30)}],  # a prompt on batch image 1
            [{"mask": photos["coffee"][..., 0] > 128, "image": photos["coffee"]}],  # same object as image 0
        ],
    )
    assert [t.tolist() for t in inputs["region_image_indices"]] == [[1, 0], [0]]
    third = np.zeros((50, 80, 3), np.uint8)
    twice = [{"box": (10, 10, 40, 30), "image": third}, {"box": (10, 10, 40, 30), "image": third}]
    inputs = processor(images=target, task="vgd", visual_prompts=twice)
    assert inputs["region_image_indices"][0].tolist() == [1, 1]  # one extra canvas, shared
    assert inputs["region_pixel_values"].shape == (1, 3, 128, 128)
    # The prompt is rasterised at the reference image's own scale (80 px wide -> 128): x 10..40 -> 16..64.
    mask = inputs["region_masks"][0][0]
    assert mask[20:40, 16:64].all() and not mask[:, 64:].any()
