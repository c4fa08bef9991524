"""The demo's plain helpers: clicks and painted layers to visual prompts, the JSON record, legend and caption HTML."""

import html
import re

import numpy as np
import pytest
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from xsam_hf.demo.canvas import (
    ClickPrompts,
    add_box,
    add_click,
    describe_clicks,
    draw_click_markers,
    gather_visual_prompts,
    painted_masks,
    parse_dragged_box,
    scribble_polylines,
)
from xsam_hf.demo.results import caption_html, legend_html, request_record, result_record
from xsam_hf.visualization import colour_for


def test_two_clicks_in_box_mode_make_one_normalised_box_and_points_accumulate():
    clicks = add_click(ClickPrompts(), 50, 40, "box")
    assert clicks.pending_corner == (50.0, 40.0) and clicks.boxes == ()
    clicks = add_click(clicks, 10, 90, "box")
    assert clicks.boxes == ((10.0, 40.0, 50.0, 90.0),) and clicks.pending_corner is None
    clicks = add_click(add_click(clicks, 3, 4, "point"), 5, 6, "point")
    assert clicks.points == ((3.0, 4.0), (5.0, 6.0))
    assert "point (3, 4)" in describe_clicks(clicks) and "box (10, 40) - (50, 90)" in describe_clicks(clicks)
    with pytest.raises(ValueError, match="click mode"):
        add_click(clicks, 1, 1, "lasso")


def test_a_dragged_box_is_read_clamped_to_the_image_and_added_as_xyxy():
    # As the page's script reports a drag from lower right to upper left, partly outside the 300 x 200 image.
    reported = '{"box": [320.5, 150.25, 40, -12], "stamp": 1}'
    box = parse_dragged_box(reported, (300, 200))
    assert box == (40.0, 0.0, 300.0, 150.25)
    clicks = add_box(add_click(ClickPrompts(), 7, 8, "box"), box)
    assert clicks.boxes == ((40.0, 0.0, 300.0, 150.25),) and clicks.pending_corner == (7.0, 8.0)
    assert "box (40, 0) - (300, 150)" in describe_clicks(clicks)
    assert add_box(ClickPrompts(), (9, 8, 1, 2)).boxes == ((1.0, 2.0, 9.0, 8.0),)


@pytest.mark.parametrize("reported", [
    "", None, "not json", '{"box": [1, 2, 3]}', '{"corners": [1, 2, 3, 4]}', '{"box": [5, 5, 5.4, 90]}',
    '{"box": ["a", 1, 2, 3]}', '{"box": [NaN, 1, 20, 30]}', '{"box": [400, 10, 500, 90]}', "[1, 2, 3, 4]",
])
def test_a_malformed_or_empty_drag_report_adds_no_box(reported):
    assert parse_dragged_box(reported, (300, 200)) is None


def test_markers_are_drawn_at_the_original_pixel_without_resizing():
    image = Image.new("RGB", (300, 200), "black")
    clicks = add_click(add_click(ClickPrompts(), 120, 80, "point"), 10, 10, "box")
    marked = draw_click_markers(image, clicks)
    assert marked.size == image.size
    assert marked.getpixel((120, 80)) == (255, 40, 40)
    assert marked.getpixel((10, 10)) != (0, 0, 0)  # the pending corner's cross
    assert marked.getpixel((250, 150)) == (0, 0, 0)


def test_painted_layers_become_masks_at_the_image_size():
    layer = np.zeros((100, 150, 4), dtype=np.uint8)
    layer[20:30, 40:60, 3] = 255
    empty = np.zeros((100, 150, 4), dtype=np.uint8)
    masks = painted_masks([layer, empty, None], (150, 100))
    assert len(masks) == 1 and masks[0].shape == (100, 150) and masks[0].sum() == 200
    # a canvas twice the image's size is scaled back onto the image
    big = np.zeros((200, 300, 4), dtype=np.uint8)
    big[40:60, 80:120, 3] = 255
    (scaled,) = painted_masks([Image.fromarray(big, "RGBA")], (150, 100))
    assert scaled.shape == (100, 150) and scaled[20:30, 40:60].all() and scaled.sum() == 200


