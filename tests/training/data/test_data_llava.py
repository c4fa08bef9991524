from xsam_data_fixtures import assert_picklable, write_json

from xsam_hf.training.data import SkipCounter, load_llava
from xsam_hf.training.data.schema import Turn

RECORDS = [
    {"id": "000000033471", "image": "coco/train2017/000000033471.jpg", "conversations": [
        {"from": "human", "value": "<image>\nWhat are the colors of the bus in the image?"},
        {"from": "gpt", "value": "The bus in the image is white and red."},
        {"from": "human", "value": "What feature can be seen on the back of the bus?"},
        {"from": "gpt", "value": "The back of the bus features an advertisement."}]},
    {"id": "text-only-1", "conversations": [{"from": "human", "value": "Write a haiku."},
                                            {"from": "gpt", "value": "Autumn moonlight..."}]},
    {"id": "GCC_train_0001", "image": "00000/000000010.jpg", "conversations": [
        {"from": "human", "value": "Describe the image briefly.\n<image>"},
        {"from": "gpt", "value": "a dog on grass"}]},
    {"id": "broken-role", "image": "x.jpg", "conversations": [{"from": "robot", "value": "?"}]},
    {"id": "no-answer", "image": "y.jpg", "conversations": [{"from": "human", "value": "<image>\nHi"}]},
    "a stray string where a record should be",
]


def test_llava_turns_roles_and_image_placeholder(tmp_path):
    path = write_json(tmp_path / "llava_v1_5_mix665k.json", RECORDS)
    counter = SkipCounter()
    source = load_llava(path, tmp_path / "llava_images", counter=counter)
    assert [e.meta["id"] for e in source] == ["000000033471", "GCC_train_0001"]  # text-only excluded (S3)
    assert counter.count(reason="bad_conversation") == 2
    assert counter.report() == {"llava_v1_5_mix665k": {"bad_conversation": 2, "not_a_json_object": 1}}
    bus = source[0]
    assert_picklable(source)
    assert bus.task == "chat" and bus.source == "llava_v1_5_mix665k"
    assert bus.image_path == str(tmp_path / "llava_images/coco/train2017/000000033471.jpg")
    assert bus.conversation == [
        Turn("user", "What are the colors of the bus in the image?"),
        Turn("assistant", "The bus in the image is white and red."),
        Turn("user", "What feature can be seen on the back of the bus?"),
        Turn("assistant", "The back of the bus features an advertisement.")]
    assert source[1].conversation[0] == Turn("user", "Describe the image briefly.")
    assert bus.objects == [] and bus.class_names == []


def test_llava_text_only_samples_can_be_kept(tmp_path):
    path = write_json(tmp_path / "llava.json", RECORDS)
    source = load_llava(path, tmp_path, exclude_text_only=False)
    text_only = [e for e in source if e.image_path is None]
    assert [e.meta["id"] for e in text_only] == ["text-only-1"]
    assert text_only[0].conversation[1] == Turn("assistant", "Autumn moonlight...")
