"""Processor -> tiny X-SAM (seeded random weights) -> post-processing, on real photos.

The weights are random, so these tests check structure, determinism, batching and caching, not mask quality.
"""

import numpy as np
import pytest
import torch

from xsam_hf.processing import (
    GCGRequest,
    GenericSegmentationRequest,
    InteractiveRequest,
    ReasoningRequest,
    ReferringRequest,
    VGDRequest,
    VisualPrompt,
)


def _run(model, inputs):
    with torch.no_grad():
        return model(**inputs)


def _instance_logits(outputs):
    """Per instance: (class logits over the valid columns, mask logits)."""
    return [
        (outputs.class_queries_logits[n][:, outputs.condition_mask[n]], outputs.masks_queries_logits[n])
        for n in range(outputs.class_queries_logits.shape[0])
    ]


def _assert_results_equal(first, second):
    if isinstance(first, torch.Tensor) and first.is_floating_point():
        torch.testing.assert_close(first, second, atol=1e-5, rtol=1e-5)
    elif isinstance(first, torch.Tensor):
        # Logits agree to ~1e-6; a pixel whose logit sits on the threshold may flip.
        assert first.shape == second.shape and (first != second).float().mean() < 1e-3
    elif isinstance(first, dict):
        assert first.keys() == second.keys()
        for key in first:
            _assert_results_equal(first[key], second[key])
    elif isinstance(first, (list, tuple)):
        assert len(first) == len(second)
        for x, y in zip(first, second):
            _assert_results_equal(x, y)
    elif isinstance(first, float):
        assert first == pytest.approx(second, abs=1e-5)
    else:
        assert first == second


def test_every_task_end_to_end_on_a_photo(processor, tiny_model, photos):
    image = photos["astronaut"]  # 512 x 512
    horse = photos["chelsea"]
    mask = np.zeros(image.shape[:2], dtype=bool)
    mask[100:300, 150:350] = True
    cases = {
        "panoptic": GenericSegmentationRequest(["person", "flag", "sky"], stuff_categories=["sky"]),
        "semantic": GenericSegmentationRequest(["person", "flag", "sky"], task="semantic"),
        "instance": GenericSegmentationRequest(["person", "flag"], task="instance"),
        "open_vocabulary": GenericSegmentationRequest(["space suit", "american flag"], task="open_vocabulary"),
        "referring": ReferringRequest(["the astronaut", "the flag on the left"]),
        "reasoning": ReasoningRequest("What protects the person from the vacuum of space?"),
        "point": InteractiveRequest(VisualPrompt.point(250, 200)),
        "scribble": InteractiveRequest(VisualPrompt.scribble([(200, 150), (260, 230), (300, 260)])),
        "box": InteractiveRequest(VisualPrompt.box(150, 100, 350, 300)),
        "mask": InteractiveRequest(VisualPrompt.mask(mask)),
        "vgd": VGDRequest([VisualPrompt.box(150, 100, 350, 300), VisualPrompt.point(60, 400)], names=["suit", "flag"]),
        "cross_image_vgd": VGDRequest([VisualPrompt.box(100, 50, 300, 250, image=horse)], names=["cat"]),
    }
    inputs = processor(images=[image] * len(cases), requests=list(cases.values()))
    outputs = _run(tiny_model, inputs)
    again = _run(tiny_model, processor(images=[image] * len(cases), requests=list(cases.values())))
    assert torch.equal(outputs.class_queries_logits, again.class_queries_logits)  # deterministic
    assert torch.equal(outputs.masks_queries_logits, again.masks_queries_logits)
    # One decoder instance per <SEG>: two for the two referring expressions.
    assert outputs.instance_sample_index.tolist() == [0, 1, 2, 3, 4, 4, 5, 6, 7, 8, 9, 10, 11]
    assert outputs.masks_queries_logits.shape[-2:] == (16, 16)
    results = dict(zip(cases, processor.post_process(outputs, inputs)))

    assert results["semantic"].shape == (512, 512) and int(results["semantic"].max()) < 3
    for name in ("panoptic", "instance", "open_vocabulary", "vgd", "cross_image_vgd"):
        assert results[name]["segmentation"].shape == (512, 512)
        ids = {s["id"] for s in results[name]["segments_info"]}
        assert set(results[name]["segmentation"].unique().tolist()) <= ids | {-1}
    assert all(s["label"] in ("suit", "flag") for s in results["vgd"]["segments_info"])
    assert results["referring"]["labels"] == ["the astronaut", "the flag on the left"]
    assert results["referring"]["masks"].shape == (2, 512, 512)
    assert results["reasoning"]["masks"].shape == (1, 512, 512)
    for name in ("point", "scribble", "box", "mask"):
        assert results[name]["masks"].shape == (1, 512, 512) and 0.0 <= results[name]["box_iou"] <= 1.0
    # The cross-image prompt came from its own canvas.
    assert inputs["region_pixel_values"].shape == (1, 3, 128, 128)
    assert inputs["region_image_indices"][11].tolist() == [len(cases)]

    # The dedicated methods agree with the dispatcher.
    one = processor(images=image, requests=cases["panoptic"])
    direct = processor.post_process_panoptic_segmentation(_run(tiny_model, one), one)[0]
    _assert_results_equal(direct, results["panoptic"])