def test_each_stroke_becomes_a_polyline_along_its_centre_from_end_to_end():
    canvas = Image.new("L", (200, 120), 0)
    draw = ImageDraw.Draw(canvas)
    draw.line([(20, 30), (180, 30)], fill=255, width=9)
    draw.line([(40, 90), (60, 110)], fill=255, width=5)
    lines = scribble_polylines([np.asarray(canvas) > 0])
    assert len(lines) == 2
    long_line = max(lines, key=len)
    xs, ys = np.array(long_line).T
    assert np.all(np.abs(ys - 30.5) <= 2)  # on the centre line
    assert {round(min(xs[0], xs[-1])), round(max(xs[0], xs[-1]))} <= set(range(15, 30)) | set(range(170, 186))
    assert np.all(np.diff(xs) > 0) or np.all(np.diff(xs) < 0)  # walked in order, not zig-zagging
    assert len(long_line) <= 65


def test_gathering_refuses_a_half_drawn_box_and_reads_paint_as_chosen():
    layer = np.zeros((50, 60, 4), dtype=np.uint8)
    layer[10:20, 10:40, 3] = 255
    clicks = add_click(ClickPrompts(), 5, 5, "point")
    as_masks = gather_visual_prompts(clicks, [layer], (60, 50), "mask")
    assert as_masks.points == [(5.0, 5.0)] and len(as_masks.masks) == 1 and as_masks.scribbles == []
    as_scribbles = gather_visual_prompts(clicks, [layer], (60, 50), "scribble")
    assert len(as_scribbles.scribbles) == 1 and as_scribbles.masks == []
    assert set(as_scribbles.as_pipeline_kwargs()) == {"points", "scribbles"}
    with pytest.raises(ValueError, match="opposite corner"):
        gather_visual_prompts(add_click(ClickPrompts(), 1, 1, "box"), [], (60, 50), "mask")


def test_record_keeps_the_prompts_and_segments_in_the_cli_shape():
    mask = np.zeros((40, 50), dtype=bool)
    mask[5:15, 10:30] = True
    visual = gather_visual_prompts(add_click(ClickPrompts(), 12, 7, "point"), [mask.astype(np.uint8) * 255],
                                   (50, 40), "mask")
    request = request_record("vgd", None, None, None, visual, ["thing"], on_prompt_image=True)
    segment = {"score": 0.9, "label": "thing", "label_id": 0, "mask": Image.fromarray(mask.astype(np.uint8) * 255)}
    record = result_record(request, "preset:tiny (random)", True, (50, 40), (80, 60), None, [segment])
    assert record["image_size"] == [40, 50] and record["prompt_image_size"] == [60, 80]
    assert record["request"]["points"] == [[12.0, 7.0]] and record["request"]["prompts_on"] == "prompt_image"
    assert record["request"]["masks"][0]["bbox_xyxy"] == [10, 5, 30, 15]
    (saved,) = record["segments"]
    assert saved["label"] == "thing" and saved["area"] == 200 and saved["bbox_xyxy"] == [10, 5, 30, 15]
    decoded = mask_utils.decode({"size": saved["rle"]["size"], "counts": saved["rle"]["counts"].encode()})
    assert np.array_equal(decoded.astype(bool), mask)


def test_caption_colours_each_grounded_phrase_like_its_mask_and_escapes_text():
    text = "A <cup> on a saucer & a spoon"
    segments = [{"label": "saucer", "span": (13, 19)}, {"label": "<cup>", "span": (2, 7)}]
    rendered = caption_html(text, segments)
    red, green, blue = colour_for(1)
    assert f'data-segment="1" style="background:rgba({red}, {green}, {blue}, 0.45)">&lt;cup&gt;</mark>' in rendered
    red, green, blue = colour_for(0)
    assert f"rgba({red}, {green}, {blue}, 0.45)\">saucer</mark>" in rendered
    assert "&amp; a spoon" in rendered and "<cup>" not in rendered
    assert html.unescape(re.sub(r"<[^>]+>", "", rendered)) == text  # nothing lost, nothing repeated


def test_legend_lists_segments_in_overlay_colours():
    segments = [{"label": "cup", "score": 0.91}, {"label": None, "label_id": 3, "score": None}]
    legend = legend_html(segments)
    assert legend.count("<li") == 2 and "cup 0.91" in legend and "class 3" in legend
    red, green, blue = colour_for(1)
    assert f"rgb({red}, {green}, {blue})" in legend
    assert "No grounded segment" in legend_html([], empty_message="No grounded segment.")
