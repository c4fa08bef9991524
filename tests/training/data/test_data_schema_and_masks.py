import json

import numpy as np
import pytest
from xsam_data_fixtures import assert_picklable, box_mask, rect_polygon, rle_of, uncompressed_rle_of

from xsam_hf.training.data.categories import clean_category_name
from xsam_hf.training.data.json_io import iter_json_array
from xsam_hf.training.data.masks import decode_mask, encode_mask, id2rgb, rgb2id, rle_area, rle_union, to_rle
from xsam_hf.training.data.schema import PhraseSpan, SegObject, Turn, VisualPrompt, XSamExample


@pytest.mark.parametrize(("raw", "clean"), [
    ("wall-other-merged", "wall"), ("door-stuff", "door"), ("floor-wood", "floor wood"),
    ("dining table", "dining table"), ("playingfield", "playingfield"), ("Window-Blind", "window blind"),
])
def test_category_names_are_cleaned_like_tag_categories(raw, clean):
    assert clean_category_name(raw) == clean


def test_every_mask_encoding_decodes_to_the_written_pixels():
    mask = box_mask(12, 10, 2, 3, 7, 9)
    assert np.array_equal(decode_mask(rle_of(mask)), mask)
    assert np.array_equal(decode_mask(uncompressed_rle_of(mask)), mask)
    assert np.array_equal(decode_mask([rect_polygon(2, 3, 7, 9)], 12, 10), mask)
    other = box_mask(12, 10, 9, 0, 11, 2)
    assert np.array_equal(decode_mask([rle_of(mask), rle_of(other)]), mask | other)
    compact = to_rle(uncompressed_rle_of(mask))
    assert isinstance(compact["counts"], str) and compact["size"] == [12, 10]
    assert rle_area(compact) == int(mask.sum()) == 30
    assert np.array_equal(decode_mask(rle_union([rle_of(mask), rle_of(other)])), mask | other)
    with pytest.raises(ValueError, match="height and width"):
        decode_mask([rect_polygon(2, 3, 7, 9)])


def test_panoptic_colour_code_round_trips():
    ids = np.array([[0, 1, 255], [256, 65536, 5 + 7 * 256 + 3 * 65536]])
    rgb = id2rgb(ids)
    assert rgb[1, 2].tolist() == [5, 7, 3]
    assert np.array_equal(rgb2id(rgb), ids)


def _full_example() -> XSamExample:
    mask = encode_mask(box_mask(4, 5, 0, 0, 2, 2))
    return XSamExample(
        record_id="s/1", task="vgdseg", source="s", image_path="/x.jpg", image_size=(4, 5),
        class_names=["cat", "dog"], class_ids=[17, 18],
        objects=[SegObject(mask=mask, class_index=1, isthing=True, iscrowd=False, object_id="9", bbox=[0, 0, 2, 2],
                           texts=["the dog"], visual_prompts=[VisualPrompt("point", mask, points=[[1.0, 1.0]]),
                                                              VisualPrompt("box", mask, box=[0, 0, 2, 2])])],
        conversation=[Turn("user", "hi"), Turn("assistant", "hello")], caption="a dog",
        phrases=[PhraseSpan("a dog", 0, 5)], is_sentence=False, explanation="because", ignore_mask=mask,
        meta={"image_id": 1, "segments_info": [{"id": 3}]},
    )


def test_example_round_trips_through_dict_and_json():
    example = _full_example()
    assert XSamExample.from_dict(json.loads(json.dumps(example.to_dict()))) == example


def test_example_validates_task_roles_and_class_indices():
    with pytest.raises(ValueError, match="task"):
        XSamExample(record_id="a", task="segment", source="s")
    with pytest.raises(ValueError, match="role"):
        Turn("system", "x")
    with pytest.raises(ValueError, match="prompt type"):
        VisualPrompt("lasso")
    with pytest.raises(ValueError, match="class_index"):
        XSamExample(record_id="a", task="genseg", source="s", class_names=["a"], class_ids=[1],
                    objects=[SegObject(mask=encode_mask(np.zeros((2, 2), bool)), class_index=1)])


def test_example_round_trips_through_arrow(tmp_path):
    from xsam_hf.training.data.hf_dataset import source_from_hf_dataset, to_hf_dataset

    empty = XSamExample(record_id="s/2", task="chat", source="s")
    dataset = to_hf_dataset([_full_example(), empty], cache_dir=tmp_path / "cache")
    assert dataset[0]["image_path"] == "/x.jpg" and dataset[1]["image_path"] is None
    source = source_from_hf_dataset(dataset)
    assert_picklable(source)
    assert source[0] == _full_example()
    assert source[1] == empty


def test_json_array_is_streamed_element_by_element_across_chunk_boundaries(tmp_path):
    records = [{"id": i, "text": "x" * (i * 37 % 500), "n": 10 ** (i % 12), "nested": [[i, {"a": "]"}]]}
               for i in range(300)] + [12345678, "tail", None]
    path = tmp_path / "list.json"
    path.write_text(json.dumps(records, indent=1))
    assert list(iter_json_array(path, chunk_chars=64)) == records
    (tmp_path / "empty.json").write_text(" [ ] ")
    assert list(iter_json_array(tmp_path / "empty.json")) == []
    (tmp_path / "object.json").write_text('{"a": 1}')
    with pytest.raises(ValueError, match="not an array"):
        list(iter_json_array(tmp_path / "object.json"))
