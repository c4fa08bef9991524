"""Remote-code export: model, processor and a pipeline load with `trust_remote_code=True` in a fresh Python where
xsam_hf cannot be imported, and compute what the originals compute.

The child runs with `python -I -S`: no PYTHONPATH, no current directory and no `.pth` processing, so the editable
install's import hook for xsam_hf is never installed; site-packages is put back on `sys.path` by hand (torch and
transformers stay importable) and the child first asserts that xsam_hf cannot be found.
"""

import ast
import importlib.util
import json
import os
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from xsam_hf.modeling.export import flatten_modules, save_for_remote_code
from xsam_hf.processing import XSamProcessor

from .conftest import build_tiny

# A minimal X-SAM pipeline, written to its own module (classes in __main__ cannot be exported). It only imports
# transformers: model and processor reach it through `pipeline()`.
PIPELINE_SOURCE = '''
from transformers import Pipeline


class TinySemanticPipeline(Pipeline):
    _load_processor = True
    _load_image_processor = False
    _load_tokenizer = False
    _load_feature_extractor = False

    def _sanitize_parameters(self, categories=None, **kwargs):
        return ({"categories": categories} if categories is not None else {}), {}, {}

    def preprocess(self, image, categories=("thing",)):
        inputs = self.processor(images=image, task="semantic", categories=list(categories))
        tensors = {k: inputs[k] for k in ("input_ids", "attention_mask", "pixel_values", "extra_pixel_values")}
        return {"tensors": tensors, "size": tuple(image.shape[:2])}

    def _forward(self, model_inputs):
        return {"outputs": self.model(**model_inputs["tensors"]), "size": model_inputs["size"]}

    def postprocess(self, model_outputs):
        outputs = model_outputs["outputs"]
        return self.processor.post_process_semantic_segmentation(outputs, target_sizes=[model_outputs["size"]])[0]
'''

CHILD = '''
import importlib.util, sys
sys.path.extend(SITE_PACKAGES)  # without .pth processing: the editable xsam_hf hook stays out
assert importlib.util.find_spec("xsam_hf") is None, "xsam_hf must not be importable here"

import numpy as np
import torch
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor, pipeline

folder = sys.argv[1]
expected = torch.load(sys.argv[2], weights_only=False)

config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
assert type(config).__name__ == "XSamConfig" and type(config).__module__.startswith("transformers_modules.")
model = AutoModel.from_pretrained(folder, trust_remote_code=True, attn_implementation="eager").eval()
assert type(model).__name__ == "XSamForSegmentation" and type(model).__module__.startswith("transformers_modules.")
image_text_model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True)
assert type(image_text_model).__name__ == "XSamForSegmentation"

with torch.no_grad():
    out = model(**expected["inputs"])
for key in ("logits", "class_queries_logits", "masks_queries_logits"):
    assert torch.equal(getattr(out, key), expected[key]), key
generated = model.generate(**expected["inputs"], max_new_tokens=4, stop_token_ids=[373])
assert torch.equal(generated.generated_ids, expected["generated_ids"])

processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
assert type(processor).__name__ == "XSamProcessor" and type(processor).__module__.startswith("transformers_modules.")
encoded = processor(images=expected["image"], task="semantic", categories=["sky", "dog"])
for key, value in expected["encoded"].items():
    assert torch.equal(encoded[key], value), key

pipe = pipeline(model=folder, trust_remote_code=True)
assert type(pipe).__name__ == "TinySemanticPipeline"
assert torch.equal(pipe(expected["image"], categories=["sky", "dog"]), expected["pipeline"])
assert not any(name == "xsam_hf" or name.startswith("xsam_hf.") for name in sys.modules)
print("REMOTE-CODE-OK")
'''


