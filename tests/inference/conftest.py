import numpy as np
import pytest
import skimage.data
import torch

from xsam_hf import XSamConfig, XSamForSegmentation, XSamProcessor


@pytest.fixture(scope="session")
def tiny_model():
    torch.manual_seed(0)
    return XSamForSegmentation(XSamConfig.from_preset("tiny")).eval()


@pytest.fixture(scope="session")
def processor():
    return XSamProcessor.from_preset("tiny")


@pytest.fixture(scope="session")
def photos():
    return {"astronaut": skimage.data.astronaut(), "coffee": skimage.data.coffee(), "chelsea": skimage.data.chelsea()}


@pytest.fixture(scope="session")
def saved_tiny(tmp_path_factory, tiny_model, processor):
    """A tiny checkpoint folder (model + processor), as a user would have after save_pretrained."""
    path = tmp_path_factory.mktemp("tiny-xsam")
    tiny_model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def mask_array(mask) -> np.ndarray:
    return np.asarray(mask) > 127
