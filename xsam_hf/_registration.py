"""Register the X-SAM classes with the transformers Auto* factories (runs on `import xsam_hf`)."""

from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor

from .modeling.configuration_xsam import XSamConfig
from .modeling.modeling_xsam import XSamForSegmentation
from .processing import XSamProcessor

AutoConfig.register(XSamConfig.model_type, XSamConfig, exist_ok=True)
AutoModel.register(XSamConfig, XSamForSegmentation, exist_ok=True)
AutoModelForImageTextToText.register(XSamConfig, XSamForSegmentation, exist_ok=True)
AutoProcessor.register(XSamConfig, XSamProcessor, exist_ok=True)

from . import pipelines  # noqa: E402,F401  (registers the "x-sam-segmentation" pipeline)