@pytest.fixture(scope="module")
def pipeline_class(tmp_path_factory):
    path = tmp_path_factory.mktemp("pipeline_module") / "xsam_tiny_pipeline.py"
    path.write_text(PIPELINE_SOURCE)
    spec = importlib.util.spec_from_file_location("xsam_tiny_pipeline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["xsam_tiny_pipeline"] = module  # so the exporter finds its source like any imported module
    spec.loader.exec_module(module)
    yield module.TinySemanticPipeline
    sys.modules.pop("xsam_tiny_pipeline", None)


def _clean_site_packages() -> list[str]:
    paths = [*site.getsitepackages(), site.getusersitepackages()]
    return [p for p in paths if os.path.isdir(p) and not os.path.isdir(os.path.join(p, "xsam_hf"))]


def test_exported_files_import_only_their_siblings(tmp_path):
    sources = flatten_modules(["xsam_hf.modeling.modeling_xsam", "xsam_hf.processing.processing_xsam"])
    assert {"configuration_xsam.py", "modeling_xsam.py", "presets.py", "spans.py", "processing_xsam.py"} <= set(sources)
    for name, text in sources.items():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and node.level:
                # transformers resolves `.name` against the folder: exactly one dot, and the sibling exists.
                assert node.level == 1 and f"{node.module}.py" in sources, (name, node.module)
            if isinstance(node, (ast.Import, ast.ImportFrom)) and not getattr(node, "level", 0):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
                assert not any(m.split(".")[0] == "xsam_hf" for m in modules), (name, modules)
    # The lazily imported presets come along, so from_preset works in the copy too (the package itself untouched).
    assert "from .presets import get_preset" in sources["configuration_xsam.py"]


def test_model_processor_and_pipeline_load_without_the_package(tmp_path, pipeline_class):
    torch.manual_seed(0)
    model = build_tiny()
    processor = XSamProcessor.from_preset("tiny")
    image = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    encoded = processor(images=image, task="semantic", categories=["sky", "dog"])
    inputs = {k: encoded[k] for k in ("input_ids", "attention_mask", "pixel_values", "extra_pixel_values")}
    with torch.no_grad():
        out = model(**inputs)
    pipe = pipeline_class(model=model, processor=processor, task="x-sam-tiny-semantic")
    expected = {
        "inputs": inputs,
        "image": image,
        "encoded": inputs,
        "logits": out.logits,
        "class_queries_logits": out.class_queries_logits,
        "masks_queries_logits": out.masks_queries_logits,
        "generated_ids": model.generate(**inputs, max_new_tokens=4, stop_token_ids=[373]).generated_ids,
        "pipeline": pipe(image, categories=["sky", "dog"]),
    }

    folder = tmp_path / "xsam-remote"
    written = save_for_remote_code(
        model, folder, processor=processor, pipeline=pipe, pipeline_task="x-sam-tiny-semantic"
    )
    assert "modeling_xsam.py" in written and "xsam_tiny_pipeline.py" in written
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_xsam.XSamConfig",
        "AutoModel": "modeling_xsam.XSamForSegmentation",
        "AutoModelForImageTextToText": "modeling_xsam.XSamForSegmentation",
        "AutoProcessor": "processing_xsam.XSamProcessor",
    }
    assert config["custom_pipelines"]["x-sam-tiny-semantic"]["impl"] == "xsam_tiny_pipeline.TinySemanticPipeline"
    assert json.loads((folder / "processor_config.json").read_text())["auto_map"] == {
        "AutoProcessor": "processing_xsam.XSamProcessor"
    }
    torch.save(expected, tmp_path / "expected.pt")

    code = CHILD.replace("SITE_PACKAGES", repr(_clean_site_packages()))
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_MODULES_CACHE": str(tmp_path / "hf_modules"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    }
    work = tmp_path / "elsewhere"
    work.mkdir()
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", textwrap.dedent(code), str(folder), str(tmp_path / "expected.pt")],
        cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0 and "REMOTE-CODE-OK" in result.stdout, result.stdout[-3000:] + result.stderr[-6000:]


def test_export_cleans_stale_code_and_requires_a_pipeline_task(tmp_path, pipeline_class):
    model = build_tiny()
    (tmp_path / "old_module.py").write_text("raise ImportError\n")
    written = save_for_remote_code(model, tmp_path)
    assert not (tmp_path / "old_module.py").exists() and "processing_xsam.py" not in written
    assert "AutoProcessor" not in json.loads((tmp_path / "config.json").read_text())["auto_map"]
    with pytest.raises(ValueError, match="pipeline_task"):
        save_for_remote_code(model, tmp_path / "again", pipeline=pipeline_class)
