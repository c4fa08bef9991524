import pytest
import torch


@pytest.fixture(scope="session")
def random_tiny():
    """The random `tiny` model as `load_model` gives it when no trained model exists (built directly, so the demo
    tests keep exercising the random-weights path even once an embedded default model ships)."""
    from xsam_hf import XSamConfig, XSamForSegmentation, XSamProcessor
    from xsam_hf.default_model import LoadedModel

    generator_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    model = XSamForSegmentation(XSamConfig.from_preset("tiny")).eval()
    torch.random.set_rng_state(generator_state)
    return LoadedModel(model, XSamProcessor.from_preset("tiny"), "preset:tiny (random)", random_weights=True)
