"""The demo's request handling without a browser: what a page event sends, what comes back, how `main` serves."""

import json
import re

import numpy as np
import pytest
import skimage.data
from PIL import Image

try:
    from xsam_hf.demo import app as demo_app
except SystemExit as missing_gradio:  # the demo module exits with its install hint when Gradio is missing
    pytest.fail(f"{missing_gradio} (the test extra should bring it)", pytrace=False)
import gradio  # noqa: E402

from xsam_hf.demo.canvas import ClickPrompts, add_click  # noqa: E402


@pytest.fixture(scope="module")
def session(random_tiny):
    return demo_app.DemoSession(random_tiny)


@pytest.fixture(scope="module")
def coffee():
    return Image.fromarray(skimage.data.coffee())  # 600 x 400: not square, so x and y cannot be swapped unnoticed


def segment(session, task, image, **overrides):
    arguments = dict(
        task=task, image=image, classes_text="", stuff_text="", prompt_text="", clicks=ClickPrompts(),
        painting=None, paint_as="scribble", prompt_image=None, prompt_clicks=ClickPrompts(), names_text="",
        threshold=0.5, max_new_tokens=8, conversation=[],
    )
    arguments.update(overrides)
    return session.segment(**arguments)


def test_clicked_point_reaches_the_record_and_the_download(session, coffee):
    shown = segment(session, "interactive", coffee, clicks=add_click(ClickPrompts(), 420, 130, "point"))
    record = shown["record"]
    assert record["request"]["points"] == [[420.0, 130.0]] and record["request"]["prompts_on"] == "image"
    assert record["image_size"] == [400, 600] and record["random_weights"] is True
    assert json.loads(open(shown["download"]).read()) == record
    assert shown["overlay"].width == 600 and shown["overlay"].height >= 400
    assert shown["legend"].count("<li") == len(record["segments"])


@pytest.mark.parametrize(
    ("task", "overrides", "message"),
    [
        ("panoptic", {"image": None}, "Upload an image first"),
        ("referring", {}, "needs `prompt`"),
        ("panoptic", {"classes_text": "cup, saucer", "stuff_text": "table"}, "not found: table"),
        ("interactive", {}, "needs a visual prompt"),
        ("interactive", {"clicks": add_click(add_click(ClickPrompts(), 1, 1, "point"), 2, 2, "point")}, "one visual"),
        ("vgd", {"clicks": add_click(ClickPrompts(), 1, 1, "box")}, "opposite corner"),
        ("conversation", {}, "Type a question"),
    ],
)
def test_wrong_or_missing_inputs_raise_a_readable_value_error(session, coffee, task, overrides, message):
    arguments = {"image": coffee, **overrides}
    with pytest.raises(ValueError, match=message):
        segment(session, task, **arguments)


def test_chat_sends_the_whole_conversation_each_turn(session, coffee):
    first = segment(session, "conversation", coffee, prompt_text="What is on the table?")
    assert [turn["role"] for turn in first["conversation"]] == ["user", "assistant"]
    second = segment(session, "conversation", coffee, prompt_text="And its colour?",
                     conversation=first["conversation"])
    sent = second["record"]["request"]["conversation"]
    assert [turn["content"] for turn in sent] == [
        "What is on the table?", first["record"]["generated_text"], "And its colour?",
    ]
    assert len(second["conversation"]) == 4 and second["conversation"][-1]["role"] == "assistant"


def test_cross_image_vgd_takes_prompts_from_the_second_image(session, coffee):
    other = Image.fromarray(skimage.data.astronaut())  # 512 x 512
    prompts = add_click(add_click(ClickPrompts(), 300, 100, "box"), 480, 300, "box")
    shown = segment(session, "vgd", coffee, prompt_image=other, prompt_clicks=prompts,
                    clicks=add_click(ClickPrompts(), 5, 5, "point"), names_text="astronaut")
    request = shown["record"]["request"]
    assert request["boxes"] == [[300.0, 100.0, 480.0, 300.0]] and request["points"] == []
    assert request["prompts_on"] == "prompt_image" and request["names"] == ["astronaut"]
    assert shown["record"]["prompt_image_size"] == [512, 512]


def test_main_serves_the_chosen_model_on_the_chosen_address(monkeypatch, random_tiny):
    import xsam_hf.default_model

    loaded_names, served = [], {}
    monkeypatch.setattr(xsam_hf.default_model, "load_model",
                        lambda name, device="cpu": loaded_names.append(name) or random_tiny)
    monkeypatch.setattr(demo_app, "launch", lambda app, host, port: served.update(app=app, host=host, port=port))
    assert demo_app.main(["--model", "some/checkpoint", "--port", "7999"]) == 0
    assert loaded_names == ["some/checkpoint"]
    assert served["host"] == "127.0.0.1" and served["port"] == 7999
    assert isinstance(served["app"], gradio.Blocks) and served["app"].analytics_enabled is False


def test_theme_loads_no_font_from_anywhere():
    theme = demo_app.offline_theme()
    assert theme._stylesheets == [] and "@font-face" not in theme._get_theme_css()
    assert not re.search(r"url\(\s*(?![\"']?data:)", theme._get_theme_css())  # inline data: icons only
