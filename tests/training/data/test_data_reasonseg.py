import numpy as np
from xsam_data_fixtures import assert_picklable, write_image, write_json

from xsam_hf.training.data import SkipCounter, load_reasonseg
from xsam_hf.training.data.masks import decode_rle

H, W = 20, 24


def _rect(label, x0, y0, x1, y1):
    # LabelMe rectangles as 4-point polygons; PIL fills them with both ends inclusive.
    return {"label": label, "points": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]], "shape_type": "polygon"}


def _inclusive(y0, x0, y1, x1):
    mask = np.zeros((H, W), dtype=bool)
    mask[y0:y1 + 1, x0:x1 + 1] = True
    return mask


def _write_split(split_dir):
    write_image(split_dir / "cake.jpg", H, W)
    write_json(split_dir / "cake.json", {
        "text": ["what could be eaten at a birthday party?", "the dessert"],
        "is_sentence": True,
        "shapes": [
            _rect("target", 1, 1, 20, 15),     # large target
            _rect("ignore", 5, 5, 10, 10),     # carved out of the target
            _rect("target", 7, 7, 8, 8),       # smaller, drawn after the ignore region: wins there
            _rect("flag", 0, 0, 23, 19),       # skipped entirely
        ],
        "imageHeight": H, "imageWidth": W,
    })
    write_image(split_dir / "lonely.jpg", H, W)  # no annotation next to it
    write_image(split_dir / "phrase.jpg", H, W)
    write_json(split_dir / "phrase.json", {"text": "the red cup", "is_sentence": False,
                                           "shapes": [_rect("target", 2, 3, 4, 6)]})
    write_image(split_dir / "broken.jpg", H, W)
    write_json(split_dir / "broken.json", {"text": [], "shapes": []})


def test_reasonseg_fills_polygons_largest_first_and_removes_ignore_regions(tmp_path):
    split = tmp_path / "lisa" / "train"
    _write_split(split)
    write_json(tmp_path / "lisa" / "explanatory" / "train.json",
               [{"image": "cake.jpg", "query": "q", "outputs": "Cakes are eaten at birthdays."}])
    counter = SkipCounter()
    source = load_reasonseg(split, explanatory_json=tmp_path / "lisa/explanatory/train.json", counter=counter)
    assert counter.count(reason="image_without_annotation") == 1
    examples = {e.meta["file_name"]: e for e in source}
    assert_picklable(source.subset([1]))  # record 0 is broken.jpg
    assert counter.count(reason="build_failed") == 1  # broken.json has no query
    assert set(examples) == {"cake.jpg", "phrase.jpg"}

    cake = examples["cake.jpg"]
    expected = _inclusive(1, 1, 15, 20) & ~_inclusive(5, 5, 10, 10) | _inclusive(7, 7, 8, 8)
    assert np.array_equal(decode_rle(cake.objects[0].mask), expected)
    ignore = _inclusive(5, 5, 10, 10) & ~_inclusive(7, 7, 8, 8)
    assert np.array_equal(decode_rle(cake.ignore_mask), ignore)
    assert cake.objects[0].texts == ["what could be eaten at a birthday party?", "the dessert"]
    assert cake.is_sentence is True and cake.explanation == "Cakes are eaten at birthdays."
    assert cake.task == "reaseg" and cake.image_size == (H, W)

    phrase = examples["phrase.jpg"]  # size read from the image header; a single text string is accepted
    assert phrase.image_size == (H, W) and phrase.objects[0].texts == ["the red cup"]
    assert phrase.is_sentence is False and phrase.explanation is None and phrase.ignore_mask is None
    assert np.array_equal(decode_rle(phrase.objects[0].mask), _inclusive(3, 2, 6, 4))
