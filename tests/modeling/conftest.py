from pathlib import Path

import pytest
import torch

from xsam_hf import XSamConfig, XSamForSegmentation
from xsam_hf.modeling.conversion import convert_official_state_dict

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden_genseg"


@pytest.fixture(scope="session")
def golden():
    return torch.load(GOLDEN / "genseg_io.pt", weights_only=True)


@pytest.fixture(scope="session")
def golden_state_dict():
    converted, dropped, unknown = convert_official_state_dict(
        torch.load(GOLDEN / "official_state_dict.pt", weights_only=True)
    )
    assert dropped == ["segmentor.shared_image_embedding.positional_embedding"] and not unknown
    return converted


def build_tiny(state_dict=None, attn="eager", train_num_points=None, **overrides) -> XSamForSegmentation:
    """The tiny preset. `train_num_points` lowers the loss's point count (12,544 officially) where a test is not
    about it: the loss costs seconds per call on this CPU at the official count."""
    config = XSamConfig.from_preset("tiny", **overrides)
    if train_num_points is not None:
        config.decoder_config.train_num_points = train_num_points
    # At construction: SAM picks its attention class then, so a later set_attn_implementation would not reach it.
    model = XSamForSegmentation._from_config(config, attn_implementation=attn)
    if state_dict is not None:
        result = model.load_state_dict(state_dict, strict=True)
        assert not result.missing_keys and not result.unexpected_keys
    return model.eval()


@pytest.fixture()
def golden_model(golden_state_dict):
    return build_tiny(golden_state_dict)


@pytest.fixture(scope="session")
def golden_inputs(golden):
    data = golden["genseg"]["inputs"]["data_dict"]
    return {k: data[k] for k in ("input_ids", "pixel_values", "extra_pixel_values", "labels")}


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Max absolute difference relative to the largest magnitude of the expected tensor."""
    return ((actual.double() - expected.double()).abs().max() / expected.double().abs().max()).item()


IMAGE, BOS, PAD, SEG, P_OPEN, P_CLOSE = -200, 1, 370, 375, 376, 377


def synthetic_prompt(num_conditions: int, num_seg: int = 1, seed: int = 0, regions: int = 0) -> list[int]:
    """Token ids shaped like an X-SAM prompt: BOS, <image>, text with `<p>...</p>` spans, `<SEG>` answers.

    Text ids are random ordinary ids of the tiny vocabulary; the first `regions` spans hold one `<region>` each.
    """
    g = torch.Generator().manual_seed(seed)
    text = lambda n: torch.randint(10, 300, (n,), generator=g).tolist()  # noqa: E731
    ids = [BOS] + text(2) + [IMAGE] + text(3)
    for k in range(num_conditions):
        inner = [-300] if k < regions else text(1 + k % 3)
        ids += [P_OPEN] + inner + [P_CLOSE] + text(1)
    for _ in range(num_seg):
        ids += text(2) + [SEG] + text(1)
    return ids


def pad_batch(prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists: `(input_ids, attention_mask)`."""
    length = max(map(len, prompts))
    ids = torch.full((len(prompts), length), PAD)
    mask = torch.zeros(len(prompts), length, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, : len(p)] = torch.tensor(p)
        mask[i, : len(p)] = 1
    return ids, mask


def random_images(batch: int, seed: int = 0, vision: int = 56, canvas: int = 128):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, vision, vision, generator=g), torch.randn(batch, 3, canvas, canvas, generator=g)


def random_targets(num_masks: int, num_classes: int, seed: int, canvas: int = 128):
    """`num_masks` blob masks on the canvas with classes in [0, num_classes)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(canvas), torch.arange(canvas), indexing="ij")
    masks = []
    for _ in range(num_masks):
        cy, cx, r = torch.randint(10, canvas - 10, (2,), generator=g).tolist() + [int(torch.randint(5, 30, (1,), generator=g))]
        masks.append(((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).float())
    stacked = torch.stack(masks) if masks else torch.zeros(0, canvas, canvas)
    return stacked, torch.randint(num_classes, (num_masks,), generator=g)
