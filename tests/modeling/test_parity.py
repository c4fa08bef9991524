"""End-to-end parity with the official implementation on the golden case (fp32, eager attention).

Only raw inputs are fed (input_ids, SigLIP and SAM pixels, labels); every compared tensor is a model output.
Tolerance: 1e-5 relative to the largest magnitude of each output (the SAM attention sums its relative-position
terms in another order than the official fork: fp32 rounding, ~1e-6 relative here).
"""

import torch
import torch.nn.functional as F

from .conftest import relative_error

TOL = 1e-5


def test_end_to_end_outputs_match_official(golden_model, golden_inputs, golden):
    expected = golden["genseg"]["outputs"]
    torch.manual_seed(0)
    with torch.no_grad():
        out = golden_model(**golden_inputs)
    assert out.logits.shape == expected["llm_logits"].shape
    assert relative_error(out.logits, expected["llm_logits"]) < TOL
    assert abs(out.lm_loss.item() - expected["llm_loss"].item()) <= TOL * expected["llm_loss"].item()
    assert relative_error(out.class_queries_logits, expected["class_queries_logits"]) < TOL
    canvas = golden_inputs["extra_pixel_values"].shape[-2:]
    upsampled = F.interpolate(out.masks_queries_logits, size=canvas, mode="bilinear", align_corners=False)
    assert relative_error(upsampled, expected["masks_queries_logits"]) < TOL


def test_every_decoder_layer_matches_official(golden_model, golden_inputs, golden):
    per_layer_cls = golden["genseg"]["outputs"]["intermediates"]["class_queries_logits_per_layer"]
    per_layer_masks = golden["genseg"]["outputs"]["intermediates"]["masks_queries_logits_per_layer_raw"]
    with torch.no_grad():
        out = golden_model(**golden_inputs)
    layers = out.auxiliary_logits + [
        {"class_queries_logits": out.class_queries_logits, "masks_queries_logits": out.masks_queries_logits}
    ]
    assert len(layers) == len(per_layer_cls) == 5
    for layer, cls, masks in zip(layers, per_layer_cls, per_layer_masks):
        assert relative_error(layer["class_queries_logits"], cls) < TOL
        assert relative_error(layer["masks_queries_logits"], masks) < TOL


def test_encoder_side_intermediates_match_official(golden_model, golden_inputs, golden):
    """Where a mismatch would start: projector and connector outputs."""
    inter = golden["genseg"]["outputs"]["intermediates"]
    with torch.no_grad():
        feats = golden_model.get_image_features(golden_inputs["pixel_values"], golden_inputs["extra_pixel_values"])
    assert relative_error(feats.vision_tokens, inter["visual_projector_out"]) < TOL
    assert relative_error(feats.segmentation_tokens, inter["seg_projector_out"]) < TOL
    for ours, theirs in zip(feats.feature_pyramid, inter["connector_out"]):
        assert relative_error(ours, theirs) < TOL
