import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def pytest_addoption(parser):
    parser.addoption("--ci-recipe-output", default=None,
                     help="folder of a finished `train_default --recipe ci` run to check (tests/synthetic/"
                          "test_ci_recipe.py); without it those tests run the recipe themselves")


@pytest.fixture
def bench_script():
    """Loads a script of bench/ (not a package) as a module: `bench_script("bench_forward")`."""
    folder = Path(__file__).resolve().parents[1] / "bench"

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