def test_grounded_generation_then_segmentation(processor, tiny_model, photos):
    """GCG: the prompt ends after the assistant header; the generated answer (here a given one, the weights being
    random) is appended and read by one forward pass; phrases get masks and character spans."""
    prompt = processor(images=photos["coffee"], requests=GCGRequest())
    assert prompt.texts[0].endswith("<|assistant|>\n") and prompt.sample_info[0].generate
    answer = "<p>A cup</p>  of coffee next to <p>a spoon</p>  on a saucer. And <SEG>.<|end|>"
    answer_ids = processor.tokenizer.encode(answer, add_special_tokens=False) + [processor.tokenizer.pad_token_id]
    full = processor.append_generated(prompt, torch.tensor([answer_ids]))
    assert full.texts[0].endswith(answer) and not full.sample_info[0].generate
    outputs = _run(tiny_model, full)
    assert outputs.class_queries_logits.shape[-1] == 3  # two phrases + background
    result = processor.post_process_generation(torch.tensor([answer_ids]), outputs, full)[0]
    assert result["caption"] == "A cup of coffee next to a spoon on a saucer."
    assert [(p, span) for p, span, _ in result["entities"]] == [("A cup", (0, 5)), ("a spoon", (24, 31))]
    assert all(mask.shape == (400, 600) for _, _, mask in result["entities"])


def test_batched_equals_one_by_one(processor, tiny_model, photos):
    images = [photos["astronaut"], photos["coffee"], photos["chelsea"]]
    requests = [
        GenericSegmentationRequest(["person", "flag", "sky"]),
        ReferringRequest(["the cup", "the spoon"]),
        VGDRequest([VisualPrompt.box(10, 10, 100, 100), VisualPrompt.point(200, 150)]),
    ]
    batch = processor(images=images, requests=requests)
    batch_out = _run(tiny_model, batch)
    batch_instances = _instance_logits(batch_out)
    batch_results = processor.post_process(batch_out, batch)
    position = 0
    for b, (image, request) in enumerate(zip(images, requests)):
        single = processor(images=image, requests=request)
        length = int(single["attention_mask"].sum())
        assert torch.equal(batch["input_ids"][b, :length], single["input_ids"][0])
        assert batch["attention_mask"][b, length:].eq(0).all()
        for key in ("pixel_values", "extra_pixel_values", "original_sizes", "reshaped_input_sizes"):
            assert torch.equal(batch[key][b], single[key][0])
        single_out = _run(tiny_model, single)
        for classes, masks in _instance_logits(single_out):
            batch_classes, batch_masks = batch_instances[position]
            torch.testing.assert_close(batch_classes, classes, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(batch_masks, masks, atol=1e-5, rtol=1e-5)
            position += 1
        _assert_results_equal(batch_results[b], processor.post_process(single_out, single)[0])
    assert position == len(batch_instances)


def test_encode_once_prompt_many(processor, tiny_model, photos):
    image = photos["chelsea"]
    requests = [
        InteractiveRequest(VisualPrompt.point(150, 120)),
        InteractiveRequest(VisualPrompt.box(50, 40, 260, 250)),
        ReferringRequest("the cat"),
        VGDRequest([VisualPrompt.scribble([(100, 100), (200, 180)]), VisualPrompt.point(400, 60)]),
    ]
    prompts = [processor(images=image, requests=r) for r in requests]
    uncached = [_run(tiny_model, p) for p in prompts]

    calls = {"vision_tower": 0, "segmentation_encoder": 0}
    hooks = [
        getattr(tiny_model, name).register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
        for name in calls
    ]
    try:
        with torch.no_grad():
            features = tiny_model.get_image_features(prompts[0]["pixel_values"], prompts[0]["extra_pixel_values"])
            cached = [tiny_model(**p, image_features=features) for p in prompts]
            # Several prompts in one batch against the same cached image.
            batch = processor(images=[image] * 2, requests=requests[:2])
            batched = tiny_model(**batch, image_features=features.select([0, 0]))
    finally:
        for hook in hooks:
            hook.remove()
    assert calls == {"vision_tower": 1, "segmentation_encoder": 1}
    for fresh, reused in zip(uncached, cached):
        torch.testing.assert_close(reused.class_queries_logits, fresh.class_queries_logits, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(reused.masks_queries_logits, fresh.masks_queries_logits, atol=1e-6, rtol=1e-6)
    for n in range(2):
        torch.testing.assert_close(
            batched.masks_queries_logits[n], uncached[n].masks_queries_logits[0], atol=1e-5, rtol=1e-5
        )
    _assert_results_equal(
        processor.post_process_interactive_segmentation(cached[1], prompts[1]),
        processor.post_process_interactive_segmentation(uncached[1], prompts[1]),
    )


def test_model_generate_feeds_post_process_generation(processor, tiny_model, photos):
    """The model's generate-then-segment output plugs into the processor; random weights rarely write a <SEG>, so
    only the structure is checked (an unsegmented answer keeps its caption and gets no masks)."""
    inputs = processor(images=[photos["coffee"], photos["chelsea"]], task=["gcg", "conversation"], text=[None, "Hi?"])
    assert all(info.generate for info in inputs.sample_info)
    with torch.no_grad():
        generated = tiny_model.generate(**inputs, tokenizer=processor, max_new_tokens=8)
    results = processor.post_process_generation(generated.generated_texts, generated, inputs)
    assert len(results) == 2
    for result, segmented in zip(results, generated.segmented.tolist()):
        assert isinstance(result["caption"], str)
        assert segmented or all(mask is None for _, _, mask in result["entities"])
