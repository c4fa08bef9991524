from pathlib import Path

import pytest
import torch

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden_genseg"


@pytest.fixture(scope="session")
def golden():
    return torch.load(GOLDEN / "genseg_io.pt", weights_only=True)


@pytest.fixture(scope="session")
def processor():
    from xsam_hf.processing import XSamProcessor

    return XSamProcessor.from_preset("tiny")


@pytest.fixture(scope="session")
def tiny_model():
    """The tiny X-SAM with seeded random weights (structure, determinism and batching checks, not quality)."""
    from xsam_hf import XSamConfig, XSamForSegmentation

    torch.manual_seed(0)
    model = XSamForSegmentation(XSamConfig.from_preset("tiny"))
    model.set_attn_implementation("eager")
    return model.eval()


@pytest.fixture(scope="session")
def photos():
    skimage_data = pytest.importorskip("skimage.data")
    return {"astronaut": skimage_data.astronaut(), "coffee": skimage_data.coffee(), "chelsea": skimage_data.chelsea()}
