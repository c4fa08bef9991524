"""xsam-hf: X-SAM as a Transformers-native model, processor and trainer.

Importing the package registers the X-SAM classes with the transformers Auto* factories.
"""

__version__ = "0.1.0.dev0"

from .modeling.configuration_xsam import XSamConfig  # noqa: E402
from .modeling.modeling_xsam import XSamForSegmentation, XSamPreTrainedModel, XSamSegmentationOutput  # noqa: E402
from .processing import XSamProcessor  # noqa: E402
from . import _registration  # noqa: E402,F401

__all__ = ["XSamConfig", "XSamForSegmentation", "XSamPreTrainedModel", "XSamProcessor", "XSamSegmentationOutput"]
