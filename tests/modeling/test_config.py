import json
import math

import pytest
import torch

from xsam_hf import XSamConfig, XSamForSegmentation
from xsam_hf.presets import available_presets

from .conftest import GOLDEN


def _golden_config(name):
    return json.loads((GOLDEN / "configs" / name).read_text())


@pytest.mark.parametrize(
    "field,golden_file,keys",
    [
        ("vision_config", "siglip_config.json", ["hidden_size", "intermediate_size", "num_hidden_layers",
                                                  "num_attention_heads", "image_size", "patch_size", "hidden_act"]),
        ("segmentation_encoder_config", "sam_config.json", None),
        ("text_config", "llm_config.json", ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                             "num_attention_heads", "num_key_value_heads", "bos_token_id",
                                             "eos_token_id", "pad_token_id", "sliding_window", "tie_word_embeddings"]),
        ("decoder_config", "mask2former_config.json", ["hidden_dim", "feature_size", "mask_feature_size",
                                                        "encoder_layers", "decoder_layers", "num_attention_heads",
                                                        "dim_feedforward", "encoder_feedforward_dim", "num_queries",
                                                        "common_stride", "feature_strides", "feature_channels",
                                                        "no_object_weight", "class_weight", "mask_weight",
                                                        "dice_weight", "train_num_points"]),
    ],
)
def test_tiny_preset_equals_golden_sizes(field, golden_file, keys):
    ours = getattr(XSamConfig.from_preset("tiny"), field)
    golden = _golden_config(golden_file)
    if field == "segmentation_encoder_config":
        golden = golden["vision_config"]
        keys = ["hidden_size", "num_hidden_layers", "num_attention_heads", "global_attn_indexes", "mlp_dim",
                "output_channels", "image_size", "patch_size", "window_size"]
    for key in keys:
        value = getattr(ours, key)
        assert (list(value) if isinstance(golden[key], list) else value) == golden[key], key


def test_tiny_preset_token_ids_and_connector_equal_golden():
    config = XSamConfig.from_preset("tiny")
    kwargs = _golden_config("xsam_model_kwargs.json")
    assert [config.seg_token_id, config.phrase_start_token_id, config.phrase_end_token_id] == [
        kwargs["special_token_ids"][t] for t in ("<SEG>", "<p>", "</p>")
    ]
    assert config.connector_feature_layers == kwargs["xsam_kwargs"]["seg_select_layers"][-3:]
    assert config.connector_scale_factors == kwargs["xsam_kwargs"]["connector_scale_factor"][-3:]
    assert config.connector_hidden_size == kwargs["xsam_kwargs"]["connector_hidden_dim"]


def test_defaults_are_the_released_model():
    config = XSamConfig()
    assert config.model_type == "xsam" and config.stage == "s3"
    assert (config.vision_config.image_size // config.vision_config.patch_size) ** 2 == 729
    assert config.vision_feature_layer == -2 and config.vision_pad_to_square is True
    assert config.segmentation_encoder_config.global_attn_indexes == [5, 11, 17, 23]
    assert config.connector_feature_layers == [12, 18, 24] and config.connector_scale_factors == [2.0, 1.0, 0.5]
    assert config.decoder_config.feature_channels == [512, 1024, 2048]
    assert config.decoder_config.common_stride == 4 and list(config.decoder_config.feature_strides) == [4, 8, 16, 32]
    assert config.decoder_config.num_queries == 200 and config.decoder_config.decoder_layers == 10
    assert config.text_config.model_type == "phi3" and config.text_config.vocab_size == 32014
    assert (config.seg_token_id, config.phrase_start_token_id, config.phrase_end_token_id) == (32011, 32012, 32013)
    assert (config.image_token_index, config.region_token_index) == (-200, -300)
    assert math.isclose(config.logit_scale_init, math.log(1 / 0.07)) and config.class_logit_clamp == 500
    assert config.region_num_points == 256
    assert XSamConfig.from_preset("x-sam-phi3-mini").to_dict()["decoder_config"]["num_queries"] == 200
    assert set(available_presets()) >= {"tiny", "x-sam-phi3-mini"}


def test_released_preset_shapes_on_meta_device():
    """Architecture spec §7.2 tensor shapes, without allocating the 4.7B parameters."""
    with torch.device("meta"):
        model = XSamForSegmentation(XSamConfig.from_preset("x-sam-phi3-mini"))
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["language_model.model.embed_tokens.weight"] == (32014, 3072)
    assert shapes["language_model.lm_head.weight"] == (32014, 3072)
    assert shapes["language_model.model.layers.0.self_attn.qkv_proj.weight"] == (9216, 3072)
    assert shapes["vision_tower.embeddings.position_embedding.weight"] == (729, 1152)
    assert shapes["segmentation_encoder.vision_encoder.pos_embed"] == (1, 64, 64, 1024)
    assert shapes["segmentation_encoder.vision_encoder.layers.5.attn.rel_pos_h"] == (127, 64)
    assert shapes["segmentation_encoder.vision_encoder.layers.0.attn.rel_pos_h"] == (27, 64)
    assert shapes["vision_projector.linear_1.weight"] == (3072, 1152)
    assert shapes["seg_projector.linear_1.weight"] == (3072, 4096)
    assert shapes["llm_projector.linear_1.weight"] == (256, 3072)
    assert shapes["connector.levels.0.layers.4.weight"] == (2048, 512, 1, 1)
    assert shapes["connector.levels.2.layers.4.weight"] == (512, 512, 1, 1)
    assert shapes["segmentation_decoder.pixel_decoder.input_projections.0.0.weight"] == (256, 2048, 1, 1)
    assert shapes["segmentation_decoder.pixel_decoder.encoder.layers.0.self_attn.sampling_offsets.weight"] == (192, 256)
    assert shapes["segmentation_decoder.transformer_module.queries_features.weight"] == (200, 256)
    assert shapes["segmentation_decoder.transformer_module.decoder.layers.8.cross_attn.in_proj_weight"] == (768, 256)
    assert "segmentation_decoder.transformer_module.decoder.layers.9.fc1.weight" not in shapes
    assert shapes["background_embedding.weight"] == (1, 256) and shapes["class_head.logit_scale"] == (1,)


def test_config_round_trip(tmp_path):
    config = XSamConfig.from_preset("tiny", stage="s1", num_closed_set_classes=7)
    config.save_pretrained(tmp_path)
    loaded = XSamConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.decoder_config.feature_channels == [16, 32, 64]


def test_bad_config_values_are_rejected():
    with pytest.raises(ValueError, match="stage"):
        XSamConfig.from_preset("tiny", stage="s4")
    with pytest.raises(ValueError, match="3 feature levels"):
        XSamConfig.from_preset("tiny", connector_feature_layers=[4, 8])


def test_transformers_own_remote_code_export_copies_only_sibling_files(tmp_path):
    """`register_for_auto_class` follows relative imports: the config module must not name a non-sibling."""
    from xsam_hf import XSamForSegmentation

    config = XSamConfig.from_preset("tiny")
    model = XSamForSegmentation(config)
    try:
        XSamConfig.register_for_auto_class()
        XSamForSegmentation.register_for_auto_class("AutoModel")
        model.save_pretrained(tmp_path)
    finally:
        XSamConfig._auto_class = None
        XSamForSegmentation._auto_class = None
    copied = {p.name for p in tmp_path.glob("*.py")}
    assert {"configuration_xsam.py", "modeling_xsam.py"} <= copied
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["auto_map"]["AutoModel"] == "modeling_xsam.XSamForSegmentation"
