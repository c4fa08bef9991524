import numpy as np
from xsam_data_fixtures import assert_picklable, box_mask, rect_polygon, rle_of, write_image, write_json

from xsam_hf.training.data import (SkipCounter, load_flickr_gcg, load_gcg, load_gcg_eval, load_grandf_gcg,
                                   load_refcocog_gcg)
from xsam_hf.training.data.masks import decode_mask, decode_rle

H, W = 16, 20
MAN, HORSE, BEACH = box_mask(H, W, 0, 0, 8, 6), box_mask(H, W, 4, 8, 12, 18), box_mask(H, W, 12, 0, 16, 20)


def _assert_spans_index_the_caption(example):
    for phrase, name in zip(example.phrases, example.class_names):
        assert example.caption[phrase.start:phrase.end] == phrase.text == name


def test_grandf_shape_reads_spans_and_unions_masks(tmp_path):
    caption = "A man riding a horse on the beach."
    horse_left, horse_right = box_mask(H, W, 4, 8, 12, 12), box_mask(H, W, 4, 12, 12, 18)
    path = write_json(tmp_path / "GranDf_HA_GCG_train.json", [
        {"file_name": "sa_1.jpg", "image_id": "sa_1", "caption": caption, "groundings": {
            "a horse": {"token_positives": [13, 20], "rle_masks": [rle_of(horse_left), rle_of(horse_right)]},
            "A man": {"token_positives": [0, 5], "rle_masks": [rle_of(MAN)]},
        }},
        {"file_name": "sa_2.jpg", "image_id": "sa_2", "caption": "short", "groundings": {
            "beyond": {"token_positives": [3, 40], "rle_masks": [rle_of(MAN)]}}},
    ])
    counter = SkipCounter()
    source = load_grandf_gcg(path, tmp_path / "images", counter=counter)
    examples = list(source)
    assert len(examples) == 1 and counter.count(reason="build_failed") == 1  # span outside the caption
    example = examples[0]
    assert_picklable(source)
    assert example.task == "gcgseg" and example.caption == caption and example.image_size == (H, W)
    assert example.class_names == ["a horse", "A man"]  # file order; sampling sorts
    _assert_spans_index_the_caption(example)
    assert np.array_equal(decode_rle(example.objects[0].mask), HORSE)
    assert np.array_equal(decode_rle(example.objects[1].mask), MAN)
    assert [o.class_index for o in example.objects] == [0, 1]


def test_refcocog_gcg_shape_finds_spans_by_searching_the_caption(tmp_path):
    write_image(tmp_path / "images" / "COCO_train2014_1.jpg", H, W)
    caption = "The man next to a horse. The horse is brown."
    path = write_json(tmp_path / "RefCOCOg_GCG_train.json", [
        {"1_0": {"img_file_name": "COCO_train2014_1.jpg", "caption": caption, "refs": [
            {"sentence": "the man", "segmentation": [rect_polygon(0, 0, 8, 6)]},
            {"sentence": "the horse", "segmentation": rle_of(HORSE)},
            {"sentence": "a zebra", "segmentation": rle_of(HORSE)},
        ]}},
    ])
    counter = SkipCounter()
    source = load_refcocog_gcg(path, tmp_path / "images", counter=counter)
    assert_picklable(source)
    example = source[0]
    assert [(p.text, p.start, p.end) for p in example.phrases] == [("The man", 0, 7), ("The horse", 25, 34)]
    _assert_spans_index_the_caption(example)
    assert np.array_equal(decode_rle(example.objects[0].mask), decode_mask([rect_polygon(0, 0, 8, 6)], H, W))
    assert np.array_equal(decode_rle(example.objects[1].mask), HORSE)
    assert counter.count(reason="phrase_not_in_caption") == 1
    assert load_gcg(path, tmp_path / "images")[0] == example  # shape recognised from content


def test_flickr_gcg_shape_groups_annotations_by_span(tmp_path):
    caption = "A man rides a horse near the beach"
    path = write_json(tmp_path / "flickr_mergedGT_GCG_train.json", {
        "images": [{"id": 7, "file_name": "7.jpg", "height": H, "width": W, "caption": caption}],
        "annotations": [
            {"id": 1, "image_id": 7, "tokens_positive": [[0, 5]], "sam_mask": rle_of(MAN), "category_id": 1},
            {"id": 2, "image_id": 7, "tokens_positive": [[12, 19]], "sam_mask": rle_of(box_mask(H, W, 4, 8, 12, 10)),
             "category_id": 1},
            {"id": 3, "image_id": 7, "tokens_positive": [[12, 19]], "sam_mask": rle_of(box_mask(H, W, 4, 10, 12, 18)),
             "category_id": 1},
            {"id": 4, "image_id": 7, "tokens_positive": [29, 34], "sam_mask": rle_of(BEACH), "category_id": 1},
        ],
    })
    source = load_flickr_gcg(path, tmp_path)
    assert_picklable(source)
    example = source[0]
    assert example.class_names == ["A man", "a horse", "beach"]
    _assert_spans_index_the_caption(example)
    assert [np.array_equal(decode_rle(o.mask), m) for o, m in zip(example.objects, [MAN, HORSE, BEACH])] == [True] * 3
    assert load_gcg(path, tmp_path)[0] == example


def test_openpsg_shape_is_recognised_as_grandf(tmp_path):
    path = write_json(tmp_path / "OpenPsgGCG_train.json", [
        {"file_name": "p.jpg", "image_id": 3, "caption": "a beach", "groundings": {
            "a beach": {"token_positives": [0, 7], "rle_masks": [rle_of(BEACH)]}}}])
    example = load_gcg(path, tmp_path)[0]
    assert example.source == "OpenPsgGCG_train" and example.class_names == ["a beach"]


def test_gcg_evaluation_files_pair_masks_with_captions(tmp_path):
    mask_json = write_json(tmp_path / "val_gcg_coco_mask_gt.json", {
        "images": [{"id": "sa_9", "height": H, "width": W}, {"id": "sa_10", "height": H, "width": W}],
        "annotations": [{"id": 1, "image_id": "sa_9", "category_id": 1, "segmentation": rle_of(MAN)},
                        {"id": 2, "image_id": "sa_9", "category_id": 1, "segmentation": rle_of(HORSE)}],
        "categories": [{"id": 1, "name": "object"}],
    })
    caption_json = write_json(tmp_path / "val_gcg_coco_caption_gt.json", {
        "images": [{"id": "sa_9"}], "annotations": [{"image_id": "sa_9", "caption": "A man and a horse."}]})
    counter = SkipCounter()
    source = load_gcg_eval(mask_json, caption_json, tmp_path / "val_test", counter=counter)
    assert len(source) == 1 and counter.count(reason="image_without_caption") == 1
    assert_picklable(source)
    example = source[0]
    assert example.caption == "A man and a horse." and example.image_path.endswith("val_test/sa_9.jpg")
    assert [o.class_index for o in example.objects] == [-1, -1] and example.class_names == []
    assert np.array_equal(decode_rle(example.objects[1].mask), HORSE)
